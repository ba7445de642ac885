//! The Redis Cluster backend: the Redis backend's records, spread over a cluster's masters.
//!
//! One idea per file: `plan` splits a call into one pipeline per master, `dispatch` sends them
//! and follows redirects, `ops` holds the store's operations, `vouch` confirms "dead" answers,
//! `loss` and `epochs` detect data loss, `topology` and `slot` know where keys live, and
//! `connection` replaces a connection that stops answering.

mod builder;
mod connection;
mod contact;
mod dispatch;
mod epochs;
mod loss;
mod ops;
mod plan;
mod slot;
mod topology;
mod vouch;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

pub use builder::ClusterStoreBuilder;
use connection::Connection;
use loss::LossWatch;
use topology::TopologyCell;

use crate::breaker::Breaker;
use crate::health::{Health, remote_health};
use crate::log_limit::LogLimit;
use crate::remote::settings::record_key;
use crate::remote::{log_failed_forget, unix_ms};
use crate::{LeaseKey, LivenessStore, Result, validate};

/// Liveness records on Redis Cluster, with [`RedisStore`](crate::RedisStore)'s contract, key
/// format and errors.
///
/// Keys are `<prefix><id>` as on a single Redis, so a runtime's record lives in the slot of its
/// key; an id holding a hash tag (`{tenant-7}:rt-1`) shares a slot with the others of its tag.
/// A batch is split by master: one pipeline per master, all sent at once, with one `GET` or
/// `MGET` per slot inside it; touches are grouped the same way. A command whose slot moved meanwhile
/// (`MOVED`, or `ASK` during a reshard) is sent once more on its own, through redis-rs's
/// redirect handling, and the store refreshes its slot map; all of it within the operation
/// timeout. Every reply is checked for server errors.
///
/// Deadlines, the circuit breaker (one for the cluster), input checks and data-loss detection
/// work as for `RedisStore`. Every slot has an epoch record, read after the keys for each slot
/// where a batch found a key missing (one more round trip, for batches with "dead" answers
/// only) and for each slot a write went to; every master holds this store's marker, checked in
/// the same pipelines. So a replica promoted without the data or behind its master, a master
/// restarted (from a snapshot too), or slots handed empty to another master, make "dead"
/// answers [`Error::Recovering`](crate::Error::Recovering); a loss anywhere in the cluster does
/// so for every batch with a "dead" answer, for the recovery window.
///
/// ```no_run
/// use std::time::Duration;
/// use liveness_store::{ClusterStore, LivenessStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// let store = ClusterStore::builder(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"])
///     .op_timeout(Duration::from_millis(100))
///     .build()
///     .await?;
/// store.touch("rt-1", Duration::from_secs(90)).await?;
/// assert_eq!(store.is_alive_batch(&["rt-1"]).await?, vec![true]);
/// # Ok(())
/// # }
/// ```
pub struct ClusterStore {
    inner: Arc<Inner>,
    /// Connects in the background while the cluster could not be reached (see `contact`);
    /// ends with the store.
    _connecting: Option<AbortOnDropHandle<()>>,
}

/// The store's state, shared with the task that connects in the background.
struct Inner {
    connection: Arc<Connection>,
    topology: Arc<TopologyCell>,
    /// The epoch records, the masters' markers and the recovery window (invariant 4); shared
    /// with the sweeps that run in the background.
    losses: Arc<LossWatch>,
    key_prefix: Vec<u8>,
    op_timeout: Duration,
    max_batch: usize,
    /// The seeds, comma-separated: error texts are scrubbed of their passwords.
    seeds: String,
    /// The seeds with passwords redacted, for logs and `Debug`.
    name: String,
    breaker: Arc<Breaker>,
    forget_log: LogLimit,
}

impl fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("ClusterStore")
            .field("seeds", &inner.name)
            .field("key_prefix", &String::from_utf8_lossy(&inner.key_prefix))
            .field("op_timeout", &inner.op_timeout)
            .field("max_batch", &inner.max_batch)
            .field("masters", &inner.topology.current().masters())
            .field("health", &self.health().status)
            .finish()
    }
}

impl ClusterStore {
    /// A builder for a store on the cluster that `seeds` belong to: `redis://[user[:password]@]host:port/`
    /// URLs of some of its nodes (any will do; more survive a seed being down).
    pub fn builder<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> ClusterStoreBuilder {
        ClusterStoreBuilder::new(seeds.into_iter().map(Into::into).collect())
    }

    /// The Redis key of a runtime's record, as [`RedisStore::key`](crate::RedisStore::key).
    #[must_use]
    pub fn key(&self, runtime_id: &str) -> Vec<u8> {
        self.inner.key(runtime_id)
    }

    /// The keys of the epoch records that detect data loss: `<prefix>`, a NUL byte, `epoch`
    /// and a hash tag, one in every slot (16,384 keys of about 60 bytes). They have no expiry;
    /// deleting one makes every instance that reads its slot treat the cluster as having lost
    /// data.
    #[must_use]
    pub fn epoch_keys(&self) -> Vec<Vec<u8>> {
        self.inner
            .losses
            .records
            .keys()
            .map(|(_, key)| key.to_vec())
            .collect()
    }
}

impl Inner {
    fn key(&self, runtime_id: &str) -> Vec<u8> {
        record_key(&self.key_prefix, runtime_id)
    }
}

#[async_trait::async_trait]
impl LivenessStore for ClusterStore {
    fn available(&self) -> bool {
        true
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        validate::beat(runtime_id, ttl)?;
        self.inner.losses.note_record(ttl);
        let command = ops::set_command(&self.inner.key(runtime_id), ttl, unix_ms());
        self.inner
            .guarded("touch", self.inner.single("touch", command))
            .await
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        validate::runtime_ids(runtime_ids)?;
        if runtime_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = runtime_ids.iter().map(|id| self.inner.key(id)).collect();
        self.inner
            .guarded("is_alive_batch", self.inner.lookup(&keys))
            .await
    }

    async fn forget(&self, runtime_id: &str) {
        if validate::runtime_id(runtime_id).is_err() {
            return;
        }
        let command = redis::cmd("DEL").arg(self.inner.key(runtime_id)).clone();
        let result = self
            .inner
            .guarded("forget", self.inner.single("forget", command))
            .await;
        log_failed_forget(&self.inner.forget_log, result);
    }

    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        for (runtime_id, ttl) in beats {
            validate::beat(runtime_id, *ttl)?;
        }
        if beats.is_empty() {
            return Ok(());
        }
        for (_, ttl) in beats {
            self.inner.losses.note_record(*ttl);
        }
        self.inner
            .guarded("touch_many", self.inner.write(beats))
            .await
    }

    fn health(&self) -> Health {
        remote_health(self.inner.breaker.status(), self.inner.losses.status())
    }

    fn data_losses(&self) -> u64 {
        self.inner.losses.count()
    }

    fn lease_key(&self, runtime_id: &str) -> Option<LeaseKey> {
        let slot = slot::key_slot(&self.inner.key(runtime_id));
        self.inner.losses.records.lease_key(slot)
    }
}
