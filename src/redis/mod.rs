//! The Redis backend: one TTL'd key per runtime, shared by every server instance.

mod builder;
pub(crate) mod connection;
mod contact;
mod loss;
mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::{FromRedisValue, Pipeline, RedisError, Value};
use tokio_util::task::AbortOnDropHandle;

pub use builder::RedisStoreBuilder;
use connection::TrackedManager;
use loss::LossWatch;

use crate::breaker::Breaker;
use crate::health::{Health, remote_health};
use crate::log_limit::LogLimit;
use crate::redact::{redact_url, scrub};
use crate::remote::settings::record_key;
use crate::remote::{Attempt, log_failed_forget, px, server_answered, unix_ms};
use crate::{Error, LeaseKey, LivenessStore, Result, validate};

/// Liveness records in Redis, wire-compatible with the reference Go store.
///
/// A touch is `SET <prefix><id> <unix-ms> PX <ttl>`; the value is the touch time, and any
/// non-nil value reads as alive, so records the Go server writes as `1` count. A batch is one
/// `MGET` per [`max_batch`](RedisStoreBuilder::max_batch) ids, all chunks pipelined in one
/// round trip. Every call, pool checkout included, ends within the operation timeout.
///
/// After repeated failures a circuit breaker makes calls fail fast with
/// [`Error::Unavailable`] until a probe succeeds; [`health`](LivenessStore::health) says which.
/// Every batch also checks, in the same round trip, that Redis lost nothing since the store
/// last looked (its epoch record, and that the server is the one the store first reached): if
/// it may have, "dead" answers become [`Error::Recovering`] for a recovery window (see
/// [`RedisStoreBuilder::recovery_floor`]).
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
    breaker: Arc<Breaker>,
    /// The epoch record, the server's marker and the recovery window (invariant 4).
    losses: Arc<LossWatch>,
    /// Keeps failed forgets from flooding the log (see `log_limit`).
    forget_log: LogLimit,
    /// Connects in the background while Redis could not be reached (see `contact`); ends with
    /// the store.
    _connecting: Option<AbortOnDropHandle<()>>,
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
            .field("health", &self.health().status)
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
        record_key(&self.key_prefix, runtime_id)
    }

    /// The key of the epoch record that detects data loss: `<prefix>`, a NUL byte, `epoch`.
    /// No runtime id contains a NUL byte, so no record can collide with it. It has no expiry;
    /// deleting it makes every instance treat Redis as having lost its data.
    #[must_use]
    pub fn epoch_key(&self) -> Vec<u8> {
        self.losses.epoch_key().to_vec()
    }

    /// Sends `pipeline` on a pooled connection, the whole of it, checkout included, bounded by
    /// the op timeout (invariant 5).
    ///
    /// The breaker goes first: while it is open the call fails in microseconds.
    async fn send<T: FromRedisValue>(&self, op: &'static str, pipeline: &Pipeline) -> Result<T> {
        let permit = self.breaker.admit()?;
        let attempt = self.send_now(op, pipeline).await;
        permit.record(attempt.answered);
        attempt.result
    }

    /// The call itself, and whether Redis answered it.
    async fn send_now<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipeline: &Pipeline,
    ) -> Attempt<T> {
        let request = async {
            // Checked out only to clone: the connection is back in the pool, for concurrent
            // calls to pipeline on, before the request is sent.
            let request = match self.pool.get().await {
                Ok(pooled) => pooled.handle(self.op_timeout),
                Err(bb8::RunError::User(e)) => {
                    return Attempt::failed(self.backend_error(op, e), false);
                }
                Err(bb8::RunError::TimedOut) => return Attempt::failed(self.timed_out(op), false),
            };
            match request.query(pipeline).await {
                Ok(reply) => Attempt::answered(Ok(reply)),
                Err(e) => {
                    let answered = server_answered(&e);
                    Attempt::failed(self.backend_error(op, e), answered)
                }
            }
        };
        tokio::time::timeout(self.op_timeout, request)
            .await
            .unwrap_or_else(|_| Attempt::failed(self.timed_out(op), false))
    }

    fn timed_out(&self, op: &'static str) -> Error {
        Error::Timeout {
            op,
            after: self.op_timeout,
        }
    }

    fn backend_error(&self, op: &'static str, error: RedisError) -> Error {
        if error.is_timeout() {
            return self.timed_out(op);
        }
        // The client library's text could quote the URL it was given.
        Error::backend(op, scrub(&error.to_string(), &self.url))
    }

    fn add_set(&self, pipeline: &mut Pipeline, runtime_id: &str, ttl: Duration, now_ms: u64) {
        self.losses.note_record(ttl);
        pipeline
            .cmd("SET")
            .arg(self.key(runtime_id))
            .arg(now_ms)
            .arg("PX")
            .arg(px(ttl))
            .ignore();
    }
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
        // After the MGETs: a loss that happened before them shows in the checks (invariant 4).
        let checks = self.losses.add_checks(&mut pipeline);
        let mut replies: Vec<Value> = self.send("is_alive_batch", &pipeline).await?;
        let tail = replies.split_off(replies.len().saturating_sub(checks.replies()));
        let answers: Vec<bool> = replies
            .iter()
            .flat_map(|chunk| match chunk {
                Value::Array(values) => values.as_slice(),
                _ => &[],
            })
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
        self.losses.observe(checks, &tail);
        // A record present now was written after any loss, so "alive" stands; "dead" may be a
        // lost record until every live runtime has beaten again.
        if let Some(remaining) = self.losses.recovering_for()
            && answers.contains(&false)
        {
            return Err(Error::Recovering { remaining });
        }
        Ok(answers)
    }

    async fn forget(&self, runtime_id: &str) {
        if validate::runtime_id(runtime_id).is_err() {
            return;
        }
        let mut pipeline = redis::pipe();
        pipeline.cmd("DEL").arg(self.key(runtime_id)).ignore();
        let result = self.send::<()>("forget", &pipeline).await;
        log_failed_forget(&self.forget_log, result);
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
        // One batch of writes, one look at the checks: a layered store that only writes still
        // learns of data loss and resets its coalescing (invariant 4).
        let checks = self.losses.add_checks(&mut pipeline);
        let replies: Vec<Value> = self.send("touch_many", &pipeline).await?;
        self.losses.observe(checks, &replies);
        Ok(())
    }

    fn health(&self) -> Health {
        remote_health(self.breaker.status(), self.losses.status())
    }

    fn data_losses(&self) -> u64 {
        self.losses.count()
    }

    fn lease_key(&self, _runtime_id: &str) -> Option<LeaseKey> {
        self.losses.lease_key()
    }
}
