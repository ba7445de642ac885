//! One store's run: runtimes beating through shard tasks while a sweeper reads them all back,
//! for the run's duration or until Ctrl-C, and what that measured ([`Run`]).
//!
//! Each runtime beats at its own phase (a deterministic hash of its index), so beats spread
//! evenly. [`SHARDS`] tasks drive them, not one task per runtime: a shard wakes up, sends every
//! beat that came due in one `touch_many` (or one `touch` per beat with `--touch one`) and
//! sleeps until the next is due. In a fleet each beat goes to the instance its routing picks,
//! so a wake-up sends one `touch_many` per instance that has beats, one after another. The
//! sweeper asks `is_alive_batch` about every runtime each sweep interval, in chunks of
//! `--batch` ids, one call after another. At half-time `--silent-percent` of the runtimes,
//! evenly spread, stop beating for good.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use liveness_store::{Lease, StoreStats};
use parking_lot::Mutex;
use serde::{Serialize, Serializer};
use testkit::false_dead::{FalseDead, Promise};
use tokio::time::MissedTickBehavior;

use crate::fleet::Fleet;
use crate::redis_side::Counted;
use crate::report::fmt_duration;
use crate::stores::Store;
use crate::{Args, progress};

/// Tasks that drive the heartbeats.
pub(crate) const SHARDS: usize = 8;
/// The most beats one `touch_many` carries (a shard that fell behind catches up in groups).
const MAX_GROUP: usize = 1_000;
/// False "dead" answers described in full; the rest are only counted.
const EXAMPLES: usize = 5;
/// "Not yet" in the per-runtime instants.
const NEVER: u64 = u64::MAX;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Touch {
    /// One touch_many per shard wake-up, carrying every beat that came due
    #[default]
    Many,
    /// One touch per beat
    One,
}

/// What one store's run measured: a column of the table, an object of the JSON.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Run {
    pub(crate) backend: Store,
    pub(crate) available: bool,
    pub(crate) seconds: f64,
    /// Stopped early by Ctrl-C.
    pub(crate) interrupted: bool,
    /// Beats due in the run (silenced runtimes' only before they fell silent).
    pub(crate) beats_scheduled: u64,
    /// `touch_many` (or `touch`) calls; their items are beats.
    pub(crate) touch: Calls,
    /// How late each touch call started after the earliest beat it carried was due.
    pub(crate) beat_lag: Durations,
    /// `is_alive_batch` calls; their items are ids.
    pub(crate) batch: Calls,
    pub(crate) sweeps: u64,
    /// Batch answers without one entry per id: must be 0.
    pub(crate) malformed: u64,
    /// `Ok(false)` about a runtime from a read that began after one of its touches returned
    /// `Ok` and ended before that touch's ttl ran out: must be 0.
    pub(crate) false_dead: u64,
    pub(crate) false_dead_examples: Vec<String>,
    /// Runtimes that stopped beating at half-time.
    pub(crate) silenced: usize,
    /// Of those, how many were answered "dead" after their last touch plus the ttl.
    pub(crate) silenced_seen_dead: usize,
    /// For each silenced runtime swept after its last touch plus the ttl, the longest it still
    /// read "alive" then.
    pub(crate) false_alive_delay: Durations,
    /// Calls that reached Redis: one per call for `RedisStore` (each is one pipeline), the
    /// remote write and lookup batches of its stats for `LayeredStore`; a fleet's, all told.
    pub(crate) round_trips: Option<u64>,
    /// The store's own counters, a fleet's added up; `None` when it keeps none (all but the
    /// layered store).
    pub(crate) store_stats: Option<StoreStats>,
    /// What Redis received, for the Redis-backed stores (added by the session).
    pub(crate) redis: Option<Counted>,
}

/// Calls of one kind.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Calls {
    pub(crate) calls: u64,
    /// Beats or ids carried.
    pub(crate) items: u64,
    pub(crate) failed_calls: u64,
    pub(crate) failed_items: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) latency: Durations,
}

/// Spans of time (latencies, lags, delays) to the ns, at three significant digits;
/// serialised as their [`Percentiles`].
#[derive(Debug)]
pub(crate) struct Durations(Histogram<u64>);

/// In µs, to the ns.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) max_us: f64,
}

impl Default for Durations {
    fn default() -> Durations {
        // 1 ns to an hour (longer spans count as an hour): fixed bounds, so that recording
        // never allocates nor fails.
        let hour = nanos(Duration::from_secs(3_600));
        Durations(Histogram::new_with_bounds(1, hour, 3).expect("1 ns to an hour is a valid range"))
    }
}

impl Durations {
    pub(crate) fn record(&mut self, span: Duration) {
        self.0.saturating_record(nanos(span));
    }

    /// `None` without samples.
    pub(crate) fn percentiles(&self) -> Option<Percentiles> {
        let us = |ns: u64| ns as f64 / 1e3;
        (!self.0.is_empty()).then(|| Percentiles {
            p50_us: us(self.0.value_at_quantile(0.5)),
            p99_us: us(self.0.value_at_quantile(0.99)),
            max_us: us(self.0.max()),
        })
    }
}

impl Serialize for Durations {
    fn serialize<S: Serializer>(&self, to: S) -> std::result::Result<S::Ok, S::Error> {
        self.percentiles().serialize(to)
    }
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl Calls {
    /// Counts a call that started at `start`, carried `items` and returned `result` at `end`.
    fn record<T>(&mut self, (start, end): (Instant, Instant), items: usize, result: &Result<T>) {
        self.calls += 1;
        self.items += items as u64;
        self.latency.record(end - start);
        if let Err(error) = result {
            self.failed_calls += 1;
            self.failed_items += items as u64;
            self.first_error.get_or_insert_with(|| error.to_string());
        }
    }
}

type Result<T> = liveness_store::Result<T>;

/// What the shards, the sweeper and the progress bar share.
pub(crate) struct Sim {
    fleet: Fleet,
    runtimes: Vec<Runtime>,
    ttl: Duration,
    beat_ns: u64,
    args: Args,
    checker: FalseDead,
    /// The figures so far. Each call's are added once it returned, so no latency includes
    /// the lock.
    pub(crate) run: Mutex<Run>,
    start: Instant,
    pub(crate) end_ns: u64,
    silence_ns: u64,
    stop: AtomicBool,
}

/// One simulated runtime: its id and what its beats and the sweeps left behind. State a
/// runtime carries from one beat to the next belongs here too.
struct Runtime {
    id: String,
    /// Stops beating at half-time.
    silenced: bool,
    /// When its last touch returned, `Ok` or not (ns since `start`): a failed touch may still
    /// have written its record, so false-alive delays count from there.
    last_return: AtomicU64,
    /// Once silenced and swept after its last touch plus the ttl, the longest it still read
    /// "alive" then (ns), and whether it read "dead"; [`NEVER`] and false until then.
    late_alive: AtomicU64,
    seen_dead: AtomicBool,
    /// With `--leases`, the lease its last beat returned, presented with its next.
    lease: Mutex<Option<Lease>>,
}

/// Drives `fleet` for the run's duration, or until Ctrl-C, moving `bar` along.
pub(crate) async fn simulate(
    fleet: Fleet,
    backend: Store,
    args: &Args,
    bar: ProgressBar,
) -> std::result::Result<Run, String> {
    let sim = Arc::new(Sim::new(fleet, args));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(progress::follow(bar, Arc::clone(&sim)));
    tasks.spawn(sweep(Arc::clone(&sim)));
    for shard in 0..SHARDS.min(sim.runtimes.len()) {
        tasks.spawn(beat(Arc::clone(&sim), shard));
    }
    let interrupted = tokio::select! {
        () = tokio::time::sleep_until(sim.at(sim.end_ns)) => false,
        Ok(()) = tokio::signal::ctrl_c() => true,
    };
    let run_ns = sim.now_ns().min(sim.end_ns);
    sim.stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.map_err(|error| format!("a task of the run failed: {error}"))?;
    }

    let stats = sim.fleet.stats();
    let mut run = std::mem::take(&mut *sim.run.lock());
    run.backend = backend;
    run.available = sim.fleet.available();
    run.seconds = run_ns as f64 / 1e9;
    run.interrupted = interrupted;
    run.beats_scheduled = sim.scheduled_beats(run_ns);
    run.silenced = sim.runtimes.iter().filter(|r| r.silenced).count();
    run.silenced_seen_dead = sim
        .runtimes
        .iter()
        .filter(|r| r.seen_dead.load(Ordering::Relaxed))
        .count();
    for late in sim
        .runtimes
        .iter()
        .map(|r| r.late_alive.load(Ordering::Relaxed))
    {
        if late != NEVER {
            run.false_alive_delay.record(Duration::from_nanos(late));
        }
    }
    run.round_trips = match backend {
        Store::Redis => Some(run.touch.calls + run.batch.calls),
        Store::Layered => Some(stats.remote_write_batches + stats.remote_lookup_batches),
        Store::Memory | Store::Noop => None,
    };
    run.store_stats = (stats != StoreStats::default()).then_some(stats);
    Ok(run)
}

impl Sim {
    fn new(fleet: Fleet, args: &Args) -> Sim {
        let n = args.runtimes;
        let ttl = Duration::from_millis(args.ttl_ms);
        let end_ns = nanos(Duration::from_secs_f64(args.duration_secs));
        let silent = (n as f64 * args.silent_percent / 100.0).round() as usize;
        let runtimes = spread(n, silent).into_iter().enumerate();
        Sim {
            fleet,
            runtimes: runtimes
                .map(|(i, silenced)| Runtime {
                    id: format!("sim-rt-{i:07}"),
                    silenced,
                    last_return: AtomicU64::new(NEVER),
                    late_alive: AtomicU64::new(NEVER),
                    seen_dead: AtomicBool::new(false),
                    lease: Mutex::new(None),
                })
                .collect(),
            ttl,
            beat_ns: nanos(Duration::from_millis(args.beat_ms)),
            args: args.clone(),
            checker: FalseDead::new(n, ttl),
            run: Mutex::default(),
            start: Instant::now(),
            end_ns,
            silence_ns: end_ns / 2,
            stop: AtomicBool::new(false),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.start))
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.ns(Instant::now())
    }

    fn at(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + Duration::from_nanos(ns))
    }

    pub(crate) fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.now_ns() >= self.end_ns
    }

    /// When, within each beat interval, `runtime` beats.
    fn phase_ns(&self, runtime: usize) -> u64 {
        splitmix64(runtime as u64) % self.beat_ns
    }

    /// Beats due before `until_ns`.
    fn scheduled_beats(&self, until_ns: u64) -> u64 {
        let due = |runtime: usize| {
            let until = if self.runtimes[runtime].silenced {
                until_ns.min(self.silence_ns)
            } else {
                until_ns
            };
            match until.saturating_sub(self.phase_ns(runtime)) {
                0 => 0,
                after => (after - 1) / self.beat_ns + 1,
            }
        };
        (0..self.runtimes.len()).map(due).sum()
    }
}

/// One shard: every [`SHARDS`]-th runtime from `shard` on, until the run is over.
async fn beat(sim: Arc<Sim>, shard: usize) {
    // The shard's runtimes in beat order; beat `k` is `order[k % len]`'s, in round `k / len`.
    let mut order: Vec<(u64, usize)> = (shard..sim.runtimes.len())
        .step_by(SHARDS)
        .map(|runtime| (sim.phase_ns(runtime), runtime))
        .collect();
    order.sort_unstable();
    let len = order.len() as u64;
    let nth = |k: u64| {
        let (phase, runtime) = order[(k % len) as usize];
        (
            (k / len).saturating_mul(sim.beat_ns).saturating_add(phase),
            runtime,
        )
    };
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut k = 0;
    while !sim.over() {
        let now = sim.now_ns();
        group.clear();
        let mut first_due = None;
        while group.len() < MAX_GROUP && nth(k).0 <= now {
            let (due, runtime) = nth(k);
            k += 1;
            if !(sim.runtimes[runtime].silenced && due >= sim.silence_ns) {
                first_due.get_or_insert(due);
                group.push(runtime);
            }
        }
        if let Some(first_due) = first_due {
            let lag = Duration::from_nanos(now - first_due);
            sim.run.lock().beat_lag.record(lag);
            sim.send(&group).await;
            if group.len() == MAX_GROUP {
                // Behind schedule: catch up without sleeping, but let the other tasks run.
                tokio::task::yield_now().await;
                continue;
            }
        }
        tokio::time::sleep_until(sim.at(nth(k).0.min(sim.end_ns))).await;
    }
}

impl Sim {
    /// Sends the beats of `group`, each to its instance, and records how each call went.
    async fn send(&self, group: &[usize]) {
        let ttl = self.ttl;
        if self.args.leases {
            // A lease goes with one beat: one call per beat.
            for &runtime in group {
                let store = self.fleet.instance(self.fleet.route(runtime));
                let holder = &self.runtimes[runtime];
                let presented = holder.lease.lock().take();
                let start = Instant::now();
                let result = store.touch_lease(&holder.id, ttl, presented.as_ref()).await;
                let call = (start, Instant::now());
                let result = result.map(|lease| *holder.lease.lock() = Some(lease));
                self.touched(&[runtime], call, &result);
            }
            return;
        }
        match self.args.touch {
            Touch::Many => {
                // A balancer routes beat by beat: each instance gets the beats routed to it.
                let mut routed = vec![Vec::new(); self.fleet.len()];
                for &runtime in group {
                    routed[self.fleet.route(runtime)].push(runtime);
                }
                for (instance, group) in routed.iter().enumerate() {
                    if group.is_empty() {
                        continue;
                    }
                    let id = |r: usize| self.runtimes[r].id.as_str();
                    let beats: Vec<(&str, Duration)> =
                        group.iter().map(|&r| (id(r), ttl)).collect();
                    let start = Instant::now();
                    let result = self.fleet.instance(instance).touch_many(&beats).await;
                    self.touched(group, (start, Instant::now()), &result);
                }
            }
            Touch::One => {
                for &runtime in group {
                    let store = self.fleet.instance(self.fleet.route(runtime));
                    let start = Instant::now();
                    let result = store.touch(&self.runtimes[runtime].id, ttl).await;
                    self.touched(&[runtime], (start, Instant::now()), &result);
                }
            }
        }
    }

    fn touched(&self, runtimes: &[usize], call: (Instant, Instant), result: &Result<()>) {
        for &runtime in runtimes {
            let returned = self.ns(call.1);
            self.runtimes[runtime]
                .last_return
                .store(returned, Ordering::Release);
            if result.is_ok() {
                self.checker.touched(runtime, call.0);
            }
        }
        self.run.lock().touch.record(call, runtimes.len(), result);
    }
}

/// Asks about every runtime each sweep interval, until the run is over.
async fn sweep(sim: Arc<Sim>) {
    let ids: Vec<&str> = sim.runtimes.iter().map(|r| r.id.as_str()).collect();
    let period = Duration::from_millis(sim.args.sweep_ms);
    let mut ticker = tokio::time::interval_at(sim.at(nanos(period)), period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(sim.at(sim.end_ns)) => break,
        }
        if sim.over() {
            break;
        }
        sim.run.lock().sweeps += 1;
        for (index, chunk) in ids.chunks(sim.args.batch).enumerate() {
            if sim.over() {
                break;
            }
            sim.read(index * sim.args.batch, chunk).await;
        }
    }
}

impl Sim {
    /// One `is_alive_batch` about `chunk`, whose first id is runtime `first`, every answer
    /// judged.
    async fn read(&self, first: usize, chunk: &[&str]) {
        // Before the call: a touch that returns during it does not bind it.
        let promises: Vec<Option<Promise>> = (first..first + chunk.len())
            .map(|runtime| self.checker.promise(runtime))
            .collect();
        let start = Instant::now();
        let result = self.fleet.sweeper().is_alive_batch(chunk).await;
        let end = Instant::now();
        let asked = self.ns(start);
        let mut broken = Vec::new();
        for (runtime, (&alive, promise)) in (first..).zip(result.iter().flatten().zip(promises)) {
            if let Some(promise) = promise
                && let Some(early) = promise.broken_by(end, alive)
            {
                broken.push((runtime, promise.touched, early));
            }
            if self.runtimes[runtime].silenced && asked >= self.silence_ns {
                self.judge_silenced(runtime, alive, asked);
            }
        }
        // A short lock, taken once: the shards wait for it on the runtime's threads.
        let mut run = self.run.lock();
        run.batch.record((start, end), chunk.len(), &result);
        run.malformed += u64::from(result.is_ok_and(|answers| answers.len() != chunk.len()));
        run.false_dead += broken.len() as u64;
        let room = EXAMPLES.saturating_sub(run.false_dead_examples.len());
        for (runtime, touched, early) in broken.into_iter().take(room) {
            let t = |at: Instant| format!("t={:.6} s", self.ns(at) as f64 / 1e9);
            run.false_dead_examples.push(format!(
                "{}: a touch called at {} returned Ok; the read ran from {} to {}, ending {} \
                 before the record was due to lapse",
                self.runtimes[runtime].id,
                t(touched),
                t(start),
                t(end),
                fmt_duration(early),
            ));
        }
    }

    /// A silenced runtime, asked about at `asked`: once its last touch plus the ttl is past,
    /// "alive" is late (the false-alive delay) and "dead" is what it should read.
    fn judge_silenced(&self, runtime: usize, alive: bool, asked: u64) {
        let runtime = &self.runtimes[runtime];
        let returned = runtime.last_return.load(Ordering::Acquire);
        let lapses = returned.saturating_add(nanos(self.ttl));
        if returned == NEVER || asked < lapses {
            return;
        }
        let late = if alive { asked - lapses } else { 0 };
        let longest = runtime.late_alive.load(Ordering::Relaxed);
        let longest = if longest == NEVER {
            late
        } else {
            longest.max(late)
        };
        runtime.late_alive.store(longest, Ordering::Relaxed);
        if !alive {
            runtime.seen_dead.store(true, Ordering::Relaxed);
        }
    }
}

/// Which `count` of `n` runtimes fall silent: evenly spaced.
fn spread(n: usize, count: usize) -> Vec<bool> {
    let (n, count) = (n as u64, count.min(n) as u64);
    (0..n)
        .map(|i| (i + 1) * count / n > i * count / n)
        .collect()
}

/// A well-mixed hash of `x` (SplitMix64's finaliser): deterministic phases, no `rand`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
pub(crate) mod tests {
    use clap::Parser;
    use liveness_store::LivenessStore;

    use super::*;
    use crate::fleet::Routing;

    #[test]
    fn silenced_runtimes_are_exactly_counted_and_evenly_spread() {
        let (n, count) = (20_000, 400);
        let silenced: Vec<usize> = (0..n).filter(|&i| spread(n, count)[i]).collect();
        assert_eq!(silenced.len(), count);
        assert!(silenced.windows(2).all(|w| w[1] - w[0] == n / count));
        assert!(!spread(7, 0).contains(&true) && !spread(7, 7).contains(&false));
    }

    /// A short real run of `store`, for the tests of what renders runs.
    pub(crate) async fn short_run(backend: Store, store: Arc<dyn LivenessStore>) -> Run {
        short_fleet_run(backend, Fleet::new(vec![store], Routing::Sticky)).await
    }

    async fn short_fleet_run(backend: Store, fleet: Fleet) -> Run {
        let args = Args::parse_from([
            "liveness-sim",
            "--runtimes=200",
            "--duration-secs=0.8",
            "--beat-ms=20",
            "--ttl-ms=120",
            "--sweep-ms=40",
            "--silent-percent=10",
        ]);
        let bar = ProgressBar::hidden();
        simulate(fleet, backend, &args, bar).await.unwrap()
    }

    /// Beats go out on schedule and every answer is judged: on a memory store no false dead,
    /// and the silenced runtimes read dead once their ttl is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_run_beats_on_schedule_and_sees_the_silenced_dead() {
        let memory = Arc::new(liveness_store::MemoryStore::new());
        let run = short_run(Store::Memory, memory).await;
        assert!(run.touch.items > 0 && run.touch.items <= run.beats_scheduled);
        assert!(run.batch.calls > 0 && run.batch.items <= run.sweeps * 200);
        assert_eq!(
            (run.false_dead, run.malformed, run.touch.failed_calls),
            (0, 0, 0)
        );
        assert_eq!(run.silenced, 20);
        // Timing on a busy machine decides how many were swept in time, not whether any was.
        assert!(run.silenced_seen_dead > 0 && run.false_alive_delay.percentiles().is_some());
        assert!(run.store_stats.is_none() && run.round_trips.is_none());
    }

    /// A fleet's beats go to its instances and its sweeps to one of its own: here one that
    /// knows nothing (a noop store), so that every answer is an `Err`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fleet_sweeps_through_an_instance_of_its_own() {
        let memory: Arc<dyn LivenessStore> = Arc::new(liveness_store::MemoryStore::new());
        let noop = Arc::new(liveness_store::NoopStore::new());
        let stores = vec![Arc::clone(&memory), Arc::clone(&memory), memory, noop];
        let run = short_fleet_run(Store::Memory, Fleet::new(stores, Routing::Random)).await;
        assert!(run.touch.items > 0 && run.touch.failed_calls == 0);
        assert!(run.batch.items > 0 && run.batch.failed_items == run.batch.items);
        assert_eq!((run.false_dead, run.silenced_seen_dead), (0, 0));
    }
}
