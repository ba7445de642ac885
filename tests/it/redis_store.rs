//! What only the Redis backend promises: wire compatibility with the Go store, chunked
//! batches, bounded calls and clear connection errors.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::RedisServer;
use liveness_store::{Error, LivenessStore, RedisStore};

async fn store(server: &RedisServer) -> RedisStore {
    crate::support::store_builder(&server.url())
        .build()
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_record_written_by_the_go_store_reads_alive() {
    let server = RedisServer::start();
    server.set_raw(&[b"SET", b"mul:runtime:hb:x", b"1", b"EX", b"90"]);
    let store = store(&server).await;
    assert_eq!(
        store.is_alive_batch(&["x", "y"]).await.unwrap(),
        [true, false]
    );
}

#[tokio::test]
async fn touch_writes_the_touch_time_with_the_ttl_in_milliseconds() {
    let server = RedisServer::start();
    let store = store(&server).await;
    server.reset_stats(); // Connecting wrote the epoch record.
    let before = unix_ms();
    store.touch("rt-1", Duration::from_secs(5)).await.unwrap();
    let after = unix_ms();
    let pttl = server.pttl("mul:runtime:hb:rt-1");
    assert!(pttl > 4_000 && pttl <= 5_000, "PTTL {pttl}");
    let value = server.get(b"mul:runtime:hb:rt-1").expect("the key exists");
    let written: u64 = String::from_utf8(value).unwrap().parse().unwrap();
    assert!(
        (before..=after).contains(&written),
        "{before} <= {written} <= {after}"
    );
    assert_eq!(server.calls("set"), 1);
}

#[tokio::test]
async fn the_key_prefix_is_configurable() {
    let server = RedisServer::start();
    let store = crate::support::store_builder(&server.url())
        .key_prefix("svc-b:hb:")
        .build()
        .await
        .unwrap();
    store.touch("rt", Duration::from_secs(5)).await.unwrap();
    assert!(server.get(b"svc-b:hb:rt").is_some());
    assert!(server.get(b"mul:runtime:hb:rt").is_none());
    assert_eq!(store.key("rt"), b"svc-b:hb:rt");
}

#[tokio::test]
async fn huge_batches_are_chunked_into_bounded_mgets() {
    let server = RedisServer::start();
    let store = crate::support::store_builder(&server.url())
        .max_batch(1_000)
        .build()
        .await
        .unwrap();
    let ids: Vec<String> = (0..2_500).map(|i| format!("rt-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let beats: Vec<(&str, Duration)> = refs
        .iter()
        .step_by(2)
        .map(|id| (*id, Duration::from_secs(30)))
        .collect();
    server.reset_stats();
    store.touch_many(&beats).await.unwrap();
    assert_eq!(server.calls("set"), 1_250);
    let answers = store.is_alive_batch(&refs).await.unwrap();
    assert_eq!(server.calls("mget"), 3, "2,500 keys in chunks of 1,000");
    let expected: Vec<bool> = (0..2_500).map(|i| i % 2 == 0).collect();
    assert_eq!(answers, expected);
}

#[tokio::test]
async fn a_paused_redis_costs_one_timeout_and_the_store_recovers() {
    let server = RedisServer::start();
    let op_timeout = Duration::from_millis(100);
    let store = crate::support::store_builder(&server.url())
        .op_timeout(op_timeout)
        .build()
        .await
        .unwrap();
    store.touch("rt", Duration::from_secs(30)).await.unwrap();
    server.pause();
    let started = Instant::now();
    let touched = store.touch("rt", Duration::from_secs(30)).await;
    let touch_took = started.elapsed();
    let started = Instant::now();
    let batch = store.is_alive_batch(&["rt"]).await;
    let batch_took = started.elapsed();
    server.resume();
    assert!(matches!(touched, Err(Error::Timeout { .. })), "{touched:?}");
    assert!(matches!(batch, Err(Error::Timeout { .. })), "{batch:?}");
    // Each call bounded by the op timeout (plus scheduling slack on a busy machine), not by TCP.
    for took in [touch_took, batch_took] {
        assert!(took < op_timeout + Duration::from_millis(150), "{took:?}");
    }
    // The connection that timed out was dropped; a fresh one answers.
    assert_eq!(store.is_alive_batch(&["rt"]).await.unwrap(), [true]);
}

#[tokio::test]
async fn dead_connections_leave_the_pool_after_a_restart() {
    let mut server = RedisServer::start();
    let store = crate::support::store_builder(&server.url())
        .pool_size(2)
        .build()
        .await
        .unwrap();
    store
        .touch("before", Duration::from_secs(30))
        .await
        .unwrap();
    server.restart();
    // Each pooled connection may fail once on its way out; after that every call works.
    let mut failures = 0;
    for _ in 0..3 {
        if store.touch("after", Duration::from_secs(30)).await.is_err() {
            failures += 1;
        }
    }
    assert!(
        failures <= 2,
        "{failures} failures: dead connections were reused"
    );
    assert!(store.touch("after", Duration::from_secs(30)).await.is_ok());
    // The restart lost the data (no persistence): the store notices, and does not answer
    // "dead" for the record that is gone until a full ttl has passed (invariant 4).
    let answer = store.is_alive_batch(&["before", "after"]).await;
    assert!(
        // One and a half default floors (90 s).
        matches!(answer, Err(Error::Recovering { remaining }) if remaining <= Duration::from_secs(135)),
        "{answer:?}"
    );
    assert_eq!(store.is_alive_batch(&["after"]).await.unwrap(), [true]);
    assert_eq!(store.health().data_losses, 1);
}

#[tokio::test]
async fn connection_problems_are_clear_errors() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    // Unreachable is an error only when the store must not start down.
    let unreachable = RedisStore::builder(&format!("redis://127.0.0.1:{closed}/"))
        .connect_timeout(Duration::from_millis(500))
        .require_connection(true)
        .build()
        .await;
    assert!(
        matches!(&unreachable, Err(Error::Backend { source, .. }) if source.to_string().contains(&format!("127.0.0.1:{closed}"))),
        "{unreachable:?}"
    );

    for bad in [
        "http://127.0.0.1:6379/",
        "not a url",
        "redis://:hunter2@[::1",
    ] {
        let error = RedisStore::connect(bad).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::Config(_)), "{bad}: {error:?}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}

#[tokio::test]
async fn a_wrong_password_fails_fast_without_leaking_it() {
    let server = RedisServer::start_with_args(&["--requirepass", "right-horse"]);
    let url = format!("redis://:wrong-battery@127.0.0.1:{}/", server.port());
    let started = Instant::now();
    let error = RedisStore::connect(&url).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    for shown in [error.to_string(), format!("{error:?}")] {
        assert!(!shown.contains("wrong-battery"), "{shown}");
    }
    let url = format!("redis://:right-horse@127.0.0.1:{}/", server.port());
    let store = crate::support::store_builder(&url).build().await.unwrap();
    assert!(!format!("{store:?}").contains("right-horse"));
    store.touch("rt", Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn invalid_settings_are_refused_before_connecting() {
    let url = "redis://127.0.0.1:1/";
    let builders = [
        RedisStore::builder(url).pool_size(0),
        RedisStore::builder(url).op_timeout(Duration::ZERO),
        RedisStore::builder(url).connect_timeout(Duration::ZERO),
        RedisStore::builder(url).max_batch(0),
    ];
    for builder in builders {
        let shown = format!("{builder:?}");
        let result = builder.build().await;
        assert!(
            matches!(result, Err(Error::Config(_))),
            "{shown}: {result:?}"
        );
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
