//! Heartbeat liveness records for high-throughput servers.
//!
//! A heartbeat server has to answer "has runtime X heartbeated recently?" for thousands of
//! runtimes, and writing a database row on every beat is what it can least afford. This crate
//! keeps a TTL'd record per runtime instead, behind one async trait, [`LivenessStore`]:
//!
//! - [`touch`](LivenessStore::touch) records a beat that stays alive for a ttl;
//! - [`is_alive_batch`](LivenessStore::is_alive_batch) answers for many runtimes at once;
//! - [`forget`](LivenessStore::forget) drops a record.
//!
//! On any `Err` the caller falls back to its database, so a missing or broken backend costs
//! speed, never correctness.
//!
//! # Backends
//!
//! | backend | feature | for |
//! |---|---|---|
//! | [`NoopStore`] | always | the default: unavailable, the database is the only truth |
//! | `MemoryStore` | `memory` | one server instance; a moka TTL cache in process |
//! | `RedisStore` | `redis` | many instances sharing Redis; wire-compatible with the Go store |
//! | `LayeredStore` | `layered` | a local moka layer in front of Redis: coalesced writes, local-first batches |
//! | `ClusterStore` | `cluster` | Redis Cluster, for more than one Redis can take; one pipeline per master |
//!
//! A server picks one at run time with [`StoreConfig::from_env`] and [`open`], or builds one
//! directly. Asking for a backend that was not compiled in is an [`Error::Config`].
//!
//! The feature `tls` adds `rediss://` URLs to `RedisStore`, through rustls with its ring
//! crypto provider, and `RedisStoreBuilder::tls_root_certificate` for a private CA. The first
//! `rediss://` store built installs ring as rustls's process-wide default provider, unless the
//! application installed one before (then that one is used).
//!
//! The feature `metrics` adds `Instrumented`, a wrapper around any store that records call
//! latencies and publishes the store's counters and health through the `metrics` facade, named
//! `liveness_store_*`. `full` enables every backend, `tls` and `metrics`.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # mod example {
//! use std::time::Duration;
//! use liveness_store::{LivenessStore, MemoryStore};
//!
//! #[tokio::main]
//! pub async fn main() -> liveness_store::Result<()> {
//!     let store = MemoryStore::new();
//!     // A runtime beats every 15 s; its record lives 90 s.
//!     store.touch("runtime-7", Duration::from_secs(90)).await?;
//!     let alive = store.is_alive_batch(&["runtime-7", "runtime-8"]).await?;
//!     assert_eq!(alive, vec![true, false]);
//!     Ok(())
//! }
//! # }
//! # #[cfg(feature = "memory")]
//! # fn main() { example::main().unwrap() }
//! # #[cfg(not(feature = "memory"))]
//! # fn main() {}
//! ```
//!
//! # Input
//!
//! Every backend that records anything runs the same [`validate`] checks before any I/O: an empty id, an id over
//! 256 bytes or with a NUL byte, and a ttl under 1 ms or over 365 days are an `Err` that
//! reaches nothing. Otherwise ids are opaque: spaces, CR/LF, `{}`, `*` and unicode all work.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "redis", feature = "cluster"))]
mod breaker;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
mod error;
mod health;
#[cfg(feature = "metrics")]
mod instrumented;
#[cfg(feature = "layered")]
mod layered;
mod lease;
#[cfg(any(feature = "redis", feature = "cluster", feature = "layered"))]
mod log_limit;
#[cfg(feature = "memory")]
mod memory;
mod noop;
mod redact;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "redis", feature = "cluster"))]
mod remote;
mod stats;
mod store;
#[cfg(any(feature = "redis", feature = "cluster", feature = "layered"))]
mod unix_time;
mod urls;
pub mod validate;

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub use cluster::{ClusterStore, ClusterStoreBuilder};
pub use config::{
    Backend, ENV_BACKEND, ENV_DEBOUNCE_MS, ENV_KEY_PREFIX, ENV_LEASE_SKEW_MARGIN_MS,
    ENV_OP_TIMEOUT_MS, ENV_RECOVERY_FLOOR_MS, ENV_REDIS_URL, ENV_REDIS_URL_FALLBACK,
    ENV_REQUIRE_CONNECTION, StoreConfig, open,
};
pub use error::{Error, Result};
pub use health::{Health, HealthStatus};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use instrumented::{Instrumented, METRICS_PUBLISH_INTERVAL};
#[cfg(all(feature = "layered", any(feature = "redis", feature = "cluster")))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "layered", any(feature = "redis", feature = "cluster"))))
)]
pub use layered::ForgetBroadcast;
#[cfg(feature = "layered")]
#[cfg_attr(docsrs, doc(cfg(feature = "layered")))]
pub use layered::{LayeredStore, LayeredStoreBuilder};
pub use lease::{Lease, LeaseKey};
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use memory::MemoryStore;
pub use noop::NoopStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStore, RedisStoreBuilder};
#[cfg(any(feature = "redis", feature = "cluster"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "redis", feature = "cluster"))))]
pub use remote::DEFAULT_KEY_PREFIX;
pub use stats::StoreStats;
pub use store::LivenessStore;

// The README's examples compile and run as doctests.
#[cfg(all(doctest, feature = "memory", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
