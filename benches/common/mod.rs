//! What the benches share: a throw-away `redis-server` (or Redis Cluster), the stores under test
//! built the same way in every bench, 100,000 runtime ids to cycle through, and the concurrent
//! touch loop.
#![allow(dead_code)] // Not every bench uses every helper.

use testkit as support;

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "cluster")]
use liveness_store::ClusterStore;
#[cfg(feature = "layered")]
use liveness_store::LayeredStore;
use liveness_store::{LivenessStore, RedisStore};
pub(crate) use support::RedisServer;
#[cfg(feature = "cluster")]
pub(crate) use support::cluster::RedisCluster;

/// Runtimes every bench works on.
pub(crate) const RUNTIMES: usize = 100_000;
/// The reference deployment's ttl.
pub(crate) const TTL: Duration = Duration::from_secs(90);

/// A runtime for async benches: multi-threaded (2 workers, this machine's cores), so that the
/// stores' background tasks and connection drivers run as they do in a server.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `RedisStore` as a server would build it, but with a timeout that a busy bench machine does
/// not trip, and trusting the bench's fresh Redis at once (a zero recovery floor), so that
/// "dead" answers are answers.
pub(crate) async fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(&server.url())
        .op_timeout(Duration::from_secs(5))
        .recovery_floor(Duration::ZERO)
        .build()
        .await
        .expect("connect to the bench's redis-server")
}

/// `ClusterStore` as a server would build it, with [`redis_store`]'s timeout. The bench's
/// cluster is new, and a store distrusts "dead" answers from a master whose records are younger
/// than the recovery floor (90 s by default); it holds everything the bench wrote, so a zero
/// floor trusts it at once.
#[cfg(feature = "cluster")]
pub(crate) async fn cluster_store(cluster: &RedisCluster) -> ClusterStore {
    ClusterStore::builder(cluster.seed_urls())
        .op_timeout(Duration::from_secs(5))
        .recovery_floor(Duration::ZERO)
        .build()
        .await
        .expect("connect to the bench's redis cluster")
}

/// A layered store over Redis. `debounce` zero writes every touch through.
#[cfg(feature = "layered")]
pub(crate) async fn layered_store(
    server: &RedisServer,
    debounce: Duration,
    remote_positive_ttl: Duration,
) -> LayeredStore<RedisStore> {
    LayeredStore::builder(redis_store(server).await)
        .debounce(debounce)
        .remote_positive_ttl(remote_positive_ttl)
        .op_timeout(Duration::from_secs(5))
        .build()
        .expect("valid settings")
}

/// Writes every id through `store`, 1,000 per call.
pub(crate) async fn touch_all(store: &dyn LivenessStore, ids: &[String]) {
    for chunk in ids.chunks(1_000) {
        let beats: Vec<(&str, Duration)> = chunk.iter().map(|id| (id.as_str(), TTL)).collect();
        store.touch_many(&beats).await.expect("preload");
    }
}

/// Cycles through the ids so every iteration looks up a different runtime, without
/// allocating: each iteration borrows its id.
pub(crate) struct Ids {
    pub(crate) ids: Vec<String>,
    next: Cell<usize>,
}

impl Ids {
    pub(crate) fn new(prefix: &str) -> Self {
        Ids {
            ids: (0..RUNTIMES).map(|i| format!("{prefix}-{i}")).collect(),
            next: Cell::new(0),
        }
    }

    pub(crate) fn next(&self) -> &str {
        let next = (self.next.get() + 1) % self.ids.len();
        self.next.set(next);
        &self.ids[next]
    }
}

/// Batches of `size` consecutive ids that together cover the ids once, handed out in turn, so
/// every iteration asks about different runtimes without allocating.
pub(crate) struct Batches<'a> {
    batches: Vec<Vec<&'a str>>,
    next: Cell<usize>,
}

impl<'a> Batches<'a> {
    pub(crate) fn new(ids: &'a [String], size: usize) -> Self {
        let start = |n: usize| (n * size) % (ids.len() - size + 1);
        Batches {
            batches: (0..ids.len() / size)
                .map(|n| {
                    ids[start(n)..start(n) + size]
                        .iter()
                        .map(String::as_str)
                        .collect()
                })
                .collect(),
            next: Cell::new(0),
        }
    }

    pub(crate) fn next(&self) -> &[&'a str] {
        let next = (self.next.get() + 1) % self.batches.len();
        self.next.set(next);
        &self.batches[next]
    }
}

/// Runs `iters` rounds in which each of `tasks` tasks touches its own runtime (round `r`, task
/// `t`: id `r * tasks + t`, cycling); the time of all rounds. For criterion's `iter_custom`,
/// one iteration being one touch by every task.
pub(crate) async fn touch_rounds(
    store: Arc<dyn LivenessStore>,
    ids: Arc<Vec<String>>,
    tasks: usize,
    iters: u64,
) -> Duration {
    let per_task = usize::try_from(iters).expect("iterations fit in memory");
    let start = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let (store, ids) = (Arc::clone(&store), Arc::clone(&ids));
        running.spawn(async move {
            for round in 0..per_task {
                let id = &ids[(round * tasks + task) % ids.len()];
                store.touch(id, TTL).await.unwrap();
            }
        });
    }
    while let Some(task) = running.join_next().await {
        task.unwrap();
    }
    start.elapsed()
}
