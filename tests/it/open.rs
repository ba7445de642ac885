//! Choosing the backend at run time: what `open` builds for each configuration, in every
//! feature set, and the errors that name the fix.

use liveness_store::{Backend, Error, StoreConfig, open};

fn config_error(result: liveness_store::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Config(message)) => message,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn nothing_configured_opens_the_noop_store() {
    let store = open(&StoreConfig::default()).await.unwrap();
    assert!(!store.available());
    let from_empty_env = StoreConfig::from_lookup(|_| None).unwrap();
    assert!(!open(&from_empty_env).await.unwrap().available());
}

#[tokio::test]
async fn memory_backend() {
    let result = open(&StoreConfig::new(Backend::Memory)).await;
    if cfg!(feature = "memory") {
        assert!(result.unwrap().available());
    } else {
        let message = config_error(result);
        assert!(message.contains("feature `memory`"), "{message}");
    }
}

#[tokio::test]
async fn redis_backend_needs_its_feature_and_a_url() {
    let message = config_error(open(&StoreConfig::new(Backend::Redis)).await);
    if cfg!(feature = "redis") {
        assert!(message.contains("LIVENESS_REDIS_URL"), "{message}");
    } else {
        assert!(message.contains("feature `redis`"), "{message}");
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_backend_from_the_environment() {
    use std::time::Duration;

    let server = crate::support::RedisServer::start();
    let url = server.url();
    let config = StoreConfig::from_lookup(|name| match name {
        "LIVENESS_BACKEND" => Some("redis".into()),
        "REDIS_URL" => Some(url.clone()),
        "LIVENESS_KEY_PREFIX" => Some("env:hb:".into()),
        "LIVENESS_OP_TIMEOUT_MS" => Some("150".into()),
        _ => None,
    })
    .unwrap();
    let store = open(&config).await.unwrap();
    assert!(store.available());
    store.touch("rt", Duration::from_secs(5)).await.unwrap();
    assert!(server.get(b"env:hb:rt").is_some());
    assert!(format!("{store:?}").contains("150ms"), "{store:?}");
}

#[tokio::test]
async fn layered_backend_needs_its_features_and_a_url() {
    let message = config_error(open(&StoreConfig::new(Backend::Layered)).await);
    if cfg!(all(feature = "layered", feature = "redis")) {
        assert!(message.contains("LIVENESS_REDIS_URL"), "{message}");
    } else if cfg!(feature = "layered") {
        assert!(message.contains("feature `redis`"), "{message}");
    } else {
        assert!(message.contains("feature `layered`"), "{message}");
    }
}

#[cfg(all(feature = "layered", feature = "redis"))]
#[tokio::test]
async fn layered_backend_over_redis() {
    let server = crate::support::RedisServer::start();
    let config = StoreConfig::new(Backend::Layered).with_redis_url(server.url());
    let store = open(&config).await.unwrap();
    assert!(store.available());
    store
        .touch("rt", std::time::Duration::from_secs(5))
        .await
        .unwrap();
    assert!(server.get(b"mul:runtime:hb:rt").is_some());
    assert!(
        format!("{store:?}").starts_with("LayeredStore"),
        "{store:?}"
    );
}

#[tokio::test]
async fn backends_this_version_does_not_provide_are_clear_errors() {
    for backend in [Backend::Cluster] {
        let message = config_error(open(&StoreConfig::new(backend)).await);
        assert!(message.contains(backend.name()), "{message}");
    }
}
