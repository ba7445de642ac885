//! How a store's backend is doing right now, apart from whether one is configured.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The state of a store's backend; see [`Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Calls reach the backend and its answers are trusted.
    Healthy,
    /// The backend answers, but recent calls failed or it is recovering after data loss
    /// (some answers are [`Error::Recovering`](crate::Error::Recovering)).
    Degraded,
    /// The circuit breaker is open: calls fail fast with
    /// [`Error::Unavailable`](crate::Error::Unavailable) until a probe succeeds.
    Down,
}

/// A snapshot of a store's health, from [`LivenessStore::health`](crate::LivenessStore::health).
///
/// [`available`](crate::LivenessStore::available) says whether a backend is wired in; this says
/// whether it works. A server can export it as a readiness signal or a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Healthy, degraded or down.
    pub status: HealthStatus,
    /// When the backend entered `status`.
    pub since: Instant,
    /// Remote calls that failed in a row (0 after any success).
    pub consecutive_failures: u32,
    /// While recovering after data loss: how long until negative answers are trusted again.
    pub recovering_for: Option<Duration>,
    /// How many times the store has detected that its backend lost its data.
    pub data_losses: u64,
}

impl Health {
    /// The health of a store without a remote backend (noop, memory): always healthy, `since`
    /// the first time any such store was asked in this process.
    #[must_use]
    pub fn always_healthy() -> Health {
        static FIRST_ASKED: OnceLock<Instant> = OnceLock::new();
        Health {
            status: HealthStatus::Healthy,
            since: *FIRST_ASKED.get_or_init(Instant::now),
            consecutive_failures: 0,
            recovering_for: None,
            data_losses: 0,
        }
    }

    /// Whether the status is [`HealthStatus::Healthy`].
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.status == HealthStatus::Healthy
    }
}

/// The health of a remote backend from its breaker's state and its latest data-loss recovery
/// window: down while the breaker is open, degraded while it counts failures or the store is
/// recovering, healthy otherwise.
#[cfg(any(feature = "redis", feature = "cluster"))]
pub(crate) fn remote_health(
    breaker: crate::breaker::BreakerStatus,
    recovery: crate::remote::recovery::RecoveryStatus,
) -> Health {
    let now = tokio::time::Instant::now();
    let window = recovery.window;
    let recovering = window.filter(|window| now < window.end);
    let (status, since) = match (breaker.status, recovering, window) {
        (HealthStatus::Down, _, _) => (HealthStatus::Down, breaker.since),
        // Degraded since whichever began first, the failures or the recovery.
        (HealthStatus::Degraded, Some(window), _) => {
            (HealthStatus::Degraded, breaker.since.min(window.start))
        }
        // Recovering since detection, or since the breaker closed if the outage came after.
        (HealthStatus::Healthy, Some(window), _) => {
            (HealthStatus::Degraded, breaker.since.max(window.start))
        }
        // Healthy since the breaker closed or the recovery window ended, whichever is later.
        (HealthStatus::Healthy, None, Some(window)) => {
            (HealthStatus::Healthy, breaker.since.max(window.end))
        }
        (status, _, _) => (status, breaker.since),
    };
    Health {
        status,
        since: since.into_std(),
        consecutive_failures: breaker.consecutive_failures,
        recovering_for: recovering.map(|window| window.end - now),
        data_losses: recovery.losses,
    }
}
