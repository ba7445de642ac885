//! Settings of a [`RedisStore`] and the checks that run before it connects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::RedisStore;
use super::connection::TrackedManager;
use super::contact::Contact;
use super::loss::LossWatch;
use super::tls::{self, TlsSettings};
use crate::breaker::Breaker;
use crate::log_limit::LogLimit;
use crate::redact::redact_url;
use crate::remote::contact::keep_trying;
use crate::remote::settings::RemoteSettings;
use crate::{Error, Result};

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct RedisStoreBuilder {
    url: String,
    settings: RemoteSettings,
    pool_size: u32,
    /// Set in `tls.rs`, with the rest of the TLS plumbing.
    pub(super) tls: TlsSettings,
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &redact_url(&self.url))
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("settings", &self.settings)
            .finish()
    }
}

impl RedisStoreBuilder {
    pub(super) fn new(url: &str) -> Self {
        RedisStoreBuilder {
            url: url.to_owned(),
            settings: RemoteSettings::default(),
            pool_size: 8,
            tls: TlsSettings::default(),
        }
    }

    /// The prefix of every record's key (`<prefix><runtime id>`).
    ///
    /// Defaults to `mul:runtime:hb:`, the reference store's, so that records written by either
    /// are read by both.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.settings.key_prefix);
        self
    }

    /// The most connections the pool opens. A call holds one only long enough to clone it:
    /// each `MultiplexedConnection` pipelines the requests of every concurrent call, so a few
    /// suffice; more spread the load over more sockets.
    ///
    /// Defaults to 8.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// The longest one call waits on Redis, pool checkout included; past it the call is an
    /// `Err(Error::Timeout)` and the caller falls back to its database.
    ///
    /// Defaults to 250 ms.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.settings.op_timeout = timeout;
        self
    }

    /// The longest opening one connection may take, including the first one that `build`
    /// opens to check the URL and the credentials.
    ///
    /// Defaults to 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// Keys per `MGET` command; a batch is split into chunks of this size, all sent in one
    /// pipeline.
    ///
    /// Defaults to 1,000.
    pub fn max_batch(mut self, keys: usize) -> Self {
        self.settings.max_batch = keys;
        self
    }

    /// Failed calls in a row (timeouts and connection failures; error replies such as `OOM`
    /// are answers and do not count) after which the circuit breaker opens and calls fail
    /// fast with [`Error::Unavailable`].
    ///
    /// Defaults to 5.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.settings.breaker.failure_threshold = failures;
        self
    }

    /// How long the open breaker waits before one call probes whether Redis is back. Each
    /// failed probe doubles the wait, up to [`breaker_max_cooldown`](Self::breaker_max_cooldown).
    /// Shorter notices recovery sooner; longer spares a struggling Redis.
    ///
    /// Defaults to 1 s.
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.breaker.cooldown = cooldown;
        self
    }

    /// The longest wait between probes of a Redis that stays down.
    ///
    /// Defaults to 30 s.
    pub fn breaker_max_cooldown(mut self, cooldown: Duration) -> Self {
        self.settings.breaker.max_cooldown = cooldown;
        self
    }

    /// Set it to the largest ttl callers pass to `touch`. After Redis may have lost writes
    /// (its data emptied, a restart, a failover), "dead" answers are [`Error::Recovering`] for
    /// one and a half times this long: the largest ttl, plus the largest debounce a layered
    /// writer may add (it is clamped to half the ttl), so that every `Ok` any instance gave
    /// before it noticed has run out. If this instance wrote longer records, for as long as the
    /// longest. The same holds for a new Redis or a new server: until its records (or the
    /// server) are that old, it may lack those of runtimes that beat before.
    ///
    /// Zero trusts a new Redis at once and leaves instances that only read without any
    /// recovery window; it suits tests and a first deployment, not a running fleet.
    ///
    /// Defaults to 90 s (the reference deployment's ttl): a window of 135 s.
    pub fn recovery_floor(mut self, floor: Duration) -> Self {
        self.settings.recovery_floor = floor;
        self
    }

    /// Whether a Redis that cannot be reached at build fails the build.
    ///
    /// By default it does not: the store starts down (calls fail fast with
    /// [`Error::Unavailable`], and the caller falls back to its database, as it does during any
    /// outage), logs one WARN line, and connects in the background with the breaker's backoff,
    /// becoming healthy without a restart once Redis answers. A fleet restarting during a
    /// Redis outage keeps serving heartbeats that way. Set it for the old behaviour: an
    /// unreachable Redis is an `Err` from `build`. Either way a Redis that answers and refuses
    /// (credentials, permissions, a certificate) is an `Err` at once.
    ///
    /// Defaults to `false`.
    pub fn require_connection(mut self, require: bool) -> Self {
        self.settings.require_connection = require;
        self
    }

    /// The settings `config` holds, over these.
    pub(crate) fn configured(mut self, config: &crate::StoreConfig) -> Self {
        self.settings = self.settings.configured(config);
        self
    }

    /// Checks the settings, opens the pool and proves with one `PING` that Redis answers and
    /// accepts the credentials.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for invalid settings or a malformed URL; [`Error::Backend`] when Redis
    /// refuses the credentials, a command or the TLS handshake, or cannot be reached and
    /// [`require_connection`](Self::require_connection) is set. Each names the target (its
    /// password redacted) and what to check.
    pub async fn build(self) -> Result<RedisStore> {
        if self.pool_size == 0 {
            return Err(Error::Config("pool_size must be at least 1".to_owned()));
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
        let manager = tls::connection_manager(&self.url, &self.tls)?;
        let pool = bb8::Pool::builder()
            .max_size(self.pool_size)
            // The check on checkout is the manager's broken flag, not a PING (which would halve
            // throughput).
            .test_on_check_out(true)
            .connection_timeout(op_timeout)
            // A failed connection is not retried behind the caller's back until the checkout
            // times out; the next checkout tries again.
            .retry_connection(false)
            .build_unchecked(TrackedManager::new(manager, connect_timeout));
        let name = redact_url(&self.url);
        let key_prefix = key_prefix.into_bytes();
        let losses = Arc::new(LossWatch::new(
            &key_prefix,
            recovery_floor,
            name.as_str().into(),
        ));
        let breaker = Arc::new(Breaker::new(breaker_settings, op_timeout, name));
        let contact = Arc::new(Contact {
            pool: pool.clone(),
            losses: Arc::clone(&losses),
            url: self.url.clone(),
            op_timeout,
            connect_timeout,
        });
        let connecting = match contact.first().await {
            Ok(()) => None,
            Err(failure) => {
                let error = failure.at_build(require_connection)?;
                let retry = Arc::clone(&contact);
                Some(keep_trying(
                    Arc::clone(&breaker),
                    breaker_settings,
                    redact_url(&self.url),
                    &error,
                    move || {
                        let contact = Arc::clone(&retry);
                        async move { contact.first().await }
                    },
                ))
            }
        };
        Ok(RedisStore {
            losses,
            breaker,
            pool,
            key_prefix,
            op_timeout,
            max_batch,
            url: self.url,
            forget_log: LogLimit::new(),
            _connecting: connecting,
        })
    }
}
