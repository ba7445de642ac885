//! The epoch records of a cluster: one in every slot.
//!
//! Masters lose data on their own (a replica promoted before it had synced, a master restarted
//! without persistence), and slots can lose data on their own too (a master with no replica
//! dies and its slots are handed, empty, to another one). So the store keeps one epoch record
//! per slot, `<prefix>` NUL `epoch{N}` with `N` chosen so the record's hash tag lands in that
//! slot, and reads a slot's record after the slot's keys: a "dead" answer is vouched for by the
//! record of its own slot, whatever happened to that slot and wherever it lives now. A record
//! moves with its slot when the slot is resharded, like the runtimes' records beside it, so a
//! reshard is not mistaken for a loss.
//!
//! What a missing or changed record means is the single-node store's (see `remote::epoch`);
//! what follows is `loss`'s.

use std::io::Write;

use redis::Value;

use super::slot::{SLOTS, key_slot};
use crate::remote::epoch::{EPOCH_SUFFIX, EpochCheck, EpochRecord, Observation};

/// Candidate tags tried before giving up on a record for every slot (a prefix with its own
/// hash tag sends every key to one slot, so only that one can ever get a record).
const MAX_CANDIDATES: u32 = 64 * SLOTS as u32;

/// The cluster's epoch records, by slot.
pub(super) struct SlotRecords {
    /// `None` where no candidate tag landed.
    records: Vec<Option<EpochRecord>>,
}

/// A slot's record read inside a command.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotCheck {
    pub(super) slot: u16,
    check: EpochCheck,
}

impl SlotRecords {
    pub(super) fn new(prefix: &[u8]) -> SlotRecords {
        let mut records: Vec<Option<EpochRecord>> = (0..SLOTS).map(|_| None).collect();
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
                *record = Some(EpochRecord::at(key.clone()));
                filled += 1;
            }
        }
        SlotRecords { records }
    }

    /// The record key of `slot`, if it has one.
    pub(super) fn key(&self, slot: u16) -> Option<&[u8]> {
        self.record(slot).map(EpochRecord::key)
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

    fn record(&self, slot: u16) -> Option<&EpochRecord> {
        self.records.get(usize::from(slot))?.as_ref()
    }

    /// The key of the leases of `slot`'s records (see `crate::lease`).
    pub(super) fn lease_key(&self, slot: u16) -> Option<crate::LeaseKey> {
        self.record(slot)?.lease_key()
    }

    /// Prepares the read of `slot`'s record, which the caller puts in its command.
    pub(super) fn check(&self, slot: u16) -> Option<SlotCheck> {
        Some(SlotCheck {
            slot,
            check: self.record(slot)?.read_check(),
        })
    }

    /// Takes the reply of a record read; `None` for a reply that is no value (a redirection,
    /// another error): it says nothing about the data.
    pub(super) fn observe(&self, check: SlotCheck, reply: &Value) -> Option<Observation> {
        let record = self.record(check.slot)?;
        matches!(
            reply,
            Value::Nil | Value::BulkString(_) | Value::SimpleString(_)
        )
        .then(|| record.observe(check.check, reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_gets_a_record_of_its_own() {
        let epochs = SlotRecords::new(b"hb:");
        assert_eq!(epochs.keys().count(), SLOTS);
        for (slot, key) in epochs.keys() {
            assert_eq!(key_slot(key), slot);
            assert!(key.starts_with(b"hb:\0epoch{"));
        }
    }

    #[test]
    fn a_prefix_with_a_hash_tag_leaves_one_slot() {
        let epochs = SlotRecords::new(b"{hb}:");
        let slots: Vec<u16> = epochs.keys().map(|(slot, _)| slot).collect();
        assert_eq!(slots, [key_slot(b"hb")]);
    }
}
