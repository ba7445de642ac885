//! End to end: the example heartbeat server (`examples/heartbeat_server/app.rs`, started in
//! process on a free loopback port) over SQLite and a real Redis, driven over HTTP.
//!
//! Intervals are scaled down from the reference's (beat 15 s, ttl 90 s, flush 60 s, writer and
//! sweeper 30 s, stale window 150 s) by 150: beat 100 ms, ttl 600 ms, flush 400 ms, writer and
//! sweeper 200 ms, stale window 1 s.

#[allow(dead_code)] // the example's `main` uses what the test does not
#[path = "../../examples/heartbeat_server/app.rs"]
mod app;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::support::RedisServer;
use liveness_store::{HealthStatus, Instrumented, LivenessStore, StoreConfig};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

const BEAT: Duration = Duration::from_millis(100);
const TTL: Duration = Duration::from_millis(600);
const FLUSH: Duration = Duration::from_millis(400);
const WRITER: Duration = Duration::from_millis(200);
const SWEEP: Duration = Duration::from_millis(200);
const STALE: Duration = Duration::from_millis(1000);

/// The process-wide Prometheus recorder: installed once, shared by every test's server.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("install the Prometheus recorder")
        })
        .clone()
}

/// A server on `backend` (with `redis_url` for the Redis ones), its database in `dir`.
async fn server(backend: &str, redis_url: Option<&str>, dir: &tempfile::TempDir) -> app::Server {
    let handle = prometheus();
    let (backend, redis_url) = (backend.to_owned(), redis_url.map(str::to_owned));
    let config = StoreConfig::from_lookup(|name| match name {
        "LIVENESS_BACKEND" => Some(backend.clone()),
        "LIVENESS_REDIS_URL" => redis_url.clone(),
        "LIVENESS_OP_TIMEOUT_MS" => Some("100".into()),
        // Half the ttl: the layered store clamps its debounce there anyway.
        "LIVENESS_DEBOUNCE_MS" => Some("300".into()),
        // Small but not zero: a Redis that lost its data is distrusted for a while.
        "LIVENESS_RECOVERY_FLOOR_MS" => Some("300".into()),
        // The instances share this machine's clock; the 1 s default would outlast every lease.
        "LIVENESS_LEASE_SKEW_MARGIN_MS" => Some("20".into()),
        _ => None,
    })
    .expect("store config");
    let store = Instrumented::new(liveness_store::open(&config).await.expect("open the store"));
    let settings = app::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        db_path: dir.path().join("heartbeat.db"),
        ttl: TTL,
        flush_interval: FLUSH,
        writer_interval: WRITER,
        sweep_interval: SWEEP,
        stale_window: STALE,
    };
    app::start(settings, store, handle)
        .await
        .expect("start the server")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .unwrap()
}

/// Runtimes beating every [`BEAT`] until stopped; counts the beats the servers took.
struct Beaters {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Beaters {
    fn start(server: &app::Server, ids: &[&str]) -> Beaters {
        Beaters::start_routed(&[server], ids, false)
    }

    /// Each beat goes to one of `servers` drawn at random, as behind a load balancer that
    /// spreads requests; with `leases`, it presents the lease the previous beat's answer
    /// carried, as a runtime would.
    fn start_routed(servers: &[&app::Server], ids: &[&str], leases: bool) -> Beaters {
        let stop = Arc::new(AtomicBool::new(false));
        let addrs: Vec<_> = servers.iter().map(|server| server.addr).collect();
        let tasks = ids
            .iter()
            .enumerate()
            .map(|(index, id)| {
                let urls: Vec<String> = addrs
                    .iter()
                    .map(|addr| format!("http://{addr}/runtimes/{id}/heartbeat"))
                    .collect();
                let stop = Arc::clone(&stop);
                let client = client();
                // xorshift64, seeded per runtime: reproducible draws, no dependency.
                let mut draw = 0x9E37_79B9_7F4A_7C15_u64 ^ (index as u64 + 1);
                tokio::spawn(async move {
                    let mut beats = 0;
                    let mut lease = None::<String>;
                    let mut ticks = tokio::time::interval(BEAT);
                    while !stop.load(Relaxed) {
                        ticks.tick().await;
                        draw ^= draw << 13;
                        draw ^= draw >> 7;
                        draw ^= draw << 17;
                        let url = &urls[(draw % urls.len() as u64) as usize];
                        let mut request = client.post(url);
                        if let Some(lease) = &lease {
                            request = request.header(app::LEASE_HEADER, lease);
                        }
                        let response = request.send().await.expect("heartbeat");
                        assert!(response.status().is_success(), "{url}: {response:?}");
                        if leases {
                            let answered = response.headers().get(app::LEASE_HEADER);
                            lease = answered.map(|value| value.to_str().unwrap().to_owned());
                        }
                        beats += 1;
                    }
                    beats
                })
            })
            .collect();
        Beaters { stop, tasks }
    }

    /// Stops every runtime after its beat in flight; the beats the server answered.
    async fn stop(self) -> u64 {
        self.stop.store(true, Relaxed);
        let mut beats = 0;
        for task in self.tasks {
            beats += task.await.expect("beater");
        }
        beats
    }
}

async fn status(client: &reqwest::Client, server: &app::Server, id: &str) -> Option<String> {
    let response = client
        .get(format!("http://{}/runtimes/{id}", server.addr))
        .send()
        .await
        .expect("GET runtime");
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let row: serde_json::Value = response.json().await.expect("runtime JSON");
    assert_eq!(row["id"], id, "{row}");
    assert!(row["last_seen_at"].is_i64(), "{row}");
    Some(row["status"].as_str().expect("status").to_owned())
}

/// Watches `ids` every 50 ms and remembers every answer other than "online".
fn watch_online(
    server: &app::Server,
    ids: &[&str],
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    let addr = server.addr;
    let stop_flag = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let client = client();
        let mut bad = Vec::new();
        while !stop_flag.load(Relaxed) {
            for id in &ids {
                let url = format!("http://{addr}/runtimes/{id}");
                let row: serde_json::Value =
                    client.get(&url).send().await.unwrap().json().await.unwrap();
                if row["status"] != "online" {
                    bad.push(format!("{:?} after a beat: {row}", Instant::now()));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bad
    });
    (stop, task)
}

/// Polls `condition` every 20 ms for at most `bound`; whether it became true.
async fn eventually(bound: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `{name}` in /metrics:\n{page}"))
}

async fn metrics_page(client: &reqwest::Client, server: &app::Server) -> String {
    client
        .get(format!("http://{}/metrics", server.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// (a) and (d): runtimes that keep beating stay online while Redis is killed and restarted
/// empty, and after a FLUSHALL; the store notices both losses, and `/metrics` shows it working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beating_runtimes_stay_online_through_redis_restart_and_flush() {
    let _alone = crate::support::serial::alone().await;
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = server("layered", Some(&redis.url()), &dir).await;
    let http = client();
    let ids = ["rt-a", "rt-b", "rt-c", "rt-d"];
    let before = metrics_page(&http, &server).await;
    let beaters = Beaters::start(&server, &ids);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in ids {
        assert_eq!(status(&http, &server, id).await.as_deref(), Some("online"));
    }
    let (stop_watch, watch) = watch_online(&server, &ids);

    // Down for longer than the ttl: the touches fail, the server writes the database.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    let store = server.app.store();
    assert!(
        eventually(Duration::from_secs(10), || store.data_losses() >= 1).await,
        "the store never noticed that Redis restarted empty: {:?}",
        store.health()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    redis.flushall();
    assert!(
        eventually(Duration::from_secs(5), || store.data_losses() >= 2).await,
        "the store never noticed the FLUSHALL: {:?}",
        store.health()
    );
    // Past the recovery window, with the sweeper running against the store's answers again.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    stop_watch.store(true, Relaxed);
    let not_online = watch.await.unwrap();
    let beats = beaters.stop().await;
    assert!(
        not_online.is_empty(),
        "beating runtimes went offline:\n{}",
        not_online.join("\n")
    );
    assert!(beats > 100, "only {beats} beats");
    assert!(store.health().is_healthy(), "{:?}", store.health());

    // (d) The store's counters moved, and the exporter shows them.
    let after = metrics_page(&http, &server).await;
    for name in [
        "liveness_store_touches_total",
        "liveness_store_remote_writes_total",
        "liveness_store_coalesced_touches_total",
        "liveness_store_touch_seconds_count",
    ] {
        let (then, now) = (metric(&before, name), metric(&after, name));
        assert!(now > then, "{name} did not move: {then} -> {now}");
    }
    assert!(metric(&after, "liveness_store_epoch_resets_total") >= 2.0);
    assert!(metric(&after, "liveness_store_data_losses") >= 2.0);
    assert!(metric(&after, "liveness_store_health") >= 0.0);
    assert!(
        after.contains("heartbeat_server_db_row_writes_total{kind=\"heartbeat\"}"),
        "{after}"
    );
}

/// (b): a runtime that stops goes offline once its ttl is over, within the stale window plus
/// one sweep; one that keeps beating stays online. And a bad id is a 400, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_that_stops_goes_offline_within_the_stale_window() {
    let _alone = crate::support::serial::alone().await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let server = server("redis", Some(&redis.url()), &dir).await;
    let http = client();
    let steady = Beaters::start(&server, &["rt-steady"]);
    let quitter = Beaters::start(&server, &["rt-quitter"]);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        status(&http, &server, "rt-quitter").await.as_deref(),
        Some("online")
    );
    quitter.stop().await;
    let last_beat = Instant::now();
    let bound = STALE + SWEEP + Duration::from_millis(500); // scheduling slack on a busy machine
    let went_offline = loop {
        let now = Instant::now();
        if status(&http, &server, "rt-quitter").await.as_deref() == Some("offline") {
            break now.duration_since(last_beat);
        }
        assert!(
            now.duration_since(last_beat) < bound,
            "rt-quitter still online {bound:?} after its last beat"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Never before its record expired: no false "dead".
    assert!(
        went_offline >= TTL,
        "offline after {went_offline:?}, before the ttl"
    );
    assert_eq!(
        status(&http, &server, "rt-steady").await.as_deref(),
        Some("online")
    );
    steady.stop().await;

    for bad in ["rt%00x".to_owned(), "x".repeat(300)] {
        let response = http
            .post(format!("http://{}/runtimes/{bad}/heartbeat", server.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("invalid runtime id"),
            "{body}"
        );
    }
}

/// (c): with Redis up the database sees at most one write per runtime per flush interval (plus
/// the first); with the noop store, one per beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_saves_database_writes() {
    let _alone = crate::support::serial::alone().await;
    let redis = RedisServer::start();
    let ids = ["rt-1", "rt-2", "rt-3", "rt-4"];
    let run = Duration::from_millis(2000);
    let mut counts = Vec::new();
    for backend in ["layered", "redis", "noop"] {
        let dir = tempfile::tempdir().unwrap();
        let server = server(backend, Some(&redis.url()), &dir).await;
        let beaters = Beaters::start(&server, &ids);
        tokio::time::sleep(run).await;
        let beats = beaters.stop().await;
        server.app.flush().await;
        let writes = server.app.row_writes.heartbeat.load(Relaxed);
        eprintln!("{backend}: {beats} beats, {writes} database row writes");
        counts.push((backend, beats, writes));
        for id in ids {
            let row = status(&client(), &server, id).await;
            assert_eq!(row.as_deref(), Some("online"), "{backend}: {id}");
        }
    }
    let per_runtime_bound = (run.as_millis() / FLUSH.as_millis()) as u64 + 2;
    for (backend, beats, writes) in &counts {
        if *backend == "noop" {
            assert_eq!(writes, beats, "noop: one row write per beat");
        } else {
            assert!(
                *writes <= ids.len() as u64 * per_runtime_bound,
                "{backend}: {writes} row writes for {beats} beats, over {per_runtime_bound} per \
                 runtime"
            );
            assert!(
                *writes * 3 < *beats,
                "{backend}: {writes} writes, {beats} beats"
            );
        }
    }
}

/// Two instances behind a random router, sharing one Redis and one database. Without leases
/// an instance coalesces only on records it wrote itself, so half the beats reach an instance
/// that writes again; with them, whichever instance a beat reaches coalesces on the record the
/// other wrote. The database sees no more writes either way: the row, not the instance, decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_coalescing_across_two_instances_behind_a_random_router() {
    let _alone = crate::support::serial::alone().await;
    let redis = RedisServer::start();
    let run = Duration::from_millis(3000);
    let mut runs = Vec::new();
    for leases in [false, true] {
        let ids: Vec<String> = (0..4).map(|i| format!("rt-{leases}-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let a = server("layered", Some(&redis.url()), &dir).await;
        let b = server("layered", Some(&redis.url()), &dir).await;
        redis.reset_stats();
        let beaters = Beaters::start_routed(&[&a, &b], &ids, leases);
        tokio::time::sleep(run).await;
        let beats = beaters.stop().await;
        let sets = redis.calls("set");
        a.app.flush().await;
        b.app.flush().await;
        let db_writes =
            a.app.row_writes.heartbeat.load(Relaxed) + b.app.row_writes.heartbeat.load(Relaxed);
        let per_beat = sets as f64 / beats as f64;
        eprintln!(
            "leases {leases}: {beats} beats, {sets} Redis SETs ({per_beat:.2} per beat), \
             {db_writes} database row writes"
        );
        for id in &ids {
            let row = status(&client(), &a, id).await;
            assert_eq!(row.as_deref(), Some("online"), "{id}");
        }
        // The first beat, then a refresh per flush interval from each instance at most: both
        // may queue one before either's writer has flushed it.
        let per_runtime_bound = 1 + 2 * ((run.as_millis() / FLUSH.as_millis()) as u64 + 1);
        assert!(
            db_writes <= ids.len() as u64 * per_runtime_bound && db_writes * 3 < beats,
            "leases {leases}: {db_writes} row writes for {beats} beats"
        );
        runs.push(per_beat);
    }
    let (without, with) = (runs[0], runs[1]);
    // One instance writes about every third beat here (debounce 300 ms, beat 100 ms); leases
    // bring the pair back to that, where without them about every other beat writes.
    assert!(
        with < without * 0.8,
        "leases did not save writes: {with:.2} SETs per beat with, {without:.2} without"
    );
    assert!(with <= 0.45, "{with:.2} SETs per beat with leases");
}

/// A server started while Redis is down starts all the same and serves heartbeats from the
/// database (the store holds none, so every beat is a row write); once Redis starts, the store
/// comes up with no restart and beats coalesce again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_started_while_redis_is_down_serves_from_the_database_then_coalesces() {
    let _alone = crate::support::serial::alone().await;
    let mut redis = RedisServer::start();
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let server = server("layered", Some(&redis.url()), &dir).await;
    let store = server.app.store();
    assert_eq!(store.health().status, HealthStatus::Down);
    let ids = ["rt-1", "rt-2", "rt-3", "rt-4"];

    let beaters = Beaters::start(&server, &ids);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let beats_down = beaters.stop().await;
    server.app.flush().await;
    let writes_down = server.app.row_writes.heartbeat.load(Relaxed);
    assert_eq!(
        writes_down, beats_down,
        "Redis down: one row write per beat"
    );
    for id in ids {
        assert_eq!(
            status(&client(), &server, id).await.as_deref(),
            Some("online")
        );
    }

    redis.restart();
    let started = Instant::now();
    // The breaker's backoff has grown to 2 s at most here (1 s cooldown, doubled).
    assert!(
        eventually(Duration::from_secs(10), || store.health().status
            != HealthStatus::Down)
        .await,
        "{:?}",
        store.health()
    );
    eprintln!(
        "store up {:?} after redis-server started",
        started.elapsed()
    );
    let beaters = Beaters::start(&server, &ids);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let beats_up = beaters.stop().await;
    server.app.flush().await;
    let writes_up = server.app.row_writes.heartbeat.load(Relaxed) - writes_down;
    eprintln!(
        "down: {beats_down} beats, {writes_down} row writes; up: {beats_up} beats, {writes_up} row writes"
    );
    assert!(
        writes_up * 3 < beats_up,
        "Redis up: {writes_up} row writes for {beats_up} beats"
    );
    assert!(redis.calls("set") > 0, "the store writes Redis again");
}
