//! Starting without Redis: a store built while Redis cannot be reached starts down (calls fail
//! fast with `Unavailable`) and becomes healthy, with no restart, once a `redis-server` starts
//! on its port; what a deploy must fix still fails the build at once.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use crate::support::RedisServer;
use liveness_store::{Error, HealthStatus, LivenessStore, RedisStoreBuilder};

const OP_TIMEOUT: Duration = Duration::from_millis(250);
const COOLDOWN: Duration = Duration::from_millis(200);
const MAX_COOLDOWN: Duration = Duration::from_millis(400);
const TTL: Duration = Duration::from_secs(30);

fn builder(url: &str) -> RedisStoreBuilder {
    crate::support::store_builder(url)
        .op_timeout(OP_TIMEOUT)
        .connect_timeout(OP_TIMEOUT)
        .breaker_cooldown(COOLDOWN)
        .breaker_max_cooldown(MAX_COOLDOWN)
}

/// A server's port with nothing listening on it yet: started once, then killed.
fn vacant_port_of() -> RedisServer {
    let mut server = RedisServer::start();
    server.kill();
    server
}

/// Polls (bounded) until `store` is up (its breaker closed; it may still distrust a Redis
/// younger than its recovery window); returns how long that took.
async fn until_up(store: &dyn LivenessStore, limit: Duration) -> Duration {
    let started = Instant::now();
    while store.health().status == HealthStatus::Down {
        assert!(started.elapsed() < limit, "{:?}", store.health());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_store_built_while_redis_is_down_fails_fast_then_comes_up() {
    let _alone = crate::support::serial::alone().await;
    let mut server = vacant_port_of();
    let store = builder(&server.url()).build().await.expect("starts down");
    assert_eq!(store.health().status, HealthStatus::Down);
    assert!(store.available(), "configured all the same");
    for _ in 0..3 {
        let started = Instant::now();
        let touched = store.touch("rt", TTL).await;
        let read = store.is_alive_batch(&["rt"]).await;
        let took = started.elapsed();
        assert!(matches!(touched, Err(Error::Unavailable)), "{touched:?}");
        assert!(matches!(read, Err(Error::Unavailable)), "{read:?}");
        assert!(took < OP_TIMEOUT / 10, "two calls took {took:?}");
    }

    server.restart();
    let up = until_up(&store, MAX_COOLDOWN + OP_TIMEOUT + Duration::from_secs(1)).await;
    println!("up {up:?} after redis-server started");
    assert!(up <= MAX_COOLDOWN + OP_TIMEOUT, "took {up:?}");
    store.touch("rt", TTL).await.unwrap();
    assert_eq!(store.is_alive_batch(&["rt"]).await.unwrap(), [true]);
    assert!(server.get(b"mul:runtime:hb:rt").is_some());
    // The first contact is a first contact like any: a Redis younger than the recovery
    // window (here the 30 s ttl this store writes) may lack records, so "dead" waits.
    assert!(matches!(
        store.is_alive_batch(&["other"]).await,
        Err(Error::Recovering { .. })
    ));
    assert_eq!(store.data_losses(), 0, "a first contact is no loss");
}

#[tokio::test]
async fn require_connection_makes_an_unreachable_redis_an_error() {
    let _alone = crate::support::serial::alone().await;
    let server = vacant_port_of();
    let url = format!("redis://:s3cret@127.0.0.1:{}/", server.port());
    let started = Instant::now();
    let built = builder(&url).require_connection(true).build().await;
    let error = built.expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(2));
    let text = error.to_string();
    assert!(text.contains("require_connection"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port())),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn a_redis_that_answers_and_refuses_fails_the_build_at_once() {
    let _alone = crate::support::serial::alone().await;
    let server = RedisServer::start_with_args(&["--requirepass", "right"]);
    let url = format!("redis://:wrong@127.0.0.1:{}/", server.port());
    let started = Instant::now();
    let error = builder(&url).build().await.expect_err("wrong password");
    assert!(started.elapsed() < OP_TIMEOUT, "{:?}", started.elapsed());
    let text = error.to_string();
    assert!(text.contains("password"), "names what to check: {text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", server.port())),
        "{text}"
    );
    assert!(!text.contains("wrong"), "{text}");
}

#[cfg(feature = "layered")]
#[tokio::test]
async fn a_layered_store_answers_locally_while_redis_is_down_and_writes_once_it_is_up() {
    let _alone = crate::support::serial::alone().await;
    let mut server = vacant_port_of();
    let remote: liveness_store::RedisStore = builder(&server.url()).build().await.unwrap();
    let store = liveness_store::LayeredStore::builder(remote)
        .op_timeout(OP_TIMEOUT)
        .build()
        .unwrap();
    // The write fails (the caller falls back to its database), but this instance knows.
    assert!(matches!(
        store.touch("rt", TTL).await,
        Err(Error::Unavailable)
    ));
    assert_eq!(store.is_alive_batch(&["rt"]).await.unwrap(), [true]);

    server.restart();
    until_up(&store, MAX_COOLDOWN + OP_TIMEOUT + Duration::from_secs(1)).await;
    store.touch("rt", TTL).await.unwrap();
    assert!(
        server.get(b"mul:runtime:hb:rt").is_some(),
        "the write went through"
    );
}

#[cfg(feature = "cluster")]
#[tokio::test]
async fn a_cluster_store_built_while_every_node_is_down_comes_up_when_they_start() {
    let _alone = crate::support::serial::alone().await;
    use crate::support::cluster::RedisCluster;
    use liveness_store::ClusterStore;

    let mut cluster = RedisCluster::start();
    cluster.kill_all();
    let store = ClusterStore::builder(cluster.seed_urls())
        .key_prefix("late:")
        .op_timeout(OP_TIMEOUT)
        .connect_timeout(OP_TIMEOUT)
        .breaker_cooldown(COOLDOWN)
        .breaker_max_cooldown(MAX_COOLDOWN)
        .build()
        .await
        .expect("starts down");
    assert_eq!(store.health().status, HealthStatus::Down);
    let started = Instant::now();
    let touched = store.touch("rt", TTL).await;
    let read = store.is_alive_batch(&["rt"]).await;
    assert!(matches!(touched, Err(Error::Unavailable)), "{touched:?}");
    assert!(matches!(read, Err(Error::Unavailable)), "{read:?}");
    assert!(
        started.elapsed() < OP_TIMEOUT / 10,
        "{:?}",
        started.elapsed()
    );

    cluster.restart_all();
    let up = until_up(&store, MAX_COOLDOWN + OP_TIMEOUT + Duration::from_secs(2)).await;
    println!("cluster store up {up:?} after the cluster was healthy again");
    store.touch("rt", TTL).await.unwrap();
    assert_eq!(store.is_alive_batch(&["rt"]).await.unwrap(), [true]);
    let owner = cluster.owner_of_slot(RedisCluster::slot_of(b"late:rt"));
    assert!(cluster.node(owner).get(b"late:rt").is_some());
    // A cluster younger than the recovery window may lack records: "dead" waits.
    assert!(matches!(
        store.is_alive_batch(&["other"]).await,
        Err(Error::Recovering { .. })
    ));
}
