//! Choosing the backend at run time, from configuration or the environment.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::redact::redact_url;
use crate::{Error, LivenessStore, NoopStore, Result};

/// Which backend [`open`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// [`NoopStore`]: no backend, the database is the only truth.
    #[default]
    Noop,
    /// `MemoryStore` (feature `memory`): records in this process only.
    Memory,
    /// `RedisStore` (feature `redis`): records shared through Redis.
    Redis,
    /// `LayeredStore` over `RedisStore` (features `layered` and `redis`): a local layer in
    /// front of Redis.
    Layered,
    /// `ClusterStore` (feature `cluster`): records on Redis Cluster; the Redis URL is a
    /// comma-separated list of seed nodes.
    Cluster,
    /// `LayeredStore` over `ClusterStore` (features `layered` and `cluster`).
    LayeredCluster,
}

impl Backend {
    /// The name used in configuration (`LIVENESS_BACKEND`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Backend::Noop => "noop",
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Layered => "layered",
            Backend::Cluster => "cluster",
            Backend::LayeredCluster => "layered-cluster",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(name: &str) -> Result<Backend> {
        match name.trim().to_ascii_lowercase().as_str() {
            "noop" | "" => Ok(Backend::Noop),
            "memory" => Ok(Backend::Memory),
            "redis" => Ok(Backend::Redis),
            "layered" => Ok(Backend::Layered),
            "cluster" => Ok(Backend::Cluster),
            "layered-cluster" => Ok(Backend::LayeredCluster),
            _ => Err(Error::Config(format!(
                "unknown backend `{name}`: expected one of noop, memory, redis, layered, \
                 cluster, layered-cluster"
            ))),
        }
    }
}

/// Environment variable naming the backend.
pub const ENV_BACKEND: &str = "LIVENESS_BACKEND";
/// Environment variable holding the Redis URL; for the cluster backends, the seed nodes' URLs
/// separated by commas (see [`StoreConfig::from_env`] for commas in passwords).
pub const ENV_REDIS_URL: &str = "LIVENESS_REDIS_URL";
/// Fallback for [`ENV_REDIS_URL`], the name most platforms set.
pub const ENV_REDIS_URL_FALLBACK: &str = "REDIS_URL";
/// Environment variable holding the key prefix.
pub const ENV_KEY_PREFIX: &str = "LIVENESS_KEY_PREFIX";
/// Environment variable holding the operation timeout in milliseconds.
pub const ENV_OP_TIMEOUT_MS: &str = "LIVENESS_OP_TIMEOUT_MS";
/// Environment variable holding the layered store's debounce window in milliseconds.
pub const ENV_DEBOUNCE_MS: &str = "LIVENESS_DEBOUNCE_MS";
/// Environment variable holding the recovery floor in milliseconds: the largest ttl callers
/// pass (see `RedisStoreBuilder::recovery_floor`).
pub const ENV_RECOVERY_FLOOR_MS: &str = "LIVENESS_RECOVERY_FLOOR_MS";

/// The backend to open and its settings; unset settings keep each backend's defaults.
///
/// ```
/// use liveness_store::{Backend, StoreConfig};
///
/// let config = StoreConfig::from_lookup(|name| match name {
///     "LIVENESS_BACKEND" => Some("redis".into()),
///     "LIVENESS_REDIS_URL" => Some("redis://:hunter2@127.0.0.1:6379/".into()),
///     _ => None,
/// })?;
/// assert_eq!(config.backend, Backend::Redis);
/// assert!(!format!("{config:?}").contains("hunter2"));
/// # Ok::<(), liveness_store::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreConfig {
    /// Which backend to build. Defaults to [`Backend::Noop`].
    pub backend: Backend,
    /// The Redis URL, required by the Redis-backed backends.
    pub redis_url: Option<String>,
    /// The key prefix; `None` keeps `mul:runtime:hb:`.
    pub key_prefix: Option<String>,
    /// The operation timeout; `None` keeps 250 ms.
    pub op_timeout: Option<Duration>,
    /// The layered store's debounce window; `None` keeps 30 s.
    pub debounce: Option<Duration>,
    /// The recovery floor, the largest ttl callers pass; `None` keeps 90 s.
    pub recovery_floor: Option<Duration>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("key_prefix", &self.key_prefix)
            .field("op_timeout", &self.op_timeout)
            .field("debounce", &self.debounce)
            .field("recovery_floor", &self.recovery_floor)
            .finish()
    }
}

impl StoreConfig {
    /// A configuration for `backend` with every setting at its default.
    #[must_use]
    pub fn new(backend: Backend) -> Self {
        StoreConfig {
            backend,
            ..StoreConfig::default()
        }
    }

    /// Sets the Redis URL.
    #[must_use]
    pub fn with_redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis_url = Some(url.into());
        self
    }

    /// Sets the key prefix.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// Sets the operation timeout.
    #[must_use]
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = Some(timeout);
        self
    }

    /// Sets the recovery floor: the largest ttl callers pass (see
    /// `RedisStoreBuilder::recovery_floor`).
    #[must_use]
    pub fn with_recovery_floor(mut self, floor: Duration) -> Self {
        self.recovery_floor = Some(floor);
        self
    }

    /// Sets the layered store's debounce window.
    #[must_use]
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = Some(debounce);
        self
    }

    /// Reads the configuration from the process environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `LIVENESS_BACKEND` | `noop`, `memory`, `redis`, `layered`, `cluster` or `layered-cluster` | `noop` |
    /// | `LIVENESS_REDIS_URL` | Redis URL (falls back to `REDIS_URL`); for the cluster backends, the seed nodes' URLs separated by commas | none |
    /// | `LIVENESS_KEY_PREFIX` | key prefix | `mul:runtime:hb:` |
    /// | `LIVENESS_OP_TIMEOUT_MS` | operation timeout in ms | `250` |
    /// | `LIVENESS_DEBOUNCE_MS` | the layered store's debounce window in ms | `30000` |
    /// | `LIVENESS_RECOVERY_FLOOR_MS` | the largest ttl callers pass, in ms: after a possible loss "dead" is distrusted for one and a half times this | `90000` |
    ///
    /// Cluster seeds are split only at a comma that a URL scheme follows (`redis://`,
    /// `rediss://`, `valkey://` or `valkeys://`, in any case, spaces allowed), and a trailing
    /// comma is ignored: a raw comma in a password stays part of it
    /// (`redis://:pa,ss@10.0.0.1:6379/,redis://10.0.0.2:6379/` is two seeds), and so does a
    /// percent-encoded one (`%2C`).
    ///
    /// Nothing set gives the noop store; `REDIS_URL` alone does not turn Redis on. An empty
    /// variable counts as unset.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable and the fix when a value is malformed.
    pub fn from_env() -> Result<StoreConfig> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup` (for tests and for
    /// servers with their own configuration source).
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<StoreConfig> {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let backend = match set(ENV_BACKEND) {
            None => Backend::Noop,
            Some(name) => name.parse().map_err(|e: Error| {
                Error::Config(format!("{ENV_BACKEND}: {}", unwrap_config(e)))
            })?,
        };
        let milliseconds = |name: &str, zero_ok: bool| {
            set(name)
                .map(|ms| match ms.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 || zero_ok => Ok(Duration::from_millis(ms)),
                    _ => Err(Error::Config(format!(
                        "{name}=`{ms}` is not a {} whole number of milliseconds; set it like \
                         {name}=250 or unset it",
                        if zero_ok { "non-negative" } else { "positive" }
                    ))),
                })
                .transpose()
        };
        Ok(StoreConfig {
            backend,
            redis_url: set(ENV_REDIS_URL).or_else(|| set(ENV_REDIS_URL_FALLBACK)),
            key_prefix: set(ENV_KEY_PREFIX),
            op_timeout: milliseconds(ENV_OP_TIMEOUT_MS, false)?,
            debounce: milliseconds(ENV_DEBOUNCE_MS, true)?,
            recovery_floor: milliseconds(ENV_RECOVERY_FLOOR_MS, true)?,
        })
    }

    /// The Redis URL, or an error saying how to set it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn require_redis_url(&self) -> Result<&str> {
        self.redis_url.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "backend `{}` needs a Redis URL: set {ENV_REDIS_URL} (or {ENV_REDIS_URL_FALLBACK}), \
                 e.g. {ENV_REDIS_URL}=redis://127.0.0.1:6379/",
                self.backend
            ))
        })
    }
}

fn unwrap_config(error: Error) -> String {
    match error {
        Error::Config(message) => message,
        other => other.to_string(),
    }
}

/// Builds the store `config` asks for.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// let store = liveness_store::open(&liveness_store::StoreConfig::default()).await?;
/// assert!(!store.available()); // nothing configured: the noop store
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Config`] when the backend was not compiled in (the message names the Cargo
/// feature to enable) or a setting is missing or invalid; the Redis backends' connection
/// errors otherwise.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    match config.backend {
        Backend::Noop => Ok(Arc::new(NoopStore::new())),
        Backend::Memory => open_memory(),
        Backend::Redis => open_redis(config).await,
        Backend::Layered => open_layered(config).await,
        Backend::Cluster => open_cluster(config).await,
        Backend::LayeredCluster => open_layered_cluster(config).await,
    }
}

/// The URLs in a comma-separated list of seeds, trimmed, empty ones dropped; see
/// [`split_urls`].
#[cfg(any(test, feature = "cluster"))]
fn split_seeds(urls: &str) -> Vec<&str> {
    split_urls(urls)
        // A comma left at a seed's end separates nothing (a URL cannot end in one after its
        // password): "a,b," and "a,,b" read as "a,b", as when every comma split.
        .map(|seed| {
            seed.trim_start()
                .trim_end_matches(|c: char| c == ',' || c.is_whitespace())
        })
        .filter(|seed| !seed.is_empty())
        .collect()
}

/// `urls` cut, verbatim, at each comma that a URL scheme follows (spaces allowed), and only
/// there: a raw `,` is legal in a password, and cutting there would break the URL and the
/// redaction of its password, which cuts the same way (`redact.rs`). A password holding a
/// comma then a scheme still splits; percent-encode it (`%2C`).
pub(crate) fn split_urls(urls: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(urls);
    std::iter::from_fn(move || {
        let text = rest?;
        let cut = text
            .match_indices(',')
            .map(|(comma, _)| comma)
            .find(|&comma| starts_with_scheme(text[comma + 1..].trim_start()));
        match cut {
            Some(comma) => {
                rest = Some(&text[comma + 1..]);
                Some(&text[..comma])
            }
            None => rest.take(),
        }
    })
}

/// Whether `text` starts with one of the TCP schemes redis-rs takes, in any case.
fn starts_with_scheme(text: &str) -> bool {
    ["redis://", "rediss://", "valkey://", "valkeys://"]
        .iter()
        .any(|scheme| {
            text.get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
        })
}

#[cfg(feature = "cluster")]
async fn cluster_store(config: &StoreConfig) -> Result<crate::ClusterStore> {
    let seeds = split_seeds(config.require_redis_url()?);
    let mut builder = crate::ClusterStore::builder(seeds);
    if let Some(prefix) = &config.key_prefix {
        builder = builder.key_prefix(prefix);
    }
    if let Some(timeout) = config.op_timeout {
        builder = builder.op_timeout(timeout);
    }
    if let Some(floor) = config.recovery_floor {
        builder = builder.recovery_floor(floor);
    }
    builder.build().await
}

#[cfg(feature = "cluster")]
async fn open_cluster(config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    Ok(Arc::new(cluster_store(config).await?))
}

#[cfg(not(feature = "cluster"))]
async fn open_cluster(_config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    Err(feature_missing(Backend::Cluster, "cluster"))
}

#[cfg(all(feature = "layered", feature = "cluster"))]
async fn open_layered_cluster(config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    let builder = crate::LayeredStore::builder(cluster_store(config).await?);
    Ok(Arc::new(layered_settings(builder, config).build()?))
}

#[cfg(not(all(feature = "layered", feature = "cluster")))]
async fn open_layered_cluster(_config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    let feature = if cfg!(feature = "layered") {
        "cluster"
    } else {
        "layered"
    };
    Err(feature_missing(Backend::LayeredCluster, feature))
}

/// The layered settings a configuration holds.
#[cfg(all(feature = "layered", feature = "redis"))]
fn layered_settings<R: LivenessStore + 'static>(
    mut builder: crate::LayeredStoreBuilder<R>,
    config: &StoreConfig,
) -> crate::LayeredStoreBuilder<R> {
    if let Some(timeout) = config.op_timeout {
        builder = builder.op_timeout(timeout);
    }
    if let Some(debounce) = config.debounce {
        builder = builder.debounce(debounce);
    }
    builder
}

#[cfg(feature = "memory")]
fn open_memory() -> Result<Arc<dyn LivenessStore>> {
    Ok(Arc::new(crate::MemoryStore::new()))
}

#[cfg(not(feature = "memory"))]
fn open_memory() -> Result<Arc<dyn LivenessStore>> {
    Err(feature_missing(Backend::Memory, "memory"))
}

#[cfg(feature = "redis")]
async fn open_redis(config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    Ok(Arc::new(redis_store(config).await?))
}

#[cfg(feature = "redis")]
async fn redis_store(config: &StoreConfig) -> Result<crate::RedisStore> {
    let mut builder = crate::RedisStore::builder(config.require_redis_url()?);
    if let Some(prefix) = &config.key_prefix {
        builder = builder.key_prefix(prefix);
    }
    if let Some(timeout) = config.op_timeout {
        builder = builder.op_timeout(timeout);
    }
    if let Some(floor) = config.recovery_floor {
        builder = builder.recovery_floor(floor);
    }
    builder.build().await
}

#[cfg(not(feature = "redis"))]
async fn open_redis(_config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    Err(feature_missing(Backend::Redis, "redis"))
}

#[cfg(all(feature = "layered", feature = "redis"))]
async fn open_layered(config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    let builder = crate::LayeredStore::builder(redis_store(config).await?);
    Ok(Arc::new(layered_settings(builder, config).build()?))
}

#[cfg(not(all(feature = "layered", feature = "redis")))]
async fn open_layered(_config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    let feature = if cfg!(feature = "layered") {
        "redis"
    } else {
        "layered"
    };
    Err(feature_missing(Backend::Layered, feature))
}

#[cfg(not(all(
    feature = "memory",
    feature = "redis",
    feature = "layered",
    feature = "cluster"
)))]
fn feature_missing(backend: Backend, feature: &str) -> Error {
    Error::Config(format!(
        "backend `{backend}` was not compiled in: enable the Cargo feature `{feature}` of \
         liveness-store (e.g. `liveness-store = {{ version = \"{}\", features = [\"{feature}\"] }}`)",
        env!("CARGO_PKG_VERSION")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<StoreConfig> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        StoreConfig::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_is_noop() {
        assert_eq!(config(&[]).unwrap(), StoreConfig::default());
        // A platform's REDIS_URL alone does not turn Redis on.
        let c = config(&[("REDIS_URL", "redis://x/")]).unwrap();
        assert_eq!(c.backend, Backend::Noop);
        // An empty variable is unset, not an empty key prefix.
        let c = config(&[("LIVENESS_KEY_PREFIX", "")]).unwrap();
        assert_eq!(c.key_prefix, None);
    }

    #[test]
    fn reads_every_variable() {
        let c = config(&[
            ("LIVENESS_BACKEND", " Redis "),
            ("REDIS_URL", "redis://fallback/"),
            ("LIVENESS_KEY_PREFIX", "hb:"),
            ("LIVENESS_OP_TIMEOUT_MS", "100"),
            ("LIVENESS_DEBOUNCE_MS", "0"),
        ])
        .unwrap();
        assert_eq!(c.backend, Backend::Redis);
        assert_eq!(c.redis_url.as_deref(), Some("redis://fallback/"));
        assert_eq!(c.key_prefix.as_deref(), Some("hb:"));
        assert_eq!(c.op_timeout, Some(Duration::from_millis(100)));
        assert_eq!(c.debounce, Some(Duration::ZERO));
        let c = config(&[
            ("LIVENESS_REDIS_URL", "redis://primary/"),
            ("REDIS_URL", "redis://fallback/"),
        ])
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://primary/"));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let e = config(&[("LIVENESS_BACKEND", "mongo")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("LIVENESS_BACKEND") && e.contains("mongo"), "{e}");
        for bad in ["0", "-5", "1.5", "fast"] {
            let e = config(&[("LIVENESS_OP_TIMEOUT_MS", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("LIVENESS_OP_TIMEOUT_MS"), "{e}");
        }
        for variable in ["LIVENESS_DEBOUNCE_MS", "LIVENESS_RECOVERY_FLOOR_MS"] {
            for bad in ["-5", "1.5", "90s", "99999999999999999999"] {
                let e = config(&[(variable, bad)]).unwrap_err().to_string();
                assert!(e.contains(variable), "{e}");
            }
        }
    }

    #[test]
    fn seeds_split_only_before_a_scheme() {
        assert_eq!(
            split_seeds("redis://h1:1/,redis://h2:2/"),
            ["redis://h1:1/", "redis://h2:2/"]
        );
        assert_eq!(
            split_seeds(" redis://h1:1/ ,  REDISS://h2:2/ "),
            ["redis://h1:1/", "REDISS://h2:2/"]
        );
        assert_eq!(
            split_seeds("redis://h1:1/,redis://h2:2/,"),
            ["redis://h1:1/", "redis://h2:2/"]
        );
        assert_eq!(
            split_seeds("redis://h1:1/, ,redis://h2:2/ , "),
            ["redis://h1:1/", "redis://h2:2/"]
        );
        // A raw comma in a password stays in it, wherever the URL stands.
        assert_eq!(
            split_seeds("redis://:pa,ss@h:1/,redis://h2:2/"),
            ["redis://:pa,ss@h:1/", "redis://h2:2/"]
        );
        assert_eq!(
            split_seeds("valkey://h2:2/, rediss://u:,p,@h:1/"),
            ["valkey://h2:2/", "rediss://u:,p,@h:1/"]
        );
        assert_eq!(split_seeds("redis://:a%2Cb@h:1/"), ["redis://:a%2Cb@h:1/"]);
        assert_eq!(split_seeds("redis://h:1/"), ["redis://h:1/"]);
        assert_eq!(
            split_seeds(" redis://:pa,ss@h:1/ "),
            ["redis://:pa,ss@h:1/"]
        );
        assert!(split_seeds(" , ").is_empty());
    }

    #[test]
    fn debug_redacts_a_password_with_a_comma() {
        let c = StoreConfig::new(Backend::Cluster)
            .with_redis_url("redis://:hun,ter2@h1:1/,redis://u:s3,cr3t@h2:2/");
        let shown = format!("{c:?}");
        for part in ["hun", "ter2", "s3", "cr3t"] {
            assert!(!shown.contains(part), "{part}: {shown}");
        }
        assert!(
            shown.contains("redis://:***@h1:1/,redis://u:***@h2:2/"),
            "{shown}"
        );
    }

    #[test]
    fn debug_redacts_the_password() {
        let c = StoreConfig::new(Backend::Redis).with_redis_url("redis://u:hunter2@h/");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("u:***@h"),
            "{shown}"
        );
    }
}
