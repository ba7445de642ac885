//! Memory per tracked runtime at 1,000,000 runtimes: `MemoryStore`, and the local layer of a
//! `LayeredStore` (over a `NoopStore`, so that nothing else is counted).
//!
//! Measured as the growth of the process's resident set while the store takes one touch per
//! runtime, each store in a child process of its own (freed memory stays with the allocator, so
//! two stores measured in one process would share pages). The ids themselves are allocated
//! before the measurement starts; the copies the store keeps are counted.
//!
//! `cargo bench --features full --bench memory_per_runtime`

use std::process::Command;
use std::time::Duration;

use liveness_store::{LayeredStore, LivenessStore, MemoryStore, NoopStore};

const RUNTIMES: usize = 1_000_000;
const TTL: Duration = Duration::from_secs(90);
const CHILD_ARG: &str = "--measure-store";
const STORES: [&str; 2] = ["MemoryStore", "LayeredStore (local layer)"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == CHILD_ARG) {
        let store = args.get(at + 1).expect("a store name");
        println!("{}", measure(store));
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only check that
    // it builds and runs, on a small scale.
    if !args.iter().any(|arg| arg == "--bench") {
        return;
    }
    println!("memory per runtime at {RUNTIMES} runtimes (resident set growth / runtimes):");
    for store in STORES {
        let output = Command::new(std::env::current_exe().expect("this bench's path"))
            .args([CHILD_ARG, store])
            .output()
            .expect("run the measuring child");
        assert!(output.status.success(), "{store}: {output:?}");
        let bytes = String::from_utf8_lossy(&output.stdout);
        println!("  {store:<28} {} bytes", bytes.trim());
    }
}

/// Touches `RUNTIMES` runtimes on `store` and returns the resident-set growth per runtime.
fn measure(store: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let ids: Vec<String> = (0..RUNTIMES).map(|i| format!("runtime-{i}")).collect();
    rt.block_on(async {
        let store: Box<dyn LivenessStore> = match store {
            "MemoryStore" => Box::new(MemoryStore::new()),
            _ => Box::new(LayeredStore::new(NoopStore::new())),
        };
        let before = resident_bytes();
        for id in &ids {
            store.touch(id, TTL).await.expect("a valid beat");
        }
        // Every runtime must still be there for the figure to mean anything.
        let sample: Vec<&str> = ids.iter().step_by(1_000).map(String::as_str).collect();
        let alive = store.is_alive_batch(&sample).await;
        let after = resident_bytes();
        if let Ok(alive) = alive {
            assert!(alive.iter().all(|a| *a));
        }
        (after - before) / RUNTIMES as u64
    })
}

/// The resident set of this process, from `/proc/self/statm` (Linux).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("statm's resident field");
    pages * 4096
}
