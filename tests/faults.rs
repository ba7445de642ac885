//! Fault injection (invariants 1, 4 and 5): real `redis-server` processes killed, paused,
//! restarted and flushed, and an in-test TCP proxy that delays, cuts and black-holes traffic,
//! while two layered store instances carry 100 beating runtimes.
//!
//! Every case asserts both halves of what a liveness store owes its caller under failure:
//! **bounded** — every call returns within the operation timeout plus 50 ms — and **no false
//! dead** — no instance answers `Ok(false)` for a runtime within its ttl of a touch that
//! returned `Ok`. Each case prints its worst latencies (`cargo test --test faults --
//! --nocapture`).
#![cfg(all(feature = "redis", feature = "layered"))]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use liveness_store::{Error, HealthStatus, LayeredStore, LivenessStore, RedisStore};
use parking_lot::Mutex;
use support::RedisServer;
use support::proxy::{Mode, Proxy};
use support::workload::{Call, Outcome, Report};

const MS: Duration = Duration::from_millis(1);
const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// What "a few ms" past the operation timeout may be, on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(50);
const TTL: Duration = Duration::from_secs(1);
const DEBOUNCE: Duration = Duration::from_millis(300);
const REMOTE_POSITIVE_TTL: Duration = Duration::from_millis(200);
const BEAT: Duration = Duration::from_millis(100);
const READ_EVERY: Duration = Duration::from_millis(20);
const COOLDOWN: Duration = Duration::from_millis(200);
const MAX_COOLDOWN: Duration = Duration::from_millis(400);
/// The largest ttl in use: the layered store writes records with ttl + debounce.
const RECOVERY_FLOOR: Duration = Duration::from_millis(1_300);
const RUNTIMES: usize = 100;
const POOL_SIZE: u32 = 4;

/// A remote as every instance builds it: short breaker cool-downs so recovery fits a test.
async fn remote(url: &str) -> RedisStore {
    RedisStore::builder(url)
        .op_timeout(OP_TIMEOUT)
        .connect_timeout(OP_TIMEOUT)
        .pool_size(POOL_SIZE)
        .breaker_cooldown(COOLDOWN)
        .breaker_max_cooldown(MAX_COOLDOWN)
        .recovery_floor(RECOVERY_FLOOR)
        .build()
        .await
        .expect("connect to redis")
}

async fn instance(url: &str) -> Arc<LayeredStore<RedisStore>> {
    let store = LayeredStore::builder(remote(url).await)
        .debounce(DEBOUNCE)
        .remote_positive_ttl(REMOTE_POSITIVE_TTL)
        .op_timeout(OP_TIMEOUT)
        .build()
        .expect("valid settings");
    Arc::new(store)
}

/// Two instances over one Redis (through a proxy, when the fault is in the network), 100
/// runtimes beating through the first, both reading all of them.
struct World {
    ids: Arc<Vec<String>>,
    instances: [Arc<LayeredStore<RedisStore>>; 2],
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    /// Tasks alive before the load started, to tell leaks from the load's own.
    tasks_before: usize,
}

impl World {
    async fn start(url: &str) -> World {
        let ids: Vec<String> = (0..RUNTIMES).map(|i| format!("runtime-{i}")).collect();
        let instances = [instance(url).await, instance(url).await];
        let mut world = World {
            ids: Arc::new(ids),
            instances,
            calls: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            tasks: tokio::task::JoinSet::new(),
            tasks_before: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
        };
        world.spawn_beater();
        for instance in 0..2 {
            world.spawn_reader(instance);
        }
        // Steady state before any fault: every runtime beaten at least once.
        tokio::time::sleep(3 * BEAT).await;
        world
    }

    fn spawn_beater(&mut self) {
        let (ids, store, calls, stop) = (
            Arc::clone(&self.ids),
            Arc::clone(&self.instances[0]),
            Arc::clone(&self.calls),
            Arc::clone(&self.stop),
        );
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(BEAT);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                // Every runtime beats on its own, concurrently, as heartbeat handlers do.
                let mut beats = tokio::task::JoinSet::new();
                for id in 0..ids.len() {
                    let (ids, store, calls) =
                        (Arc::clone(&ids), Arc::clone(&store), Arc::clone(&calls));
                    beats.spawn(async move {
                        let start = Instant::now();
                        let ok = store.touch(&ids[id], TTL).await.is_ok();
                        let end = Instant::now();
                        calls.lock().push(Call {
                            instance: 0,
                            start,
                            end,
                            what: Outcome::Touch { id, ok },
                        });
                    });
                }
                while beats.join_next().await.is_some() {}
            }
        });
    }

    fn spawn_reader(&mut self, instance: usize) {
        let (ids, store, calls, stop) = (
            Arc::clone(&self.ids),
            Arc::clone(&self.instances[instance]),
            Arc::clone(&self.calls),
            Arc::clone(&self.stop),
        );
        self.tasks.spawn(async move {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let answer = store.is_alive_batch(&refs).await;
                let end = Instant::now();
                calls.lock().push(Call {
                    instance,
                    start,
                    end,
                    what: Outcome::Read(answer),
                });
                tokio::time::sleep(READ_EVERY).await;
            }
        });
    }

    /// Polls (every 10 ms, for at most `limit`) until both instances are healthy and answer
    /// "alive" for every beating runtime; returns how long that took.
    async fn wait_until_recovered(
        &self,
        healthy: fn(HealthStatus) -> bool,
        limit: Duration,
    ) -> Duration {
        let refs: Vec<&str> = self.ids.iter().map(String::as_str).collect();
        let start = Instant::now();
        loop {
            let mut recovered = true;
            for store in &self.instances {
                recovered &= healthy(store.health().status)
                    && matches!(store.is_alive_batch(&refs).await, Ok(a) if a.iter().all(|x| *x));
            }
            if recovered {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "not recovered after {limit:?}: health {:?} / {:?}",
                self.instances[0].health(),
                self.instances[1].health()
            );
            tokio::time::sleep(10 * MS).await;
        }
    }

    /// Stops the load and returns every call it made; checks that no task outlives it.
    async fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(task) = self.tasks.join_next().await {
            task.expect("a load task panicked");
        }
        // No task leak: what is left are the pools' connection tasks (one per connection at
        // most), bounded by the pool sizes. Closed connections' tasks end shortly after.
        let allowed = self.tasks_before + 2 * POOL_SIZE as usize;
        let metrics = tokio::runtime::Handle::current().metrics();
        let deadline = Instant::now() + Duration::from_secs(2);
        while metrics.num_alive_tasks() > allowed && Instant::now() < deadline {
            tokio::time::sleep(10 * MS).await;
        }
        assert!(
            metrics.num_alive_tasks() <= allowed,
            "{} tasks alive after the load, {} before it",
            metrics.num_alive_tasks(),
            self.tasks_before
        );
        let calls = std::mem::take(&mut *self.calls.lock());
        Report::new(Arc::clone(&self.ids), TTL, calls)
    }
}

/// Invariant 5: every call, whatever the fault, ended within the op timeout + 50 ms. Prints
/// the worst latencies; returns how many calls overlapped `window`.
fn assert_bounded(report: &Report, name: &str, window: (Instant, Instant)) -> usize {
    report.assert_bounded(name, OP_TIMEOUT + SLACK);
    report.calls_during(window)
}

/// The fault's bound on recovery: one (maximum) cool-down, one probe, and a read's slack.
const RECOVERY_LIMIT: Duration = Duration::from_millis(400 + 250 + 350);

fn healthy(status: HealthStatus) -> bool {
    status == HealthStatus::Healthy
}

/// A Redis whose data survives a restart (append-only file, synced on every write), so that a
/// kill tests the outage alone, not data loss.
fn durable_server() -> RedisServer {
    RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_then_restarted() {
    let mut server = durable_server();
    let world = World::start(&server.url()).await;
    let fault_start = Instant::now();
    server.kill();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for (i, store) in world.instances.iter().enumerate() {
        let health = store.health();
        assert_eq!(
            health.status,
            HealthStatus::Down,
            "instance {i}'s breaker: {health:?}"
        );
    }
    server.restart();
    let fault_end = Instant::now();
    let took = world.wait_until_recovered(healthy, RECOVERY_LIMIT).await;
    println!("killed: healthy again {took:?} after the restart");
    let report = world.stop().await;
    let during = assert_bounded(&report, "killed", (fault_start, fault_end));
    assert!(during >= 100, "only {during} calls during the outage");
    report.assert_no_false_dead("killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_for_two_seconds() {
    let server = RedisServer::start();
    let world = World::start(&server.url()).await;
    let fault_start = Instant::now();
    server.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = world
        .instances
        .iter()
        .map(|s| s.health().status)
        .collect::<Vec<_>>();
    server.resume();
    let fault_end = Instant::now();
    assert_eq!(
        down,
        [HealthStatus::Down; 2],
        "the breaker opened during the pause"
    );
    let took = world.wait_until_recovered(healthy, RECOVERY_LIMIT).await;
    println!("paused: healthy again {took:?} after SIGCONT");
    let report = world.stop().await;
    let during = assert_bounded(&report, "paused", (fault_start, fault_end));
    assert!(during >= 100, "only {during} calls during the pause");
    report.assert_no_false_dead("paused");
}

/// Data loss: runtimes keep beating; every instance answers "alive" or `Err` (mostly
/// `Recovering`) for them, never "dead", and "alive" for all of them once every runtime has
/// beaten again.
async fn data_loss(name: &str, lose: impl FnOnce(&mut RedisServer)) {
    let mut server = RedisServer::start();
    let world = World::start(&server.url()).await;
    let [writer, reader] = &world.instances;
    // Runtimes that beat once just before the loss and never again: their records are gone,
    // and the reader has never seen them, so only Redis could answer for them.
    let quiet: Vec<String> = (0..10).map(|i| format!("quiet-{i}")).collect();
    let quiet: Vec<&str> = quiet.iter().map(String::as_str).collect();
    for id in &quiet {
        writer.touch(id, TTL).await.unwrap();
    }
    let touched = Instant::now();
    let fault_start = Instant::now();
    lose(&mut server);
    let fault_end = Instant::now();
    // Within their ttl, "dead" would be a false dead: the reader must say Recovering. (Right
    // after a restart, calls may fail on dead connections first.)
    let answer = loop {
        let answer = reader.is_alive_batch(&quiet).await;
        if !matches!(
            answer,
            Err(Error::Backend { .. } | Error::Timeout { .. } | Error::Unavailable)
        ) || touched.elapsed() > TTL
        {
            break answer;
        }
        tokio::time::sleep(10 * MS).await;
    };
    assert!(
        touched.elapsed() < TTL && matches!(answer, Err(Error::Recovering { .. })),
        "{name}: {answer:?} {:?} after the quiet runtimes' touch",
        touched.elapsed()
    );
    // Each instance notices on its next remote call: the reader at once, the writer by its
    // next write, within one debounce window of its last.
    let detection_limit = DEBOUNCE + BEAT + OP_TIMEOUT + RECOVERY_LIMIT;
    let detected = loop {
        let losses = world.instances.iter().map(|s| s.health().data_losses);
        if losses.clone().all(|n| n >= 1) {
            break fault_end.elapsed();
        }
        assert!(
            fault_end.elapsed() < detection_limit,
            "{name}: data losses seen {:?} after {detection_limit:?}",
            losses.collect::<Vec<_>>()
        );
        tokio::time::sleep(10 * MS).await;
    };
    // Trust returns one recovery window after detection: then healthy, every runtime alive.
    let limit = RECOVERY_FLOOR + RECOVERY_LIMIT;
    let healthy_after = world.wait_until_recovered(healthy, limit).await;
    println!(
        "{name}: both instances detected it within {detected:?}, healthy {healthy_after:?} later"
    );
    for store in &world.instances {
        assert_eq!(
            store.health().data_losses,
            1,
            "{name}: the loss was detected once"
        );
    }
    // Correct after: the quiet runtimes' ttl has run out, and now they read dead.
    assert!(touched.elapsed() > TTL);
    assert_eq!(reader.is_alive_batch(&quiet).await.unwrap(), [false; 10]);
    let stats = world.instances[0].stats();
    assert!(
        stats.epoch_resets >= 1,
        "{name}: the writer reset its coalescing"
    );
    let report = world.stop().await;
    assert_bounded(&report, name, (fault_start, fault_end));
    report.assert_no_false_dead(name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_loses_data_and_is_detected() {
    data_loss("restart with data loss", RedisServer::restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_is_detected() {
    data_loss("FLUSHALL", |server| server.flushall()).await;
}

/// A network fault between both instances and Redis, for `lasting`, then healed.
async fn network_fault(name: &str, fault: impl Fn(&Proxy), lasting: Duration) {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let world = World::start(&proxy.url()).await;
    let fault_start = Instant::now();
    let until = fault_start + lasting;
    while Instant::now() < until {
        fault(&proxy);
        tokio::time::sleep(50 * MS).await;
    }
    proxy.set_mode(Mode::Pass);
    let fault_end = Instant::now();
    let took = world.wait_until_recovered(healthy, RECOVERY_LIMIT).await;
    println!("{name}: healthy again {took:?} after the network healed");
    let report = world.stop().await;
    let during = assert_bounded(&report, name, (fault_start, fault_end));
    assert!(
        during >= 100,
        "{name}: only {during} calls during the fault"
    );
    report.assert_no_false_dead(name);
    // No connection leak: dropped connections close; at most the pools' worth stay open.
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.open_connections() > 2 * POOL_SIZE as usize && Instant::now() < deadline {
        tokio::time::sleep(10 * MS).await;
    }
    assert!(
        proxy.open_connections() <= 2 * POOL_SIZE as usize,
        "{name}: {} connections open through the proxy",
        proxy.open_connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_second_of_latency() {
    // 250 ms each way: every round trip costs 500 ms more, twice the op timeout.
    network_fault(
        "500 ms latency",
        |proxy| proxy.set_mode(Mode::Delay(250 * MS)),
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_pipeline() {
    network_fault("connections cut", Proxy::cut_all, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole() {
    network_fault(
        "black hole",
        |proxy| proxy.set_mode(Mode::Blackhole),
        Duration::from_secs(2),
    )
    .await;
}

/// 1,000 concurrent calls at once, `touch` and `is_alive_batch` alternating; returns how
/// many were answered, how many timed out, and the slowest.
async fn thousand_calls(store: &Arc<RedisStore>) -> (usize, usize, Duration) {
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..1_000 {
        let store = Arc::clone(store);
        calls.spawn(async move {
            let id = format!("runtime-{i}");
            let start = Instant::now();
            let result = if i % 2 == 0 {
                store.touch(&id, TTL).await
            } else {
                store.is_alive_batch(&[&id]).await.map(|answer| {
                    assert_eq!(answer.len(), 1);
                })
            };
            (start.elapsed(), result)
        });
    }
    let (mut answered, mut timeouts, mut worst) = (0, 0, Duration::ZERO);
    while let Some(call) = calls.join_next().await {
        let (took, result) = call.expect("no call panics");
        worst = worst.max(took);
        match result {
            Ok(()) => answered += 1,
            Err(Error::Timeout { .. }) => timeouts += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    (answered, timeouts, worst)
}

/// 1,000 concurrent calls on a pool of 2. With replies 100 ms late, the two connections
/// pipeline them all and every call is answered in time. With replies later than the op
/// timeout, every connection ends up broken and being replaced while 1,000 more calls wait to
/// check one out: they time out, each within the op timeout. The breaker is kept out of the
/// way so that every call really waits on the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_stays_bounded() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let store = Arc::new(
        support::store_builder(&proxy.url())
            .op_timeout(OP_TIMEOUT)
            .connect_timeout(OP_TIMEOUT)
            .pool_size(2)
            .failure_threshold(u32::MAX)
            .build()
            .await
            .unwrap(),
    );
    proxy.set_mode(Mode::DelayEach {
        to_upstream: Duration::ZERO,
        to_client: 100 * MS,
    });
    let (answered, _, worst) = thousand_calls(&store).await;
    println!("pool of 2, replies 100 ms late: {answered} of 1,000 answered, worst {worst:?}");
    assert_eq!(
        answered, 1_000,
        "two multiplexed connections carry them all"
    );
    assert!(worst <= OP_TIMEOUT + SLACK, "a call took {worst:?}");
    assert!(
        proxy.open_connections() <= 2,
        "{} connections",
        proxy.open_connections()
    );

    proxy.set_mode(Mode::DelayEach {
        to_upstream: Duration::ZERO,
        to_client: 4 * OP_TIMEOUT,
    });
    for wave in ["replies too late", "connections being replaced"] {
        let (answered, timeouts, worst) = thousand_calls(&store).await;
        println!("pool of 2, {wave}: {answered} answered, {timeouts} timed out, worst {worst:?}");
        assert!(worst <= OP_TIMEOUT + SLACK, "{wave}: a call took {worst:?}");
        assert!(
            timeouts > 0,
            "{wave}: nothing timed out, the test proves nothing"
        );
    }

    // No connection leak: dropping the store closes every connection.
    proxy.set_mode(Mode::Pass);
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.open_connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(10 * MS).await;
    }
    assert_eq!(
        proxy.open_connections(),
        0,
        "connections outlived the store"
    );
}
