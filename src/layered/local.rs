//! The local layer: what this instance knows of each runtime, found at hash-map speed and
//! bounded in number and in time by moka.
//!
//! Two structures hold the entries, and this type alone keeps them in step:
//!
//! - **moka owns them**: it expires each at its own deadline (see `EntryExpiry`) and evicts
//!   past the capacity. Its lookups, though, cost several times a hash-map read (its concurrent
//!   table, access queue and read log), and the hot paths are nothing but lookups: a coalesced
//!   touch is one, a batch is one per id.
//! - **the index finds them**: a sharded table of the same entries, under the same key
//!   allocation (an `Arc<str>` shared with moka, so an id is stored once). A lookup should cost
//!   one cache miss: each id is hashed once (for its shard and its slot), and a slot holds what
//!   a batch reads, the runtime's deadline and, for ids up to 31 bytes, the id itself, in one
//!   64-byte line; it follows no pointer unless the id is longer.
//!
//! The rule: an entry is in the index exactly while moka holds it. It goes into moka first and
//! then into the index, and is taken out again if moka let go of it meanwhile; it leaves the
//! index when moka evicts or expires it (moka's eviction listener) or when a `forget` takes it
//! out, and then only if the index still holds that very entry, so a newer one for the same id,
//! created concurrently, stays. In the moments between, an entry can be in one and not the
//! other: answers are right all the same, because they come from an entry's own deadlines,
//! never from its presence; a missing entry only costs a remote call.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;
use hashbrown::HashTable;
use moka::future::Cache;
use moka::notification::RemovalCause;
use parking_lot::RwLock;

use super::entry::{Clock, EntryExpiry, LocalEntry};

/// Shards of the index, so that writers (creating entries) rarely block readers of other
/// runtimes.
const SHARDS: usize = 64;

/// Ids up to this long are kept in their slot too.
const INLINE: usize = 31;

/// The index and moka, in step.
pub(super) struct Local {
    cache: Cache<Arc<str>, Arc<LocalEntry>>,
    index: Arc<Index>,
}

/// The entries moka holds, by id.
struct Index {
    shards: Box<[RwLock<HashTable<Slot>>]>,
    /// One hash per id, for its shard and its place in the shard: fast, and seeded per store,
    /// so that no choice of ids piles into one place.
    hasher: RandomState,
}

/// One runtime in the index.
#[repr(align(64))]
struct Slot {
    /// The runtime's deadline as its entry holds it, kept here too so that a lookup reads it
    /// without following `entry`; every change to it goes through `Local`.
    alive_until: AtomicU64,
    entry: Arc<LocalEntry>,
    key: Arc<str>,
    /// The id's bytes when it has at most `INLINE`; `inline_len` is 0 otherwise (ids are never
    /// empty).
    inline_len: u8,
    inline: [u8; INLINE],
}

impl Slot {
    fn new(key: Arc<str>, entry: Arc<LocalEntry>) -> Slot {
        let mut inline = [0; INLINE];
        let bytes = key.as_bytes();
        let inline_len = if bytes.len() <= INLINE {
            inline[..bytes.len()].copy_from_slice(bytes);
            u8::try_from(bytes.len()).unwrap_or(0)
        } else {
            0
        };
        Slot {
            alive_until: AtomicU64::new(entry.alive_until_now()),
            entry,
            key,
            inline_len,
            inline,
        }
    }

    fn is(&self, runtime_id: &str) -> bool {
        match usize::from(self.inline_len) {
            0 => &*self.key == runtime_id,
            len => &self.inline[..len] == runtime_id.as_bytes(),
        }
    }
}

impl Local {
    /// A layer of at most `capacity` runtimes, whose entries expire on `clock`'s time.
    pub(super) fn new(capacity: u64, clock: Clock) -> Local {
        let index = Arc::new(Index::new());
        let unindex = Arc::clone(&index);
        let cache = Cache::builder()
            .max_capacity(capacity)
            .expire_after(EntryExpiry { clock })
            // An entry leaving moka leaves the index with it (a replaced one stays: its
            // replacement is indexed by whoever put it there).
            .eviction_listener(move |runtime_id: Arc<Arc<str>>, entry, cause| {
                if cause != RemovalCause::Replaced {
                    unindex.remove_if_same(&runtime_id, &entry);
                }
            })
            .build();
        Local { cache, index }
    }

    /// The runtime's entry, if this instance has one.
    pub(super) fn get(&self, runtime_id: &str) -> Option<Arc<LocalEntry>> {
        self.index.read(runtime_id, |slot| Arc::clone(&slot.entry))
    }

    /// Whether the runtime's entry says it is alive at `now`, from the index alone: a batch
    /// asks this for every id.
    pub(super) fn is_alive(&self, runtime_id: &str, now: u64) -> bool {
        self.index
            .read(runtime_id, |slot| {
                slot.alive_until.load(Ordering::Relaxed) > now
            })
            .unwrap_or(false)
    }

    /// The runtime is alive until `until` at least (a touch, a remote "alive"): its entry and
    /// its slot say so.
    pub(super) fn extend_alive(&self, runtime_id: &str, entry: &LocalEntry, until: u64) {
        entry.extend_alive(until);
        let _ = self.index.read(runtime_id, |slot| {
            // Only the slot of this very entry: a newer one has its own deadline.
            if std::ptr::eq(Arc::as_ptr(&slot.entry), entry) {
                slot.alive_until.fetch_max(until, Ordering::Relaxed);
            }
        });
    }

    /// The runtime's entry, created alive until `alive_until` if it has none. moka decides
    /// which entry is the runtime's; the index follows it.
    pub(super) async fn get_or_create(
        &self,
        runtime_id: &str,
        alive_until: u64,
    ) -> Arc<LocalEntry> {
        let key: Arc<str> = runtime_id.into();
        let entry = self
            .cache
            .entry(Arc::clone(&key))
            .or_insert_with(async { LocalEntry::alive_until(alive_until) })
            .await
            .into_value();
        self.index.insert(key, Arc::clone(&entry));
        // If moka dropped or replaced it meanwhile (a forget, an eviction whose listener ran
        // before the insert above), it must not linger in the index; the next lookup creates
        // the runtime's entry anew.
        match self.cache.get(runtime_id).await {
            Some(current) if Arc::ptr_eq(&current, &entry) => {}
            _ => self.index.remove_if_same(runtime_id, &entry),
        }
        entry
    }

    /// Looks the entry up in moka, which recomputes its expiry from its deadlines (see
    /// `EntryExpiry::expire_after_read`).
    pub(super) async fn refresh_expiry(&self, runtime_id: &str) {
        let _ = self.cache.get(runtime_id).await;
    }

    /// Takes the runtime's entries out of both (`forget`): the one indexed and the one moka
    /// held, if they differ; returns them. An entry a concurrent touch creates meanwhile is
    /// in neither list, and stays in both.
    pub(super) async fn remove(&self, runtime_id: &str) -> Vec<Arc<LocalEntry>> {
        let indexed = self.get(runtime_id);
        let held = self.cache.remove(runtime_id).await;
        let mut taken: Vec<Arc<LocalEntry>> = indexed.into_iter().collect();
        if let Some(held) = held
            && !taken.iter().any(|entry| Arc::ptr_eq(entry, &held))
        {
            taken.push(held);
        }
        for entry in &taken {
            self.index.remove_if_same(runtime_id, entry);
        }
        taken
    }

    /// How many entries moka holds (lapsed ones not yet reclaimed included).
    pub(super) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

impl Index {
    fn new() -> Index {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::default(),
        }
    }

    /// The id's hash and its shard (the hash's top bits; the table uses the low ones).
    fn place(&self, runtime_id: &str) -> (u64, &RwLock<HashTable<Slot>>) {
        let hash = self.hasher.hash_one(runtime_id);
        (hash, &self.shards[(hash >> 58) as usize % SHARDS])
    }

    /// `read` of the runtime's slot, if it has one, under the shard's read lock.
    fn read<T>(&self, runtime_id: &str, read: impl FnOnce(&Slot) -> T) -> Option<T> {
        let (hash, shard) = self.place(runtime_id);
        shard
            .read()
            .find(hash, |slot| slot.is(runtime_id))
            .map(read)
    }

    /// Indexes `entry` as the runtime's, in place of any other.
    fn insert(&self, runtime_id: Arc<str>, entry: Arc<LocalEntry>) {
        let (hash, shard) = self.place(&runtime_id);
        let slot = Slot::new(Arc::clone(&runtime_id), entry);
        let mut table = shard.write();
        match table.find_mut(hash, |slot| slot.is(&runtime_id)) {
            Some(existing) => *existing = slot,
            None => {
                let hasher = &self.hasher;
                table.insert_unique(hash, slot, |slot| hasher.hash_one(&*slot.key));
            }
        }
    }

    /// Drops the runtime's entry if it is `entry` (a newer one stays).
    fn remove_if_same(&self, runtime_id: &str, entry: &Arc<LocalEntry>) {
        let (hash, shard) = self.place(runtime_id);
        let mut table = shard.write();
        if let Ok(found) = table.find_entry(hash, |slot| slot.is(runtime_id))
            && Arc::ptr_eq(&found.get().entry, entry)
        {
            found.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    impl Local {
        /// Whether the index holds exactly the entries moka holds, each under its own id.
        async fn in_step(&self) -> Result<(), String> {
            self.cache.run_pending_tasks().await;
            let mut held = 0;
            for (id, entry) in &self.cache {
                held += 1;
                match self.get(&id) {
                    Some(indexed) if Arc::ptr_eq(&indexed, &entry) => {}
                    other => {
                        return Err(format!("{id}: moka holds one entry, the index {other:?}"));
                    }
                }
            }
            let indexed: usize = self
                .index
                .shards
                .iter()
                .map(|shard| shard.read().len())
                .sum();
            if indexed != held {
                return Err(format!("{indexed} indexed, {held} in moka"));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn past_the_capacity_the_index_follows_what_moka_keeps() {
        let local = Local::new(100, Clock::new());
        for i in 0..1_000 {
            let id = format!("rt-{i}");
            local.get_or_create(&id, 90 * SECOND).await;
        }
        local.in_step().await.unwrap();
        let kept = local.entry_count();
        assert!(kept <= 100, "{kept} entries past a capacity of 100");
        assert!(kept > 0);
        // Whatever is indexed is alive until its deadline; whatever is not costs a remote call.
        for i in 0..1_000 {
            let id = format!("rt-{i}");
            assert_eq!(local.is_alive(&id, SECOND), local.get(&id).is_some());
        }
    }

    #[tokio::test]
    async fn a_forget_takes_out_only_what_it_found() {
        let local = Local::new(1_000, Clock::new());
        let old = local.get_or_create("rt", 90 * SECOND).await;
        // A forget took the entry out of moka; before it unindexes it, a touch creates the
        // runtime's next entry.
        let held = local.cache.remove("rt").await.expect("moka held it");
        assert!(Arc::ptr_eq(&held, &old));
        let new = local.get_or_create("rt", 90 * SECOND).await;
        local.index.remove_if_same("rt", &held);
        let indexed = local.get("rt").expect("the new entry stays indexed");
        assert!(Arc::ptr_eq(&indexed, &new));
        local.in_step().await.unwrap();
        // The whole forget, once the touch is over, takes the new one too.
        let taken = local.remove("rt").await;
        assert_eq!(taken.len(), 1);
        assert!(Arc::ptr_eq(&taken[0], &new));
        assert!(local.get("rt").is_none());
        local.in_step().await.unwrap();
    }
}
