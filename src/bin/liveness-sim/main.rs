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
//! end). Correctness is checked against invariant 1 of the design: when a touch of a runtime
//! called at instant `t` has returned `Ok`, a batch call that starts after that return and
//! *ends* before `t + ttl` must not answer `Ok(false)` for it (a call that straddles `t + ttl`
//! may rightly answer either way: the store reads its clock somewhere within the call). Such
//! a "false dead" answer makes the run fail (exit status 1). For the silenced runtimes it reports the "false-alive delay": how long after
//! their last touch returned plus the ttl the sweeper still saw them alive.
//!
//! Run it with `cargo run --release --features sim`, no Redis needed; `--help` lists the options.

mod options;
mod report;
mod run;
mod shards;
mod sweeper;

use std::process::ExitCode;

use liveness_store::StoreConfig;

use crate::options::{Options, USAGE, parse_args, store_config};
use crate::report::{Figures, fmt_duration, thousands};
use crate::run::{Outcome, simulate};

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

    let Outcome {
        sim,
        touch,
        sweep,
        run_ns,
        interrupted,
        failures,
    } = simulate(store, opts).await;
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
