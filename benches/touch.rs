//! What one heartbeat costs on each store, on 100,000 runtimes, next to the floors the
//! layered store is built on.
//!
//! - `RedisStore::touch`: the reference behaviour, one `SET` round trip per beat;
//! - `LayeredStore::touch (coalesced)`: the remote record already covers the beat: one moka
//!   `get` and an atomic store, nothing sent;
//! - `LayeredStore::touch (write-through)`: debounce 0, every beat joins a group-commit pipeline
//!   and waits for it;
//! - `MemoryStore::touch`: a moka `insert`;
//! - the floors: a bare moka `get` and a `parking_lot` `RwLock<HashMap>` read, each with an
//!   atomic store, on the same 100,000 keys.
//!
//! `cargo bench --features full --bench touch` (starts its own redis-server)

mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Ids, RUNTIMES, RedisServer, TTL};
use criterion::{Criterion, criterion_group, criterion_main};
use liveness_store::{LivenessStore, MemoryStore};
use moka::future::Cache;
use parking_lot::RwLock;

fn touch(c: &mut Criterion) {
    let rt = common::runtime();
    let server = RedisServer::start();
    let ids = Ids::new("runtime");

    let moka: Cache<String, Arc<AtomicU64>> = Cache::builder().max_capacity(1_000_000).build();
    let map: RwLock<HashMap<String, AtomicU64>> = RwLock::new(HashMap::new());
    let memory = MemoryStore::new();
    let (redis, coalesced, write_through) = rt.block_on(async {
        let redis = common::redis_store(&server).await;
        let coalesced =
            common::layered_store(&server, Duration::from_secs(30), Duration::from_secs(1)).await;
        let write_through =
            common::layered_store(&server, Duration::ZERO, Duration::from_secs(1)).await;
        for id in &ids.ids {
            moka.insert(id.clone(), Arc::new(AtomicU64::new(0))).await;
            map.write().insert(id.clone(), AtomicU64::new(0));
            memory.touch(id, TTL).await.unwrap();
        }
        common::touch_all(&coalesced, &ids.ids).await;
        (redis, coalesced, write_through)
    });
    assert_eq!(coalesced.stats().remote_writes, RUNTIMES as u64);

    let mut group = c.benchmark_group("touch");
    group.bench_function("floor: RwLock<HashMap> read + atomic store", |b| {
        b.iter(|| {
            if let Some(deadline) = map.read().get(ids.next()) {
                deadline.store(1, Ordering::Relaxed);
            }
        });
    });
    group.bench_function("floor: moka get + atomic store", |b| {
        b.to_async(&rt).iter(|| {
            let (id, moka) = (ids.next(), &moka);
            async move {
                if let Some(deadline) = moka.get(id).await {
                    deadline.store(1, Ordering::Relaxed);
                }
            }
        });
    });
    group.bench_function("LayeredStore::touch (coalesced)", |b| {
        b.to_async(&rt).iter(|| {
            let (id, store) = (ids.next(), &coalesced);
            async move { black_box(store.touch(id, TTL).await).unwrap() }
        });
    });
    group.bench_function("MemoryStore::touch (moka insert)", |b| {
        b.to_async(&rt).iter(|| {
            let (id, store) = (ids.next(), &memory);
            async move { black_box(store.touch(id, TTL).await).unwrap() }
        });
    });
    group.bench_function("RedisStore::touch (one SET per beat)", |b| {
        b.to_async(&rt).iter(|| {
            let (id, store) = (ids.next(), &redis);
            async move { black_box(store.touch(id, TTL).await).unwrap() }
        });
    });
    group.bench_function("LayeredStore::touch (write-through)", |b| {
        b.to_async(&rt).iter(|| {
            let (id, store) = (ids.next(), &write_through);
            async move { black_box(store.touch(id, TTL).await).unwrap() }
        });
    });
    group.finish();
    // The coalesced figure is only that if nothing was written meanwhile.
    assert_eq!(coalesced.stats().remote_writes, RUNTIMES as u64);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = touch
}
criterion_main!(benches);
