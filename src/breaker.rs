//! A circuit breaker: after repeated failures a remote backend is left alone for a while, so
//! that calls fail in microseconds instead of each waiting out the operation timeout.
//!
//! Closed → (threshold failures in a row) → open for a cool-down → the first call after it is
//! the probe (half-open; every other call still fails fast) → closed if it succeeds, open again
//! with twice the cool-down (up to a maximum) if it fails.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::health::HealthStatus;
use crate::validate::MAX_TTL;
use crate::{Error, Result};

/// The breaker's settings, checked by the owning store's builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerSettings {
    pub(crate) failure_threshold: u32,
    pub(crate) cooldown: Duration,
    pub(crate) max_cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 5,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerSettings {
    pub(crate) fn check(&self) -> Result<()> {
        let problem = if self.failure_threshold == 0 {
            "failure_threshold must be at least 1"
        } else if self.cooldown.is_zero() {
            "breaker_cooldown must be more than zero"
        } else if self.max_cooldown < self.cooldown {
            "breaker_max_cooldown must be at least breaker_cooldown"
        } else if self.max_cooldown > MAX_TTL {
            "breaker_max_cooldown must not exceed 365 days"
        } else {
            return Ok(());
        };
        Err(Error::Config(problem.to_owned()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        retry_at: Instant,
    },
    /// One probe is under way; everyone else still fails fast. A probe that has not reported
    /// by `expires` (its caller stopped polling it) no longer blocks the next one.
    Probing {
        expires: Instant,
    },
}

#[derive(Debug)]
struct State {
    phase: Phase,
    consecutive_failures: u32,
    /// The cool-down the next opening uses.
    cooldown: Duration,
    /// When the health status last changed.
    since: Instant,
}

/// The breaker of one remote backend. Uses tokio's clock, so tests can pause it.
#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    /// How long one call may take: a call dropped after this long was cut off by a timeout.
    op_timeout: Duration,
    /// A mutex, not atomics: it is taken once per remote call, next to a network round trip,
    /// and keeps the transitions simple to read. Nothing logs while holding it.
    state: Mutex<State>,
    /// Names the backend in log lines (a redacted URL).
    name: String,
}

/// The breaker's part of a store's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BreakerStatus {
    pub(crate) status: HealthStatus,
    /// When `status` began.
    pub(crate) since: Instant,
    pub(crate) consecutive_failures: u32,
}

/// Leave to make one remote call; report how it went with [`Permit::record`].
#[derive(Debug)]
#[must_use = "a permit dropped without being recorded counts as a failure if it was timed out"]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    admitted: Instant,
    recorded: bool,
}

/// What a transition has to log, once the lock is released.
enum Log {
    Nothing,
    Closed,
    Opened { failures: u32, cooldown: Duration },
    ProbeFailed { cooldown: Duration },
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings, op_timeout: Duration, name: String) -> Breaker {
        Breaker {
            state: Mutex::new(State {
                phase: Phase::Closed,
                consecutive_failures: 0,
                cooldown: settings.cooldown,
                since: Instant::now(),
            }),
            settings,
            op_timeout,
            name,
        }
    }

    /// Lets a call through, or fails fast while the breaker is open (invariant 5).
    pub(crate) fn admit(&self) -> Result<Permit<'_>> {
        let now = Instant::now();
        let mut state = self.state.lock();
        let probe = match state.phase {
            Phase::Closed => false,
            Phase::Open { retry_at } if now >= retry_at => true,
            Phase::Probing { expires } if now >= expires => true,
            Phase::Open { .. } | Phase::Probing { .. } => return Err(Error::Unavailable),
        };
        if probe {
            state.phase = Phase::Probing {
                expires: later(now, self.op_timeout),
            };
        }
        Ok(Permit {
            breaker: self,
            probe,
            admitted: now,
            recorded: false,
        })
    }

    /// Down until [`release`](Self::release): a store that could not reach its backend at
    /// build fails calls fast while it keeps trying in the background, so no call probes.
    pub(crate) fn hold_open(&self) {
        let mut state = self.state.lock();
        let now = Instant::now();
        state.phase = Phase::Open {
            retry_at: later(now, MAX_TTL),
        };
        state.since = now;
    }

    /// The backend was reached: calls go through again.
    pub(crate) fn release(&self) {
        let mut state = self.state.lock();
        state.phase = Phase::Closed;
        state.consecutive_failures = 0;
        state.cooldown = self.settings.cooldown;
        state.since = Instant::now();
    }

    /// The breaker's part of the store's health.
    pub(crate) fn status(&self) -> BreakerStatus {
        let state = self.state.lock();
        let status = match state.phase {
            Phase::Open { .. } | Phase::Probing { .. } => HealthStatus::Down,
            Phase::Closed if state.consecutive_failures > 0 => HealthStatus::Degraded,
            Phase::Closed => HealthStatus::Healthy,
        };
        BreakerStatus {
            status,
            since: state.since,
            consecutive_failures: state.consecutive_failures,
        }
    }

    fn succeeded(&self) {
        let log = {
            let mut state = self.state.lock();
            let was_open = state.phase != Phase::Closed;
            if was_open || state.consecutive_failures > 0 {
                state.since = Instant::now();
            }
            state.phase = Phase::Closed;
            state.consecutive_failures = 0;
            state.cooldown = self.settings.cooldown;
            if was_open { Log::Closed } else { Log::Nothing }
        };
        self.log(log);
    }

    fn failed(&self, probe: bool) {
        let log = {
            let mut state = self.state.lock();
            let now = Instant::now();
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            if state.consecutive_failures == 1 {
                state.since = now; // healthy → degraded
            }
            let opens = match state.phase {
                // The probe failed: stay open, and wait longer before the next one.
                Phase::Probing { .. } if probe => true,
                Phase::Closed => state.consecutive_failures >= self.settings.failure_threshold,
                // A late failure of a call let through before the breaker opened (or a probe
                // that another call's answer already overtook): nothing changes.
                _ => false,
            };
            if opens {
                let cooldown = state.cooldown;
                state.phase = Phase::Open {
                    retry_at: later(now, cooldown),
                };
                state.cooldown = cooldown.saturating_mul(2).min(self.settings.max_cooldown);
                if probe {
                    Log::ProbeFailed { cooldown }
                } else {
                    state.since = now;
                    Log::Opened {
                        failures: state.consecutive_failures,
                        cooldown,
                    }
                }
            } else {
                Log::Nothing
            }
        };
        self.log(log);
    }

    /// A call dropped before it reported: cut off by a timeout if it ran the op timeout out
    /// (more than half of it, since the layered store's own timeout starts a little earlier),
    /// else abandoned by its caller, which says nothing about the backend.
    fn dropped(&self, probe: bool, admitted: Instant) {
        if admitted.elapsed() >= self.op_timeout / 2 {
            self.failed(probe);
        } else if probe {
            let mut state = self.state.lock();
            if matches!(state.phase, Phase::Probing { .. }) {
                state.phase = Phase::Open {
                    retry_at: Instant::now(),
                };
            }
        }
    }

    fn log(&self, log: Log) {
        match log {
            Log::Nothing => {}
            Log::Closed => tracing::warn!(
                backend = %self.name,
                "liveness store: the backend answers again; circuit breaker closed"
            ),
            Log::Opened { failures, cooldown } => tracing::error!(
                backend = %self.name,
                failures,
                first_probe_in = ?cooldown,
                "liveness store: backend down; circuit breaker open, calls fail fast \
                 with Unavailable until a probe succeeds"
            ),
            Log::ProbeFailed { cooldown } => tracing::debug!(
                backend = %self.name,
                next_probe_in = ?cooldown,
                "liveness store: probe failed"
            ),
        }
    }
}

/// `now + wait`, saturating far in the future instead of overflowing.
fn later(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait).unwrap_or_else(|| now + MAX_TTL)
}

impl Permit<'_> {
    /// Reports whether the backend answered the call. Any reply counts, error replies
    /// included: a Redis that says `OOM` is up, and its reads may well work. Timeouts and
    /// connection failures count against it.
    pub(crate) fn record(mut self, answered: bool) {
        self.recorded = true;
        if answered {
            self.breaker.succeeded();
        } else {
            self.breaker.failed(self.probe);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.dropped(self.probe, self.admitted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OP_TIMEOUT: Duration = Duration::from_millis(250);
    const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
    const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(1);
    const DEFAULT_BREAKER_MAX_COOLDOWN: Duration = Duration::from_secs(30);

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let defaults = BreakerSettings::default();
        assert_eq!(defaults.failure_threshold, DEFAULT_FAILURE_THRESHOLD);
        assert_eq!(defaults.cooldown, DEFAULT_BREAKER_COOLDOWN);
        assert_eq!(defaults.max_cooldown, DEFAULT_BREAKER_MAX_COOLDOWN);
    }

    fn breaker() -> Breaker {
        Breaker::new(BreakerSettings::default(), OP_TIMEOUT, "test".to_owned())
    }

    fn fail(breaker: &Breaker) {
        breaker.admit().expect("closed").record(false);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_closes_after_a_good_probe() {
        let breaker = breaker();
        for _ in 0..DEFAULT_FAILURE_THRESHOLD - 1 {
            fail(&breaker);
        }
        assert_eq!(breaker.status().status, HealthStatus::Degraded);
        fail(&breaker);
        assert_eq!(breaker.status().status, HealthStatus::Down);
        assert!(matches!(breaker.admit(), Err(Error::Unavailable)));

        tokio::time::advance(DEFAULT_BREAKER_COOLDOWN).await;
        let probe = breaker.admit().expect("the cool-down is over: probe");
        // Only one probe at a time.
        assert!(matches!(breaker.admit(), Err(Error::Unavailable)));
        probe.record(true);
        assert_eq!(
            breaker.status(),
            BreakerStatus {
                status: HealthStatus::Healthy,
                since: Instant::now(),
                consecutive_failures: 0
            }
        );
        assert!(breaker.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_cooldown_up_to_the_maximum() {
        let breaker = breaker();
        for _ in 0..DEFAULT_FAILURE_THRESHOLD {
            fail(&breaker);
        }
        let mut expected = DEFAULT_BREAKER_COOLDOWN;
        for _ in 0..8 {
            tokio::time::advance(expected - Duration::from_millis(1)).await;
            assert!(breaker.admit().is_err(), "still cooling down");
            tokio::time::advance(Duration::from_millis(1)).await;
            breaker.admit().expect("probe").record(false);
            expected = (expected * 2).min(DEFAULT_BREAKER_MAX_COOLDOWN);
        }
        assert_eq!(expected, DEFAULT_BREAKER_MAX_COOLDOWN);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_cut_off_by_a_timeout_count_as_failures() {
        let breaker = breaker();
        for _ in 0..DEFAULT_FAILURE_THRESHOLD {
            let permit = breaker.admit().expect("closed");
            tokio::time::advance(OP_TIMEOUT).await;
            drop(permit);
        }
        assert_eq!(breaker.status().status, HealthStatus::Down);
        tokio::time::advance(DEFAULT_BREAKER_COOLDOWN).await;
        let probe = breaker.admit().expect("probe");
        tokio::time::advance(OP_TIMEOUT).await;
        drop(probe);
        assert!(
            breaker.admit().is_err(),
            "a timed-out probe failed: open again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn calls_their_caller_abandons_count_for_nothing() {
        let breaker = breaker();
        for _ in 0..2 * DEFAULT_FAILURE_THRESHOLD {
            drop(breaker.admit().expect("closed"));
        }
        assert_eq!(breaker.status().status, HealthStatus::Healthy);
        for _ in 0..DEFAULT_FAILURE_THRESHOLD {
            fail(&breaker);
        }
        tokio::time::advance(DEFAULT_BREAKER_COOLDOWN).await;
        drop(breaker.admit().expect("probe"));
        assert!(breaker.admit().is_ok(), "the next call probes at once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_reports_expires() {
        let breaker = breaker();
        for _ in 0..DEFAULT_FAILURE_THRESHOLD {
            fail(&breaker);
        }
        tokio::time::advance(DEFAULT_BREAKER_COOLDOWN).await;
        let stuck = breaker.admit().expect("probe");
        assert!(breaker.admit().is_err());
        tokio::time::advance(OP_TIMEOUT).await;
        breaker.admit().expect("a new probe").record(true);
        assert_eq!(breaker.status().status, HealthStatus::Healthy);
        std::mem::forget(stuck);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_cooldowns_do_not_overflow() {
        let settings = BreakerSettings {
            failure_threshold: 1,
            cooldown: MAX_TTL,
            max_cooldown: MAX_TTL,
        };
        settings.check().unwrap();
        let breaker = Breaker::new(settings, Duration::MAX, "test".to_owned());
        fail(&breaker);
        assert_eq!(breaker.status().status, HealthStatus::Down);
        let too_long = BreakerSettings {
            max_cooldown: Duration::MAX,
            ..settings
        };
        assert!(too_long.check().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_resets_the_count() {
        let breaker = breaker();
        for _ in 0..DEFAULT_FAILURE_THRESHOLD - 1 {
            fail(&breaker);
        }
        breaker.admit().expect("closed").record(true);
        fail(&breaker);
        assert_eq!(breaker.status().status, HealthStatus::Degraded);
    }
}
