//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

/// What went wrong, in terms a caller can act on.
///
/// `Clone`, because one remote write answers every touch that shared it.
///
/// Every variant means the same thing for the caller of a heartbeat server: fall back to the
/// database. The variants say *why*, so that logs and metrics can tell a misconfiguration from
/// an outage.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store cannot answer: no backend is wired in (the noop store), or the backend is down
    /// and the circuit breaker fails calls fast until a probe finds it back. Nothing was sent.
    /// [`available`](crate::LivenessStore::available) tells the first case,
    /// [`health`](crate::LivenessStore::health) the second.
    #[error("liveness store unavailable: no backend is configured, or it is down")]
    Unavailable,

    /// The runtime id is empty, too long or contains a NUL byte. Nothing was sent.
    #[error("invalid runtime id: {reason}")]
    InvalidRuntimeId {
        /// Why the id was refused (the id itself is not repeated: it may be huge).
        reason: String,
    },

    /// The ttl is zero, under one millisecond or over the maximum. Nothing was sent.
    #[error("invalid ttl {ttl:?}: {reason}")]
    InvalidTtl {
        /// The refused ttl.
        ttl: Duration,
        /// Which bound it broke.
        reason: &'static str,
    },

    /// The backend did not answer within the operation timeout.
    #[error("liveness store {op} timed out after {after:?}")]
    Timeout {
        /// The operation that timed out (`"touch"`, `"is_alive_batch"`, ...).
        op: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },

    /// The backend or the connection to it failed.
    #[error("liveness store {op} failed: {source}")]
    Backend {
        /// The operation that failed.
        op: &'static str,
        /// The backend's error (never carries a password).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The backend lost its data (restart without persistence, flush, failover to an empty
    /// replica) and the store cannot yet tell a dead runtime from a forgotten record.
    #[error("liveness store is recovering after data loss; answers resume in {remaining:?}")]
    Recovering {
        /// How long until the store trusts the backend's answers again.
        remaining: Duration,
    },

    /// A setting is invalid or names a backend that was not compiled in.
    #[error("invalid liveness store configuration: {0}")]
    Config(String),
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::Backend`] carrying a message.
    pub(crate) fn backend(op: &'static str, message: impl Into<String>) -> Error {
        let source: Box<dyn std::error::Error + Send + Sync> = message.into().into();
        Error::Backend {
            op,
            source: source.into(),
        }
    }

    /// Whether the caller may expect the same call to succeed later (the backend is slow,
    /// failing or recovering), as opposed to input or configuration that will never work.
    ///
    /// [`Error::Unavailable`] is not counted: it is also the noop store's permanent answer. A
    /// store with a backend answers it while its breaker is open; its
    /// [`health`](crate::LivenessStore::health) tells when that ends.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Backend { .. } | Error::Recovering { .. }
        )
    }
}
