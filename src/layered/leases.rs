//! Leases in the layered store: a presented lease covers a runtime's touches as the record this
//! instance wrote would, and every touch answers with a lease for the record as this instance
//! knows it (see `crate::lease`).
//!
//! Instances agree on a lease's times through their wall clocks, so every lease is trusted for
//! the skew margin less than it says. A lease never covers more than the record it describes
//! (the record's own lifetime, less that margin), so the bounds hold unchanged: no false
//! "dead" (invariant 1), and a runtime that stopped reads dead by `t + T + D + C` (invariant 3).

use std::sync::atomic::Ordering;

use super::entry::{LocalEntry, nanos};
use super::{LayeredStore, forgets};
use crate::lease::Vouched;
use crate::unix_time::unix_ms;
use crate::{Lease, LeaseKey, LivenessStore};

const NANOS_PER_MS: u64 = 1_000_000;

/// What a verified lease vouches for.
#[derive(Debug, Clone, Copy)]
pub(super) struct LeaseCover {
    /// The record lives until then (clock nanos).
    until: u64,
    /// The remote's loss count when the lease was taken: after a loss it covers nothing.
    losses: u64,
    forgets: forgets::Seen,
}

impl<R: LivenessStore + 'static> LayeredStore<R> {
    /// The key of `runtime_id`'s leases: the configured one, else the remote's.
    pub(super) fn lease_key_for(&self, runtime_id: &str) -> Option<LeaseKey> {
        let shared = &self.shared;
        shared
            .settings
            .lease_key
            .clone()
            .or_else(|| shared.remote.lease_key(runtime_id))
    }

    /// Takes a presented lease at `now` (clock nanos): if it verifies for `runtime_id` and
    /// came after every loss and forget this instance saw, what it vouches for: the record it
    /// describes lives until then (less the skew margin), for the touch to cover itself with.
    pub(super) fn take_lease(
        &self,
        runtime_id: &str,
        lease: &Lease,
        key: &LeaseKey,
        now: u64,
    ) -> Option<LeaseCover> {
        let shared = &self.shared;
        let Vouched {
            issued_ms,
            until_ms,
        } = lease.verify(key, runtime_id)?;
        let forgets = shared.forgets.look();
        let margin_ms = nanos(shared.settings.lease_skew_margin) / NANOS_PER_MS;
        // A lease from before a loss may describe a record that is gone; one from before a
        // forget, a record the forget deleted.
        let fresh_after = shared.no_leases_before_ms.load(Ordering::Relaxed);
        if issued_ms <= fresh_after.saturating_add(margin_ms) {
            return None;
        }
        let left_ms = until_ms
            .checked_sub(margin_ms)?
            .checked_sub(unix_ms())
            .filter(|left| *left > 0)?;
        Some(LeaseCover {
            until: now.saturating_add(left_ms.saturating_mul(NANOS_PER_MS)),
            losses: shared.losses(),
            forgets,
        })
    }

    /// The record a lease vouched for covers `entry`'s touches as this instance's own write
    /// would, unless a forget ran since the lease was checked (it may have deleted the record).
    pub(super) fn cover(&self, entry: &LocalEntry, lease: LeaseCover) {
        entry.covered_by_lease(lease.until, lease.losses);
        if !self.shared.forgets.none_since(lease.forgets) {
            entry.forget_remote();
        }
    }

    /// The lease to answer a touch of `runtime_id` with, at `now`: the record as this
    /// instance knows it, or none if it knows none.
    pub(super) fn lease_for(&self, runtime_id: &str, key: Option<LeaseKey>, now: u64) -> Lease {
        let shared = &self.shared;
        let (Some(key), Some(entry)) = (key, shared.entry(runtime_id)) else {
            return Lease::none();
        };
        let Some(until) = entry.remote_until(shared.losses()) else {
            return Lease::none();
        };
        let left_ms = until.saturating_sub(now) / NANOS_PER_MS;
        if left_ms == 0 {
            return Lease::none();
        }
        let issued_ms = unix_ms();
        Lease::sign(
            &key,
            runtime_id,
            issued_ms,
            issued_ms.saturating_add(left_ms),
        )
    }
}
