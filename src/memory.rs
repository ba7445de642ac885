//! The in-process backend: a moka cache with one expiry per entry.

use std::time::{Duration, Instant as StdInstant};

use moka::Expiry;
use moka::future::Cache;
use tokio::time::Instant;

use crate::{LivenessStore, Result, validate};

/// Liveness records in this process's memory, for a server that runs as one instance.
///
/// Each record keeps its own deadline and answers come from that deadline, not from whether
/// moka still holds the entry: moka expires lazily, so a lapsed runtime is never reported
/// alive. The cache has no capacity bound on purpose: an evicted unexpired entry would be a
/// false "dead" (invariant 1), so memory is bounded by the runtimes alive within their ttl,
/// and moka reclaims each entry once its ttl has passed.
///
/// A touch replaces the previous record, ttl included, as Redis's `SET ... PX` does.
///
/// ```
/// use std::time::Duration;
/// use liveness_store::{LivenessStore, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// let store = MemoryStore::new();
/// store.touch("rt-1", Duration::from_secs(90)).await?;
/// assert_eq!(store.is_alive_batch(&["rt-1", "rt-2"]).await?, vec![true, false]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    records: Cache<String, Record>,
}

/// One runtime's record: when it lapses, and the ttl that set it (for moka's expiry).
#[derive(Debug, Clone, Copy)]
struct Record {
    deadline: Instant,
    ttl: Duration,
}

impl Record {
    fn is_live(&self, now: Instant) -> bool {
        now < self.deadline
    }
}

/// Tells moka to drop each record once its own ttl has passed.
struct RecordExpiry;

impl Expiry<String, Record> for RecordExpiry {
    fn expire_after_create(&self, _: &String, record: &Record, _: StdInstant) -> Option<Duration> {
        Some(record.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        record: &Record,
        _: StdInstant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(record.ttl)
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        MemoryStore {
            records: Cache::builder().expire_after(RecordExpiry).build(),
        }
    }

    /// How many records the cache holds, lapsed ones not yet reclaimed included.
    #[must_use]
    pub fn entry_count(&self) -> u64 {
        self.records.entry_count()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl LivenessStore for MemoryStore {
    fn available(&self) -> bool {
        true
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        validate::beat(runtime_id, ttl)?;
        let deadline = Instant::now() + ttl;
        self.records
            .insert(runtime_id.to_owned(), Record { deadline, ttl })
            .await;
        Ok(())
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        validate::runtime_ids(runtime_ids)?;
        let now = Instant::now();
        let mut answers = Vec::with_capacity(runtime_ids.len());
        for id in runtime_ids {
            let record = self.records.get(*id).await;
            answers.push(record.is_some_and(|r| r.is_live(now)));
        }
        Ok(answers)
    }

    async fn forget(&self, runtime_id: &str) {
        if validate::runtime_id(runtime_id).is_ok() {
            self.records.invalidate(runtime_id).await;
        }
    }
}
