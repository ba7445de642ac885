//! The settings both Redis backends share, their defaults (stated here once, and in each
//! setter's doc) and their checks, and the key layout.

use std::time::Duration;

use crate::breaker::BreakerSettings;
use crate::validate::MAX_TTL;
use crate::{Error, Result};

/// The key prefix of the reference Go store, so both can share one Redis: give it to a
/// [`ForgetBroadcast`](crate::ForgetBroadcast) over stores built with the default prefix.
pub const DEFAULT_KEY_PREFIX: &str = "mul:runtime:hb:";

/// What `RedisStoreBuilder` and `ClusterStoreBuilder` both set.
#[derive(Debug, Clone)]
pub(crate) struct RemoteSettings {
    pub(crate) key_prefix: String,
    pub(crate) op_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_batch: usize,
    pub(crate) breaker: BreakerSettings,
    pub(crate) recovery_floor: Duration,
    /// Whether a backend that cannot be reached at build fails the build.
    pub(crate) require_connection: bool,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        RemoteSettings {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            op_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            max_batch: 1_000,
            breaker: BreakerSettings::default(),
            // The reference deployment's ttl.
            recovery_floor: Duration::from_secs(90),
            require_connection: false,
        }
    }
}

impl RemoteSettings {
    /// These settings with what `config` sets over them.
    pub(crate) fn configured(mut self, config: &crate::StoreConfig) -> Self {
        if let Some(prefix) = &config.key_prefix {
            prefix.clone_into(&mut self.key_prefix);
        }
        self.op_timeout = config.op_timeout.unwrap_or(self.op_timeout);
        self.recovery_floor = config.recovery_floor.unwrap_or(self.recovery_floor);
        self.require_connection = config.require_connection.unwrap_or(self.require_connection);
        self
    }

    /// An [`Error::Config`] naming the first setting out of bounds.
    pub(crate) fn check(&self) -> Result<()> {
        let problem = if self.op_timeout.is_zero() || self.op_timeout > MAX_TTL {
            "op_timeout must be more than zero and at most 365 days"
        } else if self.connect_timeout.is_zero() || self.connect_timeout > MAX_TTL {
            "connect_timeout must be more than zero and at most 365 days"
        } else if self.max_batch == 0 {
            "max_batch must be at least 1"
        } else if self.recovery_floor > MAX_TTL {
            "recovery_floor must not exceed 365 days"
        } else {
            return self.breaker.check();
        };
        Err(Error::Config(problem.to_owned()))
    }
}

/// The Redis key of a runtime's record: `<prefix><id>`, as the reference store writes it.
pub(crate) fn record_key(prefix: &[u8], runtime_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + runtime_id.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(runtime_id.as_bytes());
    key
}
