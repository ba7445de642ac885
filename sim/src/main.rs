//! `liveness-sim`: the heartbeat simulator of `liveness-store`.
//!
//! It plays the reference deployment (the Go `LivenessStore` of an agent platform's server)
//! against a backend and prints what it measured. Time is scaled down 100 times, so that a
//! 15 s run covers 25 minutes of the reference's life:
//!
//! | | reference | simulated (default) |
//! |---|---|---|
//! | heartbeat interval | 15 s | 150 ms (`--beat-ms`) |
//! | record ttl | 90 s | 900 ms (`--ttl-ms`) |
//! | layered store's debounce | 30 s | 300 ms (`--debounce-ms`) |
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
//! end). Correctness is checked against invariant 1 of the design: when a touch of a runtime
//! called at instant `t` has returned `Ok`, a batch call that starts after that return and
//! *ends* before `t + ttl` must not answer `Ok(false)` for it (a call that straddles `t + ttl`
//! may rightly answer either way: the store reads its clock somewhere within the call). Such
//! a "false dead" answer makes the run fail (exit status 1). For the silenced runtimes it reports the "false-alive
//! delay": how long after their last touch returned plus the ttl the sweeper still saw them
//! alive.
//!
//! `--compare` drives `RedisStore` (the reference's equivalent), then `LayeredStore` over a
//! `RedisStore`, on one Redis, and prints them side by side, with what Redis itself counted
//! (`INFO commandstats`). Without `--redis-url` (or `LIVENESS_REDIS_URL`, `REDIS_URL`) it
//! starts a private `redis-server` and kills it at exit.
//!
//! Run it with `cargo run --release -p liveness-sim`, no Redis needed; `--help` lists the
//! options. The modules, one idea each:
//!
//! - [`options`]: the command line;
//! - [`run`], [`shards`], [`sweeper`]: one run of one store;
//! - [`stores`]: opening the store a run drives;
//! - [`redis_server`], [`commandstats`]: a Redis of its own, and what Redis received;
//! - [`summary`]: the figures as data, which [`report`] (one store), [`compare`] (side by
//!   side), [`json`] and [`plot`] render;
//! - [`progress`]: the progress bar.

mod commandstats;
mod compare;
mod json;
mod options;
mod plot;
mod progress;
mod redis_server;
mod report;
mod run;
mod shards;
mod stores;
mod summary;
mod sweeper;

use std::process::ExitCode;

use liveness_store::Backend;
use redis::IntoConnectionInfo;

use crate::commandstats::{Counted, Sampler, StatsConnection};
use crate::options::{
    Options, USAGE, given_redis_url, parse_args, redis_url_variables, uses_redis,
};
use crate::progress::Progress;
use crate::redis_server::RedisServer;
use crate::report::{fmt_duration, thousands};
use crate::run::simulate;
use crate::stores::store_name;
use crate::summary::{Comparison, RedisInfo, Report, RunSummary, Settings, failures_of, summarize};

/// How many times faster than the reference the simulation runs.
const TIME_SCALE: u32 = 100;

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => return usage_error(&message),
    };
    // Declared before the runtime so that it outlives every task, and is killed at exit.
    let mut server = None;
    let redis_url = if opts.needs_redis() {
        match redis_url(&opts, &mut server) {
            Ok(url) => Some(url),
            Err(Failure::Usage(message)) => return usage_error(&message),
            Err(Failure::Run(message)) => {
                eprintln!("liveness-sim: {message}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
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
    let started_by_sim = server.is_some();
    let code = runtime.block_on(session(opts, redis_url, started_by_sim));
    drop(runtime);
    drop(server);
    code
}

enum Failure {
    /// Bad arguments or environment: exit status 2.
    Usage(String),
    /// Exit status 1.
    Run(String),
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("liveness-sim: {message}\nTry `liveness-sim --help`.");
    ExitCode::from(2)
}

/// A note on stderr, unless `--quiet`.
fn note(opts: &Options, message: &str) {
    if !opts.quiet {
        eprintln!("liveness-sim: {message}");
    }
}

/// The Redis to use: the one given, or a `redis-server` started here (kept in `server`).
fn redis_url(opts: &Options, server: &mut Option<RedisServer>) -> Result<String, Failure> {
    if let Some(url) = given_redis_url(opts).map_err(Failure::Usage)? {
        return Ok(url);
    }
    let started = RedisServer::start().map_err(Failure::Run)?;
    let url = started.url();
    note(
        opts,
        &format!(
            "no Redis given (--redis-url, {}): started a redis-server of its own at {url}; it \
             is killed at exit",
            redis_url_variables()
        ),
    );
    *server = Some(started);
    Ok(url)
}

/// Runs every backend the options ask for, one after the other, and prints the report.
async fn session(opts: Options, redis_url: Option<String>, started_by_sim: bool) -> ExitCode {
    let stats = match &redis_url {
        Some(url) => match StatsConnection::open(url).await {
            Ok(stats) => Some(stats),
            Err(error) => {
                eprintln!("liveness-sim: {error}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let redis = match (&redis_url, &stats) {
        (Some(url), Some(stats)) => Some(RedisInfo {
            address: url
                .as_str()
                .into_connection_info()
                .map_or_else(|_| "?".to_owned(), |info| info.addr().to_string()),
            version: stats.version().await,
            started_by_sim,
        }),
        _ => None,
    };
    if opts.ttl <= opts.beat {
        note(
            &opts,
            &format!(
                "note: the ttl ({}) is not longer than the beat interval ({}): records lapse \
                 between beats, so \"dead\" answers about beating runtimes are expected",
                fmt_duration(opts.ttl),
                fmt_duration(opts.beat)
            ),
        );
    }

    let progress = Progress::new(opts.quiet);
    let backends = opts.backends();
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for (index, &backend) in backends.iter().enumerate() {
        let stats = stats.as_ref().filter(|_| uses_redis(backend));
        let step = if backends.len() > 1 {
            format!("run {} of {}: ", index + 1, backends.len())
        } else {
            String::new()
        };
        match run_one(
            &opts,
            backend,
            redis_url.as_deref(),
            stats,
            started_by_sim,
            progress,
            &step,
        )
        .await
        {
            Ok((run, run_failures)) => {
                failures.extend(run_failures);
                let interrupted = run.interrupted;
                runs.push(run);
                if interrupted {
                    break;
                }
            }
            Err(failure) => {
                failures.push(failure);
                break;
            }
        }
    }
    failures.extend(runs.iter().flat_map(failures_of));
    let mut report = Report {
        settings: Settings::new(&opts),
        redis,
        comparison: Comparison::of(&runs),
        ok: failures.is_empty(),
        failures,
        runs,
    };
    if let Some(path) = &opts.plot {
        match plot::draw(path, &report) {
            Ok(()) => {
                let what = if report.runs.iter().any(|r| r.redis.is_some()) {
                    "Redis commands/s and latencies"
                } else {
                    "latencies only: no store used Redis"
                };
                note(
                    &opts,
                    &format!("plot written to {} ({what})", path.display()),
                );
            }
            Err(error) => {
                report.failures.push(error);
                report.ok = false;
            }
        }
    }
    print_report(&opts, &report);
    for failure in &report.failures {
        eprintln!("liveness-sim: FAILED: {failure}");
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_report(opts: &Options, report: &Report) {
    if opts.json {
        print!("{}", json::render(report));
    } else if opts.compare {
        print!("{}", compare::table(report));
    } else if let Some(run) = report.runs.first() {
        print!("{}", report::table(report, run));
        print!("{}", report::verdict_line(report));
    }
}

/// One store's run: open it, drive it, count what Redis received, clean up after it.
async fn run_one(
    opts: &Options,
    backend: Backend,
    redis_url: Option<&str>,
    stats: Option<&StatsConnection>,
    started_by_sim: bool,
    progress: Progress,
    step: &str,
) -> Result<(RunSummary, Vec<String>), String> {
    if let (Some(stats), true) = (stats, started_by_sim) {
        // Every store starts on an empty Redis of its own; never done to a Redis we were given.
        stats.flushall().await?;
    }
    let opened = stores::open(backend, opts, redis_url).await?;
    note(
        opts,
        &format!(
            "{step}{} runtimes on {} ({}) for {} (Ctrl-C stops early)...",
            thousands(opts.runtimes as u64),
            store_name(backend),
            backend,
            fmt_duration(opts.duration)
        ),
    );
    let sampler = match stats {
        Some(stats) => match Sampler::start(stats).await {
            Ok(sampler) => Some(sampler),
            Err(error) => {
                note(opts, &format!("cannot count Redis commands: {error}"));
                None
            }
        },
        None => None,
    };
    let bar = progress.bar(store_name(backend), opts.duration);
    let mut outcome = simulate(opened.store, opts.clone(), bar.clone()).await;
    bar.finish_and_clear();
    let counted: Option<Counted> = match sampler {
        Some(sampler) => match sampler.finish().await {
            Ok(counted) => Some(counted),
            Err(error) => {
                note(opts, &format!("cannot count Redis commands: {error}"));
                None
            }
        },
        None => None,
    };
    let failures = std::mem::take(&mut outcome.failures);
    let summary = summarize(backend, outcome, counted);
    // The store is gone with the outcome; its records expire by themselves, its epoch would not.
    if let (Some(stats), Some(key)) = (stats, opened.epoch_key)
        && let Err(error) = stats.delete(&key).await
    {
        note(opts, &format!("cannot delete the epoch record: {error}"));
    }
    Ok((summary, failures))
}
