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
}

/// A duration in nanoseconds, saturating (ttls are capped far below the overflow).
pub(super) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The outcome of one remote write, shared by every touch it covers (single flight).
pub(super) type Outcome = watch::Receiver<Option<Result<()>>>;

/// A remote write under way for one runtime.
#[derive(Debug)]
pub(super) struct PendingWrite {
    /// The written record lapses no earlier than this (clock nanos).
    pub(super) covers_until: u64,
    pub(super) outcome: Outcome,
}

/// One runtime as this instance knows it. Times are [`Clock`] nanoseconds.
#[derive(Debug)]
pub(super) struct LocalEntry {
    /// Alive for sure until then: this instance took a touch, or the remote said so recently.
    alive_until: AtomicU64,
    /// The remote record, as this instance last wrote it, lapses no earlier than then; 0 when
    /// this instance has not written it (or the write failed).
    remote_until: AtomicU64,
    /// The write under way, joined by touches it covers.
    pub(super) pending: Mutex<Option<PendingWrite>>,
}

impl LocalEntry {
    pub(super) fn alive_until(until: u64) -> Arc<LocalEntry> {
        Arc::new(LocalEntry {
            alive_until: AtomicU64::new(until),
            remote_until: AtomicU64::new(0),
            pending: Mutex::new(None),
        })
    }

    // Relaxed is enough: each field is a monotonic deadline read on its own; no other memory
    // is published through it.

    pub(super) fn is_alive(&self, now: u64) -> bool {
        self.alive_until.load(Ordering::Relaxed) > now
    }

    pub(super) fn extend_alive(&self, until: u64) {
        self.alive_until.fetch_max(until, Ordering::Relaxed);
    }

    pub(super) fn remote_covers(&self, until: u64) -> bool {
        self.remote_until.load(Ordering::Relaxed) >= until
    }

    pub(super) fn extend_remote(&self, until: u64) {
        self.remote_until.fetch_max(until, Ordering::Relaxed);
    }

    /// Forgets that this instance wrote the remote record, so the next touch writes through.
    pub(super) fn forget_remote(&self) {
        self.remote_until.store(0, Ordering::Relaxed);
    }

    fn keep_until(&self) -> u64 {
        self.alive_until
            .load(Ordering::Relaxed)
            .max(self.remote_until.load(Ordering::Relaxed))
    }
}

/// Keeps moka's expiry of an entry in step with the entry's own deadlines, so that the local
/// layer holds a runtime exactly as long as it knows something about it.
pub(super) struct EntryExpiry {
    pub(super) clock: Clock,
}

impl EntryExpiry {
    fn remaining(&self, entry: &LocalEntry) -> Option<Duration> {
        let now = self.clock.now();
        Some(Duration::from_nanos(entry.keep_until().saturating_sub(now)))
    }
}

impl Expiry<String, Arc<LocalEntry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        entry: &Arc<LocalEntry>,
        _: StdInstant,
    ) -> Option<Duration> {
        self.remaining(entry)
    }

    fn expire_after_read(
        &self,
        _: &String,
        entry: &Arc<LocalEntry>,
        _: StdInstant,
        _: Option<Duration>,
        _: StdInstant,
    ) -> Option<Duration> {
        self.remaining(entry)
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Arc<LocalEntry>,
        _: StdInstant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.remaining(entry)
    }
}
