//! The log lines the crate emits, captured into a buffer so tests can read them.
//!
//! One process-wide subscriber, installed by the first capture, formats the events of the
//! threads that are capturing into their own buffers and drops every other event. Not a
//! thread-local default (`tracing::subscriber::set_default`) per test: with several of those
//! alive on the threads of one test binary, `tracing` caches each call site's interest across
//! them, and an event could be lost to a test that had just started capturing.

use std::cell::RefCell;
use std::io;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::filter::dynamic_filter_fn;
use tracing_subscriber::layer::SubscriberExt;

thread_local! {
    /// Where this thread's events go while it captures.
    static CAPTURING: RefCell<Option<LogBuffer>> = const { RefCell::new(None) };
}

/// A `tracing` subscriber's output, as text.
#[derive(Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<u8>>>);

/// Ends the capture of its thread when dropped (and gives it back to an outer one, if any).
pub struct Capture {
    outer: Option<LogBuffer>,
    /// Bound to the thread whose events it captures.
    _not_send: PhantomData<*const ()>,
}

impl LogBuffer {
    /// Captures every event (all levels) on this thread until the guard drops. Use a
    /// current-thread runtime, so that the store's tasks run on this thread too.
    pub fn capture() -> (LogBuffer, Capture) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(ThisThread)
                .finish()
                .with(dynamic_filter_fn(|_, _| capturing()));
            tracing::subscriber::set_global_default(subscriber)
                .expect("LogBuffer needs to be the process's global tracing subscriber");
        });
        let logs = LogBuffer::default();
        let outer = CAPTURING.with(|c| c.replace(Some(logs.clone())));
        let guard = Capture {
            outer,
            _not_send: PhantomData,
        };
        (logs, guard)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let outer = self.outer.take();
        CAPTURING.with(|c| *c.borrow_mut() = outer);
    }
}

/// Whether this thread captures its events. Asked on every event (a dynamic filter: a static
/// one would cache each call site's first answer for every thread).
fn capturing() -> bool {
    CAPTURING.with(|c| c.borrow().is_some())
}

/// The writer of the process-wide subscriber: the capturing thread's buffer.
struct ThisThread;

impl io::Write for ThisThread {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        CAPTURING.with(|c| {
            if let Some(logs) = c.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(bytes);
            }
        });
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThisThread {
    type Writer = ThisThread;

    fn make_writer(&'a self) -> ThisThread {
        ThisThread
    }
}
