use liveness_store::{ClusterStore, LivenessStore};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let store = ClusterStore::builder(["redis://127.0.0.1:7101/"])
        .op_timeout(Duration::from_secs(5))
        .recovery_floor(Duration::ZERO)
        .build()
        .await
        .unwrap();
    let ids: Vec<String> = (0..100_000).map(|i| format!("runtime-{i}")).collect();
    for chunk in ids.chunks(1000) {
        let beats: Vec<(&str, Duration)> = chunk
            .iter()
            .map(|id| (id.as_str(), Duration::from_secs(600)))
            .collect();
        store.touch_many(&beats).await.unwrap();
    }
    for _ in 0..3 {
        let start = Instant::now();
        for n in 0..300 {
            let refs: Vec<&str> = ids[(n * 1000) % 99_000..(n * 1000) % 99_000 + 1000]
                .iter()
                .map(String::as_str)
                .collect();
            store.is_alive_batch(&refs).await.unwrap();
        }
        println!("batch 1000: {:?}", start.elapsed() / 300);
    }
}
