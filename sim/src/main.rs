//! `liveness-sim`: the heartbeat simulator of `liveness-store`.
//!
//! It plays the reference deployment (the Go `LivenessStore` of an agent platform's server)
//! against a store and prints one table of what it measured. Time is scaled down
//! [`TIME_SCALE`] times, so that a 15 s run covers 25 minutes of the reference's life: its
//! heartbeat of 15 s becomes 150 ms, its ttl of 90 s 900 ms, the layered store's debounce of
//! 30 s 300 ms and its remote-positive ttl of 1 s 10 ms, the sweeper's 30 s 300 ms.
//!
//! N runtimes beat through a few shard tasks while a sweeper asks `is_alive_batch` about all
//! of them every sweep interval; at half-time some stop beating for good. testkit's
//! false-dead checker judges every answer (invariant 1 of the design): one false "dead" fails
//! the run. `--compare` drives `RedisStore`, then `LayeredStore` over a `RedisStore`, on one
//! Redis, and counts what Redis received. `--instances K` runs each store as K instances on
//! that Redis, as a server's instances behind a load balancer, `--routing` the balancer.
//!
//! - [`session`]: every store asked for, one after the other, then the report and exit status;
//! - [`run`]: one store's run and what it measured; [`stores`]: opening that store;
//! - [`fleet`]: its instances, and which one takes each beat;
//! - [`redis_side`]: the Redis of the Redis-backed stores, and what it counted;
//! - [`report`]: the one table (`--json` serialises the same [`report::Summary`]);
//! - [`plot`], [`progress`]: the SVG and the progress bar.

mod fleet;
mod plot;
mod progress;
mod redis_side;
mod report;
mod run;
mod session;
mod stores;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::RangedU64ValueParser;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use liveness_store::StoreConfig;
use serde::Serialize;

use crate::fleet::Routing;
use crate::run::Touch;
use crate::stores::Store;

/// How many times faster than the reference the simulation runs.
const TIME_SCALE: u32 = 100;
/// The most runtimes, and the most ids per `is_alive_batch`.
const MAX_COUNT: u64 = 1_000_000;
/// The longest interval, in ms: an hour.
const MAX_MS: u64 = 3_600_000;
/// The most instances of a store (each with its own connection pool).
const MAX_INSTANCES: u64 = 64;

/// Heartbeat simulator for liveness-store: the reference deployment, time scaled down 100x.
///
/// Prints one table (a column per store), or with --json the same figures as JSON.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(version, after_help = AFTER_HELP)]
pub(crate) struct Args {
    /// The store to drive (layered: a LayeredStore over a RedisStore)
    #[arg(long, value_enum, default_value_t)]
    pub(crate) backend: Store,
    /// Drive RedisStore, then LayeredStore over a RedisStore, on one Redis, side by side
    #[arg(long, conflicts_with = "backend")]
    pub(crate) compare: bool,
    /// The Redis of --compare and of the redis and layered stores [default: $LIVENESS_REDIS_URL,
    /// else $REDIS_URL, else a redis-server of its own on a free loopback port]
    #[arg(long, value_name = "URL", value_parser = redis_url)]
    #[serde(skip)] // It may hold a password.
    pub(crate) redis_url: Option<String>,
    /// Simulated runtimes
    #[arg(long, value_name = "N", default_value_t = 20_000, value_parser = up_to(MAX_COUNT))]
    pub(crate) runtimes: usize,
    /// How long each store runs, in seconds
    #[arg(long, value_name = "S", default_value_t = 15.0, value_parser = seconds)]
    pub(crate) duration_secs: f64,
    /// Heartbeat interval (the reference's: 15 s)
    #[arg(long, value_name = "MS", default_value_t = 150, value_parser = millis(1))]
    pub(crate) beat_ms: u64,
    /// Ttl of every beat (the reference's: 90 s)
    #[arg(long, value_name = "MS", default_value_t = 900, value_parser = millis(1))]
    pub(crate) ttl_ms: u64,
    /// Debounce window of the layered store (the reference's: 30 s)
    #[arg(long, value_name = "MS", default_value_t = 300, value_parser = millis(1))]
    pub(crate) debounce_ms: u64,
    /// How long the layered store reuses a remote "alive"; 0: never (the crate's default 1 s,
    /// scaled down)
    #[arg(long, value_name = "MS", default_value_t = 10, value_parser = millis(0))]
    pub(crate) remote_positive_ms: u64,
    /// Sweeper interval (the reference's: 30 s)
    #[arg(long, value_name = "MS", default_value_t = 300, value_parser = millis(1))]
    pub(crate) sweep_ms: u64,
    /// Share of the runtimes that stop beating at half-time
    #[arg(long, value_name = "P", default_value_t = 2.0, value_parser = percent)]
    pub(crate) silent_percent: f64,
    /// Ids per is_alive_batch call
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = up_to(MAX_COUNT))]
    pub(crate) batch: usize,
    /// How the shards send their beats
    #[arg(long, value_enum, default_value_t)]
    pub(crate) touch: Touch,
    /// Instances of the store, each with its own connection pool, all on one Redis (redis and
    /// layered stores); with more than one, the sweeper asks an instance of its own
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = up_to(MAX_INSTANCES))]
    pub(crate) instances: usize,
    /// Which instance takes each beat
    #[arg(long, value_enum, default_value_t)]
    pub(crate) routing: Routing,
    /// Each runtime presents the lease its last beat returned with its next one, to whichever
    /// instance (`touch_lease`, one call per beat)
    #[arg(long)]
    pub(crate) leases: bool,
    /// Print the figures as JSON on stdout instead of the table
    #[arg(long)]
    #[serde(skip)]
    pub(crate) json: bool,
    /// Draw Redis commands/s over time and each store's latency percentiles into an SVG file
    #[arg(long, value_name = "FILE.svg", value_parser = svg_path)]
    #[serde(skip)]
    pub(crate) plot: Option<PathBuf>,
    /// No progress bar and no notes on stderr (errors only)
    #[arg(long)]
    #[serde(skip)]
    pub(crate) quiet: bool,
}

const AFTER_HELP: &str = "\
Redis: records go under the key prefix `liveness-sim:<pid>:<backend>:`, never the production
one. Commands are counted from INFO commandstats on a connection of the simulator's own, so on
a shared Redis other clients' commands count too. Only a redis-server the simulator started
itself (from $LIVENESS_REDIS_SERVER, else PATH) is flushed between the stores; it is killed at
exit. LIVENESS_OP_TIMEOUT_MS and LIVENESS_RECOVERY_FLOOR_MS are honoured.

Exit status: 0 when no answer broke the no-false-dead rule, 1 when one did or a run failed,
2 on bad arguments or environment.";

impl Args {
    /// The stores to drive, one after the other.
    pub(crate) fn stores(&self) -> Vec<Store> {
        if self.compare {
            vec![Store::Redis, Store::Layered]
        } else {
            vec![self.backend]
        }
    }

    pub(crate) fn needs_redis(&self) -> bool {
        self.stores().into_iter().any(Store::uses_redis)
    }
}

fn main() -> ExitCode {
    let args = parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit());
    // The Redis URL when none was passed, the operation timeout and the recovery floor: read
    // as a server reads them.
    let usage = |message: String| {
        Args::command()
            .error(ErrorKind::InvalidValue, message)
            .exit()
    };
    let env = StoreConfig::from_env().unwrap_or_else(|e| usage(format!("the environment: {e}")));
    let url_from_env = env
        .redis_url
        .as_deref()
        .filter(|_| args.redis_url.is_none());
    if let Some(Err(e)) = url_from_env.filter(|_| args.needs_redis()).map(redis_url) {
        usage(format!("the environment's Redis URL: {e}"));
    }
    session::run(args, env)
}

/// The command line, checked: clap's checks, then the rules that span several options. Its
/// errors exit with status 2 (0 for `--help` and `--version`).
fn parse_from<I, T>(args: I) -> Result<Args, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = Args::try_parse_from(args)?;
    if args.redis_url.is_some() && !args.needs_redis() {
        let message = format!(
            "--redis-url applies to --compare and to --backend redis or layered, not to \
             --backend {}",
            args.backend.name()
        );
        return Err(Args::command().error(ErrorKind::ArgumentConflict, message));
    }
    // Instances of an in-process store share nothing: a fleet of them would read its own
    // beats as "dead" wherever they did not land.
    if args.instances > 1 && !args.needs_redis() {
        let message = format!(
            "--instances {} needs instances that share their records: --compare or --backend \
             redis or layered, not --backend {}",
            args.instances,
            args.backend.name()
        );
        return Err(Args::command().error(ErrorKind::ArgumentConflict, message));
    }
    if args.instances == 1 && args.routing != Routing::Sticky {
        let message = "--routing applies to a fleet: one instance takes every beat (pass \
                       --instances 2 or more)";
        return Err(Args::command().error(ErrorKind::ArgumentConflict, message));
    }
    Ok(args)
}

fn up_to(max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..=max)
}

/// Whole milliseconds from `min` to [`MAX_MS`]. Zero is meaningful for the remote-positive
/// ttl alone: ask the remote every time.
fn millis(min: u64) -> RangedU64ValueParser<u64> {
    RangedU64ValueParser::new().range(min..=MAX_MS)
}

/// A URL redis-rs can parse, not yet tried: a typo is a usage error, not a failed run.
fn redis_url(value: &str) -> Result<String, String> {
    let parsed = redis::IntoConnectionInfo::into_connection_info(value);
    parsed.map(|_| value.to_owned()).map_err(|e| e.to_string())
}

fn seconds(value: &str) -> Result<f64, String> {
    match value.parse() {
        // The range also keeps NaN and the infinities out of `Duration::from_secs_f64`.
        Ok(secs) if (0.001..=3_600.0).contains(&secs) => Ok(secs),
        _ => Err("expected seconds from 0.001 to 3600".into()),
    }
}

fn percent(value: &str) -> Result<f64, String> {
    match value.trim_end_matches('%').parse() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err("expected a percentage from 0 to 100".into()),
    }
}

/// plotters' SVG backend alone draws the plot, so the file must say it is an SVG.
fn svg_path(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    match (path.file_stem(), path.extension()) {
        (Some(_), Some(ext)) if ext.eq_ignore_ascii_case("svg") => Ok(path),
        _ => Err("expected a file name ending in .svg (the plot is an SVG)".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        parse_from(std::iter::once("liveness-sim").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_reference_scaled_down() {
        let args = parse(&[]).unwrap();
        let scaled_up = |ms| Duration::from_millis(ms) * TIME_SCALE;
        assert_eq!(scaled_up(args.beat_ms), Duration::from_secs(15));
        assert_eq!(scaled_up(args.ttl_ms), Duration::from_secs(90));
        assert_eq!(scaled_up(args.debounce_ms), Duration::from_secs(30));
        assert_eq!(scaled_up(args.remote_positive_ms), Duration::from_secs(1));
        assert_eq!(scaled_up(args.sweep_ms), Duration::from_secs(30));
        assert_eq!(args.stores(), [Store::Memory]);
        assert_eq!((args.instances, args.routing), (1, Routing::Sticky));
        assert!(!args.needs_redis(), "the default run needs no Redis");
        assert!(!args.compare && !args.json && !args.quiet && args.plot.is_none());
    }

    #[test]
    fn options_parse_in_both_spellings() {
        let args = parse(&[
            "--runtimes=2000",
            "--backend",
            "noop",
            "--silent-percent=5%",
        ]);
        let args = args.unwrap();
        assert_eq!((args.runtimes, args.backend), (2_000, Store::Noop));
        assert_eq!(args.silent_percent, 5.0);
        let compare = parse(&["--compare", "--json", "--plot", "/tmp/x.SVG", "--quiet"]).unwrap();
        assert_eq!(compare.stores(), [Store::Redis, Store::Layered]);
        assert!(compare.needs_redis() && compare.json && compare.quiet && compare.plot.is_some());
        let layered = parse(&[
            "--backend=layered",
            "--redis-url=redis://x/",
            "--remote-positive-ms=0",
        ]);
        let layered = layered.unwrap();
        assert!(layered.needs_redis() && layered.remote_positive_ms == 0);
        let fleet = parse(&["--compare", "--instances=4", "--routing", "round-robin"]).unwrap();
        assert_eq!((fleet.instances, fleet.routing), (4, Routing::RoundRobin));
        let fleet = parse(&["--backend=redis", "--instances", "64", "--routing=random"]);
        assert_eq!(fleet.unwrap().routing, Routing::Random);
    }

    #[test]
    fn bad_values_and_misuse_exit_2_with_a_reason() {
        for (bad, says) in [
            (&["--runtimes"][..], "value is required"),
            (&["--runtimes", "0"], "0 is not in 1..=1000000"),
            (&["--batch", "1000001"], "not in 1..=1000000"),
            (&["--duration-secs", "NaN"], "seconds from"),
            (&["--ttl-ms=-5"], "invalid value '-5'"),
            (&["--beat-ms", "0"], "0 is not in 1..=3600000"),
            (&["--silent-percent", "100.5"], "percentage"),
            (&["--backend", "cluster"], "invalid value"),
            (&["--touch", "some"], "invalid value"),
            (&["--plot", "figures.png"], ".svg"),
            (&["--plot", ".svg"], ".svg"),
            (&["--redis-url", "notaurl"], "invalid value"),
            (&["--compare", "--backend", "memory"], "cannot be used with"),
            (&["--compare=yes"], "unexpected value"),
            (&["--redis-url", "redis://x/"], "not to --backend memory"),
            (&["--instances", "0"], "0 is not in 1..=64"),
            (&["--compare", "--instances=65"], "65 is not in 1..=64"),
            (&["--instances", "2"], "or layered, not --backend memory"),
            (&["--backend=noop", "--instances=2"], "not --backend noop"),
            (&["--compare", "--routing=random"], "(pass --instances 2"),
            (&["--instances=2", "--routing=some"], "invalid value"),
            (&["what"], "unexpected argument"),
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
            assert!(error.to_string().contains(says), "{bad:?}: {error}");
        }
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }
}
