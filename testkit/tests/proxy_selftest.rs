//! Proves the fault-injection proxy in `testkit::proxy` against a real
//! `redis-server`: every mode, `cut_all`, the counters, and a prompt drop.
//!
//! Timing assertions are lower bounds ("at least the configured delay"), which
//! a correct proxy meets however loaded the machine is. The two upper bounds
//! (pipelining, drop time) leave a margin of a second or more.

use testkit as support;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::RedisServer;
use support::proxy::{Mode, Proxy};

/// Timeout for operations that are expected to succeed: long enough for any
/// delay used here, short enough that a broken proxy fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(5);
/// Read timeout for operations that are expected to get no answer.
const SHORT: Duration = Duration::from_millis(300);

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";

/// A sync connection to `url` with `timeout` for connect, set-up (which does a
/// round trip: `CLIENT SETINFO`), reads and writes.
fn connect(url: &str, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

fn ping(con: &mut redis::Connection) -> redis::RedisResult<String> {
    redis::cmd("PING").query(con)
}

/// A raw socket to the proxy, for byte-level checks the redis client hides
/// (pipelining, partial replies, huge writes).
fn raw_connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn read_exactly(stream: &mut TcpStream, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Polls `condition` every 5 ms until it holds (true) or `timeout` passes (false).
fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// How many threads of this process have a name starting with `prefix`.
#[cfg(target_os = "linux")]
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("list /proc/self/task")
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn pass_forwards_both_ways() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    assert_ne!(proxy.port(), server.port());
    assert_eq!(proxy.upstream_port(), server.port());
    assert_eq!(proxy.url(), format!("redis://127.0.0.1:{}/", proxy.port()));
    assert_eq!(proxy.mode(), Mode::Pass);

    let mut con = connect(&proxy.url(), PATIENCE).unwrap();
    let () = redis::cmd("SET")
        .arg("through")
        .arg("proxy")
        .query(&mut con)
        .unwrap();
    let value: String = redis::cmd("GET").arg("through").query(&mut con).unwrap();
    assert_eq!(value, "proxy");
    // It really went to the upstream server.
    assert_eq!(server.get(b"through").as_deref(), Some(&b"proxy"[..]));
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(proxy.open_connections(), 1);
}

#[test]
fn delay_applies_per_direction_to_existing_connections() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    // Connected in Pass: the mode change must reach an existing connection.
    let mut con = connect(&proxy.url(), PATIENCE).unwrap();
    assert_eq!(ping(&mut con).unwrap(), "PONG");

    let d = Duration::from_millis(200);
    proxy.set_mode(Mode::Delay(d));
    let started = Instant::now();
    assert_eq!(ping(&mut con).unwrap(), "PONG");
    let round_trip = started.elapsed();
    assert!(
        round_trip >= 2 * d,
        "Delay({d:?}) in each direction, yet a round trip took {round_trip:?}"
    );

    for (to_upstream, to_client) in [
        (Duration::ZERO, Duration::from_millis(300)),
        (Duration::from_millis(300), Duration::ZERO),
    ] {
        proxy.set_mode(Mode::DelayEach {
            to_upstream,
            to_client,
        });
        let started = Instant::now();
        assert_eq!(ping(&mut con).unwrap(), "PONG");
        let round_trip = started.elapsed();
        assert!(
            round_trip >= to_upstream + to_client,
            "DelayEach({to_upstream:?} up, {to_client:?} down), yet a round trip took {round_trip:?}"
        );
    }

    proxy.set_mode(Mode::Pass);
    assert_eq!(ping(&mut con).unwrap(), "PONG");
}

#[test]
fn delay_on_replies_only_lets_the_request_land_first() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let reply_delay = Duration::from_secs(2);
    proxy.set_mode(Mode::DelayEach {
        to_upstream: Duration::ZERO,
        to_client: reply_delay,
    });
    let mut raw = raw_connect(proxy.port());
    let sent = Instant::now();
    raw.write_all(b"*3\r\n$3\r\nSET\r\n$6\r\nlanded\r\n$1\r\n1\r\n")
        .unwrap();
    assert!(
        eventually(Duration::from_millis(1500), || server
            .get(b"landed")
            .is_some()),
        "the request did not reach Redis while its reply was held back"
    );
    let before_reply_due = sent.elapsed() < reply_delay - Duration::from_millis(100);
    if before_reply_due {
        raw.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let early = raw.peek(&mut byte);
        assert!(
            matches!(&early, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "the reply arrived early: {early:?}"
        );
        raw.set_nonblocking(false).unwrap();
    }
    assert_eq!(read_exactly(&mut raw, 5).unwrap(), b"+OK\r\n");
    assert!(sent.elapsed() >= reply_delay, "took {:?}", sent.elapsed());
}

#[test]
fn delay_does_not_serialise_pipelined_requests() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let d = Duration::from_millis(300);
    proxy.set_mode(Mode::Delay(d));
    let mut raw = raw_connect(proxy.port());
    let requests: u32 = 10;
    let gap = Duration::from_millis(20);
    let started = Instant::now();
    for i in 0..requests {
        if i > 0 {
            thread::sleep(gap);
        }
        raw.write_all(PING).unwrap();
    }
    let replies = read_exactly(&mut raw, PONG.len() * requests as usize).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(replies, PONG.repeat(requests as usize));
    // The last request left after 9 gaps and then needs 2·d: ~0.8 s.
    assert!(elapsed >= (requests - 1) * gap + 2 * d, "took {elapsed:?}");
    // Had each chunk waited for the one before it, even the mildest form
    // (each direction's writer waiting `d` per chunk, so the directions still
    // overlap) would need (10 + 1)·d = 3.3 s; whole round trips in turn, 6 s.
    assert!(
        elapsed < Duration::from_secs(2),
        "pipelined requests were delayed one after another: {elapsed:?}"
    );
}

#[test]
fn blackhole_swallows_everything_until_pass() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let mut before = connect(&proxy.url(), PATIENCE).unwrap();
    server.reset_stats();
    proxy.set_mode(Mode::Blackhole);

    // An existing connection gets no answer: the client's read timeout fires.
    before.set_read_timeout(Some(SHORT)).unwrap();
    let started = Instant::now();
    let result: redis::RedisResult<()> = redis::cmd("SET")
        .arg("swallowed")
        .arg("1")
        .query(&mut before);
    assert!(result.is_err(), "answered through a blackhole: {result:?}");
    assert!(started.elapsed() < PATIENCE, "took {:?}", started.elapsed());

    // A new connection is accepted (and kept open), but its set-up gets no answer.
    let accepted_before = proxy.accepted();
    let fresh = connect(&proxy.url(), SHORT);
    assert!(fresh.is_err(), "connected through a blackhole");
    assert!(proxy.accepted() > accepted_before);

    // The client's writes never block: the proxy reads and discards. 16 MiB
    // of SETs is far more than the socket buffers on the way could hold.
    let mut raw = raw_connect(proxy.port());
    let set = b"*3\r\n$3\r\nSET\r\n$9\r\nswallowed\r\n$1\r\n2\r\n";
    let flood = set.repeat(16 * 1024 * 1024 / set.len());
    raw.write_all(&flood)
        .expect("a write into the blackhole blocked");
    assert_eq!(
        proxy.open_connections(),
        3,
        "blackholed connections stay open"
    );

    // Nothing reached Redis.
    assert_eq!(server.get(b"swallowed"), None);
    assert_eq!(server.calls("set"), 0);

    proxy.set_mode(Mode::Pass);
    let mut after = connect(&proxy.url(), PATIENCE).expect("a new connection after Pass");
    assert_eq!(ping(&mut after).unwrap(), "PONG");
    let () = redis::cmd("SET")
        .arg("after")
        .arg("pass")
        .query(&mut after)
        .unwrap();
    assert_eq!(server.get(b"after").as_deref(), Some(&b"pass"[..]));
}

#[test]
fn refuse_closes_new_connections_only() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let mut before = connect(&proxy.url(), PATIENCE).unwrap();
    proxy.set_mode(Mode::Refuse);

    let started = Instant::now();
    let refused = connect(&proxy.url(), PATIENCE);
    assert!(refused.is_err(), "connected through Refuse");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a refused connection should fail at once, took {:?}",
        started.elapsed()
    );
    assert_eq!(proxy.accepted(), 2, "refused connections count as accepted");
    assert_eq!(proxy.open_connections(), 1, "but never as open");
    // The connection from before is forwarded as in Pass.
    assert_eq!(ping(&mut before).unwrap(), "PONG");

    proxy.set_mode(Mode::Pass);
    let mut after = connect(&proxy.url(), PATIENCE).unwrap();
    assert_eq!(ping(&mut after).unwrap(), "PONG");
}

#[test]
fn cut_all_closes_open_connections_and_accepts_new_ones() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let mut first = connect(&proxy.url(), PATIENCE).unwrap();
    let mut second = connect(&proxy.url(), PATIENCE).unwrap();
    assert_eq!(ping(&mut first).unwrap(), "PONG");
    assert_eq!(ping(&mut second).unwrap(), "PONG");
    assert_eq!(proxy.open_connections(), 2);

    proxy.cut_all();
    assert!(ping(&mut first).is_err(), "a cut connection still answered");
    assert!(
        ping(&mut second).is_err(),
        "a cut connection still answered"
    );
    assert!(
        eventually(Duration::from_secs(2), || proxy.open_connections() == 0),
        "open_connections() stuck at {} after cut_all",
        proxy.open_connections()
    );

    let mut fresh = connect(&proxy.url(), PATIENCE).expect("a new connection after cut_all");
    assert_eq!(ping(&mut fresh).unwrap(), "PONG");
    assert_eq!(proxy.accepted(), 3);
    assert_eq!(proxy.open_connections(), 1);
}

#[test]
fn counters_track_accepted_and_open_connections() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    assert_eq!((proxy.accepted(), proxy.open_connections()), (0, 0));

    let mut cons: Vec<_> = (0..3)
        .map(|_| connect(&proxy.url(), PATIENCE).unwrap())
        .collect();
    // Each set-up did a round trip, so each connection was accepted by now.
    assert_eq!((proxy.accepted(), proxy.open_connections()), (3, 3));

    // A client closing its side closes the connection through the proxy.
    drop(cons.pop());
    assert!(
        eventually(Duration::from_secs(2), || proxy.open_connections() == 2),
        "open_connections() stuck at {}",
        proxy.open_connections()
    );
    drop(cons);
    assert!(
        eventually(Duration::from_secs(2), || proxy.open_connections() == 0),
        "open_connections() stuck at {}",
        proxy.open_connections()
    );
    assert_eq!(proxy.accepted(), 3, "closing does not change accepted()");
}

#[test]
fn drop_is_prompt_with_busy_connections_and_a_frozen_upstream() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let mut idle = connect(&proxy.url(), PATIENCE).unwrap();
    assert_eq!(ping(&mut idle).unwrap(), "PONG");
    let mut stuck = raw_connect(proxy.port());
    let mut delayed = raw_connect(proxy.port());
    assert!(eventually(Duration::from_secs(2), || proxy
        .open_connections()
        == 3));

    // A frozen upstream with 64 MiB on the way to it: more than the socket
    // buffers between proxy and server hold (even with Linux's receive buffer
    // autotuned up to its 32 MiB maximum), so a writer thread is blocked on a
    // full buffer. The client's own writes complete: the proxy queues them.
    server.pause();
    let megabytes = 64;
    let header = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", megabytes << 20);
    stuck.write_all(header.as_bytes()).unwrap();
    let megabyte = vec![b'x'; 1 << 20];
    for _ in 0..megabytes {
        stuck.write_all(&megabyte).unwrap();
    }
    // And a request sitting in a long delay.
    proxy.set_mode(Mode::Delay(Duration::from_secs(30)));
    delayed.write_all(PING).unwrap();
    // Give the proxy time to fill the buffers towards the frozen server (it
    // moves the 64 MiB in well under this on loopback).
    thread::sleep(Duration::from_millis(200));

    #[cfg(target_os = "linux")]
    let prefix = proxy.thread_prefix().to_string();
    // At least the listener and one thread per connection (their pumps may
    // still be starting): proof that the count below would see leftovers.
    #[cfg(target_os = "linux")]
    assert!(threads_named(&prefix) >= 4, "proxy threads not found");

    // Dropped on another thread so that a hanging drop fails the test
    // instead of hanging it.
    let (dropped_tx, dropped_rx) = mpsc::channel();
    thread::spawn(move || {
        let started = Instant::now();
        drop(proxy);
        let _ = dropped_tx.send(started.elapsed());
    });
    let took = dropped_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("dropping the proxy did not return within 2 s");
    assert!(took < Duration::from_secs(2), "drop took {took:?}");

    // Every thread was joined (the kernel may list one for a moment after it ended).
    #[cfg(target_os = "linux")]
    assert!(
        eventually(Duration::from_secs(1), || threads_named(&prefix) == 0),
        "{} proxy threads outlived the proxy",
        threads_named(&prefix)
    );
    // And the clients see their connections closed.
    let mut byte = [0u8; 1];
    assert!(matches!(delayed.read(&mut byte), Ok(0) | Err(_)));
    assert!(ping(&mut idle).is_err());
    server.resume();
}

#[test]
fn works_from_a_blocked_runtime_with_a_paused_clock() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = RedisServer::start();
        let proxy = Proxy::start(server.port());
        proxy.set_mode(Mode::Delay(Duration::from_millis(50)));
        // The only runtime thread blocks here and tokio's clock stands still,
        // yet the proxy moves the bytes, on wall-clock time.
        let started = Instant::now();
        let mut con = connect(&proxy.url(), PATIENCE).unwrap();
        assert_eq!(ping(&mut con).unwrap(), "PONG");
        assert!(started.elapsed() >= Duration::from_millis(200));
    });
}
