//! How one call's keys are split into one pipeline per master.
//!
//! Redis Cluster refuses a command whose keys span slots (`CROSSSLOT`), and a pipeline whose
//! keys belong to another master comes back as redirects; so a batch becomes, per master, a
//! `GET` per slot holding one of its keys and an `MGET` per slot holding several (chunked),
//! and a touch batch one `SET` per key followed by the epoch record read of each slot written
//! and the master's marker check; all of a master's commands in one pipeline, every master's
//! pipeline sent at once. The epoch records of the slots where a batch found a key missing are
//! read afterwards, the same way, with the marker check.

use redis::{Cmd, Pipeline};

use super::epochs::{SlotCheck, SlotRecords};
use super::loss::{LossWatch, MarkerCheck};
use super::topology::{Topology, UNSERVED};

/// One master's share of a call.
#[derive(Debug)]
pub(super) struct Group {
    /// A slot of the master, to route the pipeline by.
    pub(super) route_slot: u16,
    pub(super) pipeline: Pipeline,
    /// The commands in `pipeline`, the marker check's included.
    pub(super) commands: usize,
    /// What each command before the marker check answers.
    pub(super) parts: Vec<Part>,
    /// The master's marker check at the end, if the pipeline vouches for anything.
    pub(super) marker: Option<MarkerCheck>,
}

impl Group {
    /// A group of `parts`' commands in `pipeline`, plus the marker check at its end.
    fn new(
        route_slot: u16,
        pipeline: Pipeline,
        parts: Vec<Part>,
        marker: Option<MarkerCheck>,
    ) -> Group {
        Group {
            route_slot,
            commands: parts.len() + marker.as_ref().map_or(0, |marker| marker.check.replies),
            pipeline,
            parts,
            marker,
        }
    }
}

/// One command of a group: the positions (in the caller's input) it answers, all of one
/// slot, or the read of that slot's epoch record.
#[derive(Debug, Clone)]
pub(super) struct Part {
    pub(super) slot: u16,
    pub(super) positions: Vec<usize>,
    pub(super) check: Option<SlotCheck>,
}

/// The caller's positions grouped by master, each group ordered by slot. Slots no master
/// serves form one more group of their own.
fn by_master(topology: &Topology, slots: &[u16]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); topology.masters() + 1];
    for (position, &slot) in slots.iter().enumerate() {
        let master = topology.owner(slot);
        let group = if master == UNSERVED {
            topology.masters()
        } else {
            usize::from(master)
        };
        groups[group].push(position);
    }
    groups.retain(|positions| !positions.is_empty());
    for positions in &mut groups {
        positions.sort_by_key(|&position| slots[position]);
    }
    groups
}

/// The lookup of `positions`, all in `slot`: `GET` for one key, `MGET` for more.
pub(super) fn lookup_command(keys: &[Vec<u8>], slot: u16, positions: &[usize]) -> (Cmd, Part) {
    let mut command = redis::cmd(if positions.len() == 1 { "GET" } else { "MGET" });
    for &position in positions {
        command.arg(&keys[position]);
    }
    let part = Part {
        slot,
        positions: positions.to_vec(),
        check: None,
    };
    (command, part)
}

/// Lookups: per master, one command per slot of at most `max_batch` keys.
pub(super) fn lookups(
    topology: &Topology,
    keys: &[Vec<u8>],
    slots: &[u16],
    max_batch: usize,
) -> Vec<Group> {
    by_master(topology, slots)
        .into_iter()
        .map(|positions| {
            let mut pipeline = redis::pipe();
            let mut parts = Vec::new();
            for same_slot in positions.chunk_by(|&a, &b| slots[a] == slots[b]) {
                let slot = slots[same_slot[0]];
                for chunk in same_slot.chunks(max_batch) {
                    let (command, part) = lookup_command(keys, slot, chunk);
                    pipeline.add_command(command);
                    parts.push(part);
                }
            }
            Group::new(slots[positions[0]], pipeline, parts, None)
        })
        .collect()
}

/// The `GET` of `slot`'s epoch record, if it has one.
pub(super) fn record_read(records: &SlotRecords, slot: u16) -> Option<(Cmd, Part)> {
    let check = records.check(slot)?;
    let mut command = redis::cmd("GET");
    command.arg(records.key(slot)?);
    let part = Part {
        slot,
        positions: Vec::new(),
        check: Some(check),
    };
    Some((command, part))
}

/// The marker check of the master of `slot`, at the end of `pipeline`.
fn marker_check(
    topology: &Topology,
    losses: &LossWatch,
    slot: u16,
    pipeline: &mut Pipeline,
) -> Option<MarkerCheck> {
    losses.add_marker_check(topology.master_of(slot)?, pipeline)
}

/// Reads of the epoch records of `slots`, per master, each master's followed by its marker
/// check; slots without a record are left out.
pub(super) fn record_reads(topology: &Topology, losses: &LossWatch, slots: &[u16]) -> Vec<Group> {
    by_master(topology, slots)
        .into_iter()
        .filter_map(|positions| {
            let mut pipeline = redis::pipe();
            let mut parts = Vec::new();
            for &position in &positions {
                if let Some((command, part)) = record_read(&losses.records, slots[position]) {
                    pipeline.add_command(command);
                    parts.push(part);
                }
            }
            let route_slot = slots[positions[0]];
            let marker = (!parts.is_empty())
                .then(|| marker_check(topology, losses, route_slot, &mut pipeline))
                .flatten();
            (!parts.is_empty()).then(|| Group::new(route_slot, pipeline, parts, marker))
        })
        .collect()
}

/// Writes: per master, one command per position, made by `write`, then the read of the
/// record of each slot written and the master's marker check, so that a store that only
/// writes (a layered store's group commit) still learns of any loss of those slots.
pub(super) fn writes(
    topology: &Topology,
    losses: &LossWatch,
    slots: &[u16],
    mut write: impl FnMut(usize) -> Cmd,
) -> Vec<Group> {
    by_master(topology, slots)
        .into_iter()
        .map(|positions| {
            let mut pipeline = redis::pipe();
            let route_slot = slots[positions[0]];
            let mut parts: Vec<Part> = positions
                .iter()
                .map(|&position| {
                    pipeline.add_command(write(position));
                    Part {
                        slot: slots[position],
                        positions: vec![position],
                        check: None,
                    }
                })
                .collect();
            // Positions are ordered by slot: each slot's record once.
            let mut written: Vec<u16> = positions.iter().map(|&p| slots[p]).collect();
            written.dedup();
            for slot in written {
                if let Some((command, part)) = record_read(&losses.records, slot) {
                    pipeline.add_command(command);
                    parts.push(part);
                }
            }
            let marker = marker_check(topology, losses, route_slot, &mut pipeline);
            Group::new(route_slot, pipeline, parts, marker)
        })
        .collect()
}

/// Per master, `SET NX` of each of its slots' epoch records with `value` (records that exist
/// stay as they are), each followed by its read.
pub(super) fn record_creation(
    topology: &Topology,
    records: &SlotRecords,
    value: &str,
) -> Vec<Group> {
    let keys: Vec<(u16, &[u8])> = records.keys().collect();
    let slots: Vec<u16> = keys.iter().map(|(slot, _)| *slot).collect();
    by_master(topology, &slots)
        .into_iter()
        .map(|positions| {
            let mut pipeline = redis::pipe();
            let mut parts = Vec::new();
            for position in positions.iter().copied() {
                let (slot, key) = keys[position];
                pipeline.cmd("SET").arg(key).arg(value).arg("NX");
                parts.push(Part {
                    slot,
                    positions: Vec::new(),
                    check: None,
                });
                // Prepared after the SET is queued: the read compares with the state of the
                // time it is sent.
                let check = records.check(slot);
                pipeline.cmd("GET").arg(key);
                parts.push(Part {
                    slot,
                    positions: Vec::new(),
                    check,
                });
            }
            Group::new(slots[positions[0]], pipeline, parts, None)
        })
        .collect()
}
