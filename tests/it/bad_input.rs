//! One table of bad input, run against every backend compiled in (invariant 6: bad input never
//! reaches Redis), and one of bad configuration.
//!
//! Every bad call must come back promptly with the right `Err` variant, write nothing, and
//! send no command to Redis: the Redis-backed subjects count commands around the bad calls.
//! Nothing may panic.
// Some helpers serve only the feature sets that have a Redis.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::future::Future;
use std::time::{Duration, Instant};

use liveness_store::{Error, LivenessStore, StoreConfig};

use crate::support::subject::Subject;

const TTL: Duration = Duration::from_secs(90);
/// How long a refused call may take: it does no I/O, so this bounds a hang, not speed.
const PROMPT: Duration = Duration::from_secs(1);

/// Which error a case must produce.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refusal {
    Id,
    Ttl,
}

/// One bad heartbeat: an id and a ttl, one of which is wrong.
struct Case {
    name: &'static str,
    id: String,
    ttl: Duration,
    refusal: Refusal,
    /// A word the error message must contain.
    says: &'static str,
}

fn cases() -> Vec<Case> {
    let id = |name, id: String, says| Case {
        name,
        id,
        ttl: TTL,
        refusal: Refusal::Id,
        says,
    };
    let ttl = |name, ttl, says| Case {
        name,
        id: "fine-id".to_owned(),
        ttl,
        refusal: Refusal::Ttl,
        says,
    };
    vec![
        id("empty id", String::new(), "empty"),
        id("257-byte id", "x".repeat(257), "257 bytes"),
        id("1 MiB id", "y".repeat(1 << 20), "over the maximum"),
        id("129 two-byte characters", "é".repeat(129), "258 bytes"),
        id("NUL inside an id", "rt\0-1".to_owned(), "NUL"),
        id("NUL alone", "\0".to_owned(), "NUL"),
        id("NUL at the end", "rt-1\0".to_owned(), "NUL"),
        ttl("ttl 0", Duration::ZERO, "zero"),
        ttl("ttl 999 µs", Duration::from_micros(999), "1 ms"),
        ttl("ttl 1 ns", Duration::from_nanos(1), "1 ms"),
        ttl(
            "ttl 366 days",
            Duration::from_secs(366 * 86_400),
            "365 days",
        ),
        ttl(
            "ttl 365 days + 1 ns",
            Duration::from_secs(365 * 86_400) + Duration::from_nanos(1),
            "365 days",
        ),
        ttl(
            "ttl of 1000 years",
            Duration::from_secs(1000 * 366 * 86_400),
            "365 days",
        ),
    ]
}

/// Runs every case of the table against `s`'s store: each refused, nothing sent to Redis.
async fn refuses_every_case(s: Subject) {
    let good = ["good-1", "good-2"];
    for case in cases() {
        s.reset_commands();
        refuses(&s, &case, good).await;
        assert_eq!(
            s.commands_sent(),
            0,
            "{}: {}: bad input reached Redis",
            s.name,
            case.name
        );
    }
    // Nothing of the good beats that shared a call with a bad one was written.
    if s.store.available() {
        let answers = promptly(s.name, "read-back", s.store.is_alive_batch(&good)).await;
        assert_eq!(answers.unwrap(), [false, false], "{}", s.name);
    }
    if let Some(server) = &s.server {
        // Only the epoch record that connecting wrote.
        assert_eq!(server.dbsize(), 1, "{}: something was written", s.name);
    }
}

async fn refuses(s: &Subject, case: &Case, good: [&str; 2]) {
    let (store, who) = (&s.store, format!("{}: {}", s.name, case.name));
    let check = |op: &str, result: liveness_store::Result<()>| {
        let what = format!("{who}: {op}");
        expect_refusal(&what, result, case.refusal, case.says);
    };

    let touched = promptly(&who, "touch", store.touch(&case.id, case.ttl)).await;
    check("touch", touched);

    let beats = [(good[0], TTL), (case.id.as_str(), case.ttl), (good[1], TTL)];
    let many = promptly(&who, "touch_many", store.touch_many(&beats)).await;
    check("touch_many", many);

    if case.refusal == Refusal::Id {
        let ids = [good[0], case.id.as_str(), good[1]];
        let batch = promptly(&who, "is_alive_batch", store.is_alive_batch(&ids)).await;
        check("is_alive_batch", batch.map(drop));
        let one = promptly(&who, "is_alive", store.is_alive(&case.id)).await;
        check("is_alive", one.map(drop));
        // Best effort and infallible: it must simply return, having done nothing.
        promptly(&who, "forget", store.forget(&case.id)).await;
    }
}

/// `future`, which must finish within [`PROMPT`].
async fn promptly<T>(who: &str, op: &str, future: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = tokio::time::timeout(PROMPT, future)
        .await
        .unwrap_or_else(|_| panic!("{who}: {op} did not return within {PROMPT:?}"));
    assert!(started.elapsed() < PROMPT, "{who}: {op} was slow");
    output
}

fn expect_refusal(what: &str, result: liveness_store::Result<()>, refusal: Refusal, says: &str) {
    let error = match (refusal, result) {
        (Refusal::Id, Err(error @ Error::InvalidRuntimeId { .. }))
        | (Refusal::Ttl, Err(error @ Error::InvalidTtl { .. })) => error,
        (_, other) => panic!("{what}: expected an invalid {refusal:?} error, got {other:?}"),
    };
    let message = error.to_string();
    assert!(
        message.contains(says),
        "{what}: {message:?} should say {says:?}"
    );
    assert!(message.len() < 200, "{what}: the message repeats the input");
    assert!(!error.is_transient(), "{what}: bad input is not transient");
}

#[tokio::test]
async fn noop_refuses_bad_input() {
    refuses_every_case(Subject::noop()).await;
}

#[cfg(feature = "memory")]
#[tokio::test]
async fn memory_refuses_bad_input() {
    refuses_every_case(Subject::memory()).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_refuses_bad_input_without_sending_anything() {
    refuses_every_case(Subject::redis().await).await;
}

#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_refuses_bad_input_without_sending_anything() {
    let cluster = std::sync::Arc::new(crate::support::cluster::RedisCluster::start());
    refuses_every_case(Subject::cluster(&cluster, "bad-input:").await).await;
}

#[cfg(all(feature = "layered", feature = "memory"))]
#[tokio::test]
async fn layered_over_memory_refuses_bad_input() {
    refuses_every_case(Subject::layered_memory()).await;
}

#[cfg(all(feature = "layered", feature = "redis"))]
#[tokio::test]
async fn layered_over_redis_refuses_bad_input_without_sending_anything() {
    refuses_every_case(Subject::layered_redis().await).await;
}

/// The message of an [`Error::Config`], or a panic naming what came instead.
fn config_message<T: std::fmt::Debug>(what: &str, result: liveness_store::Result<T>) -> String {
    match result {
        Err(Error::Config(message)) => message,
        other => panic!("{what}: expected a configuration error, got {other:?}"),
    }
}

#[test]
fn invalid_configuration_values_are_refused_by_name() {
    // (variable, value, words the message must hold)
    let table: &[(&str, &str, &[&str])] = &[
        (
            "LIVENESS_BACKEND",
            "mongo",
            &["LIVENESS_BACKEND", "mongo", "noop"],
        ),
        (
            "LIVENESS_BACKEND",
            "redis-cluster",
            &["LIVENESS_BACKEND", "redis-cluster"],
        ),
        ("LIVENESS_BACKEND", "mem ory", &["LIVENESS_BACKEND"]),
        (
            "LIVENESS_OP_TIMEOUT_MS",
            "0",
            &["LIVENESS_OP_TIMEOUT_MS", "positive"],
        ),
        ("LIVENESS_OP_TIMEOUT_MS", "-5", &["LIVENESS_OP_TIMEOUT_MS"]),
        ("LIVENESS_OP_TIMEOUT_MS", "1.5", &["LIVENESS_OP_TIMEOUT_MS"]),
        (
            "LIVENESS_OP_TIMEOUT_MS",
            "250ms",
            &["LIVENESS_OP_TIMEOUT_MS", "250ms"],
        ),
        (
            "LIVENESS_OP_TIMEOUT_MS",
            "fast",
            &["LIVENESS_OP_TIMEOUT_MS", "fast"],
        ),
        (
            "LIVENESS_OP_TIMEOUT_MS",
            "99999999999999999999999",
            &["LIVENESS_OP_TIMEOUT_MS"],
        ),
        (
            "LIVENESS_DEBOUNCE_MS",
            "-1",
            &["LIVENESS_DEBOUNCE_MS", "non-negative"],
        ),
        ("LIVENESS_DEBOUNCE_MS", "soon", &["LIVENESS_DEBOUNCE_MS"]),
        ("LIVENESS_DEBOUNCE_MS", "0x10", &["LIVENESS_DEBOUNCE_MS"]),
    ];
    for (variable, value, words) in table {
        let what = format!("{variable}={value}");
        let result =
            StoreConfig::from_lookup(|name| (name == *variable).then(|| value.to_string()));
        let message = config_message(&what, result);
        for word in *words {
            assert!(
                message.contains(word),
                "{what}: {message:?} should say {word:?}"
            );
        }
    }
}

#[tokio::test]
async fn open_refuses_what_it_cannot_build() {
    use liveness_store::Backend;

    // (configuration, words the message must hold)
    let table = [
        (
            StoreConfig::new(Backend::Cluster),
            if cfg!(feature = "cluster") {
                vec!["cluster", "LIVENESS_REDIS_URL"]
            } else {
                vec!["feature `cluster`"]
            },
        ),
        (
            StoreConfig::new(Backend::LayeredCluster),
            if cfg!(all(feature = "layered", feature = "cluster")) {
                vec!["layered-cluster", "LIVENESS_REDIS_URL"]
            } else {
                vec!["feature"]
            },
        ),
        (
            StoreConfig::new(Backend::Redis),
            if cfg!(feature = "redis") {
                vec!["LIVENESS_REDIS_URL"]
            } else {
                vec!["feature `redis`"]
            },
        ),
        (
            StoreConfig::new(Backend::Layered),
            if cfg!(all(feature = "layered", feature = "redis")) {
                vec!["LIVENESS_REDIS_URL"]
            } else {
                vec!["feature"]
            },
        ),
    ];
    for (config, words) in table {
        let what = format!("{config:?}");
        let message = config_message(
            &what,
            promptly(&what, "open", liveness_store::open(&config)).await,
        );
        for word in words {
            assert!(
                message.contains(word),
                "{what}: {message:?} should say {word:?}"
            );
        }
    }
}

#[cfg(feature = "layered")]
#[test]
fn invalid_layered_settings_are_refused_by_name() {
    use liveness_store::LayeredStore;

    let builder = || LayeredStore::builder(liveness_store::NoopStore::new());
    let over_a_year = Duration::from_secs(366 * 86_400);
    let table = [
        ("local_capacity", builder().local_capacity(0).build()),
        (
            "pipelines_in_flight",
            builder().pipelines_in_flight(0).build(),
        ),
        ("max_batch", builder().max_batch(0).build()),
        ("op_timeout", builder().op_timeout(Duration::ZERO).build()),
        ("debounce", builder().debounce(over_a_year).build()),
        (
            "remote_positive_ttl",
            builder().remote_positive_ttl(over_a_year).build(),
        ),
    ];
    for (setting, result) in table {
        let message = config_message(setting, result);
        assert!(message.contains(setting), "{setting}: {message:?}");
    }
}

#[cfg(feature = "redis")]
mod with_redis {
    use crate::support::RedisServer;
    use liveness_store::{Backend, RedisStore};

    use super::*;

    /// A loopback port nothing listens on (bound a moment ago, then released).
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    /// Builds a store on `url` with a connect timeout far above the [`PROMPT`] bound, so a
    /// failure cut short by the timeout fails the test.
    async fn build(url: &str) -> liveness_store::Result<RedisStore> {
        let build = RedisStore::builder(url)
            .connect_timeout(Duration::from_secs(5))
            .build();
        promptly(url, "build", build).await
    }

    #[tokio::test]
    async fn invalid_builder_settings_are_refused_by_name() {
        // Checked before connecting: nothing listens on this port.
        let url = format!("redis://127.0.0.1:{}/", closed_port());
        let builder = || RedisStore::builder(&url);
        let table = [
            ("pool_size", builder().pool_size(0)),
            ("op_timeout", builder().op_timeout(Duration::ZERO)),
            ("connect_timeout", builder().connect_timeout(Duration::ZERO)),
            ("max_batch", builder().max_batch(0)),
        ];
        for (setting, builder) in table {
            let message =
                config_message(setting, promptly(setting, "build", builder.build()).await);
            assert!(message.contains(setting), "{setting}: {message:?}");
        }
    }

    #[tokio::test]
    async fn unusable_urls_are_configuration_errors() {
        let mut table = vec![
            "http://127.0.0.1:6379/".to_owned(),
            "https://127.0.0.1/".to_owned(),
            "127.0.0.1:6379".to_owned(),
            "not a url".to_owned(),
            String::new(),
            "redis://127.0.0.1:notaport/".to_owned(),
            "redis://127.0.0.1:99999/".to_owned(),
            "redis://".to_owned(),
        ];
        if !cfg!(feature = "tls") {
            table.push("rediss://127.0.0.1:6380/".to_owned());
        }
        for url in &table {
            let message = config_message(url, build(url).await);
            assert!(
                message.contains("not a usable Redis URL"),
                "{url}: {message:?}"
            );
        }
        // The same through `open`.
        let config = StoreConfig::new(Backend::Redis).with_redis_url("http://127.0.0.1:6379/");
        let opened = promptly("open", "open", liveness_store::open(&config)).await;
        let message = config_message("open with an http URL", opened);
        assert!(message.contains("http://127.0.0.1:6379/"), "{message:?}");
    }

    #[tokio::test]
    async fn an_unreachable_host_is_a_prompt_error_when_a_connection_is_required() {
        let url = format!("redis://127.0.0.1:{}/", closed_port());
        let required = RedisStore::builder(&url)
            .connect_timeout(Duration::from_secs(5))
            .require_connection(true)
            .build();
        let error = promptly(&url, "build", required)
            .await
            .expect_err("nothing listens there");
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
        assert!(error.is_transient(), "{error:?}");
        let config = StoreConfig::new(Backend::Redis)
            .with_redis_url(url.as_str())
            .with_require_connection(true);
        let opened = promptly("open", "open", liveness_store::open(&config)).await;
        assert!(matches!(opened, Err(Error::Backend { .. })), "{opened:?}");

        // Without the setting, the same host yields a store that starts down and says so fast.
        let store = build(&url).await.expect("an unreachable host starts down");
        let touched = promptly(&url, "touch", store.touch("rt-1", Duration::from_secs(5))).await;
        assert!(matches!(touched, Err(Error::Unavailable)), "{touched:?}");
        let config = StoreConfig::new(Backend::Redis).with_redis_url(url);
        let opened = promptly("open", "open", liveness_store::open(&config)).await;
        assert!(opened.is_ok(), "{opened:?}");
    }

    #[tokio::test]
    async fn a_wrong_password_is_a_prompt_error() {
        let server = RedisServer::start_with_args(&["--requirepass", "right-one"]);
        let url = format!("redis://:wrong-one@127.0.0.1:{}/", server.port());
        let error = build(&url).await.expect_err("a wrong password");
        assert!(matches!(error, Error::Backend { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            !message.contains("wrong-one") && !message.contains("right-one"),
            "{message}"
        );
        assert!(message.to_ascii_lowercase().contains("pass"), "{message}");
    }
}
