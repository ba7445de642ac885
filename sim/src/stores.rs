//! The stores a run drives, opened as a server would configure them, under the simulator's own
//! key prefix: `--instances` of them, as a fleet of servers would, sharing that prefix.

use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use liveness_store::{
    LayeredStore, LivenessStore, MemoryStore, NoopStore, RedisStore, StoreConfig,
};
use serde::Serialize;

use crate::Args;
use crate::fleet::Fleet;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Store {
    #[default]
    Memory,
    Redis,
    Layered,
    Noop,
}

impl Store {
    /// As on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Redis => "redis",
            Store::Layered => "layered",
            Store::Noop => "noop",
        }
    }

    /// The type a person would write, for the table and the plot.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Store::Memory => "MemoryStore",
            Store::Redis => "RedisStore",
            Store::Layered => "LayeredStore",
            Store::Noop => "NoopStore",
        }
    }

    pub(crate) fn uses_redis(self) -> bool {
        matches!(self, Store::Redis | Store::Layered)
    }
}

/// A store ready to drive.
pub(crate) struct Opened {
    pub(crate) fleet: Fleet,
    /// The epoch record the Redis-backed instances share: it has no expiry, so the session
    /// deletes it after the run (the records expire by themselves).
    pub(crate) epoch_key: Option<Vec<u8>>,
}

/// Opens `store`, as many instances as the fleet has, each as a server would (with a pool of
/// its own); the Redis-backed ones on `redis_url`, with the simulator's settings and the
/// operation timeout and recovery floor of `env` when set.
pub(crate) async fn open(
    store: Store,
    args: &Args,
    env: &StoreConfig,
    redis_url: Option<&str>,
) -> Result<Opened, String> {
    let mut instances = Vec::new();
    let mut epoch_key = None;
    for _ in 0..Fleet::size(args.instances) {
        let (instance, key) = open_one(store, args, env, redis_url).await?;
        instances.push(instance);
        epoch_key = key;
    }
    Ok(Opened {
        fleet: Fleet::new(instances, args.routing),
        epoch_key,
    })
}

/// One instance of `store`, and the key of its epoch record if it has one.
async fn open_one(
    store: Store,
    args: &Args,
    env: &StoreConfig,
    redis_url: Option<&str>,
) -> Result<(Arc<dyn LivenessStore>, Option<Vec<u8>>), String> {
    let url = match (store, redis_url) {
        (Store::Memory, _) => return Ok((Arc::new(MemoryStore::new()), None)),
        (Store::Noop, _) => return Ok((Arc::new(NoopStore::new()), None)),
        (_, Some(url)) => url,
        (_, None) => return Err(format!("{} needs a Redis URL", store.type_name())),
    };
    let failed = |e: liveness_store::Error| format!("cannot open {}: {e}", store.type_name());
    let ttl = Duration::from_millis(args.ttl_ms);
    let mut redis = RedisStore::builder(url)
        // Never the production prefix, never another run's keys.
        .key_prefix(&format!(
            "liveness-sim:{}:{}:",
            std::process::id(),
            store.name()
        ))
        // Invariant 4 wants the largest ttl in use: the production default (90 s) is the
        // reference's, not the simulator's.
        .recovery_floor(env.recovery_floor.unwrap_or(ttl));
    if let Some(timeout) = env.op_timeout {
        redis = redis.op_timeout(timeout);
    }
    let redis = redis.build().await.map_err(failed)?;
    let epoch_key = Some(redis.epoch_key());
    if store == Store::Redis {
        return Ok((Arc::new(redis), epoch_key));
    }
    let mut layered = LayeredStore::builder(redis)
        .debounce(Duration::from_millis(args.debounce_ms))
        .remote_positive_ttl(Duration::from_millis(args.remote_positive_ms))
        // The crate's 1 s margin for clock skew, scaled like every other duration: one
        // machine, one clock.
        .lease_skew_margin(Duration::from_secs(1) / crate::TIME_SCALE);
    if let Some(timeout) = env.op_timeout {
        layered = layered.op_timeout(timeout);
    }
    Ok((Arc::new(layered.build().map_err(failed)?), epoch_key))
}
