//! Data-loss detection on Redis Cluster: an epoch record in every slot.
//!
//! Masters lose data on their own (a replica promoted before it had synced, a master restarted
//! without persistence), and slots can lose data on their own too (a master with no replica
//! dies and its slots are handed, empty, to another one). So the store keeps one epoch record
//! per slot, `<prefix>` NUL `epoch{N}` with `N` chosen so the record's hash tag lands in that
//! slot, and reads a slot's record in the very `MGET` that reads the slot's keys: a "dead"
//! answer is vouched for by the record beside it, whatever happened to that slot and wherever
//! it lives now. A record moves with its slot when the slot is resharded, like the runtimes'
//! records beside it, so a reshard is not mistaken for a loss.
//!
//! The records are created together, with one value, when the store connects and after every
//! loss. What a missing or changed record means, and the recovery window that follows, is the
//! single-node store's (see `redis::epoch`); the records themselves stay silent, and this
//! module logs once per loss, however many slots it spans, and counts it once.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::Value;
use tokio::time::Instant;

use super::slot::{SLOTS, key_slot};
pub(super) use crate::redis::epoch::fresh_value;
use crate::redis::epoch::{EPOCH_SUFFIX, Epoch, EpochCheck, Observation};

/// Candidate tags tried before giving up on a record for every slot (a prefix with its own
/// hash tag sends every key to one slot, so only that one can ever get a record).
const MAX_CANDIDATES: u32 = 64 * SLOTS as u32;

/// The cluster's epoch records and what this store knows about each.
pub(super) struct ClusterEpochs {
    /// By slot; `None` where no candidate tag landed.
    records: Vec<Option<Epoch>>,
    /// Loss events detected.
    losses: AtomicU64,
    state: Mutex<Aggregate>,
    max_ttl_ms: Arc<AtomicU64>,
    /// The seeds, redacted, for log lines.
    name: Arc<str>,
}

#[derive(Debug, Default)]
struct Aggregate {
    /// The latest recovery window (start, end) over all records.
    recovery: Option<(Instant, Instant)>,
    /// Losses found before this belong to the loss event already counted.
    loss_event_until: Option<Instant>,
}

/// A slot's record read inside a command.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotCheck {
    slot: u16,
    check: EpochCheck,
}

/// What a record read said, for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Read {
    /// The "dead" answers read beside it may be given out.
    pub(super) vouches: bool,
    /// The record was missing: the records should be created again.
    pub(super) missing: bool,
}

impl ClusterEpochs {
    pub(super) fn new(prefix: &[u8], recovery_floor: Duration, name: &str) -> ClusterEpochs {
        let max_ttl_ms = Arc::new(AtomicU64::new(0));
        let name: Arc<str> = name.into();
        let mut records: Vec<Option<Epoch>> = (0..SLOTS).map(|_| None).collect();
        let mut filled = 0;
        let mut key = prefix.to_vec();
        key.extend_from_slice(EPOCH_SUFFIX);
        let base = key.len();
        for candidate in 0..MAX_CANDIDATES {
            // About 170,000 candidates fill every slot; a prefix with its own hash tag shows
            // at once, every candidate landing in its one slot.
            if filled == SLOTS || (candidate == 4_096 && filled == 1) {
                break;
            }
            key.truncate(base);
            // Writing into a Vec cannot fail.
            let _ = write!(key, "{{{candidate}}}");
            let record = &mut records[usize::from(key_slot(&key))];
            if record.is_none() {
                *record = Some(Epoch::with_key(
                    key.clone(),
                    recovery_floor,
                    Arc::clone(&name),
                    Arc::clone(&max_ttl_ms),
                ));
                filled += 1;
            }
        }
        ClusterEpochs {
            records,
            losses: AtomicU64::new(0),
            state: Mutex::new(Aggregate::default()),
            max_ttl_ms,
            name,
        }
    }

    /// The record key of `slot`, if it has one.
    pub(super) fn key(&self, slot: u16) -> Option<&[u8]> {
        self.record(slot).map(Epoch::key)
    }

    /// Every record's slot and key.
    pub(super) fn keys(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        self.records
            .iter()
            .enumerate()
            .filter_map(|(slot, record)| {
                let slot = u16::try_from(slot).ok()?;
                Some((slot, record.as_ref()?.key()))
            })
    }

    fn record(&self, slot: u16) -> Option<&Epoch> {
        self.records.get(usize::from(slot))?.as_ref()
    }

    /// Remembers a ttl this store wrote: every record's recovery window covers it.
    pub(super) fn note_ttl(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.max_ttl_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Prepares the read of `slot`'s record, which the caller puts in its command.
    pub(super) fn check(&self, slot: u16) -> Option<SlotCheck> {
        Some(SlotCheck {
            slot,
            check: self.record(slot)?.read_check(),
        })
    }

    /// Takes the reply of a record read. A redirection (the slot moved meanwhile) or any
    /// other error reply says nothing about the data: only a value or nil counts.
    pub(super) fn observe(&self, check: SlotCheck, reply: &Value) -> Read {
        let nothing = Read {
            vouches: false,
            missing: false,
        };
        let Some(epoch) = self.record(check.slot) else {
            return nothing;
        };
        if !matches!(
            reply,
            Value::Nil | Value::BulkString(_) | Value::SimpleString(_)
        ) {
            return nothing;
        }
        let observation = epoch.observe(check.check, reply);
        if matches!(observation, Observation::Adopted | Observation::Lost) {
            self.merge(epoch, observation == Observation::Lost);
        }
        Read {
            vouches: observation.vouches(),
            missing: matches!(reply, Value::Nil),
        }
    }

    /// Folds a record's new recovery window into the cluster's; a loss outside the current
    /// loss event starts a new one, counted and logged once.
    fn merge(&self, epoch: &Epoch, lost: bool) {
        let now = Instant::now();
        let (_, window) = epoch.status();
        let (new_loss, young) = {
            let mut state = self.state.lock();
            let was_recovering = state.recovery.is_some_and(|(_, end)| end > now);
            if let Some((start, end)) = window.filter(|(_, end)| *end > now) {
                state.recovery = Some(match state.recovery {
                    Some((first, last)) if last > now => (first.min(start), last.max(end)),
                    _ => (start, end),
                });
            }
            let new_loss = lost && state.loss_event_until.is_none_or(|until| now >= until);
            if new_loss {
                state.loss_event_until = Some(now.checked_add(epoch.window()).unwrap_or(now));
                self.losses.fetch_add(1, Ordering::Relaxed);
            }
            (
                new_loss,
                !lost && !was_recovering && window.is_some_and(|(_, end)| end > now),
            )
        };
        if new_loss {
            tracing::error!(
                backend = %self.name,
                recovery_window = ?epoch.window(),
                "liveness store: redis cluster lost data (an epoch record missing or changed); \
                 answering Recovering instead of \"dead\" until every live runtime has beaten \
                 again"
            );
        } else if young {
            tracing::warn!(
                backend = %self.name,
                distrust_for = ?epoch.recovering_for(),
                "liveness store: the cluster's records are younger than the recovery window (a \
                 new or emptied cluster); answering Recovering instead of \"dead\" until they \
                 are not"
            );
        }
    }

    /// Loss events detected so far.
    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// While recovering, how long until "dead" answers are trusted again.
    pub(super) fn recovering_for(&self) -> Option<Duration> {
        let (_, until) = self.state.lock().recovery?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }

    /// Losses so far and the latest recovery window.
    pub(super) fn status(&self) -> (u64, Option<(Instant, Instant)>) {
        (self.losses(), self.state.lock().recovery)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_gets_a_record_of_its_own() {
        let epochs = ClusterEpochs::new(b"hb:", Duration::ZERO, "test");
        assert_eq!(epochs.keys().count(), SLOTS);
        for (slot, key) in epochs.keys() {
            assert_eq!(key_slot(key), slot);
            assert!(key.starts_with(b"hb:\0epoch{"));
        }
    }

    #[test]
    fn a_prefix_with_a_hash_tag_leaves_one_slot() {
        let epochs = ClusterEpochs::new(b"{hb}:", Duration::ZERO, "test");
        let slots: Vec<u16> = epochs.keys().map(|(slot, _)| slot).collect();
        assert_eq!(slots, [key_slot(b"hb")]);
    }
}
