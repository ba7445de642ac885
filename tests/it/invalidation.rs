//! The forget broadcast against real `redis-server` processes: two layered instances over one
//! Redis, each caching remote "alive" answers for 10 s, so that only the broadcast can explain
//! another instance seeing a `forget` within 100 ms.
//!
//! Every wait is a poll with a deadline; nothing sleeps to decide an outcome. The measured
//! delays are printed (`cargo test --all-features --test it invalidation:: -- --nocapture`).
#![cfg(all(feature = "layered", feature = "redis"))]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::RedisServer;
use liveness_store::{
    DEFAULT_KEY_PREFIX, Error, ForgetBroadcast, LayeredStore, LivenessStore, NoopStore, RedisStore,
};

const MS: Duration = Duration::from_millis(1);
const TTL: Duration = Duration::from_secs(90);
/// Long enough that a cached "alive" cannot lapse during a test.
const REMOTE_POSITIVE_TTL: Duration = Duration::from_secs(10);
/// How soon another instance must see a forget.
const SEEN_WITHIN: Duration = Duration::from_millis(100);
const POLL_EVERY: Duration = Duration::from_millis(2);

type Instance = LayeredStore<RedisStore>;

async fn instance(server: &RedisServer, broadcast: bool) -> Instance {
    let remote = crate::support::store_builder(&server.url())
        .build()
        .await
        .expect("connect to redis");
    let mut builder = LayeredStore::builder(remote).remote_positive_ttl(REMOTE_POSITIVE_TTL);
    if broadcast {
        let broadcast = ForgetBroadcast::new([server.url()], DEFAULT_KEY_PREFIX).unwrap();
        builder = builder.forget_broadcast(broadcast);
    }
    builder.build().expect("valid settings")
}

fn channel() -> Vec<u8> {
    ForgetBroadcast::new(["redis://127.0.0.1/"], DEFAULT_KEY_PREFIX)
        .unwrap()
        .channel()
}

/// `PUBSUB NUMSUB <channel>`: how many connections are subscribed to the forget channel.
fn subscribers(server: &RedisServer) -> u64 {
    let (_, count): (Vec<u8>, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel())
        .query(&mut server.connection())
        .expect("PUBSUB NUMSUB");
    count
}

/// Waits, at most `within`, until `count` connections are subscribed; panics otherwise.
async fn wait_for_subscribers(server: &RedisServer, count: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while subscribers(server) != count {
        assert!(
            Instant::now() < deadline,
            "{} subscribers after {within:?}, expected {count}",
            subscribers(server)
        );
        tokio::time::sleep(10 * MS).await;
    }
}

/// How long after `start` `store` first answered `Ok(false)` for `id`, polling every 2 ms;
/// `None` if it did not within [`SEEN_WITHIN`].
async fn seen_dead(store: &Instance, id: &str, start: Instant) -> Option<Duration> {
    loop {
        if let Ok(answer) = store.is_alive_batch(&[id]).await
            && answer == [false]
        {
            return Some(start.elapsed());
        }
        if start.elapsed() > SEEN_WITHIN {
            return None;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A touches, B caches A's "alive", A forgets: B answers "dead" within 100 ms, 20 times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_drops_a_cached_alive_at_once() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server, true).await, instance(&server, true).await);
    wait_for_subscribers(&server, 2, Duration::from_secs(5)).await;
    let mut delays = Vec::new();
    for i in 0..20 {
        let id = format!("rt-{i}");
        a.touch(&id, TTL).await.unwrap();
        let lookups = b.stats().remote_lookups;
        assert_eq!(b.is_alive_batch(&[&id]).await.unwrap(), [true]);
        assert_eq!(b.stats().remote_lookups, lookups + 1, "B asked the remote");
        assert_eq!(b.is_alive_batch(&[&id]).await.unwrap(), [true]);
        assert_eq!(b.stats().remote_lookups, lookups + 1, "B cached the answer");
        let start = Instant::now();
        a.forget(&id).await;
        let delay = seen_dead(&b, &id, start)
            .await
            .unwrap_or_else(|| panic!("{id}: B still alive {SEEN_WITHIN:?} after A's forget"));
        delays.push(delay);
    }
    delays.sort();
    println!(
        "forget seen by the other instance over 20 ids: median {:?}, max {:?} (from the start \
         of A's forget)",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert_eq!(b.stats().forget_broadcasts_received, 20);
    assert_eq!(
        a.stats().forget_broadcasts_received,
        0,
        "A skips its own messages"
    );
}

/// B took touches of the runtime itself: its own entry goes too, and its next touch writes the
/// record A deleted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_drops_its_own_touched_entry() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server, true).await, instance(&server, true).await);
    wait_for_subscribers(&server, 2, Duration::from_secs(5)).await;
    b.touch("rt", TTL).await.unwrap();
    assert_eq!(b.is_alive_batch(&["rt"]).await.unwrap(), [true]);
    let start = Instant::now();
    a.forget("rt").await;
    let delay = seen_dead(&b, "rt", start)
        .await
        .expect("B still answers from its own touch after A's forget");
    println!("B's own touched entry dropped after {delay:?}");
    // Without the dropped entry, B's next touch would coalesce on the deleted record.
    let sets = server.calls("set");
    b.touch("rt", TTL).await.unwrap();
    assert_eq!(
        server.calls("set"),
        sets + 1,
        "B's next touch wrote through"
    );
    assert_eq!(a.is_alive_batch(&["rt"]).await.unwrap(), [true]);
}

/// 1,000 touches, write-throughs and coalesced ones, publish nothing; one forget publishes
/// once, and only the other instance applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_forget_publishes() {
    let server = RedisServer::start();
    let (a, b) = (instance(&server, true).await, instance(&server, true).await);
    wait_for_subscribers(&server, 2, Duration::from_secs(5)).await;
    server.reset_stats();
    for _ in 0..2 {
        for i in 0..500 {
            a.touch(&format!("rt-{i}"), TTL).await.unwrap();
        }
    }
    let stats = a.stats();
    assert_eq!(stats.touches, 1_000);
    assert_eq!(
        stats.remote_writes, 500,
        "the first touch of each id wrote through"
    );
    assert_eq!(server.calls("publish"), 0, "a touch published");
    a.forget("rt-0").await;
    assert_eq!(server.calls("publish"), 1);
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.stats().forget_broadcasts_received == 0 {
        assert!(Instant::now() < deadline, "B never received the forget");
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert_eq!(b.stats().forget_broadcasts_received, 1);
    assert_eq!(a.stats().forget_broadcasts_received, 0);
}

/// A restart (same port, data lost) closes every connection: the subscriber connects again,
/// and the first forget after that reaches the other instance, though the publishing
/// connection died too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_survives_a_restart() {
    let mut server = RedisServer::start();
    let (a, b) = (instance(&server, true).await, instance(&server, true).await);
    wait_for_subscribers(&server, 2, Duration::from_secs(5)).await;
    a.forget("before-restart").await; // opens A's publishing connection
    server.restart();
    let restarted = Instant::now();
    let bound = Duration::from_secs(5);
    wait_for_subscribers(&server, 2, bound).await;
    let resubscribed = restarted.elapsed();
    let mut attempts = 0;
    loop {
        assert!(
            restarted.elapsed() < bound,
            "no runtime cached on B within {bound:?} of the restart ({attempts} attempts)"
        );
        attempts += 1;
        let id = format!("after-restart-{attempts}");
        // The stores' pooled connections broken by the restart fail a call or two: try
        // again with a new id.
        let cached = a.touch(&id, TTL).await.is_ok()
            && b.is_alive_batch(&[&id]).await.ok() == Some(vec![true]);
        if !cached {
            tokio::time::sleep(20 * MS).await;
            continue;
        }
        let start = Instant::now();
        a.forget(&id).await;
        let seen = seen_dead(&b, &id, start).await;
        println!(
            "after a restart: both subscribed again after {resubscribed:?}; the first forget \
             after that ({attempts} attempts to cache a runtime on B) seen after {seen:?}"
        );
        assert!(
            seen.is_some(),
            "the first forget after the restart was lost"
        );
        assert_eq!(server.calls("publish"), 1);
        return;
    }
}

/// A broadcast Redis that accepts connections and never answers (a listener nobody accepts
/// from: the kernel's backlog completes the handshake) holds no forget past its bound, however
/// many overlap. The remote is a healthy Redis, so its share of the documented bound (twice the
/// op timeout: the remote's delete, then the publish) is a millisecond or two, and the publish
/// alone must end within the op timeout: every forget returns within op timeout + 50 ms. The
/// forgets start 20 ms apart over two op timeouts, so that each one's deadline finds another's
/// connect in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broadcast_redis_keeps_every_forget_within_its_bound() {
    const OP_TIMEOUT: Duration = Duration::from_millis(200);
    const FORGETS: u32 = 20;
    const SLACK: Duration = Duration::from_millis(50);
    let server = RedisServer::start();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let silent_url = format!("redis://{}/", silent.local_addr().unwrap());
    let remote = crate::support::store_builder(&server.url())
        .build()
        .await
        .expect("connect to redis");
    let store = Arc::new(
        LayeredStore::builder(remote)
            .op_timeout(OP_TIMEOUT)
            .forget_broadcast(ForgetBroadcast::new([silent_url], DEFAULT_KEY_PREFIX).unwrap())
            .build()
            .unwrap(),
    );
    let forgets: Vec<_> = (0..FORGETS)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                tokio::time::sleep(OP_TIMEOUT / 10 * i).await;
                let start = Instant::now();
                store.forget(&format!("rt-{i}")).await;
                start.elapsed()
            })
        })
        .collect();
    let mut took = Vec::new();
    for forget in forgets {
        took.push(forget.await.unwrap());
    }
    took.sort();
    println!(
        "{FORGETS} overlapping forgets, broadcast Redis silent, op timeout {OP_TIMEOUT:?}: \
         fastest {:?}, median {:?}, slowest {:?}",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        took[took.len() - 1] <= OP_TIMEOUT + SLACK,
        "a forget took {:?}, past op timeout {OP_TIMEOUT:?} + {SLACK:?}: {took:?}",
        took[took.len() - 1]
    );
    assert_eq!(
        server.calls("del"),
        u64::from(FORGETS),
        "every forget reached the remote"
    );
    drop(silent);
}

/// Without the broadcast nothing is published or subscribed, and B keeps its cached "alive":
/// what the other tests measure is the broadcast's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_broadcast_the_cached_alive_stays() {
    let server = RedisServer::start();
    let (a, b) = (
        instance(&server, false).await,
        instance(&server, false).await,
    );
    a.touch("rt", TTL).await.unwrap();
    assert_eq!(b.is_alive_batch(&["rt"]).await.unwrap(), [true]);
    a.forget("rt").await;
    assert_eq!(a.is_alive_batch(&["rt"]).await.unwrap(), [false]);
    let until = Instant::now() + 2 * SEEN_WITHIN;
    while Instant::now() < until {
        assert_eq!(b.is_alive_batch(&["rt"]).await.unwrap(), [true]);
        tokio::time::sleep(POLL_EVERY).await;
    }
    assert_eq!(server.calls("publish"), 0);
    assert_eq!(server.calls("subscribe"), 0);
    assert_eq!(subscribers(&server), 0);
}

/// Dropping a store ends its subscriber and closes its connections: no task outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_its_subscriber() {
    let server = RedisServer::start();
    // The remote outlives the layered store, so that the tasks counted are the broadcast's
    // alone (a dropped `RedisStore` leaves its pool's reaper until its next tick).
    let remote = Arc::new(
        crate::support::store_builder(&server.url())
            .build()
            .await
            .unwrap(),
    );
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let store = LayeredStore::builder(Arc::clone(&remote))
        .forget_broadcast(ForgetBroadcast::new([server.url()], DEFAULT_KEY_PREFIX).unwrap())
        .build()
        .unwrap();
    wait_for_subscribers(&server, 1, Duration::from_secs(5)).await;
    store.forget("rt").await; // opens the publishing connection too
    assert_eq!(server.calls("publish"), 1);
    let tasks_with_store = metrics.num_alive_tasks();
    drop(store);
    wait_for_subscribers(&server, 0, Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while metrics.num_alive_tasks() > tasks_before {
        assert!(
            Instant::now() < deadline,
            "{} tasks alive after the store was dropped, {tasks_before} before it was built",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(10 * MS).await;
    }
    println!(
        "tasks: {tasks_before} before the store, {tasks_with_store} with it, {} after it",
        metrics.num_alive_tasks()
    );
    assert!(tasks_with_store > tasks_before, "the test counted nothing");
}

/// Bad settings are an `Err(Config)` that never shows the password, and so is a build
/// outside a tokio runtime; `Debug` redacts the password too.
#[test]
fn bad_settings_are_refused_without_leaking_the_password() {
    assert!(matches!(
        ForgetBroadcast::new(Vec::<String>::new(), DEFAULT_KEY_PREFIX),
        Err(Error::Config(_))
    ));
    for urls in [
        vec!["redis://:hunter2@127.0.0.1:6379/", "nope://:hunter2@host/"],
        vec!["redis://:hunter2@127.0.0.1:notaport/"],
    ] {
        match ForgetBroadcast::new(urls.clone(), DEFAULT_KEY_PREFIX) {
            Err(Error::Config(message)) => {
                assert!(!message.contains("hunter2"), "{urls:?}: {message}")
            }
            other => panic!("{urls:?}: {other:?}"),
        }
    }
    let broadcast = ForgetBroadcast::new(["redis://:hunter2@127.0.0.1:1/"], "p:").unwrap();
    let builder = LayeredStore::builder(NoopStore::new()).forget_broadcast(broadcast.clone());
    let debug = format!("{broadcast:?} {builder:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("127.0.0.1:1"), "{debug}");
    match builder.build() {
        Err(Error::Config(message)) => assert!(message.contains("tokio runtime"), "{message}"),
        other => panic!("built outside a runtime: {other:?}"),
    }
    // Inside one it builds (its subscriber retries the unreachable Redis in the background).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = LayeredStore::builder(NoopStore::new())
            .forget_broadcast(broadcast)
            .build()
            .unwrap();
        let debug = format!("{store:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("forget_broadcast"), "{debug}");
    });
}
