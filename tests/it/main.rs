//! The integration tests, as one test binary: a module per suite, one build of the test kit.
//!
//! Each suite gates itself on the features it needs (`#![cfg(...)]` at its top), so every
//! feature set compiles and runs what applies to it. Suites that measure latencies or restart
//! servers hold [`support::serial::alone`] while they run, so that they never share the
//! machine's two cores with one another.

mod support;

mod bad_input;
mod cluster;
mod contract;
mod faults;
mod health;
#[cfg(all(
    feature = "memory",
    feature = "redis",
    feature = "layered",
    feature = "metrics"
))]
mod heartbeat_server;
mod invalidation;
mod layered;
mod leases;
mod open;
mod redis_store;
mod security;
mod start_down;
mod validate_props;
