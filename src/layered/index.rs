//! A plain hash index of the local entries, for lookups at hash-map speed.
//!
//! moka owns the entries: it expires them at their deadlines and bounds their number. But one
//! moka lookup costs several times a `RwLock<HashMap>` read (its concurrent table, access
//! queue and read log), and the hot paths are nothing but lookups: a coalesced touch is one,
//! a batch is one per id. So every entry moka holds is also here, and moka's eviction
//! listener takes it out again. An entry found here but already gone from moka is still
//! right: answers come from its own deadlines, never from its presence.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use parking_lot::RwLock;

use super::entry::LocalEntry;

/// Shards, so that writers (creating entries) rarely block readers of other runtimes.
const SHARDS: usize = 64;

type Shard = RwLock<HashMap<Box<str>, Arc<LocalEntry>>>;

#[derive(Debug)]
pub(super) struct Index {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Index {
    pub(super) fn new() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, runtime_id: &str) -> &Shard {
        let hash = self.hasher.hash_one(runtime_id);
        // The high bits: the table inside the shard uses its own hasher.
        &self.shards[(hash >> 58) as usize % SHARDS]
    }

    pub(super) fn get(&self, runtime_id: &str) -> Option<Arc<LocalEntry>> {
        self.shard(runtime_id).read().get(runtime_id).cloned()
    }

    /// Indexes `entry` as the runtime's, in place of any other.
    pub(super) fn insert(&self, runtime_id: &str, entry: Arc<LocalEntry>) {
        self.shard(runtime_id).write().insert(runtime_id.into(), entry);
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

    pub(super) fn remove(&self, runtime_id: &str) {
        self.shard(runtime_id).write().remove(runtime_id);
    }
}
