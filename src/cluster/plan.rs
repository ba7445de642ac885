//! How one call's keys are split into one pipeline per master.
//!
//! Redis Cluster refuses a command whose keys span slots (`CROSSSLOT`), and a pipeline whose
//! keys belong to another master comes back as redirects; so a batch becomes, per master, one
//! `MGET` per slot (chunked) and a touch batch one `SET` per key, all of a master's commands in
//! one pipeline, every master's pipeline sent at once. Each pipeline ends with the read of the
//! epoch record that watches its master.

use redis::Pipeline;

use super::epochs::{ClusterEpochs, RecordCheck};
use super::topology::{Topology, UNSERVED};

/// One master's share of a call.
#[derive(Debug)]
pub(super) struct Group {
    /// A slot of the master, to route the pipeline by.
    pub(super) route_slot: u16,
    pub(super) pipeline: Pipeline,
    /// The commands in `pipeline`, the epoch read's included.
    pub(super) commands: usize,
    /// For each command before the epoch read, the positions (in the caller's input) it
    /// answers.
    pub(super) parts: Vec<Vec<usize>>,
    pub(super) check: Option<RecordCheck>,
}

/// The caller's positions grouped by master, each group ordered by slot. Slots no master
/// serves form one more group of their own.
fn by_master(topology: &Topology, slots: &[u16]) -> Vec<(u16, Vec<usize>)> {
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
    groups
        .into_iter()
        .enumerate()
        .filter(|(_, positions)| !positions.is_empty())
        .map(|(group, mut positions)| {
            positions.sort_by_key(|&position| slots[position]);
            let master = u16::try_from(group)
                .ok()
                .filter(|&g| usize::from(g) < topology.masters())
                .unwrap_or(UNSERVED);
            (master, positions)
        })
        .collect()
}

/// Ends a master's pipeline with its epoch read, if it has a record.
fn finish(
    topology: &Topology,
    epochs: &ClusterEpochs,
    master: u16,
    route_slot: u16,
    mut pipeline: Pipeline,
    parts: Vec<Vec<usize>>,
) -> Group {
    let check = (master != UNSERVED)
        .then(|| topology.watched_record(master))
        .flatten()
        .map(|record| epochs.add_check(record, &mut pipeline));
    Group {
        route_slot,
        commands: parts.len() + check.map_or(0, |check| check.replies()),
        pipeline,
        parts,
        check,
    }
}

/// Lookups: per master, one `MGET` per slot of at most `max_batch` keys (a `GET` for a slot
/// with one key).
pub(super) fn lookups(
    topology: &Topology,
    epochs: &ClusterEpochs,
    keys: &[Vec<u8>],
    slots: &[u16],
    max_batch: usize,
) -> Vec<Group> {
    by_master(topology, slots)
        .into_iter()
        .map(|(master, positions)| {
            let mut pipeline = redis::pipe();
            let mut parts = Vec::new();
            for same_slot in positions.chunk_by(|&a, &b| slots[a] == slots[b]) {
                if let [position] = same_slot {
                    // Most slots hold one key of a batch: a `GET` costs Redis and the reply
                    // parser less than a one-key `MGET`.
                    pipeline.cmd("GET").arg(&keys[*position]);
                    parts.push(vec![*position]);
                    continue;
                }
                for chunk in same_slot.chunks(max_batch) {
                    let command = pipeline.cmd("MGET");
                    for &position in chunk {
                        command.arg(&keys[position]);
                    }
                    parts.push(chunk.to_vec());
                }
            }
            let route_slot = slots[positions[0]];
            finish(topology, epochs, master, route_slot, pipeline, parts)
        })
        .collect()
}

/// Writes: per master, one command per position, made by `write`.
pub(super) fn writes(
    topology: &Topology,
    epochs: &ClusterEpochs,
    slots: &[u16],
    mut write: impl FnMut(&mut Pipeline, usize),
) -> Vec<Group> {
    by_master(topology, slots)
        .into_iter()
        .map(|(master, positions)| {
            let mut pipeline = redis::pipe();
            for &position in &positions {
                write(&mut pipeline, position);
            }
            let route_slot = slots[positions[0]];
            let parts = positions
                .into_iter()
                .map(|position| vec![position])
                .collect();
            finish(topology, epochs, master, route_slot, pipeline, parts)
        })
        .collect()
}

/// Reads of every master's epoch record, one pipeline per master, nothing else.
pub(super) fn epoch_reads(topology: &Topology, epochs: &ClusterEpochs) -> Vec<Group> {
    let slots: Vec<u16> = epochs.slots().collect();
    let mut reads: Vec<Group> = (0..topology.masters())
        .filter_map(|master| {
            let master = u16::try_from(master).ok()?;
            let record = topology.watched_record(master)?;
            Some(finish(
                topology,
                epochs,
                master,
                slots[record],
                redis::pipe(),
                Vec::new(),
            ))
        })
        .collect();
    reads.retain(|group| group.check.is_some());
    reads
}
