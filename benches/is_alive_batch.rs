//! What a sweeper's batch costs: `RedisStore` (chunked `MGET`s in one pipeline) against
//! `LayeredStore` when 100%, 90%, 50% and 0% of the ids are alive in its local layer, at 1,
//! 100, 1,000 and 10,000 ids out of 100,000 runtimes.
//!
//! Every id is alive in Redis. The layered store's local hits are runtimes it took the touch
//! of; the others were written by another instance, and remote "alive" answers are not reused
//! (`remote_positive_ttl` 0), so every iteration asks Redis about exactly the misses.
//!
//! `cargo bench --features full --bench is_alive_batch` (starts its own redis-server)

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{Ids, RedisServer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use liveness_store::LivenessStore;

const SIZES: [usize; 4] = [1, 100, 1_000, 10_000];
const LOCAL_PERCENTS: [usize; 4] = [100, 90, 50, 0];

fn is_alive_batch(c: &mut Criterion) {
    let rt = common::runtime();
    let server = RedisServer::start();
    let ids = Ids::new("runtime");
    let (redis, layered) = rt.block_on(async {
        let redis = common::redis_store(&server).await;
        common::touch_all(&redis, &ids.ids).await;
        let mut layered = Vec::new();
        for percent in LOCAL_PERCENTS {
            let store =
                common::layered_store(&server, Duration::from_secs(30), Duration::ZERO).await;
            // Local hits spread evenly: every id whose index falls in the first `percent` of
            // each hundred.
            let local: Vec<String> = ids
                .ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 100 < percent)
                .map(|(_, id)| id.clone())
                .collect();
            common::touch_all(&store, &local).await;
            layered.push((percent, store));
        }
        (redis, layered)
    });

    let mut group = c.benchmark_group("is_alive_batch");
    for size in SIZES {
        // Consecutive ids, so each batch holds the local share of the whole.
        let batches = common::Batches::new(&ids.ids, size);
        let batch = || batches.next();
        group.throughput(Throughput::Elements(size as u64));
        group.bench_with_input(BenchmarkId::new("RedisStore", size), &size, |b, _| {
            b.to_async(&rt).iter(|| {
                let (batch, store) = (batch(), &redis);
                async move { black_box(store.is_alive_batch(batch).await.unwrap()) }
            });
        });
        for (percent, store) in &layered {
            let name = format!("LayeredStore {percent}% local");
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                b.to_async(&rt).iter(|| {
                    let batch = batch();
                    async move {
                        let answers = store.is_alive_batch(batch).await.unwrap();
                        debug_assert!(answers.iter().all(|alive| *alive));
                        black_box(answers)
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = is_alive_batch
}
criterion_main!(benches);
