//! Building the store a configuration asks for.

use std::sync::Arc;

use super::StoreConfig;
#[cfg(doc)]
use crate::Error;
use crate::{Backend, LivenessStore, NoopStore, Result};

/// Builds the store `config` asks for.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// let store = liveness_store::open(&liveness_store::StoreConfig::default()).await?;
/// assert!(!store.available()); // nothing configured: the noop store
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Config`] when the backend was not compiled in (the message names the Cargo
/// feature to enable) or a setting is missing or invalid; the Redis backends' connection
/// errors otherwise.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn LivenessStore>> {
    let store: Arc<dyn LivenessStore> = match config.backend {
        Backend::Noop => Arc::new(NoopStore::new()),
        #[cfg(feature = "memory")]
        Backend::Memory => Arc::new(crate::MemoryStore::new()),
        #[cfg(feature = "redis")]
        Backend::Redis => Arc::new(redis_store(config).await?),
        #[cfg(all(feature = "layered", feature = "redis"))]
        Backend::Layered => {
            let builder = crate::LayeredStore::builder(redis_store(config).await?);
            Arc::new(layered_settings(builder, config).build()?)
        }
        #[cfg(feature = "cluster")]
        Backend::Cluster => Arc::new(cluster_store(config).await?),
        #[cfg(all(feature = "layered", feature = "cluster"))]
        Backend::LayeredCluster => {
            let builder = crate::LayeredStore::builder(cluster_store(config).await?);
            Arc::new(layered_settings(builder, config).build()?)
        }
        // A build with every backend has none missing.
        #[allow(unreachable_patterns)]
        missing => return Err(missing.not_compiled()),
    };
    Ok(store)
}

#[cfg(feature = "redis")]
async fn redis_store(config: &StoreConfig) -> Result<crate::RedisStore> {
    crate::RedisStore::builder(config.require_redis_url()?)
        .configured(config)
        .build()
        .await
}

#[cfg(feature = "cluster")]
async fn cluster_store(config: &StoreConfig) -> Result<crate::ClusterStore> {
    let seeds = crate::urls::split_seeds(config.require_redis_url()?);
    crate::ClusterStore::builder(seeds)
        .configured(config)
        .build()
        .await
}

/// The layered settings a configuration holds.
#[cfg(all(feature = "layered", any(feature = "redis", feature = "cluster")))]
fn layered_settings<R: LivenessStore + 'static>(
    mut builder: crate::LayeredStoreBuilder<R>,
    config: &StoreConfig,
) -> crate::LayeredStoreBuilder<R> {
    if let Some(timeout) = config.op_timeout {
        builder = builder.op_timeout(timeout);
    }
    if let Some(debounce) = config.debounce {
        builder = builder.debounce(debounce);
    }
    if let Some(margin) = config.lease_skew_margin {
        builder = builder.lease_skew_margin(margin);
    }
    builder
}
