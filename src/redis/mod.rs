//! The Redis backend: one TTL'd key per runtime, shared by every server instance.

mod builder;
mod connection;
mod tls;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{FromRedisValue, Pipeline, RedisError, Value};

pub use builder::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_MAX_BATCH, DEFAULT_OP_TIMEOUT,
    DEFAULT_POOL_SIZE, RedisStoreBuilder,
};
use connection::TrackedManager;

use crate::redact::{redact_url, scrub};
use crate::{Error, LivenessStore, Result, validate};

/// Liveness records in Redis, wire-compatible with the reference Go store.
///
/// A touch is `SET <prefix><id> <unix-ms> PX <ttl>`; the value is the touch time, and any
/// non-nil value reads as alive, so records the Go server writes as `1` count. A batch is one
/// `MGET` per [`max_batch`](RedisStoreBuilder::max_batch) ids, all chunks pipelined in one
/// round trip. Every call, pool checkout included, ends within the operation timeout.
///
/// ```no_run
/// use std::time::Duration;
/// use liveness_store::{LivenessStore, RedisStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// let store = RedisStore::builder("redis://127.0.0.1:6379/")
///     .op_timeout(Duration::from_millis(100))
///     .build()
///     .await?;
/// store.touch("rt-1", Duration::from_secs(90)).await?;
/// assert_eq!(store.is_alive_batch(&["rt-1"]).await?, vec![true]);
/// # Ok(())
/// # }
/// ```
pub struct RedisStore {
    pool: bb8::Pool<TrackedManager>,
    key_prefix: Vec<u8>,
    op_timeout: Duration,
    max_batch: usize,
    url: String,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.pool.state();
        f.debug_struct("RedisStore")
            .field("url", &redact_url(&self.url))
            .field("key_prefix", &String::from_utf8_lossy(&self.key_prefix))
            .field("op_timeout", &self.op_timeout)
            .field("max_batch", &self.max_batch)
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .finish()
    }
}

impl RedisStore {
    /// Connects with every setting at its default; see [`RedisStore::builder`].
    ///
    /// # Errors
    ///
    /// As [`RedisStoreBuilder::build`].
    pub async fn connect(url: &str) -> Result<RedisStore> {
        Self::builder(url).build().await
    }

    /// A builder for a store on the Redis at `url` (`redis://[user[:password]@]host[:port][/db]`,
    /// or `rediss://...` for TLS with the feature `tls`). A password holding `@ / ? #` or
    /// `%` must be percent-encoded.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        RedisStoreBuilder::new(url)
    }

    /// The Redis key of a runtime's record.
    #[must_use]
    pub fn key(&self, runtime_id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.key_prefix.len() + runtime_id.len());
        key.extend_from_slice(&self.key_prefix);
        key.extend_from_slice(runtime_id.as_bytes());
        key
    }

    /// Opens the pool's first connection and proves with a `PING` that Redis answers and
    /// accepts the credentials, within `timeout`.
    ///
    /// A dedicated connection, unlike a pool checkout, reports *why* it failed (refused,
    /// wrong password) instead of waiting out the timeout.
    async fn first_connection(&self, timeout: Duration) -> Result<()> {
        let op = "connect";
        let connect = async {
            let mut connection = self
                .pool
                .dedicated_connection()
                .await
                .map_err(|e| self.backend_error(op, e))?;
            let mut ping = redis::pipe();
            ping.cmd("PING").ignore();
            connection
                .query::<()>(&ping)
                .await
                .map_err(|e| self.backend_error(op, e))?;
            Ok(connection)
        };
        let connection = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| Error::Timeout { op, after: timeout })??;
        // Keep it: a full pool cannot happen here, and if it did the connection is just dropped.
        let _ = self.pool.add(connection);
        Ok(())
    }

    /// Sends `pipeline` on a pooled connection, the whole of it, checkout included, bounded by
    /// the op timeout (invariant 5).
    async fn send<T: FromRedisValue>(&self, op: &'static str, pipeline: &Pipeline) -> Result<T> {
        let timed_out = Error::Timeout {
            op,
            after: self.op_timeout,
        };
        let request = async {
            let mut connection = self.pool.get().await.map_err(|e| match e {
                bb8::RunError::User(e) => self.backend_error(op, e),
                bb8::RunError::TimedOut => Error::Timeout {
                    op,
                    after: self.op_timeout,
                },
            })?;
            connection
                .query(pipeline)
                .await
                .map_err(|e| self.backend_error(op, e))
        };
        tokio::time::timeout(self.op_timeout, request)
            .await
            .unwrap_or(Err(timed_out))
    }

    fn backend_error(&self, op: &'static str, error: RedisError) -> Error {
        if error.is_timeout() {
            return Error::Timeout {
                op,
                after: self.op_timeout,
            };
        }
        // The client library's text could quote the URL it was given.
        Error::backend(op, scrub(&error.to_string(), &self.url))
    }

    fn add_set(&self, pipeline: &mut Pipeline, runtime_id: &str, ttl: Duration, now_ms: u64) {
        pipeline
            .cmd("SET")
            .arg(self.key(runtime_id))
            .arg(now_ms)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            .ignore();
    }
}

/// Milliseconds since the Unix epoch: the value of a record, for whoever inspects Redis.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait::async_trait]
impl LivenessStore for RedisStore {
    fn available(&self) -> bool {
        true
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        validate::beat(runtime_id, ttl)?;
        let mut pipeline = redis::pipe();
        self.add_set(&mut pipeline, runtime_id, ttl, unix_ms());
        self.send("touch", &pipeline).await
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        validate::runtime_ids(runtime_ids)?;
        if runtime_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for chunk in runtime_ids.chunks(self.max_batch) {
            let command = pipeline.cmd("MGET");
            for id in chunk {
                command.arg(self.key(id));
            }
        }
        let chunks: Vec<Vec<Value>> = self.send("is_alive_batch", &pipeline).await?;
        let answers: Vec<bool> = chunks
            .iter()
            .flatten()
            .map(|value| !matches!(value, Value::Nil))
            .collect();
        if answers.len() != runtime_ids.len() {
            return Err(Error::backend(
                "is_alive_batch",
                format!(
                    "redis answered {} values for {} keys",
                    answers.len(),
                    runtime_ids.len()
                ),
            ));
        }
        Ok(answers)
    }

    async fn forget(&self, runtime_id: &str) {
        if validate::runtime_id(runtime_id).is_err() {
            return;
        }
        let mut pipeline = redis::pipe();
        pipeline.cmd("DEL").arg(self.key(runtime_id)).ignore();
        if let Err(error) = self.send::<()>("forget", &pipeline).await {
            tracing::warn!(%error, "liveness forget failed; the record's ttl will reap it");
        }
    }

    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        for (runtime_id, ttl) in beats {
            validate::beat(runtime_id, *ttl)?;
        }
        if beats.is_empty() {
            return Ok(());
        }
        let now_ms = unix_ms();
        let mut pipeline = redis::pipe();
        for (runtime_id, ttl) in beats {
            self.add_set(&mut pipeline, runtime_id, *ttl, now_ms);
        }
        self.send("touch_many", &pipeline).await
    }
}
