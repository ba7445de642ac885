//! The epoch record: a key without expiry beside the runtimes' records, read back after them.
//!
//! The store writes an epoch value (its creation time and 128 random bits) once (`SET NX`, no
//! expiry) and reads it (`GET`) in the same pipeline as every batch of `MGET`s and every batch
//! of writes, after them; it writes again only after finding it missing. If it comes back
//! missing or different, the keyspace was emptied or replaced (restart without persistence,
//! `FLUSHALL`, failover to an empty replica, eviction) after the store last looked: a loss. An
//! epoch seen for the first time (at connect, or after a loss) that is younger than the recovery
//! window means records that began after some live runtimes last beat: "dead" waits until the
//! epoch is a full window old. What follows either is `recovery`'s.
//!
//! The epoch's key is `<prefix>` + NUL + `epoch`: under the prefix, so ACL key patterns that
//! cover the records cover it too, yet outside the id space, because no valid runtime id
//! contains a NUL byte (`<prefix>meta:epoch` would be the record of a runtime named
//! `meta:epoch`). A restart from a snapshot, or a replica promoted behind its master, keeps the
//! record: `marker` catches those.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Pipeline, Value};
use tokio::time::Instant;

use super::unix_ms;
use crate::LeaseKey;

/// The epoch key's suffix after the prefix; the NUL keeps it out of the id space.
pub(crate) const EPOCH_SUFFIX: &[u8] = b"\0epoch";

/// One epoch record, and what this store last read of it.
#[derive(Debug)]
pub(crate) struct EpochRecord {
    key: Vec<u8>,
    state: Mutex<RecordState>,
}

#[derive(Debug, Default)]
struct RecordState {
    /// The value last read; `None` before the first read and after finding it missing.
    known: Option<Vec<u8>>,
    /// The lease key derived from `known`: shared by every instance that read the same value.
    lease_key: Option<LeaseKey>,
    /// Counts changes of `known`, so that a reply to a pipeline built before the latest change
    /// is not compared with a value it never saw.
    generation: u64,
}

/// What a pipeline's epoch read added: how many replies, and which state it was built on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochCheck {
    /// Replies the epoch commands add (the `GET` is the last of them).
    pub(crate) replies: usize,
    generation: u64,
}

/// What one epoch reply told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    /// The record is as last seen: "dead" answers read beside it stand (within any window).
    Unchanged,
    /// First seen (at connect, after a loss), created `age` ago.
    Adopted { age: Duration },
    /// Missing or changed: a loss.
    Lost,
    /// Compared with nothing: a concurrent call moved the state on meanwhile.
    Stale,
    /// Missing, and never seen: nothing to compare yet.
    StillMissing,
}

impl Observation {
    /// Whether the reply says the data beside it is the data the store knows: "dead" answers
    /// read with it may be given out (as `Recovering` while a window runs).
    #[cfg(feature = "cluster")]
    pub(crate) fn vouches(self) -> bool {
        matches!(
            self,
            Observation::Unchanged | Observation::Adopted { .. } | Observation::Lost
        )
    }
}

impl EpochRecord {
    /// The record of keys under `prefix`: `<prefix>` NUL `epoch`.
    pub(crate) fn under_prefix(prefix: &[u8]) -> EpochRecord {
        let mut key = prefix.to_vec();
        key.extend_from_slice(EPOCH_SUFFIX);
        EpochRecord::at(key)
    }

    /// A record at `key` (a cluster keeps one per slot).
    pub(crate) fn at(key: Vec<u8>) -> EpochRecord {
        EpochRecord {
            key,
            state: Mutex::new(RecordState::default()),
        }
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// Appends the epoch read to `pipeline` and returns what [`observe`](Self::observe) needs
    /// to read its reply. Until this store knows an epoch (the first look, or after finding it
    /// missing) a `SET NX` with a fresh random value goes first: a re-created epoch never
    /// equals an old one, and of several instances racing to create it one wins and all adopt
    /// its value.
    pub(crate) fn add_check(&self, pipeline: &mut Pipeline) -> EpochCheck {
        let (create, generation) = {
            let state = self.state.lock();
            (state.known.is_none(), state.generation)
        };
        if create {
            pipeline
                .cmd("SET")
                .arg(&self.key)
                .arg(fresh_value())
                .arg("NX");
        }
        pipeline.cmd("GET").arg(&self.key);
        EpochCheck {
            replies: if create { 2 } else { 1 },
            generation,
        }
    }

    /// What a read of the record that a pipeline carries without creating it needs to be
    /// compared: the state it was read against.
    #[cfg(feature = "cluster")]
    pub(crate) fn read_check(&self) -> EpochCheck {
        EpochCheck {
            replies: 1,
            generation: self.state.lock().generation,
        }
    }

    /// Takes the reply of the epoch `GET` of `check`.
    pub(crate) fn observe(&self, check: EpochCheck, reply: &Value) -> Observation {
        let current = match reply {
            Value::BulkString(bytes) => Some(bytes.as_slice()),
            Value::SimpleString(text) => Some(text.as_bytes()),
            _ => None,
        };
        let mut state = self.state.lock();
        let unchanged = matches!(
            (&state.known, current),
            (Some(known), Some(current)) if known.as_slice() == current
        );
        if unchanged {
            return Observation::Unchanged;
        }
        if check.generation != state.generation {
            // Concurrent calls: a newer one already moved the epoch on (detected the loss, or
            // adopted the new value). Comparing this older reply with it would count one loss
            // twice; a loss after that newer call shows in the next one.
            return Observation::Stale;
        }
        let observation = match (&state.known, current) {
            // Still missing (it could not be created): nothing to compare yet.
            (None, None) => return Observation::StillMissing,
            (None, Some(current)) => Observation::Adopted { age: age(current) },
            (Some(_), _) => Observation::Lost,
        };
        state.known = current.map(<[u8]>::to_vec);
        state.lease_key = current.map(LeaseKey::derive);
        state.generation += 1;
        observation
    }

    /// The key of the leases of records beside this one (see `crate::lease`): derived from its
    /// value, so that a lease dies with the data it vouches for.
    pub(crate) fn lease_key(&self) -> Option<LeaseKey> {
        self.state.lock().lease_key.clone()
    }
}

/// How old an epoch value is: its creation time is its first field, Unix milliseconds. A value
/// this crate did not write counts as brand new, the safe side.
fn age(value: &[u8]) -> Duration {
    let created_ms = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.split('-').next())
        .and_then(|ms| ms.parse::<u64>().ok());
    created_ms.map_or(Duration::ZERO, |created| {
        Duration::from_millis(unix_ms().saturating_sub(created))
    })
}

/// A new epoch value: the time and 128 random bits, unique per call. The bits key the leases
/// of the records beside it (std's `RandomState` draws its keys from the OS).
pub(crate) fn fresh_value() -> String {
    let now = Instant::now();
    let high = RandomState::new().hash_one(now);
    let low = RandomState::new().hash_one((now, high));
    format!("{}-{high:016x}{low:016x}", unix_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn first_sight_adopts_then_a_change_or_a_gap_is_a_loss() {
        let record = EpochRecord::under_prefix(b"hb:");
        assert_eq!(record.key(), b"hb:\0epoch");
        let mut pipeline = redis::pipe();
        let check = record.add_check(&mut pipeline);
        assert_eq!(check.replies, 2, "unknown: created first");
        let old = format!("{}-1", unix_ms() - 60_000);
        match record.observe(check, &bulk(&old)) {
            Observation::Adopted { age } => assert!(age >= Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        let check = record.add_check(&mut redis::pipe());
        assert_eq!(check.replies, 1, "known: read only");
        assert_eq!(record.observe(check, &bulk(&old)), Observation::Unchanged);
        let stale = record.add_check(&mut redis::pipe());
        assert_eq!(record.observe(check, &bulk("1-2")), Observation::Lost);
        // A reply to a pipeline built before the loss was seen compares with nothing.
        assert_eq!(record.observe(stale, &Value::Nil), Observation::Stale);
        let check = record.add_check(&mut redis::pipe());
        assert_eq!(record.observe(check, &Value::Nil), Observation::Lost);
        let check = record.add_check(&mut redis::pipe());
        assert_eq!(
            record.observe(check, &Value::Nil),
            Observation::StillMissing
        );
    }

    #[test]
    fn a_foreign_value_counts_as_brand_new() {
        assert_eq!(age(b"not ours"), Duration::ZERO);
        assert!(fresh_value() != fresh_value());
    }
}
