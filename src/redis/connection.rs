//! Pooled connections, shared by concurrent calls, that leave the pool once they have failed.
//!
//! bb8-redis hands out `MultiplexedConnection`s, which pipeline the requests of every clone on
//! one socket. So a call checks a connection out only long enough to clone it: concurrent calls
//! share the pool's few sockets instead of queueing for one each.
//!
//! bb8-redis never reports a connection as broken, so after a Redis restart the pool would keep
//! handing out dead ones. Here every request carries its connection's shared `broken` flag and
//! sets it unless an answer came back — on an error, or when the request is dropped by a
//! timeout — and the manager discards a flagged connection at its next checkout, without any
//! I/O (invariant 5: a dead connection must not cost every later call a timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Pipeline, RedisError};

use crate::remote::server_answered;

/// A pooled connection and whether a request on it failed.
pub(crate) struct TrackedConnection {
    connection: MultiplexedConnection,
    broken: Arc<AtomicBool>,
}

impl TrackedConnection {
    /// A handle for one request bounded by `op_timeout`, to use after the connection went back
    /// to the pool.
    pub(crate) fn handle(&self, op_timeout: Duration) -> Request {
        Request {
            connection: self.connection.clone(),
            broken: Arc::clone(&self.broken),
            op_timeout,
        }
    }
}

/// One request on a shared connection.
pub(crate) struct Request {
    connection: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    op_timeout: Duration,
}

impl Request {
    /// Sends `pipeline` and parses its replies.
    pub(crate) async fn query<T: FromRedisValue>(
        mut self,
        pipeline: &Pipeline,
    ) -> Result<T, RedisError> {
        let mut guard = FlagUnlessAnswered {
            broken: &self.broken,
            started: tokio::time::Instant::now(),
            op_timeout: self.op_timeout,
            answered: None,
        };
        let reply = pipeline.query_async(&mut self.connection).await;
        guard.answered = Some(reply.as_ref().map_or_else(server_answered, |_| true));
        reply
    }
}

/// Flags the connection broken when its request failed, or was dropped by a timeout (more
/// than half the op timeout in: the layered store's own timeout starts a little earlier).
/// A request its caller dropped early says nothing about the connection, which other calls
/// share.
struct FlagUnlessAnswered<'a> {
    broken: &'a AtomicBool,
    started: tokio::time::Instant,
    op_timeout: Duration,
    answered: Option<bool>,
}

impl Drop for FlagUnlessAnswered<'_> {
    fn drop(&mut self) {
        let broken = match self.answered {
            Some(answered) => !answered,
            None => self.started.elapsed() >= self.op_timeout / 2,
        };
        if broken {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
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
                broken: Arc::new(AtomicBool::new(false)),
            }),
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to redis timed out",
            ))),
        }
    }

    async fn is_valid(&self, tracked: &mut TrackedConnection) -> Result<(), RedisError> {
        // Checked on every checkout, so no I/O here: a PING per checkout would halve
        // throughput. A connection a request found broken is discarded instead.
        if tracked.broken.load(Ordering::Relaxed) {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "a request on this connection failed",
            )));
        }
        Ok(())
    }

    fn has_broken(&self, tracked: &mut TrackedConnection) -> bool {
        tracked.broken.load(Ordering::Relaxed)
    }
}
