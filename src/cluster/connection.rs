//! The store's cluster connection, replaced when it stops answering.
//!
//! redis-rs's `ClusterConnection` repairs itself after most faults, but after a master is
//! killed it can stay wedged in its own slot-map recovery, every request then waiting until
//! the caller gives up — seen with redis 1.8 in the failover tests. A connection made afresh
//! after the failover works at once, so the store does what a pool does with a broken
//! connection: after a call that got no answer it builds a new one in the background (at
//! most one at a time, at most every [`MIN_RECONNECT_INTERVAL`]) and swaps it in; calls in
//! flight finish on the old one, which is closed when the last of them lets go.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::time::Instant;

/// The least time between two fresh connections: during a failover, when calls fail for
/// seconds, one attempt per interval.
pub(super) const MIN_RECONNECT_INTERVAL: Duration = Duration::from_millis(500);

/// The current connection and how to make the next one.
pub(super) struct Connection {
    client: ClusterClient,
    /// `None` until the cluster was first reached (a store that started down).
    current: RwLock<Option<ClusterConnection>>,
    connect_timeout: Duration,
    reconnecting: AtomicBool,
    last_attempt: Mutex<Instant>,
}

impl Connection {
    pub(super) fn new(
        client: ClusterClient,
        first: Option<ClusterConnection>,
        connect_timeout: Duration,
    ) -> Connection {
        Connection {
            client,
            current: RwLock::new(first),
            connect_timeout,
            reconnecting: AtomicBool::new(false),
            last_attempt: Mutex::new(Instant::now()),
        }
    }

    /// The connection to send on (a cheap handle; requests through it are multiplexed), once
    /// the cluster was reached.
    pub(super) fn get(&self) -> Option<ClusterConnection> {
        self.current.read().clone()
    }

    /// Connects to the cluster (its seeds), within the connect timeout.
    pub(super) async fn connect(&self) -> redis::RedisResult<ClusterConnection> {
        tokio::time::timeout(self.connect_timeout, self.client.get_async_connection())
            .await
            .unwrap_or_else(|_| {
                Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no cluster seed answered within connect_timeout",
                )))
            })
    }

    /// Sends on `connection` from now on.
    pub(super) fn install(&self, connection: ClusterConnection) {
        *self.current.write() = Some(connection);
    }

    /// Builds a fresh connection in the background and swaps it in, unless one is being
    /// built or the last attempt was less than [`MIN_RECONNECT_INTERVAL`] ago. A failed
    /// attempt keeps the old connection; the next unanswered call tries again.
    pub(super) fn replace_soon(self: &Arc<Self>) {
        if self.last_attempt.lock().elapsed() < MIN_RECONNECT_INTERVAL
            || self.reconnecting.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Ok(connection) = this.connect().await {
                this.install(connection);
                tracing::debug!("liveness store: replaced the cluster connection");
            }
            *this.last_attempt.lock() = Instant::now();
            this.reconnecting.store(false, Ordering::Release);
        });
    }
}
