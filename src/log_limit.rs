//! A per-call log line that cannot flood: at most one line per interval, with a count of the
//! lines it held back.
//!
//! The breaker and the epoch log once per transition, so they need none of this. A `forget`
//! logs once per failed call, and many calls can fail together: every `forget` in flight when
//! Redis hangs times out at once, and an error reply (an ACL refusing `DEL`) never opens the
//! breaker. One line per interval still says what is wrong.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How often a limited line may be logged.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// One call site's allowance; each store keeps its own, so the first failure of every store
/// is always logged.
#[derive(Debug)]
pub(crate) struct LogLimit {
    /// Milliseconds since [`base`] before which the next line stays quiet.
    next_ms: AtomicU64,
    /// Lines held back since the last one logged.
    suppressed: AtomicU64,
}

impl LogLimit {
    pub(crate) const fn new() -> Self {
        LogLimit {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now; `None`
    /// (and one more held back) otherwise. Relaxed atomics: a line more or less is harmless.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(every), Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

/// A process-wide origin, so that [`LogLimit`] fits in two atomics.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_count_of_the_rest() {
        let limit = LogLimit::new();
        assert_eq!(limit.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limit.allow(), None);
        }
        assert_eq!(limit.suppressed.load(Relaxed), 1000);
        // Pretend the interval has passed.
        limit.next_ms.store(0, Relaxed);
        assert_eq!(limit.allow(), Some(1000));
    }
}
