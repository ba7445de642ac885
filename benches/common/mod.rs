//! What the benches share: a throw-away `redis-server`, the stores under test built the same
//! way in every bench, and 100,000 runtime ids to cycle through.
#![allow(dead_code)] // Not every bench uses every helper.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::cell::Cell;
use std::time::Duration;

use liveness_store::{LayeredStore, LivenessStore, RedisStore};
pub use support::RedisServer;

/// Runtimes every bench works on.
pub const RUNTIMES: usize = 100_000;
/// The reference deployment's ttl.
pub const TTL: Duration = Duration::from_secs(90);

/// A runtime for async benches: multi-threaded (2 workers, this machine's cores), so that the
/// stores' background tasks and connection drivers run as they do in a server.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `RedisStore` as a server would build it, but with a timeout that a busy bench machine does
/// not trip.
pub async fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::builder(&server.url())
        .op_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("connect to the bench's redis-server")
}

/// A layered store over Redis. `debounce` zero writes every touch through.
pub async fn layered_store(
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
pub async fn touch_all(store: &dyn LivenessStore, ids: &[String]) {
    for chunk in ids.chunks(1_000) {
        let beats: Vec<(&str, Duration)> = chunk.iter().map(|id| (id.as_str(), TTL)).collect();
        store.touch_many(&beats).await.expect("preload");
    }
}

/// Cycles through the ids so every iteration looks up a different runtime, without
/// allocating: each iteration borrows its id.
pub struct Ids {
    pub ids: Vec<String>,
    next: Cell<usize>,
}

impl Ids {
    pub fn new(prefix: &str) -> Self {
        Ids {
            ids: (0..RUNTIMES).map(|i| format!("{prefix}-{i}")).collect(),
            next: Cell::new(0),
        }
    }

    pub fn next(&self) -> &str {
        let next = (self.next.get() + 1) % self.ids.len();
        self.next.set(next);
        &self.ids[next]
    }
}
