//! Pooled connections that leave the pool once they have failed.
//!
//! bb8-redis hands out `MultiplexedConnection`s and never reports one as broken, so after a
//! Redis restart the pool would keep handing out dead connections. This manager wraps
//! bb8-redis's: a connection is marked suspect before each request and cleared only when the
//! request got an answer, so one that errored *or* was dropped mid-request by a timeout is
//! discarded by bb8 on its way back (invariant 5: a dead connection must not cost every later
//! call a timeout).

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, FromRedisValue, Pipeline, RedisError};

/// A connection and whether it may be broken.
pub(crate) struct TrackedConnection {
    connection: MultiplexedConnection,
    suspect: bool,
}

impl TrackedConnection {
    /// Sends `pipeline` and parses its replies.
    pub(crate) async fn query<T: FromRedisValue>(
        &mut self,
        pipeline: &Pipeline,
    ) -> Result<T, RedisError> {
        // Suspect until proven: if this future is dropped by a timeout, the flag stays set.
        self.suspect = true;
        let reply = pipeline.query_async(&mut self.connection).await;
        self.suspect = reply.as_ref().is_err_and(|e| !server_answered(e));
        reply
    }
}

/// Whether the error is a reply from the server, which proves the connection works.
pub(super) fn server_answered(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// bb8 manager of [`TrackedConnection`]s; connection set-up has its own timeout.
pub(crate) struct TrackedManager {
    inner: RedisConnectionManager,
    connect_timeout: Duration,
}

impl TrackedManager {
    pub(crate) fn new(inner: RedisConnectionManager, connect_timeout: Duration) -> Self {
        TrackedManager {
            inner,
            connect_timeout,
        }
    }
}

impl bb8::ManageConnection for TrackedManager {
    type Connection = TrackedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<TrackedConnection, RedisError> {
        let connect = self.inner.connect();
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(connection) => Ok(TrackedConnection {
                connection: connection?,
                suspect: false,
            }),
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to redis timed out",
            ))),
        }
    }

    async fn is_valid(&self, tracked: &mut TrackedConnection) -> Result<(), RedisError> {
        // Only used if checkout testing is turned on, which the store never does: a PING per
        // checkout halves throughput, and the suspect flag already removes broken connections.
        self.inner.is_valid(&mut tracked.connection).await
    }

    fn has_broken(&self, tracked: &mut TrackedConnection) -> bool {
        tracked.suspect
    }
}
