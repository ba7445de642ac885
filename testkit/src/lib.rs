//! The test kit of `liveness-store`: real servers and real faults for its tests, benches and
//! simulator. Not published.
//!
//! - [`RedisServer`]: a private `redis-server` on a free loopback port, killed on drop; kill,
//!   restart, pause, flush it; count what it received ([`commandstats`]).
//! - [`cluster::RedisCluster`]: a Redis Cluster of such servers, with reshards and failovers.
//! - [`proxy::Proxy`]: a loopback TCP proxy that delays, cuts, black-holes or redirects traffic.
//! - [`workload`]: a beating fleet, checked for what a liveness store owes its caller under
//!   failure: every call bounded, no false "dead".
//! - [`false_dead`]: the one false-dead checker, for recorded calls ([`workload`]) and live
//!   ones (the simulator).
//! - [`logs`]: the crate's log lines captured for assertions.
//!
//! It depends on `liveness-store` without features (the trait and the error type only), so that
//! using it never turns a backend on in a test's feature set.

pub mod cluster;
pub mod commandstats;
pub mod false_dead;
pub mod logs;
pub mod proxy;
mod server;
pub mod workload;

pub use server::{REDIS_SERVER_ENV, RedisServer, redis_server_binary};
