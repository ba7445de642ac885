//! Choosing the backend at run time, from configuration or the environment: [`Backend`] (which
//! one), [`StoreConfig`] (with what settings; read from the environment in `env`), and
//! [`open`] (build it).

mod backend;
mod env;
mod open;

pub use backend::Backend;
pub use env::{
    ENV_BACKEND, ENV_DEBOUNCE_MS, ENV_KEY_PREFIX, ENV_LEASE_SKEW_MARGIN_MS, ENV_OP_TIMEOUT_MS,
    ENV_RECOVERY_FLOOR_MS, ENV_REDIS_URL, ENV_REDIS_URL_FALLBACK, ENV_REQUIRE_CONNECTION,
};
pub use open::open;

use std::fmt;
use std::time::Duration;

use crate::redact::redact_url;
use crate::{Error, Result};

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
    /// How far apart the layered instances' clocks may be (every lease is trusted for this
    /// much less); `None` keeps 1 s.
    pub lease_skew_margin: Option<Duration>,
    /// Whether an unreachable Redis fails `open()`; `None` keeps the builders' default (it
    /// does not: the store starts down and connects in the background).
    pub require_connection: Option<bool>,
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
            .field("lease_skew_margin", &self.lease_skew_margin)
            .field("require_connection", &self.require_connection)
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

    /// Sets whether an unreachable Redis fails `open()` (see
    /// `RedisStoreBuilder::require_connection`).
    #[must_use]
    pub fn with_require_connection(mut self, require: bool) -> Self {
        self.require_connection = Some(require);
        self
    }

    /// Sets the layered store's debounce window.
    #[must_use]
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = Some(debounce);
        self
    }

    /// Sets how far apart the layered instances' clocks may be (see
    /// `LayeredStoreBuilder::lease_skew_margin`).
    #[must_use]
    pub fn with_lease_skew_margin(mut self, margin: Duration) -> Self {
        self.lease_skew_margin = Some(margin);
        self
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

#[cfg(test)]
mod tests {
    use super::*;

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
