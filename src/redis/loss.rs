//! How a [`RedisStore`](super::RedisStore) notices that Redis may have lost writes (invariant
//! 4): the epoch record and the server's marker, read after the keys in every pipeline that
//! reads records or writes them, and the server's uptime at the first connection.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Pipeline, RedisError, Value};

use super::connection::TrackedConnection;
use crate::redact::scrub;
use crate::remote::epoch::{EpochCheck, EpochRecord, Observation};
use crate::remote::marker::{Incarnation, IncarnationCheck, Marker, Seen};
use crate::remote::recovery::{Loss, Recovery, RecoveryStatus, Young};
use crate::remote::{server_answered, uptime};

/// The store's loss detectors and the recovery window they feed.
#[derive(Debug)]
pub(super) struct LossWatch {
    epoch: EpochRecord,
    marker: Marker,
    server: Incarnation,
    recovery: Recovery,
    /// Held while one pipeline's replies are read, marker and epoch together. A restart
    /// without persistence shows both ways in every pipeline in flight; read apart, a second
    /// pipeline could find the marker already handled (stale) and the epoch not yet, and
    /// count the same restart again as an epoch loss.
    observing: Mutex<()>,
}

/// What a pipeline's checks added at its end, in order: the marker's commands, then the
/// epoch's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Checks {
    marker: Option<IncarnationCheck>,
    epoch: EpochCheck,
}

impl Checks {
    /// Replies the checks add at the end of the pipeline.
    pub(super) fn replies(&self) -> usize {
        self.marker.map_or(0, |check| check.replies) + self.epoch.replies
    }
}

impl LossWatch {
    pub(super) fn new(key_prefix: &[u8], recovery_floor: Duration, name: Arc<str>) -> LossWatch {
        LossWatch {
            epoch: EpochRecord::under_prefix(key_prefix),
            marker: Marker::new(),
            server: Incarnation::default(),
            recovery: Recovery::new(recovery_floor, name),
            observing: Mutex::new(()),
        }
    }

    pub(super) fn epoch_key(&self) -> &[u8] {
        self.epoch.key()
    }

    /// The key of the leases of this Redis's records (see `crate::lease`).
    pub(super) fn lease_key(&self) -> Option<crate::LeaseKey> {
        self.epoch.lease_key()
    }

    /// Remembers the ttl of a record the store wrote: the recovery window outlasts it.
    pub(super) fn note_record(&self, ttl: Duration) {
        self.recovery.note_record(ttl);
    }

    /// The epoch read alone, for the first connection.
    pub(super) fn add_epoch_check(&self, pipeline: &mut Pipeline) -> EpochCheck {
        self.epoch.add_check(pipeline)
    }

    /// Takes the reply of [`add_epoch_check`](Self::add_epoch_check)'s commands, the last of
    /// `replies`.
    pub(super) fn observe_epoch(&self, check: EpochCheck, replies: &[Value]) {
        if let Some(reply) = replies.last() {
            self.react_to_epoch(self.epoch.observe(check, reply), false);
        }
    }

    /// At the first connection: loads the store's marker, and distrusts "dead" while the
    /// server is younger than the recovery window (it may have restarted, and lost writes,
    /// before this store reached it; the marker only catches restarts after that).
    ///
    /// A server that refuses scripts or `INFO` (an ACL, a managed service) leaves that detector
    /// off, which is logged; an error that is no reply fails the connect.
    pub(super) async fn first_contact(
        &self,
        connection: &TrackedConnection,
        timeout: Duration,
        url: &str,
    ) -> Result<(), RedisError> {
        let mut load = redis::pipe();
        load.add_command(self.marker.load_command());
        match connection.handle(timeout).query::<Vec<Value>>(&load).await {
            Ok(replies) => {
                let _ = replies
                    .first()
                    .is_some_and(|reply| self.marker.loaded(reply));
            }
            Err(error) if server_answered(&error) => tracing::warn!(
                error = %scrub(&error.to_string(), url),
                "liveness store: redis refuses SCRIPT LOAD, so a restart from a snapshot or a \
                 failover to a replica that is behind goes unnoticed; grant +script|load and \
                 +script|exists"
            ),
            Err(error) => return Err(error),
        }
        let mut info = redis::pipe();
        info.cmd("INFO").arg("server");
        match connection.handle(timeout).query::<Vec<String>>(&info).await {
            Ok(replies) => {
                if let Some(uptime) = replies.first().and_then(|text| uptime(text)) {
                    self.recovery.young(uptime, Young::Server);
                }
            }
            Err(error) if server_answered(&error) => tracing::debug!(
                error = %scrub(&error.to_string(), url),
                "liveness store: could not read the server's uptime"
            ),
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// Appends the checks to `pipeline`, after the keys they vouch for.
    pub(super) fn add_checks(&self, pipeline: &mut Pipeline) -> Checks {
        Checks {
            marker: self.server.add_check(&self.marker, pipeline),
            epoch: self.epoch.add_check(pipeline),
        }
    }

    /// Takes the replies of `checks`' commands, the last of `replies`. A pipeline that shows
    /// a loss both ways (a restart without persistence: marker and epoch gone) counts it once.
    pub(super) fn observe(&self, checks: Checks, replies: &[Value]) {
        let tail = &replies[replies.len().saturating_sub(checks.replies())..];
        let _one_at_a_time = self.observing.lock();
        let (marker, epoch) = tail.split_at(checks.marker.map_or(0, |check| check.replies));
        let replaced = checks
            .marker
            .is_some_and(|check| self.server.observe(check, marker) == Seen::Replaced);
        if replaced {
            self.recovery.lost(Loss::Server);
        }
        if let Some(reply) = epoch.last() {
            self.react_to_epoch(self.epoch.observe(checks.epoch, reply), replaced);
        }
    }

    fn react_to_epoch(&self, observation: Observation, counted: bool) {
        match observation {
            Observation::Lost if counted => self.recovery.extend(),
            Observation::Lost => self.recovery.lost(Loss::Epoch),
            Observation::Adopted { age } => self.recovery.young(age, Young::Records),
            Observation::Unchanged | Observation::Stale | Observation::StillMissing => {}
        }
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
