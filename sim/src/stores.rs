//! The store a run drives, opened as a server would configure it, under the simulator's own
//! key prefix.

use std::sync::Arc;

use liveness_store::{Backend, LayeredStore, LivenessStore, RedisStore, StoreConfig};

use crate::options::Options;

/// A store ready to drive.
pub(crate) struct Opened {
    pub(crate) store: Arc<dyn LivenessStore>,
    /// The epoch record a Redis-backed store created: it has no expiry, so the simulator
    /// deletes it after the run (the records expire by themselves).
    pub(crate) epoch_key: Option<Vec<u8>>,
}

/// The type a person would write, for tables and plots.
pub(crate) fn store_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Noop => "NoopStore",
        Backend::Memory => "MemoryStore",
        Backend::Redis => "RedisStore",
        Backend::Layered => "LayeredStore",
        _ => "store",
    }
}

/// Where the records of `backend` go: never the production prefix, never another run's keys.
pub(crate) fn key_prefix(backend: Backend) -> String {
    format!("liveness-sim:{}:{backend}:", std::process::id())
}

/// Opens `backend`: the plain backends as `liveness_store::open` does, the Redis ones with the
/// builders, at the simulator's settings (`--debounce-ms`, `--remote-positive-ms`, a recovery
/// floor of one ttl) and the
/// operation timeout and recovery floor of the environment when set.
pub(crate) async fn open(
    backend: Backend,
    opts: &Options,
    redis_url: Option<&str>,
) -> Result<Opened, String> {
    let url = match (backend, redis_url) {
        (Backend::Redis | Backend::Layered, Some(url)) => url,
        (Backend::Redis | Backend::Layered, None) => {
            return Err(format!("the {backend} backend needs a Redis URL"));
        }
        _ => {
            let store = liveness_store::open(&StoreConfig::new(backend))
                .await
                .map_err(|e| format!("cannot open the {backend} store: {e}"))?;
            return Ok(Opened {
                store,
                epoch_key: None,
            });
        }
    };
    let env = StoreConfig::from_env().map_err(|e| e.to_string())?;
    let mut builder = RedisStore::builder(url)
        .key_prefix(&key_prefix(backend))
        // Invariant 4 wants the largest ttl in use; the production default (90 s) would be the
        // reference's, not the simulator's.
        .recovery_floor(env.recovery_floor.unwrap_or(opts.ttl));
    if let Some(timeout) = env.op_timeout {
        builder = builder.op_timeout(timeout);
    }
    let redis = builder
        .build()
        .await
        .map_err(|e| format!("cannot open the {backend} store: {e}"))?;
    let epoch_key = Some(redis.epoch_key());
    let store: Arc<dyn LivenessStore> = if backend == Backend::Layered {
        let mut layered = LayeredStore::builder(redis)
            .debounce(opts.debounce)
            .remote_positive_ttl(opts.remote_positive);
        if let Some(timeout) = env.op_timeout {
            layered = layered.op_timeout(timeout);
        }
        Arc::new(
            layered
                .build()
                .map_err(|e| format!("cannot build the layered store: {e}"))?,
        )
    } else {
        Arc::new(redis)
    };
    Ok(Opened { store, epoch_key })
}
