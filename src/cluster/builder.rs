//! Settings of a [`ClusterStore`] and the checks that run before it connects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;

use super::connection::Connection;
use super::loss::LossWatch;
use super::topology::{Topology, TopologyCell};
use super::{ClusterStore, Inner};
use crate::breaker::Breaker;
use crate::log_limit::LogLimit;
use crate::redact::{redact_url, scrub};
use crate::remote::contact::keep_trying;
use crate::remote::settings::RemoteSettings;
use crate::{Error, Result};

/// Builds a [`ClusterStore`]; see [`ClusterStore::builder`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct ClusterStoreBuilder {
    seeds: Vec<String>,
    settings: RemoteSettings,
}

impl fmt::Debug for ClusterStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterStoreBuilder")
            .field("seeds", &redacted(&self.seeds))
            .field("settings", &self.settings)
            .finish()
    }
}

/// The seeds, comma-separated, passwords redacted.
fn redacted(seeds: &[String]) -> String {
    seeds
        .iter()
        .map(|seed| redact_url(seed))
        .collect::<Vec<_>>()
        .join(",")
}

impl ClusterStoreBuilder {
    pub(super) fn new(seeds: Vec<String>) -> Self {
        ClusterStoreBuilder {
            seeds,
            settings: RemoteSettings::default(),
        }
    }

    /// The prefix of every record's key (`<prefix><runtime id>`). A hash tag in the prefix
    /// would put every record in one slot, on one master: keep tags in the ids, if anywhere.
    ///
    /// Defaults to `mul:runtime:hb:`, as for `RedisStore`.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.settings.key_prefix);
        self
    }

    /// The longest one call waits on the cluster, a retry after a redirect included; past it
    /// the call is an `Err(Error::Timeout)`.
    ///
    /// Defaults to 250 ms.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.settings.op_timeout = timeout;
        self
    }

    /// The longest opening one connection to a node may take, and the longest `build` waits
    /// for the cluster's slot map.
    ///
    /// Defaults to 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Keys per `MGET` command (each holds the keys of one slot).
    ///
    /// Defaults to 1,000.
    pub fn max_batch(mut self, keys: usize) -> Self {
        self.settings.max_batch = keys;
        self
    }

    /// Failed calls in a row after which the circuit breaker opens; as
    /// [`RedisStoreBuilder::failure_threshold`](crate::RedisStoreBuilder::failure_threshold).
    /// One breaker guards the whole cluster.
    ///
    /// Defaults to 5.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.settings.breaker.failure_threshold = failures;
        self
    }

    /// How long the open breaker waits before a probe; doubles per failed probe.
    ///
    /// Defaults to 1 s.
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.breaker.cooldown = cooldown;
        self
    }

    /// The longest wait between probes.
    ///
    /// Defaults to 30 s.
    pub fn breaker_max_cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.breaker.max_cooldown = cooldown;
        self
    }

    /// The largest ttl callers pass, which sets the recovery window after a master may have
    /// lost writes (one and a half times this); as
    /// [`RedisStoreBuilder::recovery_floor`](crate::RedisStoreBuilder::recovery_floor).
    ///
    /// Defaults to 90 s.
    pub fn recovery_floor(mut self, floor: Duration) -> Self {
        self.settings.recovery_floor = floor;
        self
    }

    /// Whether a cluster none of whose seeds can be reached at build fails the build; as
    /// [`RedisStoreBuilder::require_connection`](crate::RedisStoreBuilder::require_connection).
    ///
    /// Defaults to `false`: the store starts down and connects in the background.
    pub fn require_connection(mut self, require: bool) -> Self {
        self.settings.require_connection = require;
        self
    }

    /// The settings `config` holds, over these.
    pub(crate) fn configured(mut self, config: &crate::StoreConfig) -> Self {
        self.settings = self.settings.configured(config);
        self
    }

    /// Checks the settings, connects to the cluster, reads its slot map and every slot's epoch
    /// record, and loads the store's marker into every master.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid settings, no seed or a malformed URL; [`Error::Timeout`]
    /// or [`Error::Backend`] when the cluster cannot be reached, refuses the credentials or
    /// answers like no cluster.
    pub async fn build(self) -> Result<ClusterStore> {
        if self.seeds.is_empty() || self.seeds.iter().any(|s| s.trim().is_empty()) {
            return Err(Error::Config(
                "at least one seed URL is needed, and none may be empty".to_owned(),
            ));
        }
        self.settings.check()?;
        let RemoteSettings {
            key_prefix,
            op_timeout,
            connect_timeout,
            max_batch,
            breaker: breaker_settings,
            recovery_floor,
            require_connection,
        } = self.settings;
        let seeds = self.seeds.join(",");
        let name = redacted(&self.seeds);
        let client = ClusterClientBuilder::new(self.seeds.iter().map(String::as_str))
            .connection_timeout(connect_timeout)
            .response_timeout(op_timeout)
            // One retry lets redis-rs follow a `MOVED` or `ASK`; the store's deadline bounds it.
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(u64::try_from(op_timeout.as_millis() / 4).unwrap_or(u64::MAX))
            .build()
            .map_err(|e| {
                Error::Config(format!("cluster seeds: {}", scrub(&e.to_string(), &seeds)))
            })?;
        let losses = LossWatch::new(key_prefix.as_bytes(), recovery_floor, name.as_str().into());
        let breaker = Arc::new(Breaker::new(breaker_settings, op_timeout, name.clone()));
        let inner = Arc::new(Inner {
            connection: Arc::new(Connection::new(client, None, connect_timeout)),
            topology: Arc::new(TopologyCell::new(Topology::empty())),
            losses: Arc::new(losses),
            key_prefix: key_prefix.into_bytes(),
            op_timeout,
            max_batch,
            seeds,
            breaker: Arc::clone(&breaker),
            name: name.clone(),
            forget_log: LogLimit::new(),
        });
        let connecting = match inner.contact(connect_timeout).await {
            Ok(()) => None,
            Err(failure) => {
                let error = failure.at_build(require_connection)?;
                let retry = Arc::clone(&inner);
                Some(keep_trying(
                    breaker,
                    breaker_settings,
                    name,
                    &error,
                    move || {
                        let inner = Arc::clone(&retry);
                        async move { inner.contact(connect_timeout).await }
                    },
                ))
            }
        };
        Ok(ClusterStore {
            inner,
            _connecting: connecting,
        })
    }
}
