//! Proves the shared test harness in `testkit` does what the other tests rely on.

use testkit as support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::RedisServer;

/// True while a process with this pid exists (`kill -0`).
fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kill -0")
        .success()
}

/// A sync connection attempt with a short timeout for connect, set-up and reads.
fn ping_with_timeout(url: &str, timeout: Duration) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    redis::cmd("PING").query::<String>(&mut con)
}

#[test]
fn starts_and_answers() {
    let server = RedisServer::start();
    assert_ne!(server.port(), 0);
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/", server.port())
    );
    let mut con = server.connection();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(server.dbsize(), 0);
}

#[test]
fn set_raw_get_pttl_flushall() {
    let server = RedisServer::start();
    server.set_raw(&[b"SET", b"k", b"v1", b"EX", b"90"]);
    assert_eq!(server.get(b"k").as_deref(), Some(&b"v1"[..]));
    let pttl = server.pttl("k");
    assert!(pttl > 80_000 && pttl <= 90_000, "pttl {pttl}");
    assert_eq!(server.pttl("absent"), -2);
    assert_eq!(server.get(b"absent"), None);
    assert_eq!(server.dbsize(), 1);
    server.flushall();
    assert_eq!(server.dbsize(), 0);
}

#[test]
#[should_panic(expected = "rejected")]
fn set_raw_panics_on_server_error() {
    let server = RedisServer::start();
    server.set_raw(&[b"SET", b"k", b"not-a-number"]);
    server.set_raw(&[b"INCR", b"k"]);
}

#[test]
fn extra_args_are_passed() {
    let server = RedisServer::start_with_args(&["--maxmemory", "7mb"]);
    let mut con = server.connection();
    let (_, value): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut con)
        .unwrap();
    assert_eq!(value, (7 * 1024 * 1024).to_string());
}

#[test]
fn calls_count_and_reset_stats() {
    let server = RedisServer::start();
    server.reset_stats();
    assert_eq!(server.calls("set"), 0);
    server.set_raw(&[b"SET", b"a", b"1"]);
    assert_eq!(server.calls("set"), 1);
    assert_eq!(server.calls("SET"), 1, "case-insensitive");
    server.set_raw(&[b"MGET", b"a", b"b"]);
    server.set_raw(&[b"DEL", b"a"]);
    assert_eq!(server.calls("mget"), 1);
    assert_eq!(server.calls("del"), 1);
    assert_eq!(server.calls("nosuchcommand"), 0);
    assert_eq!(server.total_calls(), 3);
    assert!(
        server.calls("config") >= 1,
        "subcommands count towards their parent"
    );
    server.reset_stats();
    assert_eq!(server.calls("set"), 0);
    assert_eq!(server.calls("mget"), 0);
    assert_eq!(server.total_calls(), 0);
}

#[test]
fn total_calls_ignores_harness_bookkeeping() {
    let server = RedisServer::start();
    server.reset_stats();
    assert_eq!(server.total_calls(), 0);
    // The harness's own INFO/CONFIG/CLIENT/PING traffic must not show up.
    for _ in 0..3 {
        let _ = server.calls("set");
        let _ = server.total_calls();
        let mut con = server.connection();
        let _: String = redis::cmd("PING").query(&mut con).unwrap();
    }
    assert_eq!(server.total_calls(), 0);
    server.set_raw(&[b"SET", b"x", b"1"]);
    assert_eq!(server.total_calls(), 1);
}

#[test]
fn restart_loses_data_and_keeps_port() {
    let mut server = RedisServer::start();
    let port = server.port();
    let old_pid = server.pid().unwrap();
    server.set_raw(&[b"SET", b"k", b"v"]);
    assert_eq!(server.dbsize(), 1);
    server.restart();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid().unwrap(), old_pid);
    assert_eq!(server.get(b"k"), None);
    assert_eq!(server.dbsize(), 0);
    // Restart after an explicit kill works as well.
    server.kill();
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(
        ping_with_timeout(&server.url(), Duration::from_secs(2)).unwrap(),
        "PONG"
    );
}

#[test]
fn pause_blocks_and_resume_answers() {
    let server = RedisServer::start();
    server.pause();
    let started = Instant::now();
    let result = ping_with_timeout(&server.url(), Duration::from_millis(300));
    let elapsed = started.elapsed();
    assert!(result.is_err(), "a paused server answered: {result:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "timeout not honoured: {elapsed:?}"
    );
    server.resume();
    assert_eq!(
        ping_with_timeout(&server.url(), Duration::from_secs(2)).unwrap(),
        "PONG"
    );
    server.set_raw(&[b"SET", b"after", b"resume"]);
    assert_eq!(server.get(b"after").as_deref(), Some(&b"resume"[..]));
}

#[test]
fn kill_makes_connections_fail() {
    let mut server = RedisServer::start();
    let pid = server.pid().unwrap();
    server.kill();
    assert_eq!(server.pid(), None);
    assert!(
        !process_exists(pid),
        "redis-server {pid} still alive after kill"
    );
    let result = ping_with_timeout(&server.url(), Duration::from_millis(500));
    assert!(result.is_err(), "a killed server answered: {result:?}");
    server.kill(); // idempotent
}

#[test]
fn drop_of_paused_server_returns() {
    let server = RedisServer::start();
    let pid = server.pid().unwrap();
    let dir = server.dir().to_path_buf();
    assert!(dir.join("redis.log").exists());
    server.pause();
    let started = Instant::now();
    drop(server);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(!process_exists(pid), "redis-server {pid} survived drop");
    assert!(
        !dir.exists(),
        "temporary directory {} not removed",
        dir.display()
    );
}

#[test]
fn binary_is_found() {
    let binary = support::redis_server_binary();
    assert!(binary.is_file(), "{}", binary.display());
}

#[test]
fn try_start_gives_a_server_that_answers() {
    let server = RedisServer::try_start().expect("redis-server starts");
    let pong: String = redis::cmd("PING").query(&mut server.connection()).unwrap();
    assert_eq!(pong, "PONG");
}
