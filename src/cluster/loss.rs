//! How a [`ClusterStore`](super::ClusterStore) notices that the cluster may have lost writes
//! (invariant 4), slot by slot and master by master, and how many loss events that makes.
//!
//! - Each slot's epoch record (`epochs`) is read after the keys it vouches for: in the round
//!   trip that vouches for a batch's "dead" answers, and in every write pipeline, for each slot
//!   written (so a store that only writes notices a single slot's loss, and stops coalescing on
//!   records that are gone).
//! - Each master holds this store's marker (`remote::marker`), loaded there at connect and
//!   checked at the end of the same pipelines: a master that restarted (from a snapshot too),
//!   or a replica promoted in its place, lacks it. A master the store first reaches after
//!   connect counts as replaced: it may be a replica promoted behind its master.
//! - The uptime of each master at connect, as for a single Redis.
//!
//! One event often shows on many slots (a master flushed or restarted empty holds thousands),
//! and calls find them one by one. So a loss found while no other is being handled counts as a
//! new event and starts a sweep: every missing record is created again and every record read,
//! so that the store knows each slot's state after the event; losses found during the sweep
//! belong to the same event and only extend the window. A loss found after the sweep counts
//! again, whichever slot it is on: writes made since the first one may be what it lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Pipeline, Value};

use super::epochs::{SlotCheck, SlotRecords};
use crate::remote::epoch::Observation;
use crate::remote::marker::{Incarnation, IncarnationCheck, Marker, Seen};
use crate::remote::recovery::{Loss, Recovery, RecoveryStatus, Young};

/// The cluster's loss detectors and the recovery window they feed.
pub(super) struct LossWatch {
    pub(super) records: SlotRecords,
    pub(super) marker: Marker,
    /// What the store knows of each master, by name (node id).
    masters: Mutex<HashMap<Arc<str>, Arc<Incarnation>>>,
    recovery: Recovery,
    /// Set while a sweep runs: losses found meanwhile belong to the event that started it.
    sweeping: AtomicBool,
}

/// A master's marker check inside a pipeline.
#[derive(Debug, Clone)]
pub(super) struct MarkerCheck {
    master: Arc<Incarnation>,
    pub(super) check: IncarnationCheck,
}

/// What a record read said, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Read {
    /// The "dead" answers read before it may be given out (as `Recovering` in a window).
    pub(super) vouches: bool,
    /// The record was missing: the records should be created again.
    pub(super) missing: bool,
}

/// What the caller has to do after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a loss event needs its sweep"]
pub(super) enum Next {
    Nothing,
    /// A new loss event: sweep the records.
    Sweep,
}

impl LossWatch {
    pub(super) fn new(prefix: &[u8], recovery_floor: Duration, name: Arc<str>) -> LossWatch {
        LossWatch {
            records: SlotRecords::new(prefix),
            marker: Marker::new(),
            masters: Mutex::new(HashMap::new()),
            recovery: Recovery::new(recovery_floor, name),
            sweeping: AtomicBool::new(false),
        }
    }

    /// Remembers the ttl of a record the store wrote: the recovery window outlasts it.
    pub(super) fn note_record(&self, ttl: Duration) {
        self.recovery.note_record(ttl);
    }

    /// The marker was loaded into `master` at connect.
    pub(super) fn reached(&self, master: &str) {
        self.masters
            .lock()
            .insert(master.into(), Arc::new(Incarnation::default()));
    }

    /// A master's uptime at connect: younger than the window, its data may lack writes it
    /// lost before this store reached it.
    pub(super) fn uptime(&self, uptime: Duration) {
        self.recovery.young(uptime, Young::Server);
    }

    /// Appends the marker check of `master` to `pipeline`, after the keys it vouches for.
    pub(super) fn add_marker_check(
        &self,
        master: &str,
        pipeline: &mut Pipeline,
    ) -> Option<MarkerCheck> {
        let incarnation = Arc::clone(self.masters.lock().entry(master.into()).or_default());
        let check = incarnation.add_check(&self.marker, pipeline)?;
        Some(MarkerCheck {
            master: incarnation,
            check,
        })
    }

    /// Takes the replies of a marker check.
    pub(super) fn observe_marker(&self, check: &MarkerCheck, replies: &[Value]) -> Next {
        if check.master.observe(check.check, replies) == Seen::Replaced {
            return self.lost(Loss::Server);
        }
        Next::Nothing
    }

    /// Takes the reply of a record read.
    pub(super) fn observe_record(&self, check: SlotCheck, reply: &Value) -> (Read, Next) {
        let Some(observation) = self.records.observe(check, reply) else {
            let nothing = Read {
                vouches: false,
                missing: false,
            };
            return (nothing, Next::Nothing);
        };
        let next = match observation {
            Observation::Lost => self.lost(Loss::Epoch),
            Observation::Adopted { age } => {
                self.recovery.young(age, Young::Records);
                Next::Nothing
            }
            Observation::Unchanged | Observation::Stale | Observation::StillMissing => {
                Next::Nothing
            }
        };
        let read = Read {
            vouches: observation.vouches(),
            missing: matches!(reply, Value::Nil),
        };
        (read, next)
    }

    /// A loss found now: a new event unless a sweep is handling one.
    fn lost(&self, loss: Loss) -> Next {
        if self.sweeping.swap(true, Ordering::AcqRel) {
            self.recovery.extend();
            return Next::Nothing;
        }
        self.recovery.lost(loss);
        Next::Sweep
    }

    /// Starts a sweep that no loss asked for (records found missing); `false` if one runs.
    pub(super) fn begin_sweep(&self) -> bool {
        !self.sweeping.swap(true, Ordering::AcqRel)
    }

    /// The sweep is over: the next loss is a new event.
    pub(super) fn end_sweep(&self) {
        self.sweeping.store(false, Ordering::Release);
    }

    /// While recovering, how long until "dead" answers are trusted again.
    pub(super) fn recovering_for(&self) -> Option<Duration> {
        self.recovery.recovering_for()
    }

    pub(super) fn status(&self) -> RecoveryStatus {
        self.recovery.status()
    }

    /// Loss events detected so far.
    pub(super) fn count(&self) -> u64 {
        self.recovery.losses()
    }
}
