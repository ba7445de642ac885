//! Counters of what a store did, cheap enough to keep on the hot path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a store's counters since it was built.
///
/// Backends without counters report zeros. For the layered store, `remote_writes /
/// touches` is the share of heartbeats that left the process, and `touches /
/// remote_write_batches` how many writes one round trip carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct StoreStats {
    /// Calls of `touch` (each beat of `touch_many` counts once).
    pub touches: u64,
    /// Touches answered without any remote write (the remote record already covered them).
    pub coalesced_touches: u64,
    /// Records written to the remote store.
    pub remote_writes: u64,
    /// Round trips that carried those writes (group commit puts many writes in one).
    pub remote_write_batches: u64,
    /// Ids of `is_alive_batch` answered from local memory.
    pub local_hits: u64,
    /// Ids of `is_alive_batch` asked of the remote store.
    pub remote_lookups: u64,
    /// Calls to the remote store that carried those lookups.
    pub remote_lookup_batches: u64,
    /// Remote calls that failed (writes and lookups).
    pub errors: u64,
    /// Times the layered store reset its coalescing state because the remote lost its data,
    /// so that every runtime's next touch wrote through.
    pub epoch_resets: u64,
    /// Forgets announced by other instances on the forget broadcast, each of which dropped
    /// the runtime's local entry (zero without a broadcast).
    pub forget_broadcasts_received: u64,
}

/// The live counters behind [`StoreStats`]: relaxed atomics, because each one is only ever
/// read as a statistic, never to order other memory.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "layered"), allow(dead_code))]
pub(crate) struct Counters {
    pub(crate) touches: AtomicU64,
    pub(crate) coalesced_touches: AtomicU64,
    pub(crate) remote_writes: AtomicU64,
    pub(crate) remote_write_batches: AtomicU64,
    pub(crate) local_hits: AtomicU64,
    pub(crate) remote_lookups: AtomicU64,
    pub(crate) remote_lookup_batches: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) epoch_resets: AtomicU64,
    pub(crate) forget_broadcasts_received: AtomicU64,
}

#[cfg_attr(not(feature = "layered"), allow(dead_code))]
impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            touches: self.touches.load(Relaxed),
            coalesced_touches: self.coalesced_touches.load(Relaxed),
            remote_writes: self.remote_writes.load(Relaxed),
            remote_write_batches: self.remote_write_batches.load(Relaxed),
            local_hits: self.local_hits.load(Relaxed),
            remote_lookups: self.remote_lookups.load(Relaxed),
            remote_lookup_batches: self.remote_lookup_batches.load(Relaxed),
            errors: self.errors.load(Relaxed),
            epoch_resets: self.epoch_resets.load(Relaxed),
            forget_broadcasts_received: self.forget_broadcasts_received.load(Relaxed),
        }
    }
}
