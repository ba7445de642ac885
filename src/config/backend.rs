//! Which backend a configuration asks for, by name, and which Cargo features it needs.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Which backend [`open`](crate::open) builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// [`NoopStore`](crate::NoopStore): no backend, the database is the only truth.
    #[default]
    Noop,
    /// `MemoryStore` (feature `memory`): records in this process only.
    Memory,
    /// `RedisStore` (feature `redis`): records shared through Redis.
    Redis,
    /// `LayeredStore` over `RedisStore` (features `layered` and `redis`): a local layer in
    /// front of Redis.
    Layered,
    /// `ClusterStore` (feature `cluster`): records on Redis Cluster; the Redis URL is a
    /// comma-separated list of seed nodes.
    Cluster,
    /// `LayeredStore` over `ClusterStore` (features `layered` and `cluster`).
    LayeredCluster,
}

impl Backend {
    /// The name used in configuration (`LIVENESS_BACKEND`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Backend::Noop => "noop",
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::Layered => "layered",
            Backend::Cluster => "cluster",
            Backend::LayeredCluster => "layered-cluster",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(name: &str) -> Result<Backend> {
        match name.trim().to_ascii_lowercase().as_str() {
            "noop" | "" => Ok(Backend::Noop),
            "memory" => Ok(Backend::Memory),
            "redis" => Ok(Backend::Redis),
            "layered" => Ok(Backend::Layered),
            "cluster" => Ok(Backend::Cluster),
            "layered-cluster" => Ok(Backend::LayeredCluster),
            _ => Err(Error::Config(format!(
                "unknown backend `{name}`: expected one of noop, memory, redis, layered, \
                 cluster, layered-cluster"
            ))),
        }
    }
}

impl Backend {
    /// The Cargo features this backend needs, in the order a missing one is reported.
    fn features(self) -> &'static [&'static str] {
        match self {
            Backend::Noop => &[],
            Backend::Memory => &["memory"],
            Backend::Redis => &["redis"],
            Backend::Layered => &["layered", "redis"],
            Backend::Cluster => &["cluster"],
            Backend::LayeredCluster => &["layered", "cluster"],
        }
    }

    /// The error of asking for this backend in a build without one of its features.
    #[cfg_attr(
        all(
            feature = "memory",
            feature = "redis",
            feature = "layered",
            feature = "cluster"
        ),
        allow(dead_code)
    )]
    pub(crate) fn not_compiled(self) -> Error {
        const COMPILED: [(&str, bool); 4] = [
            ("memory", cfg!(feature = "memory")),
            ("redis", cfg!(feature = "redis")),
            ("layered", cfg!(feature = "layered")),
            ("cluster", cfg!(feature = "cluster")),
        ];
        let compiled = |feature: &&str| COMPILED.contains(&(*feature, true));
        let feature = self
            .features()
            .iter()
            .find(|feature| !compiled(feature))
            .copied()
            .unwrap_or("full");
        Error::Config(format!(
            "backend `{self}` was not compiled in: enable the Cargo feature `{feature}` of \
             liveness-store (e.g. `liveness-store = {{ version = \"{}\", features = [\"{feature}\"] }}`)",
            env!("CARGO_PKG_VERSION")
        ))
    }
}
