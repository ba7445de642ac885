//! The first contact with Redis: at build, or, when Redis cannot be reached then, in the
//! background until it can (see `remote::contact`). A `PING` proving the credentials, the
//! epoch, the marker and the uptime (see `loss`), and the eviction-policy check.

use std::sync::Arc;
use std::time::Duration;

use redis::{RedisError, Value};

use super::connection::{TrackedConnection, TrackedManager};
use super::loss::LossWatch;
use crate::Error;
use crate::redact::{redact_url, scrub};
use crate::remote::contact::{Failure, hint, unreachable};

/// What the first contact needs, shared with the task that retries it.
pub(super) struct Contact {
    pub(super) pool: bb8::Pool<TrackedManager>,
    pub(super) losses: Arc<LossWatch>,
    pub(super) url: String,
    pub(super) op_timeout: Duration,
    pub(super) connect_timeout: Duration,
}

impl Contact {
    /// Opens the pool's first connection within the connect timeout, and on it proves with a
    /// `PING` that Redis answers and accepts the credentials, reads the epoch, loads the
    /// store's marker and reads the uptime; checks the eviction policy.
    ///
    /// A dedicated connection, unlike a pool checkout, reports *why* it failed (refused,
    /// wrong password) instead of waiting out the timeout.
    pub(super) async fn first(&self) -> std::result::Result<(), Failure> {
        let timeout = self.connect_timeout;
        let connect = async {
            let connection = self.pool.dedicated_connection().await?;
            let mut first = redis::pipe();
            first.cmd("PING").ignore();
            let check = self.losses.add_epoch_check(&mut first);
            let replies: Vec<Value> = connection.handle(timeout).query(&first).await?;
            self.losses.observe_epoch(check, &replies);
            self.losses
                .first_contact(&connection, timeout, &self.url)
                .await?;
            self.check_eviction_policy(&connection).await;
            Ok::<_, RedisError>(connection)
        };
        let connection = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(self.classify(&error)),
            Err(_) => return Err(self.classify(&timed_out())),
        };
        // Keep it: a full pool cannot happen here, and if it did the connection is just dropped.
        let _ = self.pool.add(connection);
        Ok(())
    }

    /// What a failed first contact means, in an error that names the redacted target and the
    /// setting to check.
    fn classify(&self, error: &RedisError) -> Failure {
        let target = redact_url(&self.url);
        let detail = scrub(&error.to_string(), &self.url);
        let hint = hint(error, self.connect_timeout);
        if unreachable(error) {
            Failure::Unreachable(Error::backend(
                "connect",
                format!("cannot reach {target}: {detail} ({hint})"),
            ))
        } else {
            Failure::Refused(Error::backend(
                "connect",
                format!("{target} refused the connection: {detail} ({hint})"),
            ))
        }
    }

    /// Warns when Redis may evict records that have not expired: an evicted record reads as a
    /// dead runtime, and an evicted epoch as data loss. `allkeys-*` policies may evict both;
    /// `volatile-*` ones, once `maxmemory` is reached, records. Managed Redis services often
    /// refuse `CONFIG`; then there is nothing to check.
    async fn check_eviction_policy(&self, connection: &TrackedConnection) {
        let mut config = redis::pipe();
        config.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        config.cmd("CONFIG").arg("GET").arg("maxmemory");
        let reply: std::result::Result<Vec<Vec<String>>, _> =
            connection.handle(self.op_timeout).query(&config).await;
        let settings = match reply {
            Ok(settings) => settings,
            Err(error) => {
                tracing::debug!(
                    backend = %redact_url(&self.url),
                    error = %scrub(&error.to_string(), &self.url),
                    "liveness store: could not read maxmemory-policy"
                );
                return;
            }
        };
        let value = |index: usize| settings.get(index).and_then(|pair| pair.get(1));
        let (Some(policy), Some(maxmemory)) = (value(0), value(1)) else {
            return;
        };
        let limited = maxmemory.trim() != "0";
        if policy.starts_with("allkeys-") || (limited && policy.starts_with("volatile-")) {
            tracing::warn!(
                backend = %redact_url(&self.url),
                maxmemory_policy = %policy,
                maxmemory = %maxmemory,
                "liveness store: redis may evict liveness records before they expire, which \
                 reads as runtimes dying; set maxmemory-policy noeviction"
            );
        }
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "connecting to redis timed out",
    ))
}
