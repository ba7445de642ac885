//! Leases (`LivenessStore::touch_lease`): an instance that did not write a runtime's record
//! coalesces on the lease another instance issued, and ignores every lease it cannot trust:
//! garbled, for another runtime, tampered with, expired, or from before a loss or a forget.
#![cfg(all(feature = "layered", feature = "redis", feature = "memory"))]

use std::sync::Arc;
use std::time::Duration;

use crate::support::RedisServer;
use liveness_store::{
    LayeredStore, Lease, LeaseKey, LivenessStore, MemoryStore, RedisStore, StoreStats,
};

const TTL: Duration = Duration::from_secs(90);

/// A layered instance over the test's Redis (a short skew margin: one machine, one clock).
async fn instance(server: &RedisServer) -> LayeredStore<RedisStore> {
    let remote = crate::support::store_builder(&server.url())
        .build()
        .await
        .unwrap();
    LayeredStore::builder(remote)
        .lease_skew_margin(Duration::from_millis(10))
        .build()
        .unwrap()
}

/// How many records an instance wrote, and how many touches it coalesced.
fn writes(stats: StoreStats) -> (u64, u64) {
    (stats.remote_writes, stats.coalesced_touches)
}

#[tokio::test]
async fn a_lease_lets_another_instance_coalesce() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server).await, instance(&server).await);
    // Counted from here: connecting created the epoch record.
    server.reset_stats();
    let lease = a.touch_lease("rt", TTL, None).await.unwrap();
    assert!(!lease.is_none(), "the writing instance issues a lease");
    assert_eq!(server.calls("set"), 1);

    // The runtime's next beat reaches the other instance, with the lease, as text.
    let carried: Lease = lease.to_string().parse().unwrap();
    let next = b.touch_lease("rt", TTL, Some(&carried)).await.unwrap();
    assert_eq!(writes(b.stats()), (0, 1), "coalesced on the lease");
    assert_eq!(server.calls("set"), 1, "nothing written");
    assert!(!next.is_none(), "and it hands on a lease of its own");
    assert_eq!(b.is_alive_batch(&["rt"]).await.unwrap(), [true]);
    // And back again.
    a.touch_lease("rt", TTL, Some(&next)).await.unwrap();
    assert_eq!(server.calls("set"), 1);
}

#[tokio::test]
async fn leases_it_cannot_trust_are_ignored_and_the_beat_is_written() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server).await, instance(&server).await);
    let lease = a.touch_lease("rt", TTL, None).await.unwrap();
    let text = lease.to_string();
    let mut tampered = text.clone().into_bytes();
    tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let mut written = 0;
    for (case, presented, id) in [
        ("garbled", "not a lease at all".to_owned(), "rt"),
        ("none", "-".to_owned(), "rt"),
        ("another runtime's", text.clone(), "other"),
        ("tampered", tampered, "rt"),
    ] {
        let presented: Lease = presented.parse().unwrap();
        b.touch_lease(id, TTL, Some(&presented))
            .await
            .unwrap_or_else(|e| panic!("{case}: the beat failed: {e}"));
        written += 1;
        assert_eq!(
            b.stats().remote_writes,
            written,
            "{case}: a lease was trusted"
        );
        b.forget(id).await;
    }
}

#[tokio::test]
async fn a_lease_from_before_a_loss_or_a_forget_is_ignored() {
    let mut server = RedisServer::start();
    let (a, b) = (instance(&server).await, instance(&server).await);
    // A restart from a snapshot keeps the epoch record, so the lease still verifies: it is its
    // age that rules it out.
    server.set_raw(&[b"SAVE"]);
    let before_loss = a.touch_lease("rt", TTL, None).await.unwrap();
    server.kill();
    server.restart();
    // The other instance learns of the loss at its next remote call (after a failed one on
    // the connection the restart broke).
    for _ in 0..3 {
        let _ = b.is_alive_batch(&["unknown"]).await;
    }
    assert_eq!(b.data_losses(), 1);
    assert!(
        b.lease_key("rt").is_some(),
        "the epoch, and the key, survived"
    );
    b.touch_lease("rt", TTL, Some(&before_loss)).await.unwrap();
    assert_eq!(b.stats().remote_writes, 1, "a pre-loss lease was trusted");
    assert!(server.get(b"mul:runtime:hb:rt").is_some());

    // A forget on the instance: leases issued before it are not taken either (the forget may
    // have deleted the record they describe).
    // (The first calls after the restart may fail on connections it broke.)
    let mut lease = Err(liveness_store::Error::Unavailable);
    for _ in 0..3 {
        lease = a.touch_lease("rt2", TTL, None).await;
        if lease.is_ok() {
            break;
        }
    }
    let lease = lease.unwrap();
    b.forget("something else").await;
    b.touch_lease("rt2", TTL, Some(&lease)).await.unwrap();
    assert_eq!(
        b.stats().remote_writes,
        2,
        "a lease from before a forget was trusted"
    );
}

#[tokio::test]
async fn an_expired_lease_covers_nothing() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server).await, instance(&server).await);
    let short = Duration::from_millis(200);
    // Written with the short ttl plus its debounce (half of it): it lives 300 ms.
    let lease = a.touch_lease("rt", short, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    b.touch_lease("rt", short, Some(&lease)).await.unwrap();
    assert_eq!(writes(b.stats()), (1, 0), "an expired lease was trusted");
}

#[tokio::test]
async fn a_configured_key_works_over_any_remote() {
    let remote = Arc::new(MemoryStore::new());
    let key = LeaseKey::new(*b"0123456789abcdef");
    let layered = |remote: Arc<MemoryStore>, key: Option<LeaseKey>| {
        let builder = LayeredStore::builder(remote).lease_skew_margin(Duration::from_millis(10));
        match key {
            Some(key) => builder.lease_key(key).build().unwrap(),
            None => builder.build().unwrap(),
        }
    };
    // Without a key there is nothing to sign with: no lease.
    let keyless = layered(Arc::clone(&remote), None);
    assert!(
        keyless
            .touch_lease("rt", TTL, None)
            .await
            .unwrap()
            .is_none()
    );

    let (a, b) = (
        layered(Arc::clone(&remote), Some(key.clone())),
        layered(Arc::clone(&remote), Some(key)),
    );
    let lease = a.touch_lease("rt", TTL, None).await.unwrap();
    b.touch_lease("rt", TTL, Some(&lease)).await.unwrap();
    assert_eq!(writes(b.stats()), (0, 1));
    // A key of its own does not verify the others' leases.
    let stranger = layered(remote, Some(LeaseKey::new(*b"another key 16 b")));
    stranger.touch_lease("rt", TTL, Some(&lease)).await.unwrap();
    assert_eq!(writes(stranger.stats()), (1, 0));
}

#[tokio::test]
async fn stores_that_do_not_coalesce_issue_no_lease() {
    let server = RedisServer::start();
    let redis = crate::support::store_builder(&server.url())
        .build()
        .await
        .unwrap();
    let lease = redis.touch_lease("rt", TTL, None).await.unwrap();
    assert!(lease.is_none());
    assert_eq!(lease.to_string(), "-");
    assert_eq!(redis.is_alive_batch(&["rt"]).await.unwrap(), [true]);
}

#[tokio::test]
async fn every_lease_is_trusted_for_the_skew_margin_less() {
    let server = RedisServer::start();
    let a = instance(&server).await;
    // The record lives 135 s (the ttl and its debounce); an instance that allows its peers'
    // clocks to be 200 s apart cannot trust any of it.
    let remote = crate::support::store_builder(&server.url())
        .build()
        .await
        .unwrap();
    let wary = LayeredStore::builder(remote)
        .lease_skew_margin(Duration::from_secs(200))
        .build()
        .unwrap();
    let lease = a.touch_lease("rt", TTL, None).await.unwrap();
    wary.touch_lease("rt", TTL, Some(&lease)).await.unwrap();
    assert_eq!(
        writes(wary.stats()),
        (1, 0),
        "the margin was not subtracted"
    );
    // The same lease, where the peers' clocks are trusted to agree within 10 ms, covers.
    let trusting = instance(&server).await;
    trusting.touch_lease("rt", TTL, Some(&lease)).await.unwrap();
    assert_eq!(writes(trusting.stats()), (0, 1));
}
