//! A session: every store the command line asks for, one after the other on one Redis, then
//! the report and the exit status: 0 when every answer kept the no-false-dead rule, 1 when one
//! did not or a run failed (bad arguments exited with 2 before).

use std::fmt::Display;
use std::process::ExitCode;
use std::time::Duration;

use liveness_store::StoreConfig;
use tokio::runtime::Runtime;

use crate::redis_side::RedisSide;
use crate::report::{self, Summary, fmt_duration, thousands};
use crate::run::{self, Run};
use crate::stores::{self, Store};
use crate::{Args, plot, progress};

pub(crate) fn run(args: Args, env: StoreConfig) -> ExitCode {
    let failed = |message: &dyn Display| {
        eprintln!("liveness-sim: {message}");
        ExitCode::FAILURE
    };
    // Kept until the end: dropping a server of its own kills it.
    let given = args.redis_url.clone().or(env.redis_url.clone());
    let redis = match args
        .needs_redis()
        .then(|| RedisSide::open(given))
        .transpose()
    {
        Ok(redis) => redis,
        Err(message) => return failed(&message),
    };
    if let Some(redis) = redis.as_ref().filter(|r| r.started_by_sim()) {
        let message = "no Redis given (--redis-url, LIVENESS_REDIS_URL or REDIS_URL): started a \
                       redis-server of its own at";
        note(
            &args,
            format!("{message} {}; it is killed at exit", redis.url),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => return failed(&format!("cannot start the tokio runtime: {error}")),
    };
    if args.ttl_ms <= args.beat_ms {
        let message = "the ttl is not longer than the beat interval: records lapse between \
                       beats, so \"dead\" answers about beating runtimes are expected";
        note(&args, message);
    }

    let mut summary = Summary {
        settings: args.clone(),
        redis: redis.as_ref().map(RedisSide::info),
        runs: Vec::new(),
        ok: false,
        failures: Vec::new(),
    };
    let stores = args.stores();
    for (index, &store) in stores.iter().enumerate() {
        let step = match stores.len() {
            1 => String::new(),
            n => format!("run {} of {n}: ", index + 1),
        };
        let redis = redis.as_ref().filter(|_| store.uses_redis());
        match run_store(store, &args, &env, redis, &runtime, &step) {
            Ok(run) => {
                let interrupted = run.interrupted;
                summary.runs.push(run);
                if interrupted {
                    break;
                }
            }
            Err(message) => {
                summary.failures.push(message);
                break;
            }
        }
    }
    summary
        .failures
        .extend(summary.runs.iter().flat_map(report::failures));
    if let Some(path) = &args.plot {
        match plot::draw(path, &summary) {
            Ok(()) => note(&args, format!("plot written to {}", path.display())),
            Err(message) => summary.failures.push(message),
        }
    }
    summary.ok = summary.failures.is_empty();
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(json) => println!("{json}"),
            Err(error) => return failed(&format!("cannot serialise the report: {error}")),
        }
    } else {
        print!("{}", report::table(&summary));
    }
    for failure in &summary.failures {
        eprintln!("liveness-sim: FAILED: {failure}");
    }
    if summary.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A note on stderr, unless `--quiet`.
fn note(args: &Args, message: impl Display) {
    if !args.quiet {
        eprintln!("liveness-sim: {message}");
    }
}

/// One store's run: open it, drive it, count what Redis received, clean up after it.
fn run_store(
    store: Store,
    args: &Args,
    env: &StoreConfig,
    redis: Option<&RedisSide>,
    runtime: &Runtime,
    step: &str,
) -> Result<Run, String> {
    if let Some(redis) = redis {
        redis.flush_if_own()?;
    }
    let url = redis.map(|r| r.url.as_str());
    let opened = runtime.block_on(stores::open(store, args, env, url))?;
    let duration = Duration::from_secs_f64(args.duration_secs);
    let instances = match args.instances {
        1 => String::new(),
        k => format!("{k} instances of "),
    };
    note(
        args,
        format!(
            "{step}{} runtimes on {instances}{} for {} (Ctrl-C stops early)...",
            thousands(args.runtimes as u64),
            store.type_name(),
            fmt_duration(duration)
        ),
    );
    // The run goes on without the counts when Redis will not give them (INFO denied by an
    // ACL, say): they describe the run, they do not judge it.
    let sampler = redis.and_then(|redis| {
        redis
            .count()
            .map_err(|error| note(args, format!("cannot count Redis commands: {error}")))
            .ok()
    });
    let bar = progress::bar(args.quiet, store.type_name(), duration);
    let mut run = runtime.block_on(run::simulate(opened.fleet, store, args, bar))?;
    if let Some(sampler) = sampler {
        match sampler.finish() {
            Ok(counted) => run.redis = Some(counted),
            Err(error) => note(args, format!("cannot count Redis commands: {error}")),
        }
    }
    // The store is gone with the run: its records expire by themselves, its epoch would not.
    if let (Some(redis), Some(key)) = (redis, opened.epoch_key)
        && let Err(error) = redis.delete(&key)
    {
        note(args, format!("cannot delete the epoch record: {error}"));
    }
    Ok(run)
}
