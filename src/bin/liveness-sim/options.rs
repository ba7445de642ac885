//! The command line: options, their defaults (the reference's settings scaled down in time) and
//! the store configuration they ask for.

use std::ffi::OsString;
use std::time::Duration;

use liveness_store::{Backend, ENV_REDIS_URL, ENV_REDIS_URL_FALLBACK, StoreConfig, validate};

pub(crate) const MAX_RUNTIMES: usize = 1_000_000;
pub(crate) const MAX_BATCH: usize = 1_000_000;
pub(crate) const MAX_MS: u64 = 3_600_000;
pub(crate) const MIN_SECS: f64 = 0.001;
pub(crate) const MAX_SECS: f64 = 3_600.0;

pub(crate) const USAGE: &str = "\
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

/// How the shards send their beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TouchMode {
    /// One `touch_many` per shard wake-up, carrying every beat that came due.
    Many,
    /// One `touch` per beat.
    One,
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) backend: Backend,
    pub(crate) redis_url: Option<String>,
    pub(crate) runtimes: usize,
    pub(crate) duration: Duration,
    pub(crate) beat: Duration,
    pub(crate) ttl: Duration,
    pub(crate) debounce: Duration,
    pub(crate) sweep: Duration,
    pub(crate) silent_percent: f64,
    pub(crate) batch: usize,
    pub(crate) touch: TouchMode,
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

pub(crate) const OPTION_NAMES: &[&str] = &[
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
pub(crate) fn parse_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<Option<Options>, String> {
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

pub(crate) fn utf8(arg: OsString) -> Result<String, String> {
    arg.into_string()
        .map_err(|arg| format!("argument `{}` is not valid UTF-8", arg.to_string_lossy()))
}

pub(crate) fn apply(opts: &mut Options, name: &str, value: &str) -> Result<(), String> {
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

pub(crate) fn parse_backend(value: &str) -> Result<Backend, String> {
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

pub(crate) fn parse_touch(value: &str) -> Result<TouchMode, String> {
    match value.trim() {
        "many" => Ok(TouchMode::Many),
        "one" => Ok(TouchMode::One),
        _ => Err(format!("--touch `{value}` is not one of many, one")),
    }
}

/// A whole number from 1 to `max`; `_` separators are allowed.
pub(crate) fn parse_count(name: &str, value: &str, max: usize) -> Result<usize, String> {
    match value.trim().replace('_', "").parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{name} expects a whole number from 1 to {max}, got `{value}`"
        )),
    }
}

pub(crate) fn parse_ms(name: &str, value: &str) -> Result<Duration, String> {
    match value.trim().replace('_', "").parse::<u64>() {
        Ok(ms) if (1..=MAX_MS).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "{name} expects whole milliseconds from 1 to {MAX_MS}, got `{value}`"
        )),
    }
}

pub(crate) fn parse_secs(name: &str, value: &str) -> Result<Duration, String> {
    match value.trim().parse::<f64>() {
        // The range check also keeps NaN and infinities out of `from_secs_f64`.
        Ok(secs) if (MIN_SECS..=MAX_SECS).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "{name} expects seconds from {MIN_SECS} to {MAX_SECS}, got `{value}`"
        )),
    }
}

pub(crate) fn parse_percent(name: &str, value: &str) -> Result<f64, String> {
    match value.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "{name} expects a percentage from 0 to 100, got `{value}`"
        )),
    }
}

/// Checks that span several options.
pub(crate) fn check(opts: &Options) -> Result<(), String> {
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
pub(crate) fn store_config(opts: &Options) -> Result<StoreConfig, String> {
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

pub(crate) fn uses_redis(backend: Backend) -> bool {
    matches!(backend, Backend::Redis | Backend::Layered)
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
}
