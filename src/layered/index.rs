//! A plain hash index of the local entries, for lookups at hash-map speed.
//!
//! moka owns the entries: it expires them at their deadlines and bounds their number. But one
//! moka lookup costs several times a `RwLock<HashMap>` read (its concurrent table, access
//! queue and read log), and the hot paths are nothing but lookups: a coalesced touch is one,
//! a batch is one per id. So every entry moka holds is also here, and moka's eviction
//! listener takes it out again. An entry found here but already gone from moka is still
//! right: answers come from its own deadlines, never from its presence.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::entry::LocalEntry;

/// Shards, so that writers (creating entries) rarely block readers of other runtimes.
const SHARDS: usize = 64;

type Shard = RwLock<HashMap<Box<str>, Arc<LocalEntry>>>;

#[derive(Debug)]
pub(super) struct Index {
    shards: Box<[Shard]>,
}

impl Index {
    pub(super) fn new() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, runtime_id: &str) -> &Shard {
        &self.shards[shard_of(runtime_id.as_bytes())]
    }

    pub(super) fn get(&self, runtime_id: &str) -> Option<Arc<LocalEntry>> {
        self.shard(runtime_id).read().get(runtime_id).cloned()
    }

    /// Whether the runtime's entry says it is alive at `now`, without taking a reference to
    /// it: a batch asks this for every id.
    pub(super) fn is_alive(&self, runtime_id: &str, now: u64) -> bool {
        self.shard(runtime_id)
            .read()
            .get(runtime_id)
            .is_some_and(|entry| entry.is_alive(now))
    }

    /// Indexes `entry` as the runtime's, in place of any other.
    pub(super) fn insert(&self, runtime_id: &str, entry: Arc<LocalEntry>) {
        self.shard(runtime_id)
            .write()
            .insert(runtime_id.into(), entry);
    }

    /// Drops the runtime's entry if it is `entry` (a newer one stays).
    pub(super) fn remove_if_same(&self, runtime_id: &str, entry: &Arc<LocalEntry>) {
        let mut shard = self.shard(runtime_id).write();
        if shard
            .get(runtime_id)
            .is_some_and(|indexed| Arc::ptr_eq(indexed, entry))
        {
            shard.remove(runtime_id);
        }
    }
}

/// Picks a shard: a multiplicative hash of the id's bytes, cheap for short ids. It only spreads
/// ids over the shards (the map inside a shard hashes with its own, seeded hasher), so it need
/// not resist collisions.
fn shard_of(bytes: &[u8]) -> usize {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0_u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    (hash >> 58) as usize % SHARDS
}
