//! One contract, every backend: the same assertions instantiated per backend.
//!
//! The memory backend runs on tokio's paused clock (the test decides when time passes); the
//! Redis backend runs against a real `redis-server` whose own TTLs decide, so its waits are
//! real but short.
// Without a backend feature only the noop cases run and the shared suite goes unused.
#![cfg_attr(
    not(any(feature = "memory", feature = "redis")),
    allow(dead_code, unused_macros)
)]

use std::sync::Arc;
use std::time::Duration;

use liveness_store::{Error, LivenessStore, NoopStore};

use crate::support::subject::Subject;

const LONG: Duration = Duration::from_secs(90);

mod suite {
    use super::*;

    pub(crate) async fn read_your_writes(s: Subject) {
        assert!(s.store.available());
        s.store.touch("rt-1", LONG).await.unwrap();
        assert_eq!(s.alive(&["rt-1", "rt-2"]).await, [true, false]);
        assert!(s.store.is_alive("rt-1").await.unwrap());
        assert!(!s.store.is_alive("rt-2").await.unwrap());
    }

    pub(crate) async fn records_expire_after_their_ttl(s: Subject) {
        let ttl = Duration::from_millis(600);
        s.store.touch("short", ttl).await.unwrap();
        s.store.touch("long", LONG).await.unwrap();
        s.pass(ttl / 2).await;
        assert_eq!(s.alive(&["short", "long"]).await, [true, true]);
        s.pass(ttl / 2 + s.grace(ttl) + s.slack()).await;
        assert_eq!(s.alive(&["short", "long"]).await, [false, true]);
    }

    pub(crate) async fn a_touch_renews_the_record(s: Subject) {
        let ttl = Duration::from_millis(600);
        s.store.touch("rt", ttl).await.unwrap();
        s.pass(ttl / 2).await;
        s.store.touch("rt", ttl).await.unwrap();
        // 1.25 ttl after the first touch, 0.75 ttl after the second.
        s.pass(ttl * 3 / 4).await;
        assert_eq!(s.alive(&["rt"]).await, [true]);
        s.pass(ttl / 4 + s.grace(ttl) + s.slack()).await;
        assert_eq!(s.alive(&["rt"]).await, [false]);
    }

    pub(crate) async fn forget_drops_only_its_record(s: Subject) {
        s.store.touch("a", LONG).await.unwrap();
        s.store.touch("b", LONG).await.unwrap();
        s.store.forget("a").await;
        assert_eq!(s.alive(&["a", "b"]).await, [false, true]);
        // Unknown and invalid ids are ignored, not errors (forget is best effort).
        s.store.forget("never-seen").await;
        s.store.forget("").await;
        assert_eq!(s.alive(&["b"]).await, [true]);
    }

    pub(crate) async fn an_empty_batch_sends_nothing(s: Subject) {
        s.reset_commands();
        assert_eq!(
            s.store.is_alive_batch(&[]).await.unwrap(),
            Vec::<bool>::new()
        );
        s.store.touch_many(&[]).await.unwrap();
        s.assert_no_commands_sent();
    }

    pub(crate) async fn answers_keep_input_order_and_duplicates(s: Subject) {
        s.store.touch("b", LONG).await.unwrap();
        s.store.touch("d", LONG).await.unwrap();
        let ids = ["a", "b", "b", "c", "d", "a", "d"];
        assert_eq!(
            s.alive(&ids).await,
            [false, true, true, false, true, false, true]
        );
    }

    pub(crate) async fn a_batch_of_5000_mixed_ids(s: Subject) {
        let ids: Vec<String> = (0..5_000).map(|i| format!("runtime-{i}")).collect();
        let beats: Vec<(&str, Duration)> = ids
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .map(|(_, id)| (id.as_str(), LONG))
            .collect();
        s.store.touch_many(&beats).await.unwrap();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let answers = s.alive(&refs).await;
        let expected: Vec<bool> = (0..5_000).map(|i| i % 3 == 0).collect();
        assert_eq!(answers, expected);
    }

    pub(crate) async fn bad_input_is_refused_and_sends_nothing(s: Subject) {
        let long = "x".repeat(257);
        let huge = "y".repeat(1 << 20);
        s.reset_commands();
        for id in ["", long.as_str(), huge.as_str(), "nul\0byte"] {
            let touched = s.store.touch(id, LONG).await;
            assert!(
                matches!(touched, Err(Error::InvalidRuntimeId { .. })),
                "touch of a bad id: {touched:?}"
            );
            let batch = s.store.is_alive_batch(&["fine", id]).await;
            assert!(
                matches!(batch, Err(Error::InvalidRuntimeId { .. })),
                "batch with a bad id: {batch:?}"
            );
            s.store.forget(id).await;
        }
        let one_year_and_a_day = Duration::from_secs(366 * 24 * 3600);
        for ttl in [
            Duration::ZERO,
            Duration::from_micros(999),
            one_year_and_a_day,
        ] {
            let touched = s.store.touch("fine", ttl).await;
            assert!(
                matches!(touched, Err(Error::InvalidTtl { .. })),
                "touch with ttl {ttl:?}: {touched:?}"
            );
        }
        // One bad beat refuses the whole call: the good one before it is not written either.
        let many = s.store.touch_many(&[("good", LONG), ("", LONG)]).await;
        assert!(matches!(many, Err(Error::InvalidRuntimeId { .. })));
        s.assert_no_commands_sent();
        assert_eq!(s.alive(&["fine", "good"]).await, [false, false]);
    }

    pub(crate) async fn odd_ids_are_opaque(s: Subject) {
        let longest = "z".repeat(256);
        let odd = [
            " spaced id ",
            "cr\rlf\n",
            "{tag}",
            "{tag}suffix",
            "*",
            "?[a-z]",
            "ünïcödé 🚀",
            "meta:epoch",
            "mul:runtime:hb:nested",
            longest.as_str(),
        ];
        for id in odd {
            s.store.touch(id, LONG).await.unwrap();
        }
        assert_eq!(s.alive(&odd).await, vec![true; odd.len()]);
        // The hash tag's inner text is a different id.
        assert_eq!(s.alive(&["tag"]).await, [false]);
        if let Some(server) = &s.server {
            // One key per id, plus the epoch record, which no id (not even "meta:epoch")
            // collides with.
            assert_eq!(server.dbsize(), odd.len() as u64 + 1);
        }
        // Forgetting "*" and "{tag}" drops exactly those: nothing is a pattern.
        s.store.forget("*").await;
        s.store.forget("{tag}").await;
        let expected: Vec<bool> = odd.iter().map(|id| *id != "*" && *id != "{tag}").collect();
        assert_eq!(s.alive(&odd).await, expected);
    }

    pub(crate) async fn touch_many_writes_every_beat(s: Subject) {
        let ttl = Duration::from_millis(600);
        s.store
            .touch_many(&[("a", LONG), ("b", ttl), ("c", LONG)])
            .await
            .unwrap();
        assert_eq!(
            s.alive(&["a", "b", "c", "d"]).await,
            [true, true, true, false]
        );
        s.pass(ttl + s.grace(ttl) + s.slack()).await;
        assert_eq!(s.alive(&["a", "b", "c"]).await, [true, false, true]);
    }
}

/// Every case of [`suite`], listed once: calls `$then!` with the given arguments, then `;` and
/// the cases' names. Each backend instantiates this one list, the cluster included.
macro_rules! with_every_case {
    ($then:ident! { $($args:tt)* }) => {
        $then! {
            $($args)*;
            read_your_writes,
            records_expire_after_their_ttl,
            a_touch_renews_the_record,
            forget_drops_only_its_record,
            an_empty_batch_sends_nothing,
            answers_keep_input_order_and_duplicates,
            a_batch_of_5000_mixed_ids,
            bad_input_is_refused_and_sends_nothing,
            odd_ids_are_opaque,
            touch_many_writes_every_beat
        }
    };
}

/// A test per case for one backend: `mod $backend { #[$test] async fn <case>() ... }`.
#[cfg(any(feature = "memory", feature = "redis"))]
macro_rules! contract_suite {
    ($backend:ident, $test:meta, $subject:expr; $($case:ident),+) => {
        mod $backend {
            use super::*;

            $(
                #[$test]
                async fn $case() {
                    suite::$case($subject).await;
                }
            )+
        }
    };
}

#[cfg(feature = "memory")]
with_every_case!(contract_suite! {
    memory, tokio::test(start_paused = true), Subject::memory()
});

#[cfg(feature = "redis")]
with_every_case!(contract_suite! { redis, tokio::test, Subject::redis().await });

#[cfg(all(feature = "layered", feature = "memory"))]
with_every_case!(contract_suite! {
    layered_over_memory, tokio::test(start_paused = true), Subject::layered_memory()
});

#[cfg(all(feature = "layered", feature = "redis"))]
with_every_case!(contract_suite! {
    layered_over_redis, tokio::test, Subject::layered_redis().await
});

/// Runs every case in turn on one Redis Cluster (starting a six-node cluster per case would
/// cost more than the cases), each on a fresh store under its own key prefix.
#[cfg(feature = "cluster")]
macro_rules! whole_suite_on_one_cluster {
    ($name:ident, $subject:path; $($case:ident),+) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let cluster = Arc::new(crate::support::cluster::RedisCluster::start());
            $(
                let prefix = concat!(stringify!($name), ":", stringify!($case), ":");
                suite::$case($subject(&cluster, prefix).await).await;
            )+
        }
    };
}

#[cfg(feature = "cluster")]
with_every_case!(whole_suite_on_one_cluster! {
    cluster_store_on_a_six_node_cluster, Subject::cluster
});

#[cfg(all(feature = "layered", feature = "cluster"))]
with_every_case!(whole_suite_on_one_cluster! {
    layered_over_cluster, Subject::layered_cluster
});

/// The noop store keeps the reference's answers: the parts of the contract that apply.
mod noop {
    use super::*;

    #[tokio::test]
    async fn is_unavailable_and_never_answers() {
        let store = NoopStore::new();
        assert!(!store.available());
        store.touch("rt-1", LONG).await.unwrap();
        store.touch_many(&[("rt-1", LONG)]).await.unwrap();
        for ids in [&[][..], &["rt-1"][..], &["rt-1", "rt-1"][..]] {
            let answer = store.is_alive_batch(ids).await;
            assert!(matches!(answer, Err(Error::Unavailable)), "{answer:?}");
        }
        assert!(matches!(
            store.is_alive("rt-1").await,
            Err(Error::Unavailable)
        ));
        store.forget("rt-1").await;
    }

    #[tokio::test]
    async fn works_behind_a_trait_object() {
        let store: Arc<dyn LivenessStore> = Arc::new(NoopStore);
        assert!(!store.available());
        assert!(store.is_alive_batch(&["x"]).await.is_err());
    }
}
