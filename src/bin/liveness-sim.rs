//! `liveness-sim`: the heartbeat simulator of `liveness-store`.
//!
//! It plays the reference deployment (the Go `LivenessStore` of an agent platform's server)
//! against one backend and prints what it measured. Time is scaled down 100 times, so that a
//! 10 s run covers about 17 minutes of the reference's life:
//!
//! | | reference | simulated (default) |
//! |---|---|---|
//! | heartbeat interval | 15 s | 150 ms (`--beat-ms`) |
//! | record ttl | 90 s | 900 ms (`--ttl-ms`) |
//! | sweeper interval | 30 s | 300 ms (`--sweep-ms`) |
//!
//! - **Runtimes.** N simulated runtimes (default 20,000) beat on the interval, each at its own
//!   phase (a deterministic hash of its index), so beats are spread evenly. They are driven by
//!   eight shard tasks, not one task per runtime: a shard wakes up, sends every beat that has
//!   come due in one `touch_many` call (or one `touch` per beat with `--touch one`), and sleeps
//!   until the next one is due.
//! - **Sweeper.** Every sweep interval one task asks `is_alive_batch` about every runtime, in
//!   chunks of `--batch` ids (default 1,000), one call after another.
//! - **Silence.** At half-time a fraction of the runtimes (default 2%) stop beating for good.
//!
//! Every call's latency is recorded (as whole microseconds, one `Vec` per task, merged at the
//! end). Correctness is checked strictly against invariant 1 of the design: when a touch of a
//! runtime called at instant `t` has returned `Ok`, a batch call that *starts* after that return
//! and before `t + ttl` must not answer `Ok(false)` for it. Such a "false dead" answer makes the run fail (exit
//! status 1). For the silenced runtimes it reports the "false-alive delay": how long after
//! their last touch returned plus the ttl the sweeper still saw them alive.
//!
//! Run it with `cargo run --release --features sim`, no Redis needed; `--help` lists the options.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use liveness_store::{
    Backend, ENV_REDIS_URL, ENV_REDIS_URL_FALLBACK, LivenessStore, StoreConfig, validate,
};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// How many times faster than the reference the simulation runs.
const TIME_SCALE: u32 = 100;
/// Tasks that drive the runtimes' heartbeats.
const SHARDS: usize = 8;
/// The most beats one `touch_many` call carries (a shard that fell behind catches up in groups).
const MAX_GROUP: usize = 1_000;
/// "No touch returned yet" in the per-runtime instants.
const NEVER: u64 = u64::MAX;
/// False "dead" answers described in detail.
const EXAMPLES: usize = 5;

const MAX_RUNTIMES: usize = 1_000_000;
const MAX_BATCH: usize = 1_000_000;
const MAX_MS: u64 = 3_600_000;
const MIN_SECS: f64 = 0.001;
const MAX_SECS: f64 = 3_600.0;

const USAGE: &str = "\
liveness-sim: heartbeat simulator for liveness-store, time scaled down 100x

USAGE:
    liveness-sim [OPTIONS]

OPTIONS:
    --backend memory|redis|layered|noop
                                 the store to drive [default: memory]; layered is a
                                 LayeredStore over Redis
    --redis-url URL              the Redis of --backend redis and layered
                                 [default: $LIVENESS_REDIS_URL, else $REDIS_URL]
    --runtimes N                 simulated runtimes [default: 20000]
    --duration-secs S            how long to run, in seconds [default: 10]
    --beat-ms MS                 heartbeat interval [default: 150; reference 15 s]
    --ttl-ms MS                  ttl of every beat [default: 900; reference 90 s]
    --debounce-ms MS             debounce window of --backend layered
                                 [default: 300; reference 30 s]
    --sweep-ms MS                sweeper interval [default: 300; reference 30 s]
    --silent-percent P           runtimes that stop beating at half-time [default: 2]
    --batch N                    ids per is_alive_batch call [default: 1000]
    --touch many|one             one touch_many per shard wake-up, or one touch per beat
                                 [default: many]
    -h, --help                   print this help

With --backend redis or layered, records are written under the key prefix `liveness-sim:<pid>:`, never
under the production one. LIVENESS_OP_TIMEOUT_MS is honoured.

Exit status: 0 when no answer broke the no-false-dead rule, 1 when one did or the run failed,
2 on bad arguments.
";

// ---------------------------------------------------------------------------------------------
// Options

/// How the shards send their beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TouchMode {
    /// One `touch_many` per shard wake-up, carrying every beat that came due.
    Many,
    /// One `touch` per beat.
    One,
}

#[derive(Debug, Clone)]
struct Options {
    backend: Backend,
    redis_url: Option<String>,
    runtimes: usize,
    duration: Duration,
    beat: Duration,
    ttl: Duration,
    debounce: Duration,
    sweep: Duration,
    silent_percent: f64,
    batch: usize,
    touch: TouchMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Memory,
            redis_url: None,
            runtimes: 20_000,
            duration: Duration::from_secs(10),
            beat: Duration::from_millis(150),
            ttl: Duration::from_millis(900),
            debounce: Duration::from_millis(300),
            sweep: Duration::from_millis(300),
            silent_percent: 2.0,
            batch: 1_000,
            touch: TouchMode::Many,
        }
    }
}

const OPTION_NAMES: &[&str] = &[
    "--backend",
    "--redis-url",
    "--runtimes",
    "--duration-secs",
    "--beat-ms",
    "--ttl-ms",
    "--debounce-ms",
    "--sweep-ms",
    "--silent-percent",
    "--batch",
    "--touch",
];

/// The options, or `None` when help was asked for.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Options>, String> {
    let mut opts = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = utf8(arg)?;
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        if !OPTION_NAMES.contains(&name.as_str()) {
            return Err(format!("unknown argument `{name}`"));
        }
        let value = match inline {
            Some(value) => value,
            None => utf8(args.next().ok_or_else(|| format!("{name} needs a value"))?)?,
        };
        apply(&mut opts, &name, &value)?;
    }
    check(&opts)?;
    Ok(Some(opts))
}

fn utf8(arg: OsString) -> Result<String, String> {
    arg.into_string()
        .map_err(|arg| format!("argument `{}` is not valid UTF-8", arg.to_string_lossy()))
}

fn apply(opts: &mut Options, name: &str, value: &str) -> Result<(), String> {
    match name {
        "--backend" => opts.backend = parse_backend(value)?,
        "--redis-url" if value.trim().is_empty() => return Err("--redis-url is empty".into()),
        "--redis-url" => opts.redis_url = Some(value.trim().to_owned()),
        "--runtimes" => opts.runtimes = parse_count(name, value, MAX_RUNTIMES)?,
        "--duration-secs" => opts.duration = parse_secs(name, value)?,
        "--beat-ms" => opts.beat = parse_ms(name, value)?,
        "--ttl-ms" => opts.ttl = parse_ms(name, value)?,
        "--debounce-ms" => opts.debounce = parse_ms(name, value)?,
        "--sweep-ms" => opts.sweep = parse_ms(name, value)?,
        "--silent-percent" => opts.silent_percent = parse_percent(name, value)?,
        "--batch" => opts.batch = parse_count(name, value, MAX_BATCH)?,
        "--touch" => opts.touch = parse_touch(value)?,
        _ => return Err(format!("unknown argument `{name}`")),
    }
    Ok(())
}

fn parse_backend(value: &str) -> Result<Backend, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "memory" => Ok(Backend::Memory),
        "redis" => Ok(Backend::Redis),
        "layered" => Ok(Backend::Layered),
        "noop" => Ok(Backend::Noop),
        _ => Err(format!(
            "--backend `{value}` is not one of memory, redis, noop"
        )),
    }
}

fn parse_touch(value: &str) -> Result<TouchMode, String> {
    match value.trim() {
        "many" => Ok(TouchMode::Many),
        "one" => Ok(TouchMode::One),
        _ => Err(format!("--touch `{value}` is not one of many, one")),
    }
}

/// A whole number from 1 to `max`; `_` separators are allowed.
fn parse_count(name: &str, value: &str, max: usize) -> Result<usize, String> {
    match value.trim().replace('_', "").parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} expects a whole number from 1 to {max}, got `{value}`"
        )),
    }
}

fn parse_ms(name: &str, value: &str) -> Result<Duration, String> {
    match value.trim().replace('_', "").parse::<u64>() {
        Ok(ms) if (1..=MAX_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{name} expects whole milliseconds from 1 to {MAX_MS}, got `{value}`"
        )),
    }
}

fn parse_secs(name: &str, value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        // The range check also keeps NaN and infinities out of `from_secs_f64`.
        Ok(secs) if (MIN_SECS..=MAX_SECS).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{name} expects seconds from {MIN_SECS} to {MAX_SECS}, got `{value}`"
        )),
    }
}

fn parse_percent(name: &str, value: &str) -> Result<f64, String> {
    match value.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{name} expects a percentage from 0 to 100, got `{value}`"
        )),
    }
}

/// Checks that span several options.
fn check(opts: &Options) -> Result<(), String> {
    validate::ttl(opts.ttl).map_err(|e| format!("--ttl-ms: {e}"))?;
    if opts.redis_url.is_some() && !uses_redis(opts.backend) {
        return Err(format!(
            "--redis-url only applies to --backend redis or layered (the backend is {})",
            opts.backend
        ));
    }
    Ok(())
}

/// The store's configuration: the backend from the options, the Redis URL from the options or
/// the environment (as `StoreConfig::from_env` reads it), and a key prefix of the simulator's
/// own, so that a run never writes under the production prefix nor reads another run's keys.
fn store_config(opts: &Options) -> Result<StoreConfig, String> {
    if !uses_redis(opts.backend) {
        return Ok(StoreConfig::new(opts.backend));
    }
    let mut config = StoreConfig::from_env().map_err(|e| e.to_string())?;
    config.backend = opts.backend;
    if let Some(url) = &opts.redis_url {
        config.redis_url = Some(url.clone());
    }
    if config.redis_url.is_none() {
        return Err(format!(
            "--backend {} needs a Redis URL: pass --redis-url redis://127.0.0.1:6379/ \
             (or set {ENV_REDIS_URL} or {ENV_REDIS_URL_FALLBACK})",
            opts.backend
        ));
    }
    config.key_prefix = Some(format!("liveness-sim:{}:", std::process::id()));
    config.debounce = Some(opts.debounce);
    Ok(config)
}

fn uses_redis(backend: Backend) -> bool {
    matches!(backend, Backend::Redis | Backend::Layered)
}

// ---------------------------------------------------------------------------------------------
// Entry point

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => return usage_error(&message),
    };
    let config = match store_config(&opts) {
        Ok(config) => config,
        Err(message) => return usage_error(&message),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("liveness-sim: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(opts, config))
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("liveness-sim: {message}\nTry `liveness-sim --help`.");
    ExitCode::from(2)
}

async fn run(opts: Options, config: StoreConfig) -> ExitCode {
    let store = match liveness_store::open(&config).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!(
                "liveness-sim: cannot open the {} store: {error}",
                opts.backend
            );
            return ExitCode::FAILURE;
        }
    };
    if opts.ttl <= opts.beat {
        eprintln!(
            "liveness-sim: note: the ttl ({}) is not longer than the beat interval ({}): records \
             lapse between beats, so \"dead\" answers about beating runtimes are expected",
            fmt_duration(opts.ttl),
            fmt_duration(opts.beat)
        );
    }
    eprintln!(
        "liveness-sim: {} runtimes on the {} backend for {} (Ctrl-C stops early)...",
        thousands(opts.runtimes as u64),
        opts.backend,
        fmt_duration(opts.duration)
    );

    let sim = Arc::new(Sim::new(store, opts));
    let shards: Vec<JoinHandle<TouchReport>> = (0..SHARDS.min(sim.ids.len()))
        .map(|shard| tokio::spawn(run_shard(Arc::clone(&sim), shard)))
        .collect();
    let sweeper = tokio::spawn(run_sweeper(Arc::clone(&sim)));

    let end = sim.start + Duration::from_nanos(sim.end_ns);
    let interrupted = tokio::select! {
        () = tokio::time::sleep_until(end) => false,
        Ok(()) = tokio::signal::ctrl_c() => true,
    };
    let run_ns = sim.now_ns().min(sim.end_ns);
    sim.stop.store(true, Ordering::Relaxed);

    let mut failures = Vec::new();
    let mut touch = TouchReport::default();
    for (shard, handle) in shards.into_iter().enumerate() {
        match handle.await {
            Ok(report) => touch.merge(report),
            Err(error) => failures.push(format!("shard task {shard} failed: {error}")),
        }
    }
    let sweep = match sweeper.await {
        Ok(report) => report,
        Err(error) => {
            failures.push(format!("sweeper task failed: {error}"));
            SweepReport::new(sim.silent_count)
        }
    };

    let mut figures = Figures {
        sim: &sim,
        touch,
        sweep,
        run_ns,
        interrupted,
    };
    print!("{}", figures.table());
    figures.verdict(failures)
}

// ---------------------------------------------------------------------------------------------
// The simulation's shared state

struct Sim {
    store: Arc<dyn LivenessStore>,
    opts: Options,
    ids: Vec<String>,
    /// For each runtime, its index among the silenced ones, if it is one.
    silent_slot: Vec<Option<usize>>,
    silent_count: usize,
    /// For each runtime, when (ns since `start`) its last touch that returned `Ok` was called,
    /// or [`NEVER`]. Written once the touch has returned.
    last_ok: Vec<AtomicU64>,
    /// For each runtime, when its last touch returned, `Ok` or not, or [`NEVER`]. A failed
    /// touch may still have written its record, so false-alive delays count from here.
    last_try: Vec<AtomicU64>,
    start: Instant,
    end_ns: u64,
    silence_ns: u64,
    stop: AtomicBool,
}

impl Sim {
    fn new(store: Arc<dyn LivenessStore>, opts: Options) -> Sim {
        let n = opts.runtimes;
        let silent_count = ((n as f64) * opts.silent_percent / 100.0).round() as usize;
        let silent_count = silent_count.min(n);
        let end_ns = nanos(opts.duration);
        Sim {
            store,
            ids: (0..n).map(|i| format!("sim-rt-{i:07}")).collect(),
            silent_slot: spread(n, silent_count),
            silent_count,
            last_ok: (0..n).map(|_| AtomicU64::new(NEVER)).collect(),
            last_try: (0..n).map(|_| AtomicU64::new(NEVER)).collect(),
            start: Instant::now(),
            end_ns,
            silence_ns: end_ns / 2,
            stop: AtomicBool::new(false),
            opts,
        }
    }

    fn ns_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.start))
    }

    fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.now_ns() >= self.end_ns
    }

    fn is_silenced(&self, runtime: usize) -> bool {
        matches!(self.silent_slot.get(runtime), Some(Some(_)))
    }

    /// When, within each beat interval, a runtime beats.
    fn phase_ns(&self, runtime: usize) -> u64 {
        splitmix64(runtime as u64) % nanos(self.opts.beat).max(1)
    }

    /// Beats due before `until_ns` (silenced runtimes' only before half-time).
    fn scheduled_beats(&self, until_ns: u64) -> u64 {
        let beat = nanos(self.opts.beat).max(1);
        (0..self.ids.len())
            .map(|runtime| {
                let cutoff = if self.is_silenced(runtime) {
                    until_ns.min(self.silence_ns)
                } else {
                    until_ns
                };
                let phase = self.phase_ns(runtime);
                if phase < cutoff {
                    (cutoff - phase - 1) / beat + 1
                } else {
                    0
                }
            })
            .sum()
    }
}

/// Picks `count` of `n` runtimes, evenly spaced; returns each one's slot among the picked.
fn spread(n: usize, count: usize) -> Vec<Option<usize>> {
    let (n64, count64) = (n as u64, count as u64);
    let mut slot = 0;
    (0..n64)
        .map(|i| {
            if (i + 1) * count64 / n64 > i * count64 / n64 {
                slot += 1;
                Some(slot - 1)
            } else {
                None
            }
        })
        .collect()
}

/// A well-mixed hash of `x` (SplitMix64's finaliser): deterministic phases, no `rand`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn micros_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// Heartbeats

#[derive(Default)]
struct TouchReport {
    calls: u64,
    beats: u64,
    err_calls: u64,
    err_beats: u64,
    first_error: Option<String>,
    /// Every call's latency, in µs.
    latency_us: Vec<u32>,
    /// How late each call started after the earliest beat it carried was due, in µs.
    lag_us: Vec<u32>,
}

impl TouchReport {
    fn merge(&mut self, other: TouchReport) {
        self.calls += other.calls;
        self.beats += other.beats;
        self.err_calls += other.err_calls;
        self.err_beats += other.err_beats;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency_us.extend(other.latency_us);
        self.lag_us.extend(other.lag_us);
    }
}

/// A shard's runtimes in beat order: `(phase, runtime)` sorted, walked round after round.
struct Schedule {
    beats: Vec<(u64, usize)>,
    beat_ns: u64,
    round: u64,
    pos: usize,
}

impl Schedule {
    fn new(mut beats: Vec<(u64, usize)>, beat_ns: u64) -> Schedule {
        beats.sort_unstable();
        Schedule {
            beats,
            beat_ns,
            round: 0,
            pos: 0,
        }
    }

    /// When the next beat is due (ns since the start), and whose it is.
    fn next(&self) -> Option<(u64, usize)> {
        let (phase, runtime) = self.beats.get(self.pos).copied()?;
        let due = self
            .round
            .saturating_mul(self.beat_ns)
            .saturating_add(phase);
        Some((due, runtime))
    }

    fn advance(&mut self) {
        self.pos += 1;
        if self.pos >= self.beats.len() {
            self.pos = 0;
            self.round += 1;
        }
    }
}

/// Drives every `SHARDS`-th runtime, starting at `shard`, until the run is over.
async fn run_shard(sim: Arc<Sim>, shard: usize) -> TouchReport {
    let beats = (shard..sim.ids.len())
        .step_by(SHARDS)
        .map(|runtime| (sim.phase_ns(runtime), runtime))
        .collect();
    let mut schedule = Schedule::new(beats, nanos(sim.opts.beat));
    let mut report = TouchReport::default();
    let mut group = Vec::with_capacity(MAX_GROUP);
    while !sim.stop.load(Ordering::Relaxed) {
        let now = sim.now_ns();
        if now >= sim.end_ns {
            break;
        }
        if let Some(first_due) = sim.collect_due(&mut schedule, now, &mut group) {
            report.lag_us.push(micros_u32(Duration::from_nanos(
                now.saturating_sub(first_due),
            )));
            sim.beat(&group, &mut report).await;
            if group.len() == MAX_GROUP {
                // Behind schedule: catch up without sleeping, but let other tasks run.
                tokio::task::yield_now().await;
                continue;
            }
        }
        let Some((due, _)) = schedule.next() else {
            break;
        };
        let wake = Duration::from_nanos(due.min(sim.end_ns));
        tokio::time::sleep_until(sim.start + wake).await;
    }
    report
}

impl Sim {
    /// Fills `group` with the runtimes whose beat is due at `now` (at most [`MAX_GROUP`]),
    /// skipping silenced runtimes past half-time; returns when the earliest of them was due.
    fn collect_due(
        &self,
        schedule: &mut Schedule,
        now: u64,
        group: &mut Vec<usize>,
    ) -> Option<u64> {
        group.clear();
        let mut first_due = None;
        while group.len() < MAX_GROUP {
            match schedule.next() {
                Some((due, runtime)) if due <= now => {
                    schedule.advance();
                    if self.is_silenced(runtime) && due >= self.silence_ns {
                        continue;
                    }
                    first_due.get_or_insert(due);
                    group.push(runtime);
                }
                _ => break,
            }
        }
        first_due
    }

    /// Sends the beats of `group` and records when each one returned.
    async fn beat(&self, group: &[usize], report: &mut TouchReport) {
        let ttl = self.opts.ttl;
        match self.opts.touch {
            TouchMode::Many => {
                let beats: Vec<(&str, Duration)> = group
                    .iter()
                    .map(|&runtime| (self.ids[runtime].as_str(), ttl))
                    .collect();
                let started = Instant::now();
                let result = self.store.touch_many(&beats).await;
                self.record_touch(group, started, result, report);
            }
            TouchMode::One => {
                for &runtime in group {
                    let started = Instant::now();
                    let result = self.store.touch(&self.ids[runtime], ttl).await;
                    self.record_touch(&[runtime], started, result, report);
                }
            }
        }
    }

    fn record_touch(
        &self,
        runtimes: &[usize],
        started: Instant,
        result: liveness_store::Result<()>,
        report: &mut TouchReport,
    ) {
        let returned = Instant::now();
        let at = self.ns_at(returned);
        // A store can only stamp a record once the call has begun, never after it returned, so
        // invariant 1 counts a record's ttl from the call.
        let called = self.ns_at(started);
        let count = runtimes.len() as u64;
        report.calls += 1;
        report.beats += count;
        report
            .latency_us
            .push(micros_u32(returned.saturating_duration_since(started)));
        for &runtime in runtimes {
            self.last_try[runtime].store(at, Ordering::Release);
        }
        match result {
            Ok(()) => {
                for &runtime in runtimes {
                    self.last_ok[runtime].store(called, Ordering::Release);
                }
            }
            Err(error) => {
                report.err_calls += 1;
                report.err_beats += count;
                report.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sweeper

/// What the sweeper saw of one silenced runtime after its last touch plus the ttl.
#[derive(Default, Clone, Copy)]
struct SilencedView {
    /// Asked about at least once after its record should have lapsed.
    observed: bool,
    /// Answered "dead" at least once then.
    seen_dead: bool,
    /// The longest it was still answered "alive" after its record should have lapsed, in ns.
    late_alive_ns: u64,
}

struct SweepReport {
    sweeps: u64,
    calls: u64,
    ids: u64,
    err_calls: u64,
    err_ids: u64,
    first_error: Option<String>,
    /// Calls whose answer did not hold one entry per id.
    malformed_calls: u64,
    /// Every call's latency, in µs.
    latency_us: Vec<u32>,
    false_dead: u64,
    /// The earliest a false "dead" came, before its record was due to lapse, in ns.
    worst_early_ns: u64,
    examples: Vec<String>,
    silenced: Vec<SilencedView>,
}

impl SweepReport {
    fn new(silent_count: usize) -> SweepReport {
        SweepReport {
            sweeps: 0,
            calls: 0,
            ids: 0,
            err_calls: 0,
            err_ids: 0,
            first_error: None,
            malformed_calls: 0,
            latency_us: Vec::new(),
            false_dead: 0,
            worst_early_ns: 0,
            examples: Vec::new(),
            silenced: vec![SilencedView::default(); silent_count],
        }
    }
}

/// Asks about every runtime each sweep interval, until the run is over.
async fn run_sweeper(sim: Arc<Sim>) -> SweepReport {
    let mut report = SweepReport::new(sim.silent_count);
    let ids: Vec<&str> = sim.ids.iter().map(String::as_str).collect();
    let batch = sim.opts.batch;
    let mut snapshot = Vec::with_capacity(batch);
    let period = sim.opts.sweep;
    let mut ticker = tokio::time::interval_at(sim.start + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = sim.start + Duration::from_nanos(sim.end_ns);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(end) => break,
        }
        if sim.over() {
            break;
        }
        report.sweeps += 1;
        for (chunk_index, chunk) in ids.chunks(batch).enumerate() {
            if sim.over() {
                break;
            }
            sim.check_chunk(chunk_index * batch, chunk, &mut snapshot, &mut report)
                .await;
        }
    }
    report
}

impl Sim {
    /// One `is_alive_batch` call about `chunk`, whose first id is runtime `first`.
    async fn check_chunk(
        &self,
        first: usize,
        chunk: &[&str],
        snapshot: &mut Vec<u64>,
        report: &mut SweepReport,
    ) {
        // Touches that returned before the call starts; read before it, so none is later.
        snapshot.clear();
        snapshot.extend(
            self.last_ok
                .iter()
                .skip(first)
                .take(chunk.len())
                .map(|at| at.load(Ordering::Acquire)),
        );
        let started = Instant::now();
        let result = self.store.is_alive_batch(chunk).await;
        let latency = started.elapsed();
        let asked = self.ns_at(started);
        report.calls += 1;
        report.ids += chunk.len() as u64;
        report.latency_us.push(micros_u32(latency));
        match result {
            Ok(answers) => {
                if answers.len() != chunk.len() {
                    report.malformed_calls += 1;
                }
                for (offset, (&alive, &last_ok)) in answers.iter().zip(snapshot.iter()).enumerate()
                {
                    self.judge(first + offset, alive, last_ok, asked, report);
                }
            }
            Err(error) => {
                report.err_calls += 1;
                report.err_ids += chunk.len() as u64;
                report.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }

    /// Checks one answer, given by a call that started at `asked`, about `runtime`, whose last
    /// `Ok` touch before that call returned at `last_ok`.
    fn judge(
        &self,
        runtime: usize,
        alive: bool,
        last_ok: u64,
        asked: u64,
        report: &mut SweepReport,
    ) {
        let ttl = nanos(self.opts.ttl);
        if !alive && last_ok != NEVER && last_ok <= asked {
            let lapses = last_ok.saturating_add(ttl);
            if asked < lapses {
                self.false_dead(runtime, last_ok, asked, lapses - asked, report);
            }
        }
        if let Some(Some(slot)) = self.silent_slot.get(runtime)
            && asked >= self.silence_ns
        {
            self.judge_silenced(*slot, runtime, alive, asked, report);
        }
    }

    fn false_dead(
        &self,
        runtime: usize,
        last_ok: u64,
        asked: u64,
        early: u64,
        report: &mut SweepReport,
    ) {
        report.false_dead += 1;
        report.worst_early_ns = report.worst_early_ns.max(early);
        if report.examples.len() < EXAMPLES {
            let id = self.ids.get(runtime).map_or("?", String::as_str);
            let silenced = if self.is_silenced(runtime) {
                ", silenced"
            } else {
                ""
            };
            report.examples.push(format!(
                "{id}{silenced}: touch returned Ok at {}, the batch call started at {}, \
                 {} before the record was due to lapse",
                fmt_instant(last_ok),
                fmt_instant(asked),
                fmt_nanos(early)
            ));
        }
    }

    fn judge_silenced(
        &self,
        slot: usize,
        runtime: usize,
        alive: bool,
        asked: u64,
        report: &mut SweepReport,
    ) {
        let Some(last_try) = self
            .last_try
            .get(runtime)
            .map(|at| at.load(Ordering::Acquire))
        else {
            return;
        };
        if last_try == NEVER || last_try > asked {
            return;
        }
        let lapses = last_try.saturating_add(nanos(self.opts.ttl));
        let Some(view) = report.silenced.get_mut(slot) else {
            return;
        };
        if asked < lapses {
            return;
        }
        view.observed = true;
        if alive {
            view.late_alive_ns = view.late_alive_ns.max(asked - lapses);
        } else {
            view.seen_dead = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

struct Figures<'a> {
    sim: &'a Sim,
    touch: TouchReport,
    sweep: SweepReport,
    run_ns: u64,
    interrupted: bool,
}

impl Figures<'_> {
    fn per_second(&self, count: u64) -> String {
        let secs = self.run_ns as f64 / 1e9;
        let rate = if secs > 0.0 { count as f64 / secs } else { 0.0 };
        format!("{}/s", thousands(rate.round() as u64))
    }

    fn table(&mut self) -> String {
        let sim = self.sim;
        let opts = &sim.opts;
        self.touch.latency_us.sort_unstable();
        self.touch.lag_us.sort_unstable();
        self.sweep.latency_us.sort_unstable();
        let mut rows: Vec<(&str, String)> = Vec::new();

        let available = if sim.store.available() { "yes" } else { "no" };
        rows.push((
            "backend",
            format!("{} (available: {available})", opts.backend),
        ));
        let touch_mode = match opts.touch {
            TouchMode::Many => "touch_many per shard wake-up",
            TouchMode::One => "one touch per beat",
        };
        let shards = SHARDS.min(sim.ids.len());
        rows.push((
            "runtimes",
            format!(
                "{} in {shards} shards, {touch_mode}",
                thousands(opts.runtimes as u64)
            ),
        ));
        let stopped = if self.interrupted {
            " (interrupted)"
        } else {
            ""
        };
        rows.push(("duration", format!("{}{stopped}", fmt_nanos(self.run_ns))));
        rows.push(("time scale", self.scale()));
        rows.push((
            "silenced",
            format!(
                "{} ({}%) at {}, half-time",
                thousands(sim.silent_count as u64),
                opts.silent_percent,
                fmt_nanos(sim.silence_ns)
            ),
        ));
        self.touch_rows(&mut rows);
        self.sweep_rows(&mut rows);
        self.store_rows(&mut rows);

        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let mut out = String::from("\nliveness-sim figures\n");
        for (label, value) in rows {
            out.push_str(&format!("  {label:<width$}  {value}\n"));
        }
        for example in &self.sweep.examples {
            out.push_str(&format!("  false dead: {example}\n"));
        }
        out
    }

    /// What the store itself counted (the layered store counts; the others report zeros).
    fn store_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let stats = self.sim.store.stats();
        if stats.touches == 0 {
            return;
        }
        let per_beat = stats.remote_writes as f64 / stats.touches as f64;
        rows.push((
            "remote writes",
            format!(
                "{} ({per_beat:.3} per beat, {} coalesced) in {} round trips",
                thousands(stats.remote_writes),
                thousands(stats.coalesced_touches),
                thousands(stats.remote_write_batches)
            ),
        ));
        rows.push((
            "batch lookups",
            format!(
                "{} ids local, {} ids remote in {} calls",
                thousands(stats.local_hits),
                thousands(stats.remote_lookups),
                thousands(stats.remote_lookup_batches)
            ),
        ));
    }

    fn scale(&self) -> String {
        let opts = &self.sim.opts;
        format!(
            "beat {}, ttl {}, sweep {} = the reference's {}, {}, {} / {TIME_SCALE}",
            fmt_duration(opts.beat),
            fmt_duration(opts.ttl),
            fmt_duration(opts.sweep),
            fmt_duration(opts.beat * TIME_SCALE),
            fmt_duration(opts.ttl * TIME_SCALE),
            fmt_duration(opts.sweep * TIME_SCALE),
        )
    }

    fn touch_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let touch = &self.touch;
        let scheduled = self.sim.scheduled_beats(self.run_ns);
        let share = if scheduled > 0 {
            format!("{:.1}%", touch.beats as f64 * 100.0 / scheduled as f64)
        } else {
            "-".into()
        };
        rows.push((
            "beats",
            format!(
                "{} total, {} ({share} of {} scheduled)",
                thousands(touch.beats),
                self.per_second(touch.beats),
                thousands(scheduled)
            ),
        ));
        rows.push((
            "touch calls",
            format!(
                "{} total, {}",
                thousands(touch.calls),
                self.per_second(touch.calls)
            ),
        ));
        let mut errors = format!(
            "{} calls ({} beats)",
            thousands(touch.err_calls),
            thousands(touch.err_beats)
        );
        if let Some(first) = &touch.first_error {
            errors.push_str(&format!("; first: {first}"));
        }
        rows.push(("touch errors", errors));
        rows.push(("touch latency", fmt_latencies(&touch.latency_us)));
        rows.push(("beat lag", fmt_latencies(&touch.lag_us)));
    }

    fn sweep_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let sweep = &self.sweep;
        let opts = &self.sim.opts;
        rows.push((
            "batch calls",
            format!(
                "{} total, {} ({} sweeps, up to {} ids per call)",
                thousands(sweep.calls),
                self.per_second(sweep.calls),
                thousands(sweep.sweeps),
                thousands(opts.batch as u64)
            ),
        ));
        rows.push((
            "ids checked",
            format!(
                "{} total, {}",
                thousands(sweep.ids),
                self.per_second(sweep.ids)
            ),
        ));
        rows.push(("batch latency", fmt_latencies(&sweep.latency_us)));
        let mut unknown = format!(
            "{} ids in {} calls",
            thousands(sweep.err_ids),
            thousands(sweep.err_calls)
        );
        if sweep.calls > 0 && sweep.err_calls == sweep.calls {
            unknown.push_str(" (every answer was \"unknown\")");
        }
        if let Some(first) = &sweep.first_error {
            unknown.push_str(&format!("; first: {first}"));
        }
        rows.push(("Err answers", unknown));
        if sweep.malformed_calls > 0 {
            rows.push((
                "malformed answers",
                format!("{} calls without one answer per id", sweep.malformed_calls),
            ));
        }
        let mut false_dead = format!("{} (must be 0)", thousands(sweep.false_dead));
        if sweep.false_dead > 0 {
            false_dead.push_str(&format!(
                "; the worst came {} before the record was due to lapse",
                fmt_nanos(sweep.worst_early_ns)
            ));
        }
        rows.push(("false dead", false_dead));
        self.silenced_rows(rows);
    }

    fn silenced_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let views = &self.sweep.silenced;
        let observed: Vec<&SilencedView> = views.iter().filter(|v| v.observed).collect();
        let seen_dead = views.iter().filter(|v| v.seen_dead).count();
        rows.push((
            "silenced seen dead",
            format!(
                "{} of {}",
                thousands(seen_dead as u64),
                thousands(views.len() as u64)
            ),
        ));
        let mut delays: Vec<u64> = observed.iter().map(|v| v.late_alive_ns).collect();
        delays.sort_unstable();
        let delay = match (percentile(&delays, 0.5), delays.last()) {
            (Some(p50), Some(&max)) => format!(
                "p50 {}, max {} (over {} silenced runtimes swept after last touch + ttl)",
                fmt_nanos(p50),
                fmt_nanos(max),
                thousands(delays.len() as u64)
            ),
            _ => "n/a (no answer about a silenced runtime after last touch + ttl)".into(),
        };
        rows.push(("false-alive delay", delay));
    }

    /// Prints the verdict and turns it into the exit status.
    fn verdict(&self, mut failures: Vec<String>) -> ExitCode {
        if self.sweep.false_dead > 0 {
            failures.push(format!(
                "{} false \"dead\" answers: a runtime whose touch had returned Ok less than the \
                 ttl before the batch call started was answered Ok(false)",
                thousands(self.sweep.false_dead)
            ));
        }
        if self.sweep.malformed_calls > 0 {
            failures.push(format!(
                "{} is_alive_batch calls did not answer one entry per id",
                self.sweep.malformed_calls
            ));
        }
        if failures.is_empty() {
            println!("  result: OK (no false \"dead\" answer)");
            return ExitCode::SUCCESS;
        }
        println!("  result: FAILED");
        for failure in failures {
            eprintln!("liveness-sim: FAILED: {failure}");
        }
        ExitCode::FAILURE
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(last)).copied()
}

fn fmt_latencies(sorted_us: &[u32]) -> String {
    match (
        percentile(sorted_us, 0.5),
        percentile(sorted_us, 0.99),
        sorted_us.last(),
    ) {
        (Some(p50), Some(p99), Some(&max)) => format!(
            "p50 {}, p99 {}, max {}",
            fmt_micros(p50),
            fmt_micros(p99),
            fmt_micros(max)
        ),
        _ => "no calls".into(),
    }
}

fn fmt_micros(us: u32) -> String {
    fmt_nanos(u64::from(us) * 1_000)
}

fn fmt_duration(duration: Duration) -> String {
    fmt_nanos(nanos(duration))
}

/// A span of time for people: `850 µs`, `1.25 ms`, `900 ms`, `15 s`, `2.5 s`.
fn fmt_nanos(ns: u64) -> String {
    let trim = |value: f64| {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{} µs", trim(ns as f64 / 1e3)),
        1_000_000..=999_999_999 => format!("{} ms", trim(ns as f64 / 1e6)),
        _ => format!("{} s", trim(ns as f64 / 1e9)),
    }
}

/// An instant of the run, as time since its start.
fn fmt_instant(ns: u64) -> String {
    format!("t={:.6} s", ns as f64 / 1e9)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_are_the_reference_scaled_down() {
        let opts = parse(&[]).unwrap().unwrap();
        assert_eq!(opts.backend, Backend::Memory);
        assert_eq!(opts.runtimes, 20_000);
        assert_eq!(opts.beat * TIME_SCALE, Duration::from_secs(15));
        assert_eq!(opts.ttl * TIME_SCALE, Duration::from_secs(90));
        assert_eq!(opts.sweep * TIME_SCALE, Duration::from_secs(30));
        assert!(parse(&["--runtimes", "5", "--help"]).unwrap().is_none());
    }

    #[test]
    fn options_take_both_spellings_and_bad_ones_are_errors() {
        let opts = parse(&[
            "--runtimes=2_000",
            "--duration-secs",
            "3",
            "--backend",
            "noop",
        ]);
        let opts = opts.unwrap().unwrap();
        assert_eq!((opts.runtimes, opts.backend), (2_000, Backend::Noop));
        assert_eq!(opts.duration, Duration::from_secs(3));
        for bad in [
            &["--runtimes"][..],
            &["--runtimes", "0"],
            &["--duration-secs", "NaN"],
            &["--ttl-ms", "-5"],
            &["--silent-percent", "100.5"],
            &["--backend", "cluster"],
            &["--redis-url", "redis://x/"],
            &["--what"],
            &["what"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn silenced_runtimes_are_exactly_counted_and_spread() {
        let slots = spread(20_000, 400);
        let picked: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
        assert_eq!(picked.len(), 400);
        assert!(picked.windows(2).all(|w| w[1] - w[0] == 50));
        assert_eq!(slots[picked[399]], Some(399));
        assert!(spread(7, 0).iter().all(Option::is_none));
        assert!(spread(7, 7).iter().all(Option::is_some));
    }

    #[test]
    fn a_dead_answer_before_last_ok_plus_ttl_is_false_dead() {
        let store: Arc<dyn LivenessStore> = Arc::new(liveness_store::NoopStore::new());
        let opts = parse(&["--runtimes", "1", "--silent-percent", "0"])
            .unwrap()
            .unwrap();
        let sim = Sim::new(store, opts);
        let ttl = nanos(sim.opts.ttl);
        let mut report = SweepReport::new(0);
        sim.judge(0, false, 1_000, 1_000 + ttl, &mut report);
        sim.judge(0, false, NEVER, 5, &mut report);
        sim.judge(0, true, 1_000, 1_500, &mut report);
        assert_eq!(report.false_dead, 0);
        sim.judge(0, false, 1_000, 1_000 + ttl - 1, &mut report);
        assert_eq!((report.false_dead, report.worst_early_ns), (1, 1));
    }

    #[test]
    fn figures_format() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_nanos(850_000), "850 µs");
        assert_eq!(fmt_nanos(1_250_000), "1.25 ms");
        assert_eq!(fmt_duration(Duration::from_secs(15)), "15 s");
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.99), Some(4));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }
}
