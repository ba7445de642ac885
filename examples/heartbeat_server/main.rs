//! An example heartbeat server: axum, SQLite (rusqlite) as the authority, liveness-store in
//! front of it, Prometheus metrics.
//!
//! ```sh
//! cargo run --example heartbeat_server --features full
//! LIVENESS_BACKEND=layered LIVENESS_REDIS_URL=redis://127.0.0.1:6379/ \
//!     cargo run --example heartbeat_server --features full -- --listen 127.0.0.1:8080
//! curl -X POST localhost:8080/runtimes/rt-1/heartbeat
//! curl localhost:8080/runtimes/rt-1
//! curl localhost:8080/metrics
//! ```
//!
//! `--help` lists the flags; the logic is in `app.rs`, shared with `tests/it/heartbeat_server.rs`.
#![forbid(unsafe_code)]

// The end-to-end test uses a few items the binary does not.
#[allow(dead_code)]
mod app;

use std::process::ExitCode;

use liveness_store::{Instrumented, StoreConfig};
use metrics_exporter_prometheus::PrometheusBuilder;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{}", app::USAGE);
        return ExitCode::SUCCESS;
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Every message here is ours or the store's, and the store redacts passwords.
            eprintln!("heartbeat_server: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Vec<String>) -> Result<(), app::StartError> {
    let settings = app::Settings::parse(args, |name| std::env::var(name).ok())?;
    // The recorder first: the store's metric handles bind to the recorder in place when it is
    // wrapped.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let config = StoreConfig::from_env()?;
    let store = Instrumented::new(liveness_store::open(&config).await?);
    let server = app::start(settings, store, prometheus).await?;
    println!("listening on http://{}", server.addr);
    // Serve until the process is stopped (Ctrl-C ends it).
    std::future::pending::<()>().await;
    Ok(())
}
