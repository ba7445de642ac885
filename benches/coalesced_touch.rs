//! What a coalesced heartbeat costs: the layered store's touch when the remote record already
//! covers it, next to the floors it is built on (one moka `get`, one `RwLock<HashMap>` read)
//! and to `MemoryStore::touch` (a moka `insert`), on 100,000 runtimes.
//!
//! `cargo bench --features layered,memory --bench coalesced_touch`

use std::cell::Cell;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use liveness_store::{LayeredStore, LivenessStore, MemoryStore};
use moka::future::Cache;
use parking_lot::RwLock;

const RUNTIMES: usize = 100_000;
const TTL: Duration = Duration::from_secs(90);

/// Cycles through the ids so every iteration looks up a different runtime, without
/// allocating: each iteration borrows its id.
struct Ids {
    ids: Vec<String>,
    next: Cell<usize>,
}

impl Ids {
    fn new() -> Self {
        Ids {
            ids: (0..RUNTIMES).map(|i| format!("runtime-{i}")).collect(),
            next: Cell::new(0),
        }
    }

    fn next(&self) -> &str {
        let next = (self.next.get() + 1) % self.ids.len();
        self.next.set(next);
        &self.ids[next]
    }
}

fn touch_100k(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ids = Ids::new();

    let moka: Cache<String, Arc<AtomicU64>> = Cache::builder().max_capacity(1_000_000).build();
    let map: RwLock<HashMap<String, AtomicU64>> = RwLock::new(HashMap::new());
    let layered = LayeredStore::new(MemoryStore::new());
    let memory = MemoryStore::new();
    rt.block_on(async {
        for id in &ids.ids {
            moka.insert(id.clone(), Arc::new(AtomicU64::new(0))).await;
            map.write().insert(id.clone(), AtomicU64::new(0));
            layered.touch(id, TTL).await.unwrap();
            memory.touch(id, TTL).await.unwrap();
        }
    });
    let writes_before = layered.stats().remote_writes;

    let mut group = c.benchmark_group("touch_100k");
    group.bench_function("floor: RwLock<HashMap> read + atomic store", |b| {
        b.iter(|| {
            if let Some(deadline) = map.read().get(ids.next()) {
                deadline.store(1, Ordering::Relaxed);
            }
        });
    });
    group.bench_function("floor: moka get + atomic store", |b| {
        b.to_async(&rt).iter(|| {
            let id = ids.next();
            let moka = &moka;
            async move {
                if let Some(deadline) = moka.get(id).await {
                    deadline.store(1, Ordering::Relaxed);
                }
            }
        });
    });
    group.bench_function("LayeredStore::touch (coalesced)", |b| {
        b.to_async(&rt).iter(|| {
            let id = ids.next();
            let layered = &layered;
            async move { black_box(layered.touch(id, TTL).await) }
        });
    });
    group.bench_function("MemoryStore::touch (moka insert)", |b| {
        b.to_async(&rt).iter(|| {
            let id = ids.next();
            let memory = &memory;
            async move { black_box(memory.touch(id, TTL).await) }
        });
    });
    group.finish();
    // The layered figure is only a coalesced touch if nothing was written meanwhile.
    assert_eq!(layered.stats().remote_writes, writes_before);
}

criterion_group!(benches, touch_100k);
criterion_main!(benches);
