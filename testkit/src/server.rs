//! A throw-away `redis-server` per test or bench: [`RedisServer`].
//!
//! Each [`RedisServer`] is a private `redis-server` child process listening on a
//! free loopback port, without persistence, writing its log (`redis.log`, plus
//! `redis.stderr` for command-line errors) into its own temporary directory.
//! Tests can kill, restart (same port), pause and resume it to simulate
//! outages, and can read `INFO commandstats` to assert how many commands the
//! code under test actually sent. [`crate::cluster::RedisCluster`] builds a Redis
//! Cluster out of such servers.
//!
//! Everything here is bounded in time: no loop waits forever, and dropping a
//! server (even a paused one) returns promptly. Only `127.0.0.1` is used.
//!
//! Unix only: signals are sent with the `kill` utility (no `unsafe`).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::commandstats::{Calls, base_command, is_bookkeeping, parse_command_stats};

/// Environment variable naming the `redis-server` binary to use instead of the one on `PATH`.
pub const REDIS_SERVER_ENV: &str = "LIVENESS_REDIS_SERVER";

/// How long to wait for a freshly started server to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// Poll interval while waiting for readiness.
const READY_STEP: Duration = Duration::from_millis(10);
/// How many fresh ports to try before giving up on [`RedisServer::start_with_args`].
const START_ATTEMPTS: usize = 5;
/// How long [`RedisServer::restart`] keeps trying to get its old port back.
const RESTART_PORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout of connections handed out by [`RedisServer::connection`]:
/// a paused or wedged server makes a test fail instead of hang.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// Number of log lines quoted in panic messages.
const LOG_TAIL_LINES: usize = 30;

const NOT_FOUND_MESSAGE: &str = "redis-server not found: install it with `apt-get install -y redis-server` (Debian) \
     or set LIVENESS_REDIS_SERVER=/path/to/redis-server";

/// The `redis-server` binary to run: `$LIVENESS_REDIS_SERVER` if set, else
/// `redis-server` found on `PATH`.
///
/// Panics with an actionable message when neither exists, so a missing
/// prerequisite reads as such rather than as an obscure spawn error.
pub fn redis_server_binary() -> PathBuf {
    find_redis_server().unwrap_or_else(|message| panic!("{message}"))
}

/// [`redis_server_binary`], or the actionable message when there is none.
fn find_redis_server() -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os(REDIS_SERVER_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        if path.is_file() {
            return Ok(path);
        }
        return Err(format!(
            "{NOT_FOUND_MESSAGE} ({REDIS_SERVER_ENV}={} is not a file)",
            path.display()
        ));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| NOT_FOUND_MESSAGE.to_owned())
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A private `redis-server` process on a free loopback port.
///
/// Started with `--save "" --appendonly no` (no persistence: a restart loses all
/// data, which is what outage tests want) and `--protected-mode no`, logging to
/// `redis.log` in its own temporary directory (stdout is discarded; stderr,
/// where command-line errors go, is kept in `redis.stderr`).
///
/// Dropping it kills the process (`SIGCONT` then `SIGKILL`, so a paused server
/// dies too), reaps it, and removes the temporary directory.
pub struct RedisServer {
    /// `None` after [`RedisServer::kill`].
    child: Option<Child>,
    port: u16,
    pub(crate) extra: Vec<String>,
    binary: PathBuf,
    /// Dropped after `Drop::drop` has killed the process, so the directory goes last.
    dir: tempfile::TempDir,
}

/// Why one start attempt failed.
enum StartError {
    /// The process exited (typically: port already in use).
    Exited(String),
    /// The process stayed up but never answered in time (it has been killed).
    NotReady(String),
    /// `spawn` itself failed (binary not runnable).
    Spawn(String),
}

impl StartError {
    fn describe(&self) -> &str {
        match self {
            StartError::Exited(s) | StartError::NotReady(s) | StartError::Spawn(s) => s,
        }
    }
}

impl RedisServer {
    /// Starts a server with the default arguments only. See [`RedisServer::start_with_args`].
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// [`RedisServer::start`] for callers that report failure instead of panicking (the
    /// simulator): no `redis-server` to run, or none that came up, is an `Err` that says why.
    pub fn try_start() -> Result<RedisServer, String> {
        try_start_on_fresh_ports("liveness-redis-", Vec::new)
    }

    /// Starts a server, appending `extra` to the default command line
    /// (e.g. `&["--maxmemory", "1mb"]`), and waits until it answers `PING`.
    ///
    /// The port is picked by binding an ephemeral loopback port and releasing it,
    /// which is racy; if the server exits early or never answers, a new port is
    /// tried, at most 5 times. Then it panics, quoting the server log.
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        start_on_fresh_ports("liveness-redis-", || extra.clone())
    }

    /// The TCP port on 127.0.0.1. Stable across [`RedisServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`, ready for `redis::Client::open` or the store's config.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's temporary directory (holds `redis.log`); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, or `None` after [`RedisServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the server log, for diagnostics in assertion messages.
    pub fn log_tail(&self) -> String {
        read_log_tail(self.dir.path())
    }

    /// A fresh synchronous connection with a 2 s connect, read and write timeout,
    /// so a paused or dead server fails the test instead of hanging it.
    ///
    /// Panics if the server cannot be reached.
    pub fn connection(&self) -> redis::Connection {
        try_connect(self.port, &self.extra, CONNECTION_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "cannot connect to test redis-server at {}: {e}\n--- log tail ---\n{}",
                self.url(),
                self.log_tail()
            )
        })
    }

    /// Kills the server (`SIGCONT`, then `SIGKILL`) and waits for it to exit.
    /// Afterwards connections are refused. No-op if it is already down.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process does die from SIGKILL on Linux, but continuing it
            // first keeps this correct wherever that is not so.
            let _ = signal(child.id(), "-CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it is running and starts it again on the same port
    /// with the same arguments, waiting until it answers. All data is lost
    /// (there is no persistence), as after a real crash.
    ///
    /// Retries for up to ~5 s while the port is briefly busy, then panics.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + RESTART_PORT_TIMEOUT;
        loop {
            // Only try to launch once the port can be bound (the listener sets
            // SO_REUSEADDR as redis does, so TIME_WAIT leftovers do not matter).
            let last_error = match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => {
                    drop(listener);
                    match launch(&self.binary, self.dir.path(), self.port, &self.extra) {
                        Ok(child) => {
                            self.child = Some(child);
                            return;
                        }
                        Err(StartError::Spawn(msg)) => panic!("{msg}"),
                        Err(e) => e.describe().to_string(),
                    }
                }
                Err(e) => format!("port {} busy: {e}", self.port),
            };
            if Instant::now() >= deadline {
                panic!(
                    "redis-server failed to restart on port {} within {:?}: {last_error}\n--- log tail ---\n{}",
                    self.port,
                    RESTART_PORT_TIMEOUT,
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes the server with `SIGSTOP`: connections still open at the TCP
    /// level, but nothing is answered — a "slow/hung Redis" rather than a dead one.
    pub fn pause(&self) {
        signal(self.running_pid("pause"), "-STOP").expect("send SIGSTOP to redis-server");
    }

    /// Undoes [`RedisServer::pause`] with `SIGCONT`; queued commands are then served.
    pub fn resume(&self) {
        signal(self.running_pid("resume"), "-CONT").expect("send SIGCONT to redis-server");
    }

    /// `FLUSHALL`: removes every key.
    pub fn flushall(&self) {
        self.query::<()>(&redis::cmd("FLUSHALL"));
    }

    /// `CONFIG RESETSTAT`: zeroes `INFO commandstats`, so later
    /// [`RedisServer::calls`] / [`RedisServer::total_calls`] count from here.
    pub fn reset_stats(&self) {
        self.query::<()>(redis::cmd("CONFIG").arg("RESETSTAT"));
    }

    /// How many times `command` was called since start or the last
    /// [`RedisServer::reset_stats`], from `INFO commandstats`; 0 if never.
    ///
    /// Case-insensitive. A plain name (`"set"`, `"mget"`, `"config"`) counts the
    /// command including all its subcommands; `"config|resetstat"` counts one
    /// subcommand only.
    pub fn calls(&self, command: &str) -> u64 {
        let wanted = command.to_ascii_lowercase();
        self.command_stats()
            .into_iter()
            .filter(|(name, _)| {
                if wanted.contains('|') {
                    *name == wanted
                } else {
                    base_command(name) == wanted
                }
            })
            .map(|(_, calls)| calls)
            .sum()
    }

    /// Total calls of all commands since start or the last
    /// [`RedisServer::reset_stats`], ignoring the harness's own bookkeeping and
    /// connection set-up ([`crate::commandstats::BOOKKEEPING_COMMANDS`]).
    ///
    /// This makes "the store sent nothing to Redis" assertable as `total_calls() == 0`.
    pub fn total_calls(&self) -> u64 {
        self.command_stats()
            .into_iter()
            .filter(|(name, _)| !is_bookkeeping(name))
            .map(|(_, calls)| calls)
            .sum()
    }

    /// `PTTL key`: remaining time to live in ms; -1 without expiry, -2 if absent.
    pub fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key))
    }

    /// `GET key`.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.query(redis::cmd("GET").arg(key))
    }

    /// Runs an arbitrary command given as raw arguments, e.g.
    /// `&[b"SET", b"key", b"1", b"EX", b"90"]`, to plant state behind the
    /// store's back. Panics on a server error.
    pub fn set_raw(&self, args: &[&[u8]]) {
        assert!(!args.is_empty(), "set_raw needs at least a command name");
        let mut cmd = redis::Cmd::new();
        for arg in args {
            cmd.arg(*arg);
        }
        self.query::<redis::Value>(&cmd);
    }

    /// `DBSIZE`: number of keys in the database.
    pub fn dbsize(&self) -> u64 {
        self.query(&redis::cmd("DBSIZE"))
    }

    /// Runs `cmd` on a fresh connection, panicking with context on any error.
    pub(crate) fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut con = self.connection();
        cmd.query(&mut con).unwrap_or_else(|e| {
            panic!(
                "test redis-server at {} rejected {:?}: {e}",
                self.url(),
                describe_cmd(cmd)
            )
        })
    }

    /// `(command name, calls)` pairs from `INFO commandstats`, names lower-case
    /// (subcommands as `parent|sub`).
    pub(crate) fn command_stats(&self) -> Calls {
        let info: String = self.query(redis::cmd("INFO").arg("commandstats"));
        parse_command_stats(&info)
    }

    fn running_pid(&self, action: &str) -> u32 {
        self.pid()
            .unwrap_or_else(|| panic!("cannot {action} the test redis-server: it was killed"))
    }
}

impl Drop for RedisServer {
    /// Kills and reaps the process, then the temporary directory is removed.
    /// Never blocks on a paused server and never panics.
    fn drop(&mut self) {
        self.kill();
    }
}

/// An ephemeral loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|message| panic!("{message}"))
}

fn try_free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot bind an ephemeral port on 127.0.0.1: {e}"))
}

/// Starts a server in a new temporary directory on a free port, with the arguments
/// `extra_for_attempt` gives (it may pick more free ports). A start that fails (a port taken in
/// the meantime) is retried on fresh ports, at most [`START_ATTEMPTS`] times, then it panics
/// quoting the server log.
pub(crate) fn start_on_fresh_ports(
    dir_prefix: &str,
    extra_for_attempt: impl Fn() -> Vec<String>,
) -> RedisServer {
    try_start_on_fresh_ports(dir_prefix, extra_for_attempt)
        .unwrap_or_else(|message| panic!("{message}"))
}

/// [`start_on_fresh_ports`], with the reason as an `Err` instead of a panic.
fn try_start_on_fresh_ports(
    dir_prefix: &str,
    extra_for_attempt: impl Fn() -> Vec<String>,
) -> Result<RedisServer, String> {
    let binary = find_redis_server()?;
    let dir = tempfile::Builder::new()
        .prefix(dir_prefix)
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory for redis-server: {e}"))?;
    let mut failures = Vec::new();
    for _ in 0..START_ATTEMPTS {
        let port = try_free_port()?;
        let extra = extra_for_attempt();
        match launch(&binary, dir.path(), port, &extra) {
            Ok(child) => {
                return Ok(RedisServer {
                    child: Some(child),
                    port,
                    extra,
                    binary,
                    dir,
                });
            }
            Err(StartError::Spawn(msg)) => return Err(msg),
            Err(e) => failures.push(format!("port {port}, args {extra:?}: {}", e.describe())),
        }
    }
    Err(format!(
        "redis-server failed to start after {START_ATTEMPTS} attempts (binary {}):\n  {}\n\
         --- server output in {} ---\n{}",
        binary.display(),
        failures.join("\n  "),
        dir.path().display(),
        read_log_tail(dir.path()),
    ))
}

/// Spawns `redis-server` on `port` and waits until it answers; on failure the
/// process is gone (killed and reaped) before returning.
fn launch(binary: &Path, dir: &Path, port: u16, extra: &[String]) -> Result<Child, StartError> {
    let log = dir.join("redis.log");
    // Everything normal goes to the logfile, but a bad command line is reported
    // on stderr before the logfile is opened; keep that in a file (not a pipe,
    // which could fill up and block the server) so panics can quote it.
    let stderr = fs::File::create(dir.join("redis.stderr"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let mut child = Command::new(binary)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no"])
        .args(["--protected-mode", "no"])
        .arg("--logfile")
        .arg(&log)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| {
            StartError::Spawn(format!(
                "cannot spawn {}: {e}\n{NOT_FOUND_MESSAGE}",
                binary.display()
            ))
        })?;
    match wait_ready(&mut child, port, extra) {
        Ok(()) => Ok(child),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Polls (10 ms steps, at most ~5 s) until the server on `port` answers `PING`
/// and turns out to be *our* child (matching `process_id`), checking on every
/// step that the child is still alive.
fn wait_ready(child: &mut Child, port: u16, extra: &[String]) -> Result<(), StartError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(StartError::Exited(format!(
                    "redis-server exited early ({status})"
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(StartError::Exited(format!("cannot poll redis-server: {e}"))),
        }
        if answers_as(port, extra, child.id()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StartError::NotReady(format!(
                "redis-server did not answer PING within {READY_TIMEOUT:?}"
            )));
        }
        thread::sleep(READY_STEP);
    }
}

/// True if the server on `port` answers `PING` and reports `process_id:pid`
/// (guards against a stranger that grabbed the port in the meantime).
fn answers_as(port: u16, extra: &[String], pid: u32) -> bool {
    let Ok(mut con) = try_connect(port, extra, Duration::from_millis(200)) else {
        return false;
    };
    let pong = redis::cmd("PING").query::<String>(&mut con);
    if !matches!(pong.as_deref(), Ok("PONG")) {
        return false;
    }
    let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut con) else {
        return false;
    };
    info.lines()
        .any(|line| line.trim() == format!("process_id:{pid}"))
}

/// The harness's own URL: with the password of a `--requirepass` server, so that its
/// bookkeeping works on servers started to test authentication.
fn admin_url(port: u16, extra: &[String]) -> String {
    let password = extra
        .iter()
        .position(|arg| arg == "--requirepass")
        .and_then(|i| extra.get(i + 1));
    match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}/"),
        None => format!("redis://127.0.0.1:{port}/"),
    }
}

/// A sync connection to 127.0.0.1:`port` with `timeout` for connect, set-up,
/// reads and writes.
pub(crate) fn try_connect(
    port: u16,
    extra: &[String],
    timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(admin_url(port, extra))?;
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// Sends a signal (`"-STOP"`, `"-CONT"`, ...) with the `kill` utility.
fn signal(pid: u32, sig: &str) -> std::io::Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill {sig} {pid}: {status}")))
    }
}

fn describe_cmd(cmd: &redis::Cmd) -> String {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "<cursor>".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last lines of `dir/redis.log`, preceded by the server's stderr of the
/// latest launch when it is not empty (command-line errors land there).
fn read_log_tail(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(stderr) = fs::read_to_string(dir.join("redis.stderr"))
        && !stderr.trim().is_empty()
    {
        out.push_str("[stderr]\n");
        out.push_str(&tail(&stderr));
        out.push_str("\n[redis.log]\n");
    }
    match fs::read_to_string(dir.join("redis.log")) {
        Ok(text) => out.push_str(&tail(&text)),
        Err(e) => out.push_str(&format!("(no redis.log: {e})")),
    }
    out
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// TLS: a server that serves TLS on a second port, next to the plain one that the harness's
/// own bookkeeping (readiness, `INFO commandstats`, `FLUSHALL`) keeps using.
impl RedisServer {
    /// Starts a server that also listens for TLS on a second free loopback port.
    ///
    /// `tls_args` are the TLS settings without the port, e.g.
    /// `&["--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca,
    /// "--tls-auth-clients", "no"]`; the `redis-server` binary must be built with TLS
    /// (Debian's is). Like [`RedisServer::start_with_args`], a start that fails (a port taken
    /// in the meantime) is retried on fresh ports, at most 5 times, then it panics quoting
    /// the server log.
    pub fn start_tls(tls_args: &[&str]) -> RedisServer {
        start_on_fresh_ports("liveness-redis-tls-", || {
            let mut extra = vec!["--tls-port".to_string(), free_port().to_string()];
            extra.extend(tls_args.iter().map(|s| s.to_string()));
            extra
        })
    }

    /// The TLS port of a server started with [`RedisServer::start_tls`] (or with
    /// `--tls-port` among its arguments).
    ///
    /// Panics if the server has no TLS port.
    pub fn tls_port(&self) -> u16 {
        self.extra
            .iter()
            .position(|arg| arg == "--tls-port")
            .and_then(|i| self.extra.get(i + 1))
            .and_then(|port| port.parse().ok())
            .expect("the test redis-server was not started with a TLS port")
    }

    /// `rediss://127.0.0.1:TLS_PORT/`.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.tls_port())
    }
}
