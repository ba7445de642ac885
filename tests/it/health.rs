//! The circuit breaker, `health()` and the epoch record of `RedisStore`, against real
//! `redis-server` processes.
#![cfg(feature = "redis")]

use std::time::{Duration, Instant};

use crate::support::RedisServer;
use crate::support::logs::LogBuffer;
use liveness_store::{Error, HealthStatus, LivenessStore, RedisStore, RedisStoreBuilder};

const OP_TIMEOUT: Duration = Duration::from_millis(200);
const COOLDOWN: Duration = Duration::from_millis(100);
/// Failures in a row that open the breaker (the default).
const FAILURE_THRESHOLD: u32 = 5;

fn builder(server: &RedisServer) -> RedisStoreBuilder {
    crate::support::store_builder(&server.url())
        .op_timeout(OP_TIMEOUT)
        .connect_timeout(OP_TIMEOUT)
        .breaker_cooldown(COOLDOWN)
        .breaker_max_cooldown(COOLDOWN)
}

/// Calls `touch` until the breaker opens, at most 3× the threshold (each call is bounded).
async fn fail_until_down(store: &RedisStore) -> usize {
    for calls in 1..=3 * FAILURE_THRESHOLD as usize {
        let _ = store.touch("rt", Duration::from_secs(5)).await;
        if store.health().status == HealthStatus::Down {
            return calls;
        }
    }
    panic!("still {:?} after many failures", store.health());
}

#[tokio::test]
async fn health_goes_degraded_then_down_and_back_to_healthy() {
    let mut server =
        RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = builder(&server).build().await.unwrap();
    let healthy = store.health();
    assert_eq!(healthy.status, HealthStatus::Healthy);
    assert!(store.available());

    server.kill();
    let _ = store.touch("rt", Duration::from_secs(5)).await;
    let degraded = store.health();
    assert_eq!(degraded.status, HealthStatus::Degraded, "{degraded:?}");
    assert_eq!(degraded.consecutive_failures, 1);
    assert!(degraded.since > healthy.since);

    let calls = fail_until_down(&store).await;
    assert_eq!(
        calls + 1,
        FAILURE_THRESHOLD as usize,
        "opens at the threshold"
    );
    let down = store.health();
    assert!(store.available(), "available() still means configured");

    // Open: calls fail fast without touching the network.
    let start = Instant::now();
    let answer = store.is_alive_batch(&["rt"]).await;
    let took = start.elapsed();
    assert!(matches!(answer, Err(Error::Unavailable)), "{answer:?}");
    assert!(took < OP_TIMEOUT / 4, "an open breaker waited {took:?}");

    server.restart();
    // One cool-down, then the next call is the probe that closes it; it finds the marker gone
    // (a restarted server), so "dead" waits out a recovery window (the 5 s ttl it wrote).
    let deadline = Instant::now() + COOLDOWN + OP_TIMEOUT * 4;
    while store.health().consecutive_failures > 0 || store.health().data_losses == 0 {
        assert!(Instant::now() < deadline, "{:?}", store.health());
        let _ = store.is_alive_batch(&["rt"]).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = store.health();
    assert!(back.since > down.since);
    assert_eq!(back.consecutive_failures, 0);
    // The append-only Redis kept its data, but a restart is suspected whatever the
    // persistence: the store cannot know what the last write before the crash was.
    assert_eq!(back.data_losses, 1, "the restart was suspected");
}

/// A Redis that answers with errors is up: out of memory under `noeviction`, writes fail and
/// reads still work, so the breaker must stay closed.
#[tokio::test]
async fn error_replies_do_not_open_the_breaker() {
    let server = RedisServer::start_with_args(&["--maxmemory-policy", "noeviction"]);
    let store = builder(&server).build().await.unwrap();
    store
        .touch("before", Duration::from_secs(60))
        .await
        .unwrap();
    // Below what is already used: every write is refused with OOM from now on.
    server.set_raw(&[b"CONFIG", b"SET", b"maxmemory", b"1"]);
    for _ in 0..3 * FAILURE_THRESHOLD {
        let refused = store.touch("rt", Duration::from_secs(60)).await;
        assert!(
            matches!(&refused, Err(Error::Backend { source, .. }) if source.to_string().contains("OOM")),
            "{refused:?}"
        );
    }
    assert_ne!(store.health().status, HealthStatus::Down);
    assert_eq!(
        store.is_alive_batch(&["before", "rt"]).await.unwrap(),
        [true, false]
    );
}

#[tokio::test]
async fn the_epoch_key_lies_outside_the_id_space() {
    let server = RedisServer::start();
    let store = builder(&server).build().await.unwrap();
    let key = store.epoch_key();
    assert_eq!(key, b"mul:runtime:hb:\0epoch");
    assert!(server.get(&key).is_some(), "connecting wrote the epoch");
    // The id it would take is refused before it reaches Redis.
    let id = "\0epoch";
    assert!(matches!(
        store.touch(id, Duration::from_secs(1)).await,
        Err(Error::InvalidRuntimeId { .. })
    ));
    // And the runtime named like the tempting alternative is just a runtime.
    store
        .touch("meta:epoch", Duration::from_secs(5))
        .await
        .unwrap();
    store.forget("meta:epoch").await;
    assert!(server.get(&key).is_some());
}

/// The server's `uptime_in_seconds`.
fn uptime_seconds(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|line| line.trim().strip_prefix("uptime_in_seconds:"))
        .and_then(|seconds| seconds.parse().ok())
        .unwrap()
}

/// Polls `store` (bounded by `limit`) until it answers `ids` without `Recovering`.
async fn until_trusted(store: &RedisStore, ids: &[&str], limit: Duration) -> Vec<bool> {
    let deadline = Instant::now() + limit;
    loop {
        match store.is_alive_batch(ids).await {
            Ok(answer) => return answer,
            Err(Error::Recovering { .. }) => assert!(Instant::now() < deadline, "never trusted"),
            Err(other) => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new Redis may lack the records of runtimes that beat before it started: "dead" is not
/// believed until its epoch (and the server) is one recovery window old, one and a half floors;
/// "alive" is, at once.
#[tokio::test]
async fn a_new_redis_is_trusted_once_its_records_are_a_window_old() {
    let server = RedisServer::start();
    let floor = Duration::from_millis(500);
    let window = floor + floor / 2;
    // Before the build, which creates the epoch: trust may not return before this + window
    // (less the millisecond the epoch's creation time is rounded to, twice).
    let built = Instant::now();
    let store = builder(&server)
        .recovery_floor(floor)
        .build()
        .await
        .unwrap();
    store.touch("alive", Duration::from_secs(5)).await.unwrap();
    assert_eq!(store.is_alive_batch(&["alive"]).await.unwrap(), [true]);
    let answer = store.is_alive_batch(&["alive", "dead"]).await;
    assert!(
        matches!(answer, Err(Error::Recovering { remaining }) if remaining <= window),
        "{answer:?}"
    );
    assert_eq!(store.health().status, HealthStatus::Degraded);
    assert_eq!(store.health().data_losses, 0, "a new Redis is no loss");
    let answer = until_trusted(&store, &["alive", "dead"], window * 4).await;
    assert_eq!(answer, [true, false]);
    assert!(
        built.elapsed() + Duration::from_millis(2) >= window,
        "trusted before the epoch was a window old"
    );
    // A second instance finds the epoch old enough, and once the server is too (its uptime is
    // counted in whole seconds), trusts it at once.
    let deadline = Instant::now() + Duration::from_secs(3);
    while uptime_seconds(&server) < 1 {
        assert!(
            Instant::now() < deadline,
            "the server's uptime did not move"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = builder(&server)
        .recovery_floor(floor)
        .build()
        .await
        .unwrap();
    assert_eq!(later.is_alive_batch(&["dead"]).await.unwrap(), [false]);
}

/// Deleting the epoch alone (the records survive) still reads as data loss: the store cannot
/// tell which records are gone, so "dead" waits one recovery window; "alive" does not. The
/// window is one and a half floors, or the largest ttl this instance wrote if that is longer.
#[tokio::test]
async fn a_lost_epoch_distrusts_dead_answers_for_one_window() {
    let server = RedisServer::start();
    let floor = Duration::from_millis(300);
    let reader_window = floor + floor / 2;
    let ttl = Duration::from_millis(900);
    let writer = builder(&server)
        .recovery_floor(floor)
        .build()
        .await
        .unwrap();
    let reader = builder(&server)
        .recovery_floor(floor)
        .build()
        .await
        .unwrap();
    until_trusted(&reader, &["dead"], reader_window * 4).await;
    until_trusted(&writer, &["dead"], reader_window * 4).await;
    writer.touch("alive", ttl).await.unwrap();

    server.set_raw(&[b"DEL", &writer.epoch_key()]);
    let detected = Instant::now();
    for (instance, window) in [(&writer, ttl), (&reader, reader_window)] {
        let answer = instance.is_alive_batch(&["alive", "dead"]).await;
        assert!(
            matches!(answer, Err(Error::Recovering { remaining }) if remaining <= window && remaining > window / 2),
            "{answer:?}"
        );
        assert_eq!(instance.is_alive_batch(&["alive"]).await.unwrap(), [true]);
        let health = instance.health();
        assert_eq!(health.status, HealthStatus::Degraded);
        assert_eq!(health.data_losses, 1);
        assert!(health.recovering_for.is_some_and(|r| r <= window));
    }
    assert_eq!(
        until_trusted(&reader, &["dead"], reader_window * 4).await,
        [false]
    );
    assert!(
        detected.elapsed() >= reader_window,
        "the reader trusted again too early"
    );
    assert!(
        matches!(
            writer.is_alive_batch(&["dead"]).await,
            Err(Error::Recovering { .. })
        ),
        "the writer's window is its ttl, longer than one and a half floors"
    );
    assert_eq!(until_trusted(&writer, &["dead"], ttl * 4).await, [false]);
    assert!(
        detected.elapsed() >= ttl,
        "the writer trusted again too early"
    );
    assert_eq!(reader.health().status, HealthStatus::Healthy);
    assert_eq!(
        reader.health().data_losses,
        1,
        "the new epoch was adopted, not lost again"
    );
}

#[tokio::test]
async fn breaker_and_recovery_settings_are_checked() {
    let server = RedisServer::start();
    for (builder, problem) in [
        (builder(&server).failure_threshold(0), "failure_threshold"),
        (
            builder(&server).breaker_cooldown(Duration::ZERO),
            "breaker_cooldown",
        ),
        (
            builder(&server)
                .breaker_cooldown(Duration::from_secs(2))
                .breaker_max_cooldown(Duration::from_secs(1)),
            "breaker_max_cooldown",
        ),
        (
            builder(&server).recovery_floor(Duration::from_secs(366 * 24 * 3600)),
            "recovery_floor",
        ),
        // "Never probe again" is not a cool-down: it would overflow the clock.
        (
            builder(&server)
                .breaker_cooldown(Duration::MAX)
                .breaker_max_cooldown(Duration::MAX),
            "breaker_max_cooldown",
        ),
        (builder(&server).op_timeout(Duration::MAX), "op_timeout"),
    ] {
        let built = builder.build().await;
        assert!(
            matches!(&built, Err(Error::Config(message)) if message.contains(problem)),
            "{built:?}"
        );
    }
}

/// An eviction policy that may drop unexpired records is worth a warning at connect time:
/// an evicted record reads as a dead runtime.
#[tokio::test(flavor = "current_thread")]
async fn an_evicting_redis_is_warned_about() {
    let cases = [
        (&["--maxmemory-policy", "allkeys-lru"][..], true),
        (
            &["--maxmemory", "1gb", "--maxmemory-policy", "volatile-ttl"][..],
            true,
        ),
        // volatile-* without a memory limit never evicts.
        (&["--maxmemory-policy", "volatile-lru"][..], false),
        (
            &["--maxmemory", "1gb", "--maxmemory-policy", "noeviction"][..],
            false,
        ),
    ];
    for (args, warned) in cases {
        let server = RedisServer::start_with_args(args);
        let (logs, _capture) = LogBuffer::capture();
        builder(&server).build().await.unwrap();
        let log = logs.text();
        assert_eq!(
            log.contains("set maxmemory-policy noeviction"),
            warned,
            "{args:?}: {log}"
        );
    }
}
