//! Loss events, and the window after each during which "dead" answers are not trusted
//! (invariant 4).
//!
//! After a possible loss, a missing record may be a live runtime whose record is gone. "Dead"
//! stays distrusted until no `Ok` that any instance gave before it noticed the loss can still be
//! within its ttl. Two kinds of `Ok` bound that:
//!
//! - a write that was lost promised its runtime alive for its ttl `T` from before the loss;
//! - a layered instance whose touches all coalesce makes no remote call, so it notices nothing
//!   and keeps answering `Ok` on a lost record for as long as it would have coalesced: up to
//!   its debounce `D'` after the loss, each `Ok` promising another `T`.
//!
//! So the window is `T + D'` for the largest of each in the fleet. A reader that only reads
//! knows neither, but a layered writer clamps `D'` to `T / 2`: with the floor set to the largest
//! ttl callers pass, one and a half floors cover every writer, whatever its settings. A store
//! that wrote longer records than that (a layered writer writes `T + D'`) covers those too.
//!
//! Every detection counts as a loss event and is logged once; a store in a cluster folds what
//! one event shows on many slots into one (see `cluster::epochs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A stretch of time during which "dead" answers are distrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
}

/// What showed that the remote may have lost writes, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// The epoch record came back missing or with another value.
    Epoch,
    /// The server no longer holds this store's marker: it restarted or another one took over.
    Server,
}

/// Why the store distrusts data it has not seen lose anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Young {
    /// The epoch record is younger than the window: the records began after some live
    /// runtimes last beat.
    Records,
    /// The server started less than a window ago: it may have lost writes before this store
    /// first reached it.
    Server,
}

/// What a store knows about losses: how many, and the current window.
#[derive(Debug)]
pub(crate) struct Recovery {
    floor: Duration,
    /// The longest record (ttl as sent) this store wrote, in milliseconds.
    longest_record_ms: AtomicU64,
    /// Loss events detected, read without the lock on every layered write.
    losses: AtomicU64,
    window: Mutex<Option<Window>>,
    /// Names the backend in log lines (redacted).
    name: Arc<str>,
}

/// Losses so far and the latest window, for the store's health.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoveryStatus {
    pub(crate) losses: u64,
    pub(crate) window: Option<Window>,
}

impl Recovery {
    pub(crate) fn new(floor: Duration, name: Arc<str>) -> Recovery {
        Recovery {
            floor,
            longest_record_ms: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            window: Mutex::new(None),
            name,
        }
    }

    /// Remembers the ttl of a record this store wrote: the window outlasts the longest.
    pub(crate) fn note_record(&self, ttl: Duration) {
        self.longest_record_ms
            .fetch_max(super::px(ttl), Ordering::Relaxed);
    }

    /// How long "dead" is distrusted after a loss: one and a half floors (the largest ttl
    /// callers pass, and the largest debounce any layered writer may add to it), or the longest
    /// record this store wrote if that is longer.
    pub(crate) fn window(&self) -> Duration {
        let fleet = self.floor.saturating_add(self.floor / 2);
        let written = Duration::from_millis(self.longest_record_ms.load(Ordering::Relaxed));
        fleet.max(written)
    }

    /// A loss detected now: counted, logged, and "dead" distrusted for a full window.
    pub(crate) fn lost(&self, loss: Loss) {
        let window = self.window();
        self.distrust(window);
        self.losses.fetch_add(1, Ordering::Relaxed);
        let what = match loss {
            Loss::Epoch => "redis lost its data (epoch record missing or changed)",
            Loss::Server => {
                "redis restarted or failed over (this store's marker is gone from its script \
                 cache): writes since its last snapshot, or not yet replicated, may be lost"
            }
        };
        tracing::error!(
            backend = %self.name,
            recovery_window = ?window,
            "liveness store: {what}; answering Recovering instead of \"dead\" until every live \
             runtime has beaten again"
        );
    }

    /// More of a loss already counted (another slot of the same event): the window runs a full
    /// length from now, without another count or log line.
    pub(crate) fn extend(&self) {
        self.distrust(self.window());
    }

    /// Data `age` old that this store never saw lose anything: "dead" is distrusted until it is
    /// a full window old. Logged when it opens a window.
    pub(crate) fn young(&self, age: Duration, what: Young) {
        let remaining = self.window().saturating_sub(age);
        if remaining.is_zero() {
            return;
        }
        if !self.distrust(remaining) {
            return;
        }
        let what = match what {
            Young::Records => {
                "redis's records are younger than the recovery window (a new or emptied redis)"
            }
            Young::Server => "the redis server started less than a recovery window ago",
        };
        tracing::warn!(
            backend = %self.name,
            distrust_for = ?remaining,
            "liveness store: {what}; answering Recovering instead of \"dead\" until it is not"
        );
    }

    /// Distrusts "dead" for at least `length` from now; whether that opened a window.
    fn distrust(&self, length: Duration) -> bool {
        let now = Instant::now();
        let end = now.checked_add(length).unwrap_or(now);
        let mut window = self.window.lock();
        match &mut *window {
            Some(open) if open.end > now => {
                open.end = open.end.max(end);
                false
            }
            _ => {
                *window = Some(Window { start: now, end });
                true
            }
        }
    }

    /// Loss events detected so far.
    pub(crate) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// While recovering, how long until "dead" answers are trusted again.
    pub(crate) fn recovering_for(&self) -> Option<Duration> {
        let window = (*self.window.lock())?;
        let now = Instant::now();
        (now < window.end).then(|| window.end - now)
    }

    pub(crate) fn status(&self) -> RecoveryStatus {
        RecoveryStatus {
            losses: self.losses(),
            window: *self.window.lock(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_secs(90);

    fn recovery() -> Recovery {
        Recovery::new(FLOOR, "test".into())
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_covers_the_largest_ttl_and_debounce_any_writer_may_use() {
        let recovery = recovery();
        // A reader that wrote nothing: the floor (largest ttl) plus the largest debounce a
        // layered writer may add, half a ttl.
        assert_eq!(recovery.window(), Duration::from_secs(135));
        // Records longer than that, written by this store, are covered too.
        recovery.note_record(Duration::from_secs(200));
        assert_eq!(recovery.window(), Duration::from_secs(200));
    }

    #[tokio::test(start_paused = true)]
    async fn every_loss_counts_and_extends_the_window() {
        let recovery = recovery();
        assert_eq!(recovery.recovering_for(), None);
        recovery.lost(Loss::Epoch);
        assert_eq!(recovery.losses(), 1);
        assert_eq!(recovery.recovering_for(), Some(Duration::from_secs(135)));
        tokio::time::advance(Duration::from_secs(100)).await;
        recovery.lost(Loss::Server);
        assert_eq!(
            recovery.losses(),
            2,
            "a second loss in an open window counts"
        );
        assert_eq!(recovery.recovering_for(), Some(Duration::from_secs(135)));
        let started = recovery.status().window.unwrap().start;
        tokio::time::advance(Duration::from_secs(10)).await;
        recovery.extend();
        assert_eq!(recovery.losses(), 2, "an extension is not a new loss");
        assert_eq!(
            recovery.status().window.unwrap().start,
            started,
            "one window, extended"
        );
        tokio::time::advance(Duration::from_secs(135)).await;
        assert_eq!(recovery.recovering_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn young_data_waits_out_the_rest_of_a_window() {
        let recovery = recovery();
        recovery.young(Duration::from_secs(200), Young::Records);
        assert_eq!(recovery.recovering_for(), None, "old enough");
        recovery.young(Duration::from_secs(35), Young::Server);
        assert_eq!(recovery.recovering_for(), Some(Duration::from_secs(100)));
        assert_eq!(recovery.losses(), 0, "young is not a loss");
    }
}
