//! The command line: options, their defaults (the reference's settings scaled down in time),
//! and the checks that span several of them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use liveness_store::{Backend, ENV_REDIS_URL, ENV_REDIS_URL_FALLBACK, StoreConfig, validate};

const MAX_RUNTIMES: usize = 1_000_000;
const MAX_BATCH: usize = 1_000_000;
const MAX_MS: u64 = 3_600_000;
const MIN_SECS: f64 = 0.001;
const MAX_SECS: f64 = 3_600.0;

pub(crate) const USAGE: &str = "\
liveness-sim: heartbeat simulator for liveness-store, time scaled down 100x

USAGE:
    liveness-sim [OPTIONS]

OPTIONS:
    --backend memory|redis|layered|noop
                                 the store to drive [default: memory]; layered is a
                                 LayeredStore over Redis
    --compare                    drive RedisStore, then LayeredStore over a RedisStore, on
                                 one Redis, and print them side by side
    --redis-url URL              the Redis of --compare, --backend redis and layered
                                 [default: $LIVENESS_REDIS_URL, else $REDIS_URL, else a
                                 redis-server the simulator starts on a free loopback port]
    --runtimes N                 simulated runtimes [default: 20000]
    --duration-secs S            how long each store runs, in seconds [default: 15]
    --beat-ms MS                 heartbeat interval [default: 150; reference 15 s]
    --ttl-ms MS                  ttl of every beat [default: 900; reference 90 s]
    --debounce-ms MS             debounce window of the layered store
                                 [default: 300; reference 30 s]
    --remote-positive-ms MS      how long the layered store reuses a remote 'alive'
                                 [default: 10; the crate's default 1 s / 100]
    --sweep-ms MS                sweeper interval [default: 300; reference 30 s]
    --silent-percent P           runtimes that stop beating at half-time [default: 2]
    --batch N                    ids per is_alive_batch call [default: 1000]
    --touch many|one             one touch_many per shard wake-up, or one touch per beat
                                 [default: many]
    --json                       print the results as JSON on stdout instead of the table
    --plot FILE.svg              draw Redis commands/s over time and the latency
                                 percentiles of each store into an SVG file
    --quiet                      no progress bar and no notes on stderr (errors only)
    -h, --help                   print this help

Redis: records are written under the key prefix `liveness-sim:<pid>:<backend>:`, never under
the production one. Commands are counted from `INFO commandstats` on a connection of the
simulator's own, so on a shared Redis other clients' commands count too. Only a redis-server
the simulator started itself (from $LIVENESS_REDIS_SERVER, else PATH) is flushed between the
stores; it is killed at exit. LIVENESS_OP_TIMEOUT_MS and LIVENESS_RECOVERY_FLOOR_MS are
honoured.

Exit status: 0 when no answer broke the no-false-dead rule, 1 when one did or a run failed,
2 on bad arguments.
";

/// How the shards send their beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TouchMode {
    /// One `touch_many` per shard wake-up, carrying every beat that came due.
    Many,
    /// One `touch` per beat.
    One,
}

impl TouchMode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            TouchMode::Many => "many",
            TouchMode::One => "one",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) backend: Backend,
    /// Drive RedisStore, then LayeredStore, instead of `backend`.
    pub(crate) compare: bool,
    pub(crate) redis_url: Option<String>,
    pub(crate) runtimes: usize,
    pub(crate) duration: Duration,
    pub(crate) beat: Duration,
    pub(crate) ttl: Duration,
    pub(crate) debounce: Duration,
    /// The layered store's remote-positive ttl (C), scaled down like every other interval.
    pub(crate) remote_positive: Duration,
    pub(crate) sweep: Duration,
    pub(crate) silent_percent: f64,
    pub(crate) batch: usize,
    pub(crate) touch: TouchMode,
    pub(crate) json: bool,
    pub(crate) plot: Option<PathBuf>,
    pub(crate) quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            backend: Backend::Memory,
            compare: false,
            redis_url: None,
            runtimes: 20_000,
            duration: Duration::from_secs(15),
            beat: Duration::from_millis(150),
            ttl: Duration::from_millis(900),
            debounce: Duration::from_millis(300),
            remote_positive: Duration::from_millis(10),
            sweep: Duration::from_millis(300),
            silent_percent: 2.0,
            batch: 1_000,
            touch: TouchMode::Many,
            json: false,
            plot: None,
            quiet: false,
        }
    }
}

impl Options {
    /// The backends to drive, one after the other.
    pub(crate) fn backends(&self) -> Vec<Backend> {
        if self.compare {
            vec![Backend::Redis, Backend::Layered]
        } else {
            vec![self.backend]
        }
    }

    /// Whether any of the backends needs a Redis.
    pub(crate) fn needs_redis(&self) -> bool {
        self.backends().into_iter().any(uses_redis)
    }
}

/// Options that take a value.
const VALUE_OPTIONS: &[&str] = &[
    "--backend",
    "--redis-url",
    "--runtimes",
    "--duration-secs",
    "--beat-ms",
    "--ttl-ms",
    "--debounce-ms",
    "--remote-positive-ms",
    "--sweep-ms",
    "--silent-percent",
    "--batch",
    "--touch",
    "--plot",
];

/// Options that stand alone.
const FLAGS: &[&str] = &["--compare", "--json", "--quiet"];

/// The options, or `None` when help was asked for.
pub(crate) fn parse_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Option<Options>, String> {
    let mut opts = Options::default();
    let mut backend_given = false;
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
        if FLAGS.contains(&name.as_str()) {
            if inline.is_some() {
                return Err(format!("{name} takes no value"));
            }
            set_flag(&mut opts, &name);
            continue;
        }
        if !VALUE_OPTIONS.contains(&name.as_str()) {
            return Err(format!("unknown argument `{name}`"));
        }
        let value = match inline {
            Some(value) => value,
            None => utf8(args.next().ok_or_else(|| format!("{name} needs a value"))?)?,
        };
        backend_given |= name == "--backend";
        apply(&mut opts, &name, &value)?;
    }
    check(&opts, backend_given)?;
    Ok(Some(opts))
}

fn utf8(arg: OsString) -> Result<String, String> {
    arg.into_string()
        .map_err(|arg| format!("argument `{}` is not valid UTF-8", arg.to_string_lossy()))
}

fn set_flag(opts: &mut Options, name: &str) {
    match name {
        "--compare" => opts.compare = true,
        "--json" => opts.json = true,
        "--quiet" => opts.quiet = true,
        _ => unreachable!("{name} is in FLAGS"),
    }
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
        // Zero is meaningful here: ask the remote every time.
        "--remote-positive-ms" if value.trim() == "0" => opts.remote_positive = Duration::ZERO,
        "--remote-positive-ms" => opts.remote_positive = parse_ms(name, value)?,
        "--sweep-ms" => opts.sweep = parse_ms(name, value)?,
        "--silent-percent" => opts.silent_percent = parse_percent(name, value)?,
        "--batch" => opts.batch = parse_count(name, value, MAX_BATCH)?,
        "--touch" => opts.touch = parse_touch(value)?,
        "--plot" => opts.plot = Some(parse_svg_path(value)?),
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
            "--backend `{value}` is not one of memory, redis, layered, noop"
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

/// The plot is drawn by plotters' SVG backend alone, so the file must say it is an SVG.
fn parse_svg_path(value: &str) -> Result<PathBuf, String> {
    let path = Path::new(value);
    let is_svg = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("svg"));
    if !is_svg || path.file_stem().is_none() {
        return Err(format!(
            "--plot expects a file name ending in .svg (the plot is an SVG), got `{value}`"
        ));
    }
    Ok(path.to_path_buf())
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
fn check(opts: &Options, backend_given: bool) -> Result<(), String> {
    validate::ttl(opts.ttl).map_err(|e| format!("--ttl-ms: {e}"))?;
    if opts.compare && backend_given {
        return Err(
            "--compare drives the redis and the layered backend itself; drop --backend".into(),
        );
    }
    if opts.redis_url.is_some() && !opts.needs_redis() {
        return Err(format!(
            "--redis-url only applies to --compare or --backend redis or layered (the backend \
             is {})",
            opts.backend
        ));
    }
    Ok(())
}

pub(crate) fn uses_redis(backend: Backend) -> bool {
    matches!(backend, Backend::Redis | Backend::Layered)
}

/// Where the Redis URL came from, when one was given.
pub(crate) fn given_redis_url(opts: &Options) -> Result<Option<String>, String> {
    if let Some(url) = &opts.redis_url {
        return Ok(Some(url.clone()));
    }
    let env = StoreConfig::from_env().map_err(|e| e.to_string())?;
    Ok(env.redis_url)
}

/// The names of the environment variables [`given_redis_url`] reads, for messages.
pub(crate) fn redis_url_variables() -> String {
    format!("{ENV_REDIS_URL} or {ENV_REDIS_URL_FALLBACK}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::TIME_SCALE;

    pub(crate) fn parse(args: &[&str]) -> Result<Option<Options>, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_are_the_reference_scaled_down() {
        let opts = parse(&[]).unwrap().unwrap();
        assert_eq!(opts.backend, Backend::Memory);
        assert_eq!(opts.runtimes, 20_000);
        assert_eq!(opts.duration, Duration::from_secs(15));
        assert_eq!(opts.beat * TIME_SCALE, Duration::from_secs(15));
        assert_eq!(opts.ttl * TIME_SCALE, Duration::from_secs(90));
        assert_eq!(opts.debounce * TIME_SCALE, Duration::from_secs(30));
        assert_eq!(
            opts.remote_positive * TIME_SCALE,
            liveness_store::DEFAULT_REMOTE_POSITIVE_TTL
        );
        assert_eq!(opts.sweep * TIME_SCALE, Duration::from_secs(30));
        assert_eq!(opts.silent_percent, 2.0);
        assert!(!opts.compare && !opts.json && !opts.quiet && opts.plot.is_none());
        assert!(!opts.needs_redis(), "the default run needs no Redis");
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
    fn compare_json_plot_and_quiet_parse() {
        let opts = parse(&[
            "--compare",
            "--json",
            "--quiet",
            "--plot",
            "/tmp/out.SVG",
            "--redis-url=redis://127.0.0.1:1/",
        ])
        .unwrap()
        .unwrap();
        assert!(opts.compare && opts.json && opts.quiet);
        assert_eq!(opts.plot, Some(PathBuf::from("/tmp/out.SVG")));
        assert_eq!(opts.backends(), vec![Backend::Redis, Backend::Layered]);
        assert!(opts.needs_redis());
        assert_eq!(opts.redis_url.as_deref(), Some("redis://127.0.0.1:1/"));

        let plot = parse(&["--plot=figures.svg"]).unwrap().unwrap();
        assert_eq!(plot.plot, Some(PathBuf::from("figures.svg")));
        assert_eq!(plot.backends(), vec![Backend::Memory]);
        let zero = parse(&["--remote-positive-ms", "0"]).unwrap().unwrap();
        assert_eq!(zero.remote_positive, Duration::ZERO);

        let single = parse(&["--backend", "layered"]).unwrap().unwrap();
        assert!(single.needs_redis() && !single.compare);
    }

    #[test]
    fn compare_json_plot_and_quiet_refuse_misuse() {
        for (bad, says) in [
            (&["--compare", "--backend", "memory"][..], "drop --backend"),
            (&["--compare=yes"], "takes no value"),
            (&["--json=1"], "takes no value"),
            (&["--quiet=true"], "takes no value"),
            (&["--plot"], "needs a value"),
            (&["--plot", "figures.png"], ".svg"),
            (&["--plot", ".svg"], ".svg"),
            (&["--plot", "figures"], ".svg"),
            (
                &["--backend", "memory", "--redis-url", "redis://x/"],
                "--compare",
            ),
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?}"));
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }
}
