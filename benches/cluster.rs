//! The Redis Cluster backend against one Redis, side by side in one run:
//!
//! - `cluster_is_alive_batch`: a sweep of 100, 1,000 and 10,000 ids out of 100,000 runtimes,
//!   all alive, on `ClusterStore` over 3 masters (no replicas) and on `RedisStore` over a
//!   `redis-server` of its own. The ids' keys spread over the slots, so a batch becomes one
//!   pipeline per master holding one `GET` (or `MGET`) per slot, against `RedisStore`'s one
//!   `MGET` per 1,000 keys. Then 1,000 ids that are all dead, for which the cluster store also
//!   reads each slot's epoch record.
//! - `cluster_touch`: heartbeats from 256 concurrent tasks, each touching its own runtime, on
//!   `ClusterStore` over 3 masters and over a one-master cluster, with `RedisStore` as the
//!   reference line; throughput in touches per second.
//!
//! `cargo bench --features full --bench cluster` (starts its own redis-server and clusters; needs
//! `redis-cli` to form the 3-master one)

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use common::{Batches, Ids, RedisCluster, RedisServer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use liveness_store::LivenessStore;

const SIZES: [usize; 3] = [100, 1_000, 10_000];
const TASKS: usize = 256;

fn cluster_is_alive_batch(c: &mut Criterion) {
    let rt = common::runtime();
    let server = RedisServer::start();
    let cluster = RedisCluster::start_with(3, 0);
    let ids = Ids::new("runtime");
    let stores: Vec<(&str, Box<dyn LivenessStore>)> = rt.block_on(async {
        let redis = common::redis_store(&server).await;
        let clustered = common::cluster_store(&cluster).await;
        common::touch_all(&redis, &ids.ids).await;
        common::touch_all(&clustered, &ids.ids).await;
        vec![
            ("RedisStore", Box::new(redis) as Box<dyn LivenessStore>),
            ("ClusterStore 3 masters", Box::new(clustered)),
        ]
    });
    // Every id is alive in both, so every answer below is "alive".
    let all: Vec<&str> = ids.ids.iter().map(String::as_str).collect();
    for (name, store) in &stores {
        let answers = rt.block_on(store.is_alive_batch(&all[..10_000])).unwrap();
        assert!(answers.iter().all(|alive| *alive), "{name}: an id is dead");
    }

    let mut group = c.benchmark_group("cluster_is_alive_batch");
    for size in SIZES {
        let batches = Batches::new(&ids.ids, size);
        group.throughput(Throughput::Elements(size as u64));
        // Criterion's default 100 samples would take minutes at 10,000 ids.
        group.sample_size(if size >= 10_000 { 20 } else { 100 });
        for (name, store) in &stores {
            group.bench_with_input(BenchmarkId::new(*name, size), &size, |b, _| {
                b.to_async(&rt).iter(|| {
                    let batch = batches.next();
                    async move { black_box(store.is_alive_batch(batch).await.unwrap()) }
                });
            });
        }
    }
    // A sweep of runtimes that all stopped: every answer "dead", which on the cluster costs a
    // read of each slot's epoch record after the keys (one more round trip).
    let stopped = Ids::new("stopped");
    let batches = Batches::new(&stopped.ids, 1_000);
    group.throughput(Throughput::Elements(1_000));
    group.sample_size(100);
    for (name, store) in &stores {
        let name = format!("{name}, all dead");
        group.bench_with_input(BenchmarkId::new(name, 1_000), &1_000, |b, _| {
            b.to_async(&rt).iter(|| {
                let batch = batches.next();
                async move { black_box(store.is_alive_batch(batch).await.unwrap()) }
            });
        });
    }
    group.finish();
}

fn cluster_touch(c: &mut Criterion) {
    let rt = common::runtime();
    let server = RedisServer::start();
    let three = RedisCluster::start_with(3, 0);
    let one = RedisCluster::start_with(1, 0);
    let ids = Arc::new(Ids::new("runtime").ids);
    let stores: Vec<(&str, Arc<dyn LivenessStore>)> = rt.block_on(async {
        vec![
            (
                "ClusterStore 3 masters",
                Arc::new(common::cluster_store(&three).await) as Arc<dyn LivenessStore>,
            ),
            (
                "ClusterStore 1 master",
                Arc::new(common::cluster_store(&one).await),
            ),
            ("RedisStore", Arc::new(common::redis_store(&server).await)),
        ]
    });
    let mut group = c.benchmark_group("cluster_touch");
    // One iteration is one touch by every task.
    group.throughput(Throughput::Elements(TASKS as u64));
    for (name, store) in &stores {
        group.bench_with_input(BenchmarkId::new(*name, TASKS), &TASKS, |b, &tasks| {
            b.to_async(&rt).iter_custom(|iters| {
                common::touch_rounds(Arc::clone(store), Arc::clone(&ids), tasks, iters)
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = cluster_is_alive_batch, cluster_touch
}
criterion_main!(benches);
