//! Fault injection (invariants 1, 4 and 5): real `redis-server` processes killed, paused,
//! restarted and flushed, and an in-test TCP proxy that delays, cuts and black-holes traffic,
//! while two layered store instances carry 100 beating runtimes.
//!
//! Every case asserts both halves of what a liveness store owes its caller under failure:
//! **bounded** — every call returns within the operation timeout plus 50 ms — and **no false
//! dead** — no instance answers `Ok(false)` for a runtime within its ttl of a touch that
//! returned `Ok`. Each case prints its worst latencies (`cargo test --all-features --test it
//! faults:: -- --nocapture`).
#![cfg(all(feature = "redis", feature = "layered"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::RedisServer;
use crate::support::proxy::{Mode, Proxy};
use crate::support::workload::{Call, Outcome, Report};
use liveness_store::{Error, HealthStatus, LayeredStore, LivenessStore, RedisStore};
use parking_lot::Mutex;

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
/// How long "dead" is distrusted after a loss: one and a half floors.
const RECOVERY_WINDOW: Duration = Duration::from_millis(1_950);
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

/// A Redis whose data survives a restart (append-only file, synced on every write). A restart
/// is still suspected of losing writes (no store can know it did not), so it costs one
/// recovery window; nothing more.
fn durable_server() -> RedisServer {
    RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_then_restarted() {
    let _alone = crate::support::serial::alone().await;
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
    let took = world
        .wait_until_recovered(healthy, RECOVERY_WINDOW + RECOVERY_LIMIT)
        .await;
    println!("killed: healthy again {took:?} after the restart");
    for store in &world.instances {
        assert_eq!(store.data_losses(), 1, "the restart was suspected once");
    }
    let report = world.stop().await;
    let during = assert_bounded(&report, "killed", (fault_start, fault_end));
    assert!(during >= 100, "only {during} calls during the outage");
    report.assert_no_false_dead("killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_for_two_seconds() {
    let _alone = crate::support::serial::alone().await;
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
    let limit = RECOVERY_WINDOW + RECOVERY_LIMIT;
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
    let _alone = crate::support::serial::alone().await;
    data_loss("restart with data loss", RedisServer::restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_is_detected() {
    let _alone = crate::support::serial::alone().await;
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
    let _alone = crate::support::serial::alone().await;
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
    let _alone = crate::support::serial::alone().await;
    network_fault("connections cut", Proxy::cut_all, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole() {
    let _alone = crate::support::serial::alone().await;
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
    let _alone = crate::support::serial::alone().await;
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port());
    let store = Arc::new(
        crate::support::store_builder(&proxy.url())
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

/// The edges of "no false dead" (invariants 1 and 4), at the defaults' ratios scaled down: ttl
/// T, debounce T/3, recovery floor T, a beat about every T/6 (a little less, so that the
/// writer's rewrites fall clearly between two beats and every runtime's come together, every
/// third beat, instead of scattering by scheduling jitter). A layered writer carries the
/// beats; a plain `RedisStore` sweeper, which sees Redis as it is, polls every 20 ms
/// throughout.
///
/// Each case makes Redis lose the writer's latest write right after it (a flush, a restart
/// from an older snapshot, a failover to a replica that missed it), lets the runtimes beat on
/// for as long as the writer coalesces on that lost write (its `Ok`s promise another T each,
/// and it makes no remote call that could notice anything), then silences them: the sweeper
/// must not read any of them dead within T of its last `Ok`.
mod edges {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use liveness_store::{LayeredStore, LivenessStore, RedisStore};

    use super::{OP_TIMEOUT, SLACK};
    use crate::support::RedisServer;
    use crate::support::proxy::{Mode, Proxy};
    use crate::support::workload::{Rhythm, Workload};

    const TTL: Duration = Duration::from_millis(1_200);
    const DEBOUNCE: Duration = Duration::from_millis(400);
    const BEAT: Duration = Duration::from_millis(180);
    /// The docs' rule: the largest ttl callers pass.
    const FLOOR: Duration = TTL;

    async fn remote(url: &str) -> RedisStore {
        RedisStore::builder(url)
            .op_timeout(OP_TIMEOUT)
            .connect_timeout(OP_TIMEOUT)
            .breaker_cooldown(Duration::from_millis(100))
            .breaker_max_cooldown(Duration::from_millis(200))
            .recovery_floor(FLOOR)
            .build()
            .await
            .expect("connect to redis")
    }

    /// The writer, the sweeper, and 50 runtimes beating through the writer.
    struct Fleet {
        writer: Arc<LayeredStore<RedisStore>>,
        sweeper: Arc<RedisStore>,
        workload: Workload,
    }

    impl Fleet {
        async fn start(url: &str) -> Fleet {
            let writer = Arc::new(
                LayeredStore::builder(remote(url).await)
                    .debounce(DEBOUNCE)
                    .remote_positive_ttl(Duration::from_millis(100))
                    .op_timeout(OP_TIMEOUT)
                    .build()
                    .expect("valid settings"),
            );
            let sweeper = Arc::new(remote(url).await);
            // A new Redis is distrusted for a window; the cases start from a trusted one.
            let deadline = Instant::now() + 2 * (FLOOR + FLOOR / 2);
            while sweeper.health().recovering_for.is_some() {
                assert!(Instant::now() < deadline, "{:?}", sweeper.health());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let instances: Vec<Arc<dyn LivenessStore>> = vec![writer.clone(), sweeper.clone()];
            let rhythm = Rhythm {
                runtimes: 50,
                ttl: TTL,
                beat: BEAT,
                read_every: Duration::from_millis(20),
            };
            let workload = Workload::start("rt-", instances, rhythm).await;
            Fleet {
                writer,
                sweeper,
                workload,
            }
        }

        /// Waits (bounded) until the writer has sent its next round of writes, and returns
        /// when. The runtimes beat together, so a round is one pipeline, or two when the
        /// first leaves before the rest of the beats have queued: the round is over once no
        /// pipeline has returned for a few milliseconds.
        async fn next_write(&self) -> Instant {
            let batches = || self.writer.stats().remote_write_batches;
            let before = batches();
            let deadline = Instant::now() + 4 * (DEBOUNCE + BEAT);
            while batches() == before {
                assert!(Instant::now() < deadline, "the writer wrote nothing");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut seen = batches();
            let mut last = Instant::now();
            while last.elapsed() < Duration::from_millis(20) {
                assert!(
                    Instant::now() < deadline,
                    "the writer never stopped writing"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
                if batches() != seen {
                    seen = batches();
                    last = Instant::now();
                }
            }
            last
        }

        /// After the loss of the write sent at `written`: the runtimes beat on while the
        /// writer coalesces on it (two beats; its next write would go out at the third), then
        /// stop; the sweeper reads on until every `Ok` has run out, and must never have
        /// read one dead within its ttl. Returns how long after `lost` the sweeper detected
        /// the loss.
        async fn finish(self, name: &str, written: Instant, lost: Instant) -> Duration {
            let writes = self.writer.stats().remote_write_batches;
            let silence_at = written + 2 * BEAT + BEAT / 2;
            let mut detected = None;
            let mut silenced = false;
            let deadline = lost + 2 * (FLOOR + FLOOR / 2);
            while detected.is_none() || !silenced {
                if !silenced && Instant::now() >= silence_at {
                    self.workload.stop_beating();
                    silenced = true;
                }
                if detected.is_none() && self.sweeper.data_losses() >= 1 {
                    detected = Some(lost.elapsed());
                }
                assert!(
                    Instant::now() < deadline,
                    "{name}: the sweeper never noticed"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // The writer's every `Ok` since the loss coalesced on the lost write: it made no
            // remote call that could have noticed anything, nor restored the records.
            assert_eq!(
                self.writer.stats().remote_write_batches,
                writes,
                "{name}: the writer wrote again before the runtimes stopped"
            );
            // Past the last `Ok`'s ttl, with room for a late answer.
            tokio::time::sleep(TTL + DEBOUNCE).await;
            let report = self.workload.stop().await;
            report.assert_bounded(name, OP_TIMEOUT + SLACK);
            report.assert_no_false_dead(name);
            let detected = detected.unwrap_or_default();
            println!(
                "{name}: the sweeper detected it {detected:?} after the event; {} Recovering \
                 reads; sweeper {:?}",
                report.recovering_reads(),
                self.sweeper.health()
            );
            detected
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushall_under_a_quiet_writer() {
        let _alone = crate::support::serial::alone().await;
        let server = RedisServer::start();
        let fleet = Fleet::start(&server.url()).await;
        let written = fleet.next_write().await;
        server.flushall();
        let lost = Instant::now();
        let detected = fleet.finish("FLUSHALL, quiet writer", written, lost).await;
        assert!(detected < BEAT, "detected {detected:?} after the flush");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restart_from_a_snapshot_older_than_the_latest_write() {
        let _alone = crate::support::serial::alone().await;
        let mut server = RedisServer::start();
        let fleet = Fleet::start(&server.url()).await;
        // The snapshot holds every runtime's record: the first round of writes has landed.
        let deadline = Instant::now() + 4 * (DEBOUNCE + BEAT);
        while server.dbsize() <= 50 {
            assert!(Instant::now() < deadline, "{} keys", server.dbsize());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.set_raw(&[b"SAVE"]);
        // Two writes after the snapshot (the first may have been under way during it): the
        // restart loses them, and brings back records older by two debounce windows.
        fleet.next_write().await;
        let written = fleet.next_write().await;
        server.kill();
        server.restart();
        let lost = Instant::now();
        assert!(
            server.dbsize() > 50,
            "the snapshot was not loaded: {} keys",
            server.dbsize()
        );
        let detected = fleet.finish("restart from a snapshot", written, lost).await;
        assert!(detected < BEAT, "detected {detected:?} after the restart");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failover_to_a_replica_that_missed_the_latest_write() {
        let _alone = crate::support::serial::alone().await;
        // Redis 7 waits 5 s for more replicas before a diskless full sync by default.
        let mut master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"]);
        // The replica's link to its master, to cut: a paused replica would still find the
        // stream in its socket buffer when resumed.
        let link = Proxy::start(master.port());
        let link_port = link.port().to_string();
        let replica = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &link_port]);
        wait_in_sync(&replica);
        // The clients' way to Redis: a virtual IP, moved to the replica in the failover.
        let vip = Proxy::start(master.port());
        let fleet = Fleet::start(&vip.url()).await;
        // Replication stops: what the master takes from now on never reaches the replica.
        link.set_mode(Mode::Blackhole);
        fleet.next_write().await;
        let written = fleet.next_write().await;
        master.kill();
        replica.set_raw(&[b"REPLICAOF", b"NO", b"ONE"]);
        vip.set_upstream(replica.port());
        vip.cut_all();
        let lost = Instant::now();
        let detected = fleet
            .finish("failover to a lagging replica", written, lost)
            .await;
        assert!(detected < BEAT, "detected {detected:?} after the failover");
    }

    /// Polls (bounded) until the replica has loaded its master's data and follows it.
    fn wait_in_sync(replica: &RedisServer) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut connection = replica.connection();
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut connection)
                .expect("INFO replication");
            if info.contains("master_link_status:up") && !info.contains("master_sync_in_progress:1")
            {
                return;
            }
            assert!(Instant::now() < deadline, "replica not in sync: {info}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
