//! The heartbeat server: HTTP handlers, the batched database writer and the sweeper.
//!
//! Shared by `main.rs` (the example) and `tests/it/heartbeat_server.rs` (which starts the same app
//! in process), so the test exercises exactly what the example runs.
//!
//! The flow is the reference server's. SQLite's `agent_runtime` table is the authority on
//! every runtime's status; the liveness store only saves database writes:
//!
//! - `POST /runtimes/{id}/heartbeat` touches the store. The row is written at once when the
//!   runtime was offline or never seen (a state transition), and queued for the batched writer
//!   when the touch failed, the store is the noop store, or the row's `last_seen_at` is older
//!   than the flush interval. Otherwise the beat costs no database write. The beat may carry a
//!   lease (header `X-Liveness-Lease`, from the previous beat's answer, whichever instance gave
//!   it); the answer carries the next one (the same header, and `lease` in the JSON), so that
//!   behind any load balancer an instance coalesces beats another instance wrote.
//! - The writer flushes the queue every writer interval, in one transaction.
//! - The sweeper selects the online runtimes whose `last_seen_at` is older than the stale
//!   window, asks the store which are alive, marks the others offline and forgets them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use liveness_store::{Error, Instrumented, Lease, LivenessStore, validate};
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tokio::task::JoinHandle;

/// The store as the server holds it: whatever `open` built, wrapped for metrics.
pub(crate) type Store = Instrumented<Arc<dyn LivenessStore>>;

/// Every interval and address the server uses; each is a flag or an environment variable.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where to listen (`--listen`, `HEARTBEAT_LISTEN`). Defaults to `127.0.0.1:8080`.
    pub(crate) listen: SocketAddr,
    /// The SQLite file (`--db`, `HEARTBEAT_DB`). Defaults to `heartbeat.db`.
    pub(crate) db_path: PathBuf,
    /// The ttl of each touch (`--ttl-ms`, `HEARTBEAT_TTL_MS`). Defaults to 90 s.
    pub(crate) ttl: Duration,
    /// A row whose `last_seen_at` is older than this is refreshed by the next beat even when
    /// the touch succeeded (`--flush-interval-ms`, `HEARTBEAT_FLUSH_INTERVAL_MS`). Defaults to
    /// 60 s. It keeps the database within one flush interval plus one beat of the truth, so
    /// the database alone never calls a beating runtime stale.
    pub(crate) flush_interval: Duration,
    /// How often the batched writer flushes its queue (`--writer-interval-ms`,
    /// `HEARTBEAT_WRITER_INTERVAL_MS`). Defaults to 30 s.
    pub(crate) writer_interval: Duration,
    /// How often the sweeper runs (`--sweep-interval-ms`, `HEARTBEAT_SWEEP_INTERVAL_MS`).
    /// Defaults to 30 s.
    pub(crate) sweep_interval: Duration,
    /// A row older than this is a candidate for offline (`--stale-window-ms`,
    /// `HEARTBEAT_STALE_WINDOW_MS`). Defaults to 150 s.
    pub(crate) stale_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            db_path: PathBuf::from("heartbeat.db"),
            ttl: Duration::from_secs(90),
            flush_interval: Duration::from_secs(60),
            writer_interval: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(30),
            stale_window: Duration::from_secs(150),
        }
    }
}

/// `--help` text.
pub(crate) const USAGE: &str = "\
heartbeat_server: an example heartbeat server on SQLite with liveness-store

flags (or environment variables):
  --listen ADDR              HEARTBEAT_LISTEN              default 127.0.0.1:8080
  --db PATH                  HEARTBEAT_DB                  default heartbeat.db
  --ttl-ms MS                HEARTBEAT_TTL_MS              default 90000
  --flush-interval-ms MS     HEARTBEAT_FLUSH_INTERVAL_MS   default 60000
  --writer-interval-ms MS    HEARTBEAT_WRITER_INTERVAL_MS  default 30000
  --sweep-interval-ms MS     HEARTBEAT_SWEEP_INTERVAL_MS   default 30000
  --stale-window-ms MS       HEARTBEAT_STALE_WINDOW_MS     default 150000

The store comes from LIVENESS_* (LIVENESS_BACKEND=noop|memory|redis|layered,
LIVENESS_REDIS_URL, ...); nothing set is the noop store.";

impl Settings {
    /// Reads the flags in `args` (without the program name), then the environment through
    /// `env` for what the flags left unset. A flag wins over its variable.
    ///
    /// # Errors
    ///
    /// A message naming the flag or variable when a value is malformed or unknown, or when
    /// the flush interval is not shorter than the stale window (then the database alone would
    /// call beating runtimes stale).
    pub(crate) fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, String> {
        const FLAGS: [(&str, &str); 7] = [
            ("--listen", "HEARTBEAT_LISTEN"),
            ("--db", "HEARTBEAT_DB"),
            ("--ttl-ms", "HEARTBEAT_TTL_MS"),
            ("--flush-interval-ms", "HEARTBEAT_FLUSH_INTERVAL_MS"),
            ("--writer-interval-ms", "HEARTBEAT_WRITER_INTERVAL_MS"),
            ("--sweep-interval-ms", "HEARTBEAT_SWEEP_INTERVAL_MS"),
            ("--stale-window-ms", "HEARTBEAT_STALE_WINDOW_MS"),
        ];
        let mut given: HashMap<&str, String> = HashMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let Some((name, _)) = FLAGS.iter().find(|(name, _)| *name == flag) else {
                return Err(format!("unknown argument `{flag}`\n\n{USAGE}"));
            };
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))?;
            given.insert(name, value);
        }
        let value = |flag: &str| -> Option<(String, String)> {
            let (_, var) = FLAGS.iter().find(|(name, _)| *name == flag)?;
            match given.get(flag) {
                Some(value) => Some((flag.to_owned(), value.clone())),
                None => env(var)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| ((*var).to_owned(), v)),
            }
        };
        let millis = |flag: &str, default: Duration| -> Result<Duration, String> {
            match value(flag) {
                None => Ok(default),
                Some((name, text)) => match text.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
                    _ => Err(format!(
                        "{name}=`{text}` is not a positive whole number of milliseconds"
                    )),
                },
            }
        };
        let defaults = Settings::default();
        let listen = match value("--listen") {
            None => defaults.listen,
            Some((name, text)) => text
                .trim()
                .parse()
                .map_err(|_| format!("{name}=`{text}` is not an address like 127.0.0.1:8080"))?,
        };
        let settings = Settings {
            listen,
            db_path: value("--db").map_or(defaults.db_path, |(_, path)| PathBuf::from(path)),
            ttl: millis("--ttl-ms", defaults.ttl)?,
            flush_interval: millis("--flush-interval-ms", defaults.flush_interval)?,
            writer_interval: millis("--writer-interval-ms", defaults.writer_interval)?,
            sweep_interval: millis("--sweep-interval-ms", defaults.sweep_interval)?,
            stale_window: millis("--stale-window-ms", defaults.stale_window)?,
        };
        liveness_store::validate::ttl(settings.ttl).map_err(|e| format!("--ttl-ms: {e}"))?;
        if settings.flush_interval >= settings.stale_window {
            return Err(format!(
                "the flush interval ({:?}) must be shorter than the stale window ({:?}): the \
                 database is refreshed once per flush interval, and the sweeper trusts it when \
                 the store cannot answer",
                settings.flush_interval, settings.stale_window
            ));
        }
        Ok(settings)
    }
}

/// A row of `agent_runtime`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RuntimeRow {
    /// The runtime id.
    pub(crate) id: String,
    /// `online` or `offline`.
    pub(crate) status: String,
    /// The last beat the database knows of, in Unix milliseconds.
    pub(crate) last_seen_at: i64,
}

/// The database: one SQLite connection behind a mutex. Every call runs on a blocking thread
/// (`spawn_blocking`), so the lock is never held across an `.await` and never stalls the
/// async workers.
struct Db {
    conn: Mutex<Connection>,
}

const UPSERT_ONLINE: &str = "INSERT INTO agent_runtime (id, status, last_seen_at) \
     VALUES (?1, 'online', ?2) \
     ON CONFLICT (id) DO UPDATE SET status = 'online', \
     last_seen_at = max(last_seen_at, excluded.last_seen_at)";

impl Db {
    fn open(path: &std::path::Path) -> rusqlite::Result<Db> {
        let conn = Connection::open(path)?;
        // WAL: readers (GET, the sweeper's select) do not wait for the writer's transaction.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Several instances may share the file, as a fleet shares its database: a writer waits
        // for another's transaction instead of failing with "database is locked".
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS agent_runtime (
                 id TEXT PRIMARY KEY,
                 status TEXT NOT NULL,
                 last_seen_at INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS agent_runtime_stale
                 ON agent_runtime (status, last_seen_at);",
        )?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    fn row(&self, id: &str) -> rusqlite::Result<Option<RuntimeRow>> {
        self.conn
            .lock()
            .prepare_cached("SELECT id, status, last_seen_at FROM agent_runtime WHERE id = ?1")?
            .query_row(params![id], |row| {
                Ok(RuntimeRow {
                    id: row.get(0)?,
                    status: row.get(1)?,
                    last_seen_at: row.get(2)?,
                })
            })
            .optional()
    }

    /// Writes `beats` as online rows in one transaction; `last_seen_at` never moves back.
    fn write_beats(&self, beats: &[(String, i64)]) -> rusqlite::Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(UPSERT_ONLINE)?;
            for (id, seen) in beats {
                upsert.execute(params![id, seen])?;
            }
        }
        tx.commit()
    }

    fn stale_online(&self, cutoff: i64) -> rusqlite::Result<Vec<String>> {
        let conn = self.conn.lock();
        let mut select = conn.prepare_cached(
            "SELECT id FROM agent_runtime WHERE status = 'online' AND last_seen_at < ?1",
        )?;
        let ids = select.query_map(params![cutoff], |row| row.get(0))?;
        ids.collect()
    }

    /// Marks `ids` offline, each only if it is still online and stale: a beat written since
    /// the select keeps its runtime online. Returns the ids it flipped.
    fn mark_offline(&self, ids: &[String], cutoff: i64) -> rusqlite::Result<Vec<String>> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let mut flipped = Vec::new();
        {
            let mut update = tx.prepare_cached(
                "UPDATE agent_runtime SET status = 'offline' \
                 WHERE id = ?1 AND status = 'online' AND last_seen_at < ?2",
            )?;
            for id in ids {
                if update.execute(params![id, cutoff])? == 1 {
                    flipped.push(id.clone());
                }
            }
        }
        tx.commit()?;
        Ok(flipped)
    }
}

/// Beats waiting for the batched writer.
#[derive(Default)]
struct Queue {
    /// One entry per beat that needs the database, in arrival order. Not merged per runtime,
    /// so that the row-write count is the count of beats that needed the database, which is
    /// what the store saves (a real server may well merge them).
    beats: Vec<(String, i64)>,
    /// The newest queued beat of each runtime: the row's `last_seen_at` once flushed.
    newest: HashMap<String, i64>,
}

/// Database row writes, by kind.
#[derive(Debug, Default)]
pub(crate) struct RowWrites {
    /// Rows written for beats (state transitions at once, refreshes through the writer).
    pub(crate) heartbeat: AtomicU64,
    /// Rows the sweeper marked offline.
    pub(crate) offline: AtomicU64,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SweepReport {
    /// Online rows older than the stale window.
    pub(crate) stale: usize,
    /// Of those, the ones marked offline.
    pub(crate) flipped: Vec<String>,
    /// Whether reaping was skipped because the store is recovering after data loss.
    pub(crate) skipped_recovering: bool,
}

/// The server's state, shared by handlers and background tasks.
pub(crate) struct App {
    settings: Settings,
    store: Arc<Store>,
    db: Arc<Db>,
    queue: Mutex<Queue>,
    /// Database row writes of this app (the `heartbeat_server_db_row_writes_total` metric
    /// counts those of the process).
    pub(crate) row_writes: RowWrites,
    prometheus: PrometheusHandle,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("settings", &self.settings)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A running server; dropping it stops the listener, the writer and the sweeper.
#[derive(Debug)]
pub(crate) struct Server {
    /// Where it listens (with the real port when `listen` asked for port 0).
    pub(crate) addr: SocketAddr,
    /// Its state, for tests.
    pub(crate) app: Arc<App>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Boxed errors of start-up.
pub(crate) type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the database, binds the listener and starts the server, the writer and the
/// sweeper. `prometheus` renders `/metrics`; its recorder must be installed before `store`
/// was wrapped, so that the store's metrics reach it.
///
/// # Errors
///
/// The database cannot be opened or the address cannot be bound.
pub(crate) async fn start(
    settings: Settings,
    store: Store,
    prometheus: PrometheusHandle,
) -> Result<Server, StartError> {
    let path = settings.db_path.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&path)).await??;
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let app = Arc::new(App {
        settings,
        store: Arc::new(store),
        db: Arc::new(db),
        queue: Mutex::new(Queue::default()),
        row_writes: RowWrites::default(),
        prometheus,
    });
    let router = Router::new()
        .route("/runtimes/{id}/heartbeat", post(heartbeat))
        .route("/runtimes/{id}", get(runtime))
        .route("/metrics", get(metrics_page))
        .with_state(Arc::clone(&app));
    let serve = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "heartbeat server: the listener failed");
        }
    });
    let writer = tokio::spawn(every(
        app.settings.writer_interval,
        Arc::clone(&app),
        |app| {
            Box::pin(async move {
                app.flush().await;
            })
        },
    ));
    let sweeper = tokio::spawn(every(
        app.settings.sweep_interval,
        Arc::clone(&app),
        |app| {
            Box::pin(async move {
                app.sweep().await;
            })
        },
    ));
    tracing::info!(%addr, settings = ?app.settings, store = ?app.store, "heartbeat server listening");
    Ok(Server {
        addr,
        app,
        tasks: vec![serve, writer, sweeper],
    })
}

type Job = fn(Arc<App>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs `job` every `period`; a slow run delays the next instead of piling runs up.
async fn every(period: Duration, app: Arc<App>, job: Job) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is immediate; start one period in
    loop {
        ticks.tick().await;
        job(Arc::clone(&app)).await;
    }
}

fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// How a beat reached the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DbWrite {
    /// A state transition (never seen, or offline): written before answering.
    Now,
    /// Queued for the batched writer: the touch failed, the store is the noop store, or the
    /// row was older than the flush interval.
    Queued,
    /// No database write: the store holds the beat.
    None,
}

impl App {
    /// The settings it runs with.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store, for tests.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Runs `f` on the database on a blocking thread.
    async fn db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Db) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let db = Arc::clone(&self.db);
        match tokio::task::spawn_blocking(move || f(&db)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(ApiError::database(&error)),
            Err(error) => Err(ApiError::database(&error)),
        }
    }

    /// One beat of `id` (already validated), with the lease the runtime presented; the
    /// database write it cost, and the lease to answer with.
    pub(crate) async fn beat(
        &self,
        id: &str,
        presented: Option<&Lease>,
    ) -> Result<(DbWrite, Lease), ApiError> {
        let touched = self
            .store
            .touch_lease(id, self.settings.ttl, presented)
            .await;
        // The noop store's `Ok` means nothing was recorded: the database is the only truth.
        let held = self.store.available() && touched.is_ok();
        let lease = touched.unwrap_or_default();
        let now = now_ms();
        let owned = id.to_owned();
        let row = self.db(move |db| db.row(&owned)).await?;
        let write = match &row {
            None => DbWrite::Now,
            Some(row) if row.status != "online" => DbWrite::Now,
            Some(row) => {
                let queued = self.queue.lock().newest.get(id).copied();
                let last_seen = queued.map_or(row.last_seen_at, |q| q.max(row.last_seen_at));
                if !held || now - last_seen >= millis(self.settings.flush_interval) {
                    DbWrite::Queued
                } else {
                    DbWrite::None
                }
            }
        };
        match write {
            DbWrite::Now => {
                let beat = vec![(id.to_owned(), now)];
                self.db(move |db| db.write_beats(&beat)).await?;
                self.count_heartbeat_rows(1);
            }
            DbWrite::Queued => {
                let mut queue = self.queue.lock();
                queue.beats.push((id.to_owned(), now));
                let newest = queue.newest.entry(id.to_owned()).or_insert(now);
                *newest = (*newest).max(now);
            }
            DbWrite::None => {}
        }
        Ok((write, lease))
    }

    fn count_heartbeat_rows(&self, rows: u64) {
        self.row_writes.heartbeat.fetch_add(rows, Relaxed);
        metrics::counter!("heartbeat_server_db_row_writes_total", "kind" => "heartbeat")
            .increment(rows);
    }

    /// The batched writer: every queued beat in one transaction. On a database error the
    /// beats go back to the queue for the next flush.
    pub(crate) async fn flush(&self) {
        let beats = {
            let mut queue = self.queue.lock();
            queue.newest.clear();
            std::mem::take(&mut queue.beats)
        };
        if beats.is_empty() {
            return;
        }
        let rows = beats.len() as u64;
        let db = Arc::clone(&self.db);
        let result = tokio::task::spawn_blocking(move || {
            let result = db.write_beats(&beats);
            (beats, result)
        })
        .await;
        match result {
            Ok((_, Ok(()))) => self.count_heartbeat_rows(rows),
            Ok((beats, Err(error))) => {
                tracing::error!(%error, rows, "heartbeat server: flushing beats failed; retrying at the next flush");
                let mut queue = self.queue.lock();
                for (id, seen) in &beats {
                    let newest = queue.newest.entry(id.clone()).or_insert(*seen);
                    *newest = (*newest).max(*seen);
                }
                let later = std::mem::replace(&mut queue.beats, beats);
                queue.beats.extend(later);
            }
            Err(error) => {
                tracing::error!(%error, rows, "heartbeat server: the flush task failed; its beats are lost");
            }
        }
    }

    /// One sweep: flush the queue (so the database is current), select the stale online
    /// rows, ask the store, mark offline those it does not call alive, forget them.
    ///
    /// On `Err(Recovering)` nothing is reaped: the store has seen Redis lose its data, and
    /// runtimes whose records were lost are still beating with successful touches, which
    /// write the database only once per flush interval. Reaping on the database's word would
    /// be safe here only as long as the flush interval stays well inside the stale window, so
    /// the sweeper waits out the window instead (at most the recovery window, one ttl). On any
    /// other `Err` (Redis down, breaker open, timeout) it trusts the database's stale window,
    /// as the reference does: every touch that failed queued a database write, and the queue
    /// was flushed before the select.
    pub(crate) async fn sweep(&self) -> SweepReport {
        self.flush().await;
        let cutoff = now_ms() - millis(self.settings.stale_window);
        let stale = match self.db(move |db| db.stale_online(cutoff)).await {
            Ok(stale) => stale,
            Err(error) => {
                tracing::error!(error = %error.message, "heartbeat server: the sweep's select failed");
                return SweepReport::default();
            }
        };
        let mut report = SweepReport {
            stale: stale.len(),
            ..SweepReport::default()
        };
        if stale.is_empty() {
            return report;
        }
        let ids: Vec<&str> = stale.iter().map(String::as_str).collect();
        let dead: Vec<String> = match self.store.is_alive_batch(&ids).await {
            Ok(alive) => stale
                .iter()
                .zip(alive)
                .filter(|(_, alive)| !alive)
                .map(|(id, _)| id.clone())
                .collect(),
            Err(Error::Recovering { remaining }) => {
                tracing::warn!(
                    stale = stale.len(),
                    ?remaining,
                    "heartbeat server: the store is recovering after data loss; not reaping \
                     this sweep"
                );
                report.skipped_recovering = true;
                return report;
            }
            // The noop store always lands here: the database is the only truth.
            Err(_) => stale.clone(),
        };
        if dead.is_empty() {
            return report;
        }
        let flipped = match self.db(move |db| db.mark_offline(&dead, cutoff)).await {
            Ok(flipped) => flipped,
            Err(error) => {
                tracing::error!(error = %error.message, "heartbeat server: marking runtimes offline failed");
                return report;
            }
        };
        self.row_writes
            .offline
            .fetch_add(flipped.len() as u64, Relaxed);
        metrics::counter!("heartbeat_server_db_row_writes_total", "kind" => "offline")
            .increment(flipped.len() as u64);
        for id in &flipped {
            self.store.forget(id).await;
        }
        if !flipped.is_empty() {
            tracing::info!(
                offline = flipped.len(),
                "heartbeat server: runtimes went offline"
            );
        }
        report.flipped = flipped;
        report
    }
}

/// An error answer: a status and a message, as JSON `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn bad_id(error: &Error) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("bad runtime id: {error}"),
        }
    }

    /// Database errors carry no secret (the path of a local file at most); logged and
    /// answered as 500.
    fn database(error: &dyn fmt::Display) -> ApiError {
        tracing::error!(%error, "heartbeat server: database error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("database error: {error}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// The header a beat's lease travels in, both ways.
pub(crate) const LEASE_HEADER: &str = "x-liveness-lease";

#[derive(Serialize)]
struct BeatAnswer {
    id: String,
    db_write: DbWrite,
    /// The lease to present with the next beat (`-`: none).
    lease: String,
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<([(&'static str, String); 1], Json<BeatAnswer>), ApiError> {
    validate::runtime_id(&id).map_err(|e| ApiError::bad_id(&e))?;
    // A lease that does not parse is no lease: it costs the beat a write, never an error.
    let presented: Option<Lease> = headers
        .get(LEASE_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(|text| text.parse().unwrap_or_default());
    let (db_write, lease) = app.beat(&id, presented.as_ref()).await?;
    let lease = lease.to_string();
    Ok((
        [(LEASE_HEADER, lease.clone())],
        Json(BeatAnswer {
            id,
            db_write,
            lease,
        }),
    ))
}

async fn runtime(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<RuntimeRow>, ApiError> {
    validate::runtime_id(&id).map_err(|e| ApiError::bad_id(&e))?;
    let owned = id.clone();
    match app.db(move |db| db.row(&owned)).await? {
        Some(row) => Ok(Json(row)),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no runtime `{id}` has beaten yet"),
        }),
    }
}

async fn metrics_page(State(app): State<Arc<App>>) -> String {
    // Current figures for this scrape, not those of the last publishing call.
    app.store.publish();
    app.prometheus.run_upkeep();
    app.prometheus.render()
}
