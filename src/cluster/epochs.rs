//! Data-loss detection on Redis Cluster: an epoch record in every master's slots.
//!
//! Each master loses its data on its own (a replica promoted before it had synced, a master
//! restarted without persistence), so one epoch record for the whole cluster would watch a
//! single master. Instead the store keeps records `<prefix>` NUL `epoch{N}`, whose hash tags
//! place one in each block of 64 slots, and every pipeline it sends to a master reads back the
//! record in that master's lowest tagged slot. A record moves with its slot when the slot is
//! resharded, like the runtimes' records beside it, so a migration is not mistaken for a loss.
//!
//! The records are created together, with one value, when the store connects and after every
//! loss, so that a master's watched record changing to another of its records (a reshard)
//! finds one as old as the first. What a missing or changed record means, and the recovery
//! window that follows, is exactly the single-node store's (see `redis::epoch`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Pipeline, Value};
use tokio::time::Instant;

use super::slot::{SLOTS, key_slot};
pub(super) use crate::redis::epoch::fresh_value;
use crate::redis::epoch::{EPOCH_SUFFIX, Epoch, EpochCheck};

/// Slots per block that holds one epoch record: 256 records for 16,384 slots. A master owning
/// no whole block still has a record if one of its slots holds one; one owning none of the 256
/// tagged slots has no loss detection (it serves fewer than 64 slots, or a hand-made layout).
const SLOTS_PER_RECORD: usize = 64;
/// Candidate tags tried before giving up on filling every block (a prefix with its own hash
/// tag sends every key to one slot, so only one block can ever be filled).
const MAX_CANDIDATES: usize = 64 * (SLOTS / SLOTS_PER_RECORD);

/// The cluster's epoch records and what this store knows about each.
#[derive(Debug)]
pub(super) struct ClusterEpochs {
    records: Vec<Record>,
    /// Losses detected over all records.
    losses: AtomicU64,
    /// The latest recovery window (start, end) over all records.
    recovery: Mutex<Option<(Instant, Instant)>>,
    max_ttl_ms: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Record {
    slot: u16,
    epoch: Epoch,
}

/// An epoch read added to one master's pipeline.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecordCheck {
    record: usize,
    check: EpochCheck,
}

impl RecordCheck {
    /// Replies the check adds at the end of its pipeline.
    pub(super) fn replies(&self) -> usize {
        self.check.replies
    }
}

impl ClusterEpochs {
    pub(super) fn new(prefix: &[u8], recovery_floor: Duration, name: &str) -> ClusterEpochs {
        let max_ttl_ms = Arc::new(AtomicU64::new(0));
        let mut blocks: Vec<Option<(u16, Vec<u8>)>> = vec![None; SLOTS / SLOTS_PER_RECORD];
        let mut filled = 0;
        for candidate in 0..MAX_CANDIDATES {
            if filled == blocks.len() {
                break;
            }
            let mut key = prefix.to_vec();
            key.extend_from_slice(EPOCH_SUFFIX);
            key.extend_from_slice(format!("{{{candidate}}}").as_bytes());
            let slot = key_slot(&key);
            let block = &mut blocks[usize::from(slot) / SLOTS_PER_RECORD];
            if block.is_none() {
                *block = Some((slot, key));
                filled += 1;
            }
        }
        let records = blocks
            .into_iter()
            .flatten()
            .map(|(slot, key)| Record {
                slot,
                epoch: Epoch::with_key(
                    key,
                    recovery_floor,
                    name.to_owned(),
                    Arc::clone(&max_ttl_ms),
                ),
            })
            .collect();
        ClusterEpochs {
            records,
            losses: AtomicU64::new(0),
            recovery: Mutex::new(None),
            max_ttl_ms,
        }
    }

    /// Every record's slot, in the order [`watched`](Self::add_check) indexes them (ascending).
    pub(super) fn slots(&self) -> impl Iterator<Item = u16> + '_ {
        self.records.iter().map(|record| record.slot)
    }

    /// Every record's key, with its slot.
    pub(super) fn keys(&self) -> impl Iterator<Item = (u16, &[u8])> + '_ {
        self.records
            .iter()
            .map(|record| (record.slot, record.epoch.key()))
    }

    /// Remembers a ttl this store wrote: every record's recovery window covers it.
    pub(super) fn note_ttl(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.max_ttl_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Appends the read of record `record` (an index into [`slots`](Self::slots)) to a
    /// master's pipeline.
    pub(super) fn add_check(&self, record: usize, pipeline: &mut Pipeline) -> RecordCheck {
        RecordCheck {
            record,
            check: self.records[record].epoch.add_check(pipeline),
        }
    }

    /// Takes the reply of a check: `None` if it says nothing about the data (a redirection,
    /// because the slot moved meanwhile, or any other error reply; only a value or nil
    /// counts), else whether it found a loss, so the caller can re-create every record of the
    /// master.
    pub(super) fn observe(&self, check: RecordCheck, reply: &Value) -> Option<bool> {
        if !matches!(
            reply,
            Value::Nil | Value::BulkString(_) | Value::SimpleString(_)
        ) {
            return None;
        }
        let epoch = &self.records[check.record].epoch;
        let before = epoch.losses();
        epoch.observe(check.check, reply);
        let (after, recovery) = epoch.status();
        if let Some((start, end)) = recovery {
            let mut merged = self.recovery.lock();
            *merged = Some(match *merged {
                Some((first, last)) if last > start => (first.min(start), last.max(end)),
                _ => (start, end),
            });
        }
        let lost = after - before;
        self.losses.fetch_add(lost, Ordering::Relaxed);
        Some(lost > 0)
    }

    /// Losses detected so far.
    pub(super) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// While recovering, how long until "dead" answers are trusted again.
    pub(super) fn recovering_for(&self) -> Option<Duration> {
        let (_, until) = (*self.recovery.lock())?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }

    /// Losses so far and the latest recovery window.
    pub(super) fn status(&self) -> (u64, Option<(Instant, Instant)>) {
        (self.losses(), *self.recovery.lock())
    }
}
