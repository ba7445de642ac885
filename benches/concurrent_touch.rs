//! Heartbeats arriving at once from many tasks, each on its own runtime: `RedisStore` (one
//! `SET` per touch; concurrent calls pipeline on the pool's multiplexed connections) against
//! `LayeredStore` writing every touch through (debounce 0), whose group commit gathers the
//! waiting writes into shared pipelines. Throughput is touches per second.
//!
//! `cargo bench --features full --bench concurrent_touch` (starts its own redis-server)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Ids, RedisServer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use liveness_store::LivenessStore;

const TASKS: [usize; 3] = [1, 16, 256];

fn concurrent_touch(c: &mut Criterion) {
    let rt = common::runtime();
    let server = RedisServer::start();
    let ids = Arc::new(Ids::new("runtime").ids);
    let stores: Vec<(&str, Arc<dyn LivenessStore>)> = rt.block_on(async {
        vec![
            (
                "RedisStore",
                Arc::new(common::redis_store(&server).await) as Arc<dyn LivenessStore>,
            ),
            (
                "LayeredStore write-through",
                Arc::new(common::layered_store(&server, Duration::ZERO, Duration::ZERO).await),
            ),
        ]
    });
    let mut group = c.benchmark_group("concurrent_touch");
    for tasks in TASKS {
        // One iteration is one touch by every task.
        group.throughput(Throughput::Elements(tasks as u64));
        for (name, store) in &stores {
            group.bench_with_input(BenchmarkId::new(*name, tasks), &tasks, |b, &tasks| {
                b.to_async(&rt).iter_custom(|iters| {
                    common::touch_rounds(Arc::clone(store), Arc::clone(&ids), tasks, iters)
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
    targets = concurrent_touch
}
criterion_main!(benches);
