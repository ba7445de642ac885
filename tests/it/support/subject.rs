//! A store under test, built the same way for every suite that runs one case on many backends
//! (the contract, the bad-input table): the store, the server or cluster it talks to (for
//! command counts), and how time passes for it.

use std::sync::Arc;
use std::time::Duration;

use liveness_store::LivenessStore;

/// A store under test, and how time passes for it.
pub(crate) struct Subject {
    /// What the assertions call the store.
    pub(crate) name: &'static str,
    pub(crate) store: Arc<dyn LivenessStore>,
    /// The Redis the store talks to, kept alive for the test and asked for command counts.
    pub(crate) server: Option<crate::support::RedisServer>,
    /// The Redis Cluster the store talks to, shared by the cases of one test.
    pub(crate) cluster: Option<Arc<crate::support::cluster::RedisCluster>>,
    /// `true`: tokio's paused clock, advanced exactly. `false`: real time, where Redis expires.
    pub(crate) paused_clock: bool,
    /// The layered store's false-"alive" allowance past a record's ttl (debounce and
    /// remote-positive ttl): `None` for stores that answer "dead" right at the ttl.
    pub(crate) layered: Option<LayeredWindows>,
}

/// The windows a layered store under test was built with.
#[derive(Clone, Copy)]
pub(crate) struct LayeredWindows {
    debounce: Duration,
    remote_positive_ttl: Duration,
}

impl Subject {
    pub(crate) fn noop() -> Subject {
        Subject {
            name: "noop",
            store: Arc::new(liveness_store::NoopStore::new()),
            server: None,
            cluster: None,
            paused_clock: false,
            layered: None,
        }
    }

    #[cfg(feature = "memory")]
    pub(crate) fn memory() -> Subject {
        Subject {
            name: "memory",
            store: Arc::new(liveness_store::MemoryStore::new()),
            server: None,
            cluster: None,
            paused_clock: true,
            layered: None,
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) async fn redis() -> Subject {
        let server = crate::support::RedisServer::start();
        let store = crate::support::store_builder(&server.url())
            .build()
            .await
            .expect("connect to the test redis");
        Subject {
            name: "redis",
            store: Arc::new(store),
            server: Some(server),
            cluster: None,
            paused_clock: false,
            layered: None,
        }
    }

    /// The layered store over `remote`'s store, with short windows so real-time cases stay
    /// quick.
    #[cfg(feature = "layered")]
    pub(crate) fn layered<R: LivenessStore + 'static>(
        name: &'static str,
        remote: R,
        base: Subject,
    ) -> Subject {
        let windows = LayeredWindows {
            debounce: Duration::from_secs(30),
            remote_positive_ttl: Duration::from_millis(100),
        };
        let store = liveness_store::LayeredStore::builder(remote)
            .debounce(windows.debounce)
            .remote_positive_ttl(windows.remote_positive_ttl)
            .build()
            .unwrap();
        Subject {
            name,
            store: Arc::new(store),
            layered: Some(windows),
            ..base
        }
    }

    #[cfg(all(feature = "layered", feature = "memory"))]
    pub(crate) fn layered_memory() -> Subject {
        Subject::layered(
            "layered over memory",
            liveness_store::MemoryStore::new(),
            Subject::memory(),
        )
    }

    #[cfg(all(feature = "layered", feature = "redis"))]
    pub(crate) async fn layered_redis() -> Subject {
        let base = Subject::redis().await;
        let url = base.server.as_ref().unwrap().url();
        let remote = crate::support::store_builder(&url).build().await.unwrap();
        Subject::layered("layered over redis", remote, base)
    }

    /// A `ClusterStore` on `cluster`, its keys under `prefix` so that the cases sharing one
    /// cluster do not see each other's records.
    #[cfg(feature = "cluster")]
    pub(crate) async fn cluster(
        cluster: &Arc<crate::support::cluster::RedisCluster>,
        prefix: &str,
    ) -> Subject {
        let store = cluster_store(cluster, prefix).await;
        Subject {
            name: "cluster",
            store: Arc::new(store),
            server: None,
            cluster: Some(Arc::clone(cluster)),
            paused_clock: false,
            layered: None,
        }
    }

    #[cfg(all(feature = "layered", feature = "cluster"))]
    pub(crate) async fn layered_cluster(
        cluster: &Arc<crate::support::cluster::RedisCluster>,
        prefix: &str,
    ) -> Subject {
        let remote = cluster_store(cluster, prefix).await;
        let base = Subject::cluster(cluster, prefix).await;
        Subject::layered("layered over cluster", remote, base)
    }

    /// How long past `ttl` a record may still read alive: zero for plain stores, the clamped
    /// debounce plus the remote-positive ttl for the layered store (invariant 3).
    pub(crate) fn grace(&self, ttl: Duration) -> Duration {
        self.layered.map_or(Duration::ZERO, |w| {
            w.debounce.min(ttl / 2) + w.remote_positive_ttl
        })
    }

    pub(crate) async fn pass(&self, time: Duration) {
        if self.paused_clock {
            tokio::time::advance(time).await;
        } else {
            tokio::time::sleep(time).await;
        }
    }

    /// Extra real time granted after a deadline before expecting expiry (none when paused).
    pub(crate) fn slack(&self) -> Duration {
        if self.paused_clock {
            Duration::ZERO
        } else {
            Duration::from_millis(200)
        }
    }

    /// Starts counting the commands the store sends (only where there is a server to ask).
    pub(crate) fn reset_commands(&self) {
        if let Some(server) = &self.server {
            server.reset_stats();
        }
        if let Some(cluster) = &self.cluster {
            cluster.reset_stats();
        }
    }

    /// The commands the store sent since [`reset_commands`](Self::reset_commands) (0 where
    /// there is no server to ask).
    pub(crate) fn commands_sent(&self) -> u64 {
        let server = self.server.as_ref().map_or(0, |s| s.total_calls());
        let cluster = self.cluster.as_ref().map_or(0, |c| c.total_calls());
        server + cluster
    }

    pub(crate) fn assert_no_commands_sent(&self) {
        assert_eq!(
            self.commands_sent(),
            0,
            "{}: the store sent commands",
            self.name
        );
    }

    pub(crate) async fn alive(&self, ids: &[&str]) -> Vec<bool> {
        self.store
            .is_alive_batch(ids)
            .await
            .expect("is_alive_batch")
    }
}

#[cfg(feature = "cluster")]
pub(crate) async fn cluster_store(
    cluster: &crate::support::cluster::RedisCluster,
    prefix: &str,
) -> liveness_store::ClusterStore {
    liveness_store::ClusterStore::builder(cluster.seed_urls())
        .key_prefix(prefix)
        // The test's cluster holds everything the test wrote: trust it at once.
        .recovery_floor(Duration::ZERO)
        .build()
        .await
        .expect("connect to the test cluster")
}
