//! A loopback TCP proxy for fault-injection tests: put it between a client (a
//! `RedisStore`, a `redis::Connection`) and a real `redis-server`, then delay,
//! swallow, refuse or cut the traffic at will.
//!
//! ```ignore
//! let server = RedisServer::start();
//! let proxy = Proxy::start(server.port());
//! let store = RedisStore::builder(proxy.url()).build().await?;
//! proxy.set_mode(Mode::Delay(Duration::from_millis(250))); // +500 ms per round trip
//! proxy.set_mode(Mode::Blackhole);                         // a partition
//! proxy.cut_all();                                         // every connection reset at once
//! ```
//!
//! # Design, and why
//!
//! - **std threads and blocking sockets, no tokio.** The tests under fault
//!   injection run on every kind of runtime: current-thread, multi-thread, with
//!   a paused clock. A proxy living on the test's runtime would stop moving
//!   bytes whenever that runtime is blocked or its clock paused, and the fault
//!   would then be the proxy's, not the one the test meant to inject. OS threads
//!   and the wall clock (`Instant`) are immune to both.
//! - **Two threads per direction (a reader and a writer) and an unbounded queue
//!   between them.** The reader stamps each chunk with its arrival time, the
//!   writer writes it once the delay has passed. Delaying is therefore not
//!   serialising: a pipelined request that arrives while an earlier one waits
//!   is waiting too, in parallel, and both leave `d` after their own arrival.
//!   The reader also keeps draining the client while the writer waits, so a
//!   client never blocks on a full socket buffer because of the proxy.
//! - **The mode is read when it matters, by every connection.** Readers look
//!   at it when a chunk arrives (to discard it in [`Mode::Blackhole`]), writers
//!   when a chunk's turn comes (to apply the current delay), the listener when
//!   a connection arrives ([`Mode::Refuse`]). So [`Proxy::set_mode`] acts on
//!   existing connections and on bytes already in flight, within a few ms.
//! - **Everything is bounded.** Every blocking call has a timeout (accept is
//!   non-blocking and polled every 2 ms, reads and writes time out after 50 ms,
//!   delay sleeps are sliced into 10 ms steps, the upstream connect gives up
//!   after 500 ms) and every loop re-checks a "closed" flag after each timeout.
//!   Closing a connection also `shutdown(Both)`s both sockets, which wakes a
//!   blocked read or write at once; the timeouts only back that up. This is why
//!   dropping the proxy returns promptly even while the upstream is frozen with
//!   `SIGSTOP` and a writer is stuck on its full socket buffer.
//! - **No panics in proxy threads.** An I/O error closes that one connection;
//!   a poisoned lock is used anyway (the data behind it is a plain value).
//! - **Loopback only**, like the rest of the harness: listens on and connects
//!   to `127.0.0.1`.
//!
//! # Limits
//!
//! - No half-close: when one side closes (or fails), what it sent before is
//!   still delivered to the other side (after its delay), then both sockets
//!   are closed and anything still on its way back is dropped. Redis clients
//!   and servers never half-close on purpose, so they lose nothing by it.
//! - A close is delivered like a byte: delayed in the delay modes, and held
//!   back in [`Mode::Blackhole`] (the connection stays open and counted until
//!   the mode changes, [`Proxy::cut_all`] or drop), as a partition would.
//! - Each accepted connection is connected upstream at once, whatever the
//!   mode; if that fails (upstream killed), the client connection is closed
//!   right away, even in [`Mode::Blackhole`].
//! - Bytes dropped by [`Mode::Blackhole`] are gone for good: a connection that
//!   lived through a blackhole carries new bytes again afterwards, but a
//!   request/reply client on it is out of step (its lost requests are never
//!   answered). Expect such connections to time out and use new ones.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the listener polls its non-blocking socket. Non-blocking so it can
/// notice [`Proxy`] being dropped without a self-connection trick; 2 ms keeps
/// the accept latency negligible next to any timeout a test cares about.
const ACCEPT_POLL: Duration = Duration::from_millis(2);
/// Read and write timeout of every proxied socket: the longest a pump thread
/// can stay blocked before re-checking whether its connection was closed (the
/// `shutdown` in [`Conn::close`] normally wakes it sooner).
const IO_POLL: Duration = Duration::from_millis(50);
/// Longest single sleep of a writer waiting for a chunk's due time, so that a
/// mode change (or a close) is seen within this much even during a long delay.
const DELAY_STEP: Duration = Duration::from_millis(10);
/// Upstream connect timeout. A loopback connect is instant (refused at once
/// when nothing listens; completed by the kernel even for a `SIGSTOP`ped
/// server), so this only bounds the pathological case and, with it, drop time.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Read buffer per direction; a chunk is at most this big.
const CHUNK_SIZE: usize = 16 * 1024;

/// Distinguishes the thread names of proxies in one test process.
static NEXT_PROXY_ID: AtomicU64 = AtomicU64::new(1);

/// What the proxy does with traffic; see [`Proxy::set_mode`].
///
/// A change applies at once to every connection, existing or new, and to
/// bytes already inside the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain forwarding, in both directions. The initial mode.
    Pass,
    /// Every byte is written `d` after the proxy read it, **in each direction**:
    /// a request reaches the server `d` late and its reply reaches the client
    /// another `d` late, so a request/reply round trip costs `2·d` on top of
    /// its direct time. For "the proxy adds 500 ms to a round trip" use
    /// `Delay(250 ms)`, or [`Mode::DelayEach`] to put all of it on one side.
    ///
    /// Bytes are not serialised: a pipelined request arriving while earlier
    /// bytes wait is delayed in parallel, from its own arrival, so throughput
    /// is unchanged. The delay is a lower bound; the writer wakes within a
    /// millisecond or so of the due time (scheduler permitting).
    ///
    /// The delay is looked up when a chunk's turn comes, not frozen when it
    /// arrives: switching from `Delay` back to `Pass` releases waiting bytes at
    /// once. Order is always kept (a chunk never overtakes an earlier one).
    Delay(Duration),
    /// Like [`Mode::Delay`] with a separate delay per direction; a round trip
    /// costs `to_upstream + to_client`. `DelayEach { to_upstream: 0, to_client:
    /// 500 ms }` is the "the write landed, the caller timed out" case: Redis
    /// executes the request at once and only the reply is late.
    DelayEach {
        /// Delay of bytes from the client to the upstream server (requests).
        to_upstream: Duration,
        /// Delay of bytes from the upstream server to the client (replies).
        to_client: Duration,
    },
    /// A partition: connections are still accepted and kept open, nothing is
    /// forwarded in either direction and nothing is answered. Bytes read from
    /// either side are discarded (so the client's writes never block), bytes
    /// waiting in a delay are dropped, and closes are held back (see the
    /// module's Limits).
    Blackhole,
    /// New connections are accepted and closed at once, as by a server that
    /// died between accept and read (clients see an immediate EOF).
    /// Connections opened before are forwarded as in [`Mode::Pass`]; close
    /// those with [`Proxy::cut_all`].
    Refuse,
}

impl Mode {
    /// The delay for bytes travelling in `direction`, or `None` if they are discarded.
    fn delay(self, direction: Direction) -> Option<Duration> {
        match self {
            Mode::Pass | Mode::Refuse => Some(Duration::ZERO),
            Mode::Delay(d) => Some(d),
            Mode::DelayEach {
                to_upstream,
                to_client,
            } => Some(match direction {
                Direction::ToUpstream => to_upstream,
                Direction::ToClient => to_client,
            }),
            Mode::Blackhole => None,
        }
    }
}

/// Which way a pump moves bytes.
#[derive(Clone, Copy, Debug)]
enum Direction {
    ToUpstream,
    ToClient,
}

impl Direction {
    /// Short tag for thread names (which Linux truncates to 15 bytes).
    fn tag(self) -> &'static str {
        match self {
            Direction::ToUpstream => "c2u",
            Direction::ToClient => "u2c",
        }
    }
}

/// A TCP proxy on a free `127.0.0.1` port, forwarding to `127.0.0.1:upstream_port`.
///
/// Dropping it closes every connection (both sides) and joins every thread it
/// started: typically within ~10 ms, at worst about half a second (an upstream
/// connect in progress), even with a frozen upstream.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    /// `None` only during drop.
    listener: Option<JoinHandle<()>>,
}

/// State shared by the [`Proxy`] handle, its listener and its connections.
struct Shared {
    /// Read by each new connection: [`Proxy::set_upstream`] moves later connections only.
    upstream_port: AtomicU16,
    /// Prefix of every thread name, e.g. `px3-`.
    thread_prefix: String,
    /// A plain value copied out on every read; std `Mutex` because it is never
    /// held across anything that blocks.
    mode: Mutex<Mode>,
    /// Set by drop: the listener stops accepting, closes all, joins all.
    stop: AtomicBool,
    accepted: AtomicU64,
    open: AtomicUsize,
    /// Every open connection, so [`Proxy::cut_all`] and drop can close them.
    /// A connection is registered by the listener when accepted (before it is
    /// connected upstream), so no connection can escape a cut.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    fn close_all(&self) {
        for conn in lock(&self.conns).values() {
            conn.close();
        }
    }

    fn spawn(
        &self,
        role: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<JoinHandle<()>> {
        thread::Builder::new()
            .name(format!("{}{role}", self.thread_prefix))
            .spawn(body)
    }
}

/// One proxied connection: the client socket, the upstream socket once
/// connected, and a flag every pump thread checks after each timeout.
struct Conn {
    client: TcpStream,
    upstream: Mutex<Option<TcpStream>>,
    closed: AtomicBool,
}

impl Conn {
    /// Closes both sides now. `shutdown` (not just dropping our handle) because
    /// the pump threads hold clones of the sockets: it sends FIN to both peers
    /// at once and wakes any thread blocked reading or writing them.
    ///
    /// The flag is set before the upstream slot is locked, and the slot is
    /// filled only under the lock after checking the flag, so an upstream
    /// connected concurrently is either shut down here or never used.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(upstream) = lock(&self.upstream).as_ref() {
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// What travels from a reader to its writer.
enum Message {
    /// Bytes read at the given instant.
    Data(Instant, Vec<u8>),
    /// The source side closed (or failed) at the given instant.
    Eof(Instant),
}

impl Proxy {
    /// Starts a proxy on a free `127.0.0.1` port, forwarding every accepted
    /// connection to `127.0.0.1:upstream_port`, in [`Mode::Pass`].
    ///
    /// Returns once the port is listening, so a client may connect at once.
    /// Panics (in the calling test) if no port can be bound or no thread started.
    pub fn start(upstream_port: u16) -> Proxy {
        // Port 0: the kernel picks a free port and we keep it bound, so unlike
        // `free_port` for redis-server there is no race with other tests.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("proxy: bind an ephemeral port on 127.0.0.1");
        let port = listener
            .local_addr()
            .expect("proxy: local address of its listener")
            .port();
        listener
            .set_nonblocking(true)
            .expect("proxy: make its listener non-blocking");
        let id = NEXT_PROXY_ID.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            upstream_port: AtomicU16::new(upstream_port),
            thread_prefix: format!("px{id}-"),
            mode: Mutex::new(Mode::Pass),
            stop: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let for_listener = Arc::clone(&shared);
        let handle = shared
            .spawn("accept", move || accept_loop(&listener, &for_listener))
            .expect("proxy: start its listener thread");
        Proxy {
            port,
            shared,
            listener: Some(handle),
        }
    }

    /// The proxy's port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/` for the proxy's port: give this to the client
    /// under test instead of the server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port new connections are forwarded to.
    pub fn upstream_port(&self) -> u16 {
        self.shared.upstream_port.load(Ordering::SeqCst)
    }

    /// Forwards new connections to `127.0.0.1:port` from now on, as a virtual IP that moves
    /// to another server in a failover; connections already open stay where they are (close
    /// them with [`Proxy::cut_all`]).
    pub fn set_upstream(&self, port: u16) {
        self.shared.upstream_port.store(port, Ordering::SeqCst);
    }

    /// Switches the mode, for existing and new connections alike (see [`Mode`]).
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Closes every currently open connection, both sides at once, as if the
    /// network cut them mid-pipeline: bytes still inside the proxy are lost,
    /// clients see EOF or a reset on their next read or write. The mode is
    /// unchanged and new connections are accepted as usual.
    ///
    /// Returns once the sockets are shut down; [`Proxy::open_connections`]
    /// drops to the new count a few ms later, when the connection threads end.
    pub fn cut_all(&self) {
        self.shared.close_all();
    }

    /// How many connections were accepted so far, including those closed at
    /// once by [`Mode::Refuse`].
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open now: accepted, not refused, and not yet
    /// fully closed (a connection counts until both its sockets are closed and
    /// its threads have ended).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The prefix of the name of every thread this proxy starts (`px<N>-`,
    /// unique in the process), so a test can check that none outlive the proxy.
    pub fn thread_prefix(&self) -> &str {
        &self.shared.thread_prefix
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .field("upstream_port", &self.upstream_port())
            .field("mode", &self.mode())
            .field("accepted", &self.accepted())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

impl Drop for Proxy {
    /// Stops the listener, which closes every connection and joins every
    /// connection thread before it ends; bounded because every thread re-checks
    /// its flags at least every 50 ms and the sockets are shut down. Never panics.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
    }
}

/// Locks `mutex` even if poisoned: the values behind the proxy's locks are
/// plain data that a panicking holder cannot leave half-updated, and a proxy
/// thread must not panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// True for the errors after which a blocking call is simply retried: a socket
/// timeout (`WouldBlock` on Unix, `TimedOut` on Windows) or a signal (`Interrupted`).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// The listener thread: accepts until the proxy is dropped, then closes every
/// connection and joins every connection thread, so that joining this thread
/// is all drop needs to do.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut next_id: u64 = 0;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                next_id += 1;
                accept_one(shared, next_id, client, &mut workers);
            }
            // WouldBlock: nothing pending. Anything else (ECONNABORTED, EMFILE)
            // concerns one connection or is transient: retry after the same pause.
            Err(_) => thread::sleep(ACCEPT_POLL),
        }
        // Reap finished connection threads so a long test does not pile up handles.
        let (finished, running): (Vec<_>, Vec<_>) =
            workers.into_iter().partition(JoinHandle::is_finished);
        for handle in finished {
            let _ = handle.join();
        }
        workers = running;
    }
    shared.close_all();
    for handle in workers {
        let _ = handle.join();
    }
}

/// Registers a freshly accepted connection and starts its thread, or closes it
/// at once in [`Mode::Refuse`] (dropping the socket sends FIN).
fn accept_one(shared: &Arc<Shared>, id: u64, client: TcpStream, workers: &mut Vec<JoinHandle<()>>) {
    if shared.mode() == Mode::Refuse {
        return;
    }
    // Some platforms hand out accepted sockets non-blocking like the listener;
    // the pumps rely on blocking I/O with timeouts.
    if client.set_nonblocking(false).is_err() {
        return;
    }
    let conn = Arc::new(Conn {
        client,
        upstream: Mutex::new(None),
        closed: AtomicBool::new(false),
    });
    shared.open.fetch_add(1, Ordering::SeqCst);
    lock(&shared.conns).insert(id, Arc::clone(&conn));
    let for_thread = (Arc::clone(shared), Arc::clone(&conn));
    let spawned = shared.spawn("conn", move || {
        let (shared, conn) = for_thread;
        serve(&shared, &conn);
        finish(&shared, id, conn);
    });
    match spawned {
        Ok(handle) => workers.push(handle),
        Err(_) => finish(shared, id, conn),
    }
}

/// Closes a connection, forgets it and only then counts it as no longer open,
/// so `open_connections() == 0` means every socket really is closed.
fn finish(shared: &Shared, id: u64, conn: Arc<Conn>) {
    conn.close();
    lock(&shared.conns).remove(&id);
    drop(conn);
    shared.open.fetch_sub(1, Ordering::SeqCst);
}

/// The connection thread: connects upstream, runs the four pump threads and
/// waits for them. Returns when the connection is over for any reason.
fn serve(shared: &Arc<Shared>, conn: &Arc<Conn>) {
    let upstream_port = shared.upstream_port.load(Ordering::SeqCst);
    let upstream_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port));
    let Ok(upstream) = TcpStream::connect_timeout(&upstream_addr, UPSTREAM_CONNECT_TIMEOUT) else {
        return;
    };
    // Without TCP_NODELAY, Nagle's algorithm and delayed ACKs can hold small
    // writes (a RESP reply) for ~40 ms: latency the test did not ask for.
    let _ = upstream.set_nodelay(true);
    let _ = conn.client.set_nodelay(true);
    {
        let mut slot = lock(&conn.upstream);
        if conn.is_closed() {
            // Cut (or dropped) while connecting: see `Conn::close`.
            let _ = upstream.shutdown(Shutdown::Both);
            return;
        }
        match upstream.try_clone() {
            Ok(clone) => *slot = Some(clone),
            Err(_) => return,
        }
    }
    let pumps = [
        (
            Direction::ToUpstream,
            conn.client.try_clone(),
            upstream.try_clone(),
        ),
        (
            Direction::ToClient,
            upstream.try_clone(),
            conn.client.try_clone(),
        ),
    ];
    let mut handles = Vec::with_capacity(4);
    for (direction, from, to) in pumps {
        let (Ok(from), Ok(to)) = (from, to) else {
            conn.close();
            break;
        };
        let (tx, rx) = mpsc::channel();
        let reader = (Arc::clone(shared), Arc::clone(conn));
        let writer = (Arc::clone(shared), Arc::clone(conn));
        let tag = direction.tag();
        for spawned in [
            shared.spawn(&format!("{tag}-rd"), move || {
                read_pump(&reader.0, &reader.1, direction, from, &tx);
            }),
            shared.spawn(&format!("{tag}-wr"), move || {
                write_pump(&writer.0, &writer.1, direction, to, &rx);
            }),
        ] {
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(_) => conn.close(),
            }
        }
    }
    for handle in handles {
        let _ = handle.join();
    }
}

/// Reads one side until it closes or the connection is closed, stamping each
/// chunk with its arrival time, discarding it in [`Mode::Blackhole`].
///
/// It never waits on the writer (the queue is unbounded), so the sending side
/// is drained even while the writer holds bytes back.
fn read_pump(
    shared: &Shared,
    conn: &Conn,
    direction: Direction,
    mut from: TcpStream,
    tx: &Sender<Message>,
) {
    // The timeout only backs up `Conn::close`, whose shutdown ends the read at once.
    let _ = from.set_read_timeout(Some(IO_POLL));
    let mut buf = vec![0u8; CHUNK_SIZE];
    while !conn.is_closed() {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let arrival = Instant::now();
                if shared.mode().delay(direction).is_none() {
                    continue;
                }
                if tx.send(Message::Data(arrival, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {}
            // A reset or any other error ends this side like a close would.
            Err(_) => break,
        }
    }
    let _ = tx.send(Message::Eof(Instant::now()));
}

/// Writes the chunks from its reader to the other side, each at its due time;
/// on the reader's EOF (once due), closes the whole connection.
fn write_pump(
    shared: &Shared,
    conn: &Conn,
    direction: Direction,
    mut to: TcpStream,
    rx: &Receiver<Message>,
) {
    // The timeout lets a write stuck on a full buffer (frozen peer) notice a
    // close; `shutdown` normally wakes it first.
    let _ = to.set_write_timeout(Some(IO_POLL));
    loop {
        let message = match rx.recv_timeout(IO_POLL) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) if !conn.is_closed() => continue,
            Err(_) => break,
        };
        match message {
            Message::Data(arrival, bytes) => {
                match wait_until_due(shared, conn, direction, arrival, false) {
                    Due::Now => {
                        if write_all(&mut to, &bytes, conn).is_err() {
                            break;
                        }
                    }
                    Due::Discard => {}
                    Due::Closed => break,
                }
            }
            Message::Eof(arrival) => {
                // Closing is forwarded like a byte: after the delay, and not
                // through a blackhole (`hold`).
                let _ = wait_until_due(shared, conn, direction, arrival, true);
                break;
            }
        }
    }
    conn.close();
}

/// The verdict on a chunk whose turn has come.
enum Due {
    /// Its delay has passed: write it.
    Now,
    /// The proxy is in [`Mode::Blackhole`]: drop it.
    Discard,
    /// The connection was closed while waiting.
    Closed,
}

/// Sleeps until `arrival` plus the current delay for `direction`, in steps of
/// at most [`DELAY_STEP`] so that mode changes and closes are seen promptly.
/// With `hold`, [`Mode::Blackhole`] means "wait" rather than [`Due::Discard`].
fn wait_until_due(
    shared: &Shared,
    conn: &Conn,
    direction: Direction,
    arrival: Instant,
    hold: bool,
) -> Due {
    loop {
        if conn.is_closed() {
            return Due::Closed;
        }
        let pause = match shared.mode().delay(direction) {
            None if hold => DELAY_STEP,
            None => return Due::Discard,
            // `checked_add`: an absurd delay (`Duration::MAX`) means "never",
            // not a panic.
            Some(delay) => match arrival.checked_add(delay) {
                Some(due) => match due.checked_duration_since(Instant::now()) {
                    None => return Due::Now,
                    Some(left) if left.is_zero() => return Due::Now,
                    Some(left) => left.min(DELAY_STEP),
                },
                None => DELAY_STEP,
            },
        };
        thread::sleep(pause);
    }
}

/// `write_all` that survives the write timeout: a timed-out write is retried
/// (after checking for a close) instead of failing with part of the chunk sent.
fn write_all(to: &mut TcpStream, mut bytes: &[u8], conn: &Conn) -> io::Result<()> {
    while !bytes.is_empty() {
        if conn.is_closed() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        match to.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
