//! A throw-away `redis-server` for runs that need Redis when none was given.
//!
//! The same recipe as the test harness (`tests/support/`), which the binary cannot use: the
//! binary from `$LIVENESS_REDIS_SERVER` or `PATH`, a free loopback port, no persistence
//! (`--save "" --appendonly no`), ready once it answers `PING` as our child, killed on drop.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Names the `redis-server` binary to use instead of the one on `PATH`.
pub(crate) const REDIS_SERVER_ENV: &str = "LIVENESS_REDIS_SERVER";

const READY_TIMEOUT: Duration = Duration::from_secs(5);
const READY_STEP: Duration = Duration::from_millis(10);
/// Fresh ports to try: a port found free can be taken before the server binds it.
const START_ATTEMPTS: usize = 5;
const LOG_TAIL_LINES: usize = 20;

/// A `redis-server` child process on 127.0.0.1, killed (and its directory removed) on drop.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Starts a server and waits until it answers, or says why it could not.
    pub(crate) fn start() -> Result<RedisServer, String> {
        let binary = binary()?;
        let dir = std::env::temp_dir().join(format!("liveness-sim-redis-{}", std::process::id()));
        fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {} for redis-server: {e}", dir.display()))?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match launch(&binary, &dir, port) {
                Ok(child) => return Ok(RedisServer { child, port, dir }),
                Err(failure) => failures.push(format!("port {port}: {failure}")),
            }
        }
        let log = log_tail(&dir);
        let _ = fs::remove_dir_all(&dir);
        Err(format!(
            "{} did not start after {START_ATTEMPTS} attempts:\n  {}\n--- its log ---\n{log}",
            binary.display(),
            failures.join("\n  ")
        ))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The error when there is no `redis-server` to start: what to install, or what to pass.
fn not_found(detail: &str) -> String {
    format!(
        "this run needs Redis, and there is no redis-server to start ({detail}): install it \
         with `apt-get install -y redis-server` (Debian), set {REDIS_SERVER_ENV}=/path/to/\
         redis-server, or pass --redis-url redis://HOST:PORT/"
    )
}

fn binary() -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os(REDIS_SERVER_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        if is_executable(&path) {
            return Ok(path);
        }
        return Err(not_found(&format!(
            "{REDIS_SERVER_ENV}={} is not an executable file",
            path.display()
        )));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| not_found("none on PATH"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An ephemeral loopback port that was free a moment ago.
fn free_port() -> Result<u16, String> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// Spawns the server on `port` and waits until it answers; on failure it is gone again.
fn launch(binary: &Path, dir: &Path, port: u16) -> Result<Child, String> {
    // A bad command line is reported on stderr, before the log file is opened.
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
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| not_found(&format!("cannot run {}: {e}", binary.display())))?;
    match wait_ready(&mut child, port) {
        Ok(()) => Ok(child),
        Err(failure) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(failure)
        }
    }
}

/// Polls until the server on `port` answers `PING` as our child (not a stranger that took the
/// port), for at most [`READY_TIMEOUT`].
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Err(format!("redis-server exited early ({status})")),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot poll redis-server: {e}")),
        }
        if answers_as(port, child.id()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server did not answer PING within {READY_TIMEOUT:?}"
            ));
        }
        thread::sleep(READY_STEP);
    }
}

fn answers_as(port: u16, pid: u32) -> bool {
    let timeout = Duration::from_millis(200);
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut connection) = client.get_connection_with_timeout(timeout) else {
        return false;
    };
    if connection.set_read_timeout(Some(timeout)).is_err() {
        return false;
    }
    let pong: redis::RedisResult<String> = redis::cmd("PING").query(&mut connection);
    if pong.as_deref() != Ok("PONG") {
        return false;
    }
    let info: redis::RedisResult<String> = redis::cmd("INFO").arg("server").query(&mut connection);
    info.is_ok_and(|info| {
        info.lines()
            .any(|line| line.trim() == format!("process_id:{pid}"))
    })
}

/// The end of the server's stderr and log, for an error message.
fn log_tail(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["redis.stderr", "redis.log"] {
        if let Ok(text) = fs::read_to_string(dir.join(name)) {
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"));
            out.push('\n');
        }
    }
    out
}
