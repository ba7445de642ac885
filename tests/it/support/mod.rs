//! What the integration tests share: the test kit, and the store builder they all start from.
#![allow(dead_code, unused_imports)] // Not every test uses every helper.

pub(crate) use testkit::*;

pub(crate) mod serial;
pub(crate) mod subject;

/// A `RedisStore` builder for a test's own, fresh Redis.
///
/// A store distrusts "dead" answers until a Redis's records are one recovery window old (90 s
/// by default): a new or emptied Redis may lack the records of live runtimes. A test's Redis
/// holds everything the test wrote, so a zero floor trusts it at once.
#[cfg(feature = "redis")]
pub(crate) fn store_builder(url: &str) -> liveness_store::RedisStoreBuilder {
    liveness_store::RedisStore::builder(url).recovery_floor(std::time::Duration::ZERO)
}
