//! What one instance knows about one runtime, updated with atomics so that a coalesced touch
//! costs one cache lookup and no allocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant as StdInstant};

use moka::Expiry;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Result;

/// Nanoseconds since the store was built, on tokio's clock (so tests can pause it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    origin: tokio::time::Instant,
}

impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            origin: tokio::time::Instant::now(),
        }
    }

    pub(super) fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    /// The instant `nanos` (a value of [`now`](Self::now)) stands for.
    pub(super) fn instant(&self, nanos: u64) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(nanos)
    }
}

/// A duration in nanoseconds, saturating (ttls are capped far below the overflow).
pub(super) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// `duration` rounded up to whole milliseconds, the unit of Redis's `PX`.
pub(super) fn whole_millis(duration: Duration) -> Duration {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The outcome of one remote write, shared by every touch it covers (single flight).
pub(super) type Outcome = watch::Receiver<Option<Result<()>>>;

/// What a remote write and the entry it is for both know of it.
#[derive(Debug)]
pub(super) struct WriteState {
    /// The written record lapses no earlier than this (clock nanos).
    pub(super) covers_until: u64,
    /// The entry's generation when the write was queued: a `forget` since makes its
    /// acknowledgement cover nothing.
    pub(super) generation: u32,
    /// The latest deadline of the touches waiting for it (clock nanos): once passed, every one
    /// has timed out, and a write still queued is dropped rather than sent late.
    pub(super) waiters_until: AtomicU64,
}

impl WriteState {
    /// Whether every touch waiting for the write has given up by `now` (a touch gives up at
    /// its deadline).
    pub(super) fn abandoned(&self, now: u64) -> bool {
        self.waiters_until.load(Ordering::Relaxed) <= now
    }
}

/// A remote write under way for one runtime, as its entry holds it.
#[derive(Debug)]
pub(super) struct PendingWrite {
    pub(super) state: Arc<WriteState>,
    pub(super) outcome: Outcome,
}

impl PendingWrite {
    /// Whether a touch needing a record until `needed` (at `now`) may wait for this write
    /// instead of starting one: it covers that long, has no result yet, and will still be sent
    /// (its sender is alive: the task carrying it did not die; and not every waiter has given
    /// up on it).
    pub(super) fn joinable(&self, needed: u64, now: u64) -> bool {
        self.state.covers_until >= needed
            && self.outcome.borrow().is_none()
            && self.outcome.has_changed().is_ok()
            && !self.state.abandoned(now)
    }
}

/// The write under way, if any, and the entry's generation: `forget` moves it on, so that a
/// write queued before it neither covers touches after it nor is joined by them.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) generation: u32,
    pub(super) write: Option<PendingWrite>,
}

impl Pending {
    /// Whether `state` is the write this entry waits for.
    pub(super) fn is(&self, state: &Arc<WriteState>) -> bool {
        self.write
            .as_ref()
            .is_some_and(|write| Arc::ptr_eq(&write.state, state))
    }
}

/// One runtime as this instance knows it. Times are [`Clock`] nanoseconds.
#[derive(Debug)]
pub(super) struct LocalEntry {
    /// Alive for sure until then: this instance took a touch, or the remote said so recently.
    alive_until: AtomicU64,
    /// The remote record as this instance last wrote it, packed with the remote's data-loss
    /// count at the time (see [`RemoteRecord`]): 0 when this instance has not written it (or
    /// the write failed).
    remote: AtomicU64,
    /// The write under way, joined by touches it covers, and the entry's generation.
    pub(super) pending: Mutex<Pending>,
    /// The keep-until time moka's expiry of this entry was last computed from, so that a read
    /// that finds nothing later needs no clock.
    expiry_basis: AtomicU64,
}

/// When a written record lapses and under which of the remote's data-loss counts it was
/// written, in one word, so that the two can never be read torn apart: a record written
/// before a loss must not cover anything after it (invariant 4), and comparing the count is
/// what forgets every such record at once, without visiting any entry.
///
/// The low 20 bits hold the loss count (modulo 2^20), the rest the lapse time in whole
/// milliseconds, rounded down (2^44 ms is over 500 years).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RemoteRecord(u64);

impl RemoteRecord {
    const LOSS_BITS: u32 = 20;
    const LOSS_MASK: u64 = (1 << Self::LOSS_BITS) - 1;
    const NANOS_PER_MS: u64 = 1_000_000;

    fn new(until: u64, losses: u64) -> Self {
        let until_ms = (until / Self::NANOS_PER_MS).min(u64::MAX >> Self::LOSS_BITS);
        RemoteRecord((until_ms << Self::LOSS_BITS) | (losses & Self::LOSS_MASK))
    }

    fn until(self) -> u64 {
        (self.0 >> Self::LOSS_BITS).saturating_mul(Self::NANOS_PER_MS)
    }

    fn written_under(self, losses: u64) -> bool {
        self.0 != 0 && self.0 & Self::LOSS_MASK == losses & Self::LOSS_MASK
    }
}

impl LocalEntry {
    pub(super) fn alive_until(until: u64) -> Arc<LocalEntry> {
        Arc::new(LocalEntry {
            alive_until: AtomicU64::new(until),
            remote: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            expiry_basis: AtomicU64::new(0),
        })
    }

    // Relaxed is enough: each field is one word read on its own; no other memory is
    // published through it.

    /// Extends the deadline; `Local::extend_alive` does it, with the index's copy.
    pub(super) fn extend_alive(&self, until: u64) {
        self.alive_until.fetch_max(until, Ordering::Relaxed);
    }

    pub(super) fn alive_until_now(&self) -> u64 {
        self.alive_until.load(Ordering::Relaxed)
    }

    /// Whether the record this instance wrote lapses no earlier than `until`, and was written
    /// since the remote's latest data loss (`losses` is the remote's count now).
    pub(super) fn remote_covers(&self, until: u64, losses: u64) -> bool {
        let record = RemoteRecord(self.remote.load(Ordering::Relaxed));
        record.written_under(losses) && record.until() >= until
    }

    /// A verified lease says the remote record lapses no earlier than `until`, as of the
    /// remote's loss count `losses`: it covers touches as this instance's own write would.
    pub(super) fn covered_by_lease(&self, until: u64, losses: u64) {
        self.extend_remote(until, losses);
    }

    /// When the remote record as this instance knows it lapses, if it was written (or vouched
    /// for) since the remote's loss count became `losses`.
    pub(super) fn remote_until(&self, losses: u64) -> Option<u64> {
        let record = RemoteRecord(self.remote.load(Ordering::Relaxed));
        record.written_under(losses).then(|| record.until())
    }

    /// Records an acknowledged write that lapses no earlier than `until`, sent while the
    /// remote's loss count was `losses`. A later lapse under the same count extends the
    /// record; a different count replaces it.
    fn extend_remote(&self, until: u64, losses: u64) {
        let written = RemoteRecord::new(until, losses);
        let _ = self
            .remote
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                let current = RemoteRecord(current);
                let keep = current.written_under(losses) && current.until() >= written.until();
                (!keep).then_some(written.0)
            });
    }

    /// `forget`: forgets that this instance wrote the remote record, so the next touch writes
    /// through; a write under way no longer covers anything when acknowledged, and no later
    /// touch joins it.
    pub(super) fn forget_remote(&self) {
        let mut pending = self.pending.lock();
        pending.generation = pending.generation.wrapping_add(1);
        pending.write = None;
        self.remote.store(0, Ordering::Relaxed);
    }

    /// An acknowledged write: covers later touches unless a `forget` came since it was queued
    /// (invariant 1: the `DEL` may have followed it). The entry stops waiting for it.
    pub(super) fn write_acknowledged(&self, state: &Arc<WriteState>, covered: Option<u64>) {
        let mut pending = self.pending.lock();
        if let Some(losses) = covered
            && pending.generation == state.generation
        {
            self.extend_remote(state.covers_until, losses);
        }
        if pending.is(state) {
            pending.write = None;
        }
    }

    /// Whether the entry's deadlines reach past the time moka's expiry was computed from.
    pub(super) fn outlives_its_expiry(&self) -> bool {
        self.keep_until() > self.expiry_basis.load(Ordering::Relaxed)
    }

    fn keep_until(&self) -> u64 {
        let remote = RemoteRecord(self.remote.load(Ordering::Relaxed)).until();
        self.alive_until.load(Ordering::Relaxed).max(remote)
    }
}

/// How much later than moka's current expiry an entry's deadlines must reach before a read
/// moves it.
const READ_EXPIRY_SLACK: Duration = Duration::from_millis(1);

/// Keeps moka's expiry of an entry in step with the entry's own deadlines, so that the local
/// layer holds a runtime exactly as long as it knows something about it.
pub(super) struct EntryExpiry {
    pub(super) clock: Clock,
}

impl EntryExpiry {
    fn remaining(&self, entry: &LocalEntry) -> Option<Duration> {
        let keep_until = entry.keep_until();
        entry.expiry_basis.store(keep_until, Ordering::Relaxed);
        let now = self.clock.now();
        Some(Duration::from_nanos(keep_until.saturating_sub(now)))
    }
}

impl Expiry<Arc<str>, Arc<LocalEntry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &Arc<str>,
        entry: &Arc<LocalEntry>,
        _: StdInstant,
    ) -> Option<Duration> {
        self.remaining(entry)
    }

    fn expire_after_read(
        &self,
        _: &Arc<str>,
        entry: &Arc<LocalEntry>,
        _: StdInstant,
        current: Option<Duration>,
        _: StdInstant,
    ) -> Option<Duration> {
        // Reads are the hot path (every coalesced touch is one): a changed expiry costs moka a
        // timer-wheel reschedule, so keep the current one unless the entry now knows something
        // for longer. Deadlines only move when a write or a remote answer extends them, so this
        // changes the expiry about once per write, not once per beat.
        if entry.keep_until() <= entry.expiry_basis.load(Ordering::Relaxed) {
            return current;
        }
        let wanted = self.remaining(entry);
        match current {
            Some(current) if wanted <= Some(current + READ_EXPIRY_SLACK) => Some(current),
            _ => wanted,
        }
    }

    fn expire_after_update(
        &self,
        _: &Arc<str>,
        entry: &Arc<LocalEntry>,
        _: StdInstant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_record_covers_only_under_the_loss_count_it_was_written_under() {
        let entry = LocalEntry::alive_until(0);
        assert!(!entry.remote_covers(1, 0), "nothing written yet");
        entry.extend_remote(90_000 * MS, 0);
        assert!(entry.remote_covers(90_000 * MS, 0));
        assert!(!entry.remote_covers(90_001 * MS, 0));
        assert!(!entry.remote_covers(1, 1), "written before the loss");
        // A shorter record under the new count replaces the lost one...
        entry.extend_remote(10_000 * MS, 1);
        assert!(entry.remote_covers(10_000 * MS, 1));
        assert!(!entry.remote_covers(10_001 * MS, 1));
        // ...and a longer one under the same count extends it; a shorter one does not.
        entry.extend_remote(20_000 * MS, 1);
        entry.extend_remote(15_000 * MS, 1);
        assert!(entry.remote_covers(20_000 * MS, 1));
        entry.forget_remote();
        assert!(!entry.remote_covers(1, 1));
    }

    #[test]
    fn write_ttls_round_up_to_whole_milliseconds() {
        assert_eq!(
            whole_millis(Duration::from_nanos(90_000_000_001)),
            Duration::from_millis(90_001)
        );
        assert_eq!(
            whole_millis(Duration::from_secs(120)),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn lapse_times_round_down_and_saturate() {
        let entry = LocalEntry::alive_until(0);
        entry.extend_remote(5 * MS + 999_999, 3);
        assert!(entry.remote_covers(5 * MS, 3));
        assert!(
            !entry.remote_covers(5 * MS + 1, 3),
            "never claims more than was written"
        );
        entry.extend_remote(u64::MAX, 3);
        assert!(entry.remote_covers(u64::MAX / 2, 3));
    }
}
