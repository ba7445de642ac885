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
    current: RwLock<ClusterConnection>,
    connect_timeout: Duration,
    reconnecting: AtomicBool,
    last_attempt: Mutex<Instant>,
}

impl Connection {
    pub(super) fn new(
        client: ClusterClient,
        first: ClusterConnection,
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

    /// The connection to send on (a cheap handle; requests through it are multiplexed).
    pub(super) fn get(&self) -> ClusterConnection {
        self.current.read().clone()
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
            let fresh =
                tokio::time::timeout(this.connect_timeout, this.client.get_async_connection())
                    .await;
            if let Ok(Ok(connection)) = fresh {
                *this.current.write() = connection;
                tracing::debug!("liveness store: replaced the cluster connection");
            }
            *this.last_attempt.lock() = Instant::now();
            this.reconnecting.store(false, Ordering::Release);
        });
    }
}
