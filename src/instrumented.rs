//! [`Instrumented`]: a store's counters, health and call latencies through the `metrics`
//! facade.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::{Health, HealthStatus, Lease, LeaseKey, LivenessStore, Result, StoreStats};

/// How often calls publish the inner store's [`stats`](LivenessStore::stats) and
/// [`health`](LivenessStore::health) at most; [`Instrumented::publish`] does it at once.
pub const METRICS_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// A store that reports what it does through the [`metrics`] facade (feature `metrics`).
///
/// Every [`LivenessStore`] method forwards to the inner store unchanged. On the way, the
/// wrapper records each call's latency in a histogram, counts failed calls, and publishes the
/// inner store's [`stats`](LivenessStore::stats) and [`health`](LivenessStore::health) as
/// counters and gauges, at most once per [`METRICS_PUBLISH_INTERVAL`] from calls and at once
/// from [`publish`](Self::publish) (call it before rendering a scrape, so the page is
/// current). The cost per call is two clock reads and a histogram record.
///
/// | metric | kind | from |
/// |---|---|---|
/// | `liveness_store_touch_seconds` | histogram | each `touch` |
/// | `liveness_store_touch_many_seconds` | histogram | each `touch_many` |
/// | `liveness_store_is_alive_batch_seconds` | histogram | each `is_alive_batch` (and `is_alive`) |
/// | `liveness_store_forget_seconds` | histogram | each `forget` |
/// | `liveness_store_failed_calls_total{op}` | counter | calls that returned `Err`, by `op` |
/// | `liveness_store_touches_total` | counter | [`StoreStats::touches`] |
/// | `liveness_store_coalesced_touches_total` | counter | [`StoreStats::coalesced_touches`] |
/// | `liveness_store_remote_writes_total` | counter | [`StoreStats::remote_writes`] |
/// | `liveness_store_remote_round_trips_total{op="write"}` | counter | [`StoreStats::remote_write_batches`] |
/// | `liveness_store_remote_round_trips_total{op="lookup"}` | counter | [`StoreStats::remote_lookup_batches`] |
/// | `liveness_store_local_hits_total` | counter | [`StoreStats::local_hits`] |
/// | `liveness_store_remote_lookups_total` | counter | [`StoreStats::remote_lookups`] |
/// | `liveness_store_errors_total` | counter | [`StoreStats::errors`] |
/// | `liveness_store_epoch_resets_total` | counter | [`StoreStats::epoch_resets`] |
/// | `liveness_store_forget_broadcasts_received_total` | counter | [`StoreStats::forget_broadcasts_received`] |
/// | `liveness_store_health` | gauge | 0 healthy, 1 degraded, 2 down ([`Health::status`]) |
/// | `liveness_store_data_losses` | gauge | [`Health::data_losses`] |
///
/// Only the layered store keeps [`StoreStats`]; the others report zeros there, while the
/// histograms, failed calls and health work for every backend.
///
/// The metric handles are registered with the recorder installed when the wrapper is built,
/// as with any `metrics` handle: install the recorder (an exporter) first. One process with
/// two wrapped stores publishes both under the same names; wrap one.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// use std::time::Duration;
/// use liveness_store::{Instrumented, LivenessStore, StoreConfig};
///
/// // Install the exporter's recorder here, e.g.
/// // metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()
/// let store = Instrumented::new(liveness_store::open(&StoreConfig::from_env()?).await?);
/// store.touch("runtime-7", Duration::from_secs(90)).await?;
/// store.publish(); // before rendering a scrape
/// # Ok(())
/// # }
/// ```
pub struct Instrumented<S> {
    inner: S,
    metrics: Handles,
    /// The origin of `next_publish_ms`.
    created: Instant,
    /// Milliseconds since `created` before which calls do not publish again.
    next_publish_ms: AtomicU64,
}

/// The handles, looked up once: recording through a handle skips the recorder's key lookup.
struct Handles {
    touch_seconds: Histogram,
    touch_many_seconds: Histogram,
    is_alive_batch_seconds: Histogram,
    forget_seconds: Histogram,
    failed_touch: Counter,
    failed_touch_many: Counter,
    failed_is_alive_batch: Counter,
    touches: Counter,
    coalesced_touches: Counter,
    remote_writes: Counter,
    remote_write_round_trips: Counter,
    remote_lookup_round_trips: Counter,
    local_hits: Counter,
    remote_lookups: Counter,
    errors: Counter,
    epoch_resets: Counter,
    forget_broadcasts_received: Counter,
    health: Gauge,
    data_losses: Gauge,
}

impl Handles {
    fn register() -> Handles {
        describe();
        Handles {
            touch_seconds: metrics::histogram!("liveness_store_touch_seconds"),
            touch_many_seconds: metrics::histogram!("liveness_store_touch_many_seconds"),
            is_alive_batch_seconds: metrics::histogram!("liveness_store_is_alive_batch_seconds"),
            forget_seconds: metrics::histogram!("liveness_store_forget_seconds"),
            failed_touch: metrics::counter!("liveness_store_failed_calls_total", "op" => "touch"),
            failed_touch_many: metrics::counter!(
                "liveness_store_failed_calls_total", "op" => "touch_many"
            ),
            failed_is_alive_batch: metrics::counter!(
                "liveness_store_failed_calls_total", "op" => "is_alive_batch"
            ),
            touches: metrics::counter!("liveness_store_touches_total"),
            coalesced_touches: metrics::counter!("liveness_store_coalesced_touches_total"),
            remote_writes: metrics::counter!("liveness_store_remote_writes_total"),
            remote_write_round_trips: metrics::counter!(
                "liveness_store_remote_round_trips_total", "op" => "write"
            ),
            remote_lookup_round_trips: metrics::counter!(
                "liveness_store_remote_round_trips_total", "op" => "lookup"
            ),
            local_hits: metrics::counter!("liveness_store_local_hits_total"),
            remote_lookups: metrics::counter!("liveness_store_remote_lookups_total"),
            errors: metrics::counter!("liveness_store_errors_total"),
            epoch_resets: metrics::counter!("liveness_store_epoch_resets_total"),
            forget_broadcasts_received: metrics::counter!(
                "liveness_store_forget_broadcasts_received_total"
            ),
            health: metrics::gauge!("liveness_store_health"),
            data_losses: metrics::gauge!("liveness_store_data_losses"),
        }
    }
}

/// Help texts for the exporter's page.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for (name, what) in [
        ("liveness_store_touch_seconds", "latency of touch"),
        ("liveness_store_touch_many_seconds", "latency of touch_many"),
        (
            "liveness_store_is_alive_batch_seconds",
            "latency of is_alive_batch",
        ),
        ("liveness_store_forget_seconds", "latency of forget"),
    ] {
        describe_histogram!(name, Unit::Seconds, what);
    }
    for (name, what) in [
        (
            "liveness_store_failed_calls_total",
            "calls that returned an error (the caller fell back to its database)",
        ),
        ("liveness_store_touches_total", "touches taken"),
        (
            "liveness_store_coalesced_touches_total",
            "touches answered without a remote write",
        ),
        (
            "liveness_store_remote_writes_total",
            "records written to the remote store",
        ),
        (
            "liveness_store_remote_round_trips_total",
            "round trips to the remote store, by op",
        ),
        (
            "liveness_store_local_hits_total",
            "ids of is_alive_batch answered from local memory",
        ),
        (
            "liveness_store_remote_lookups_total",
            "ids of is_alive_batch asked of the remote store",
        ),
        ("liveness_store_errors_total", "remote calls that failed"),
        (
            "liveness_store_epoch_resets_total",
            "coalescing resets after the remote lost its data",
        ),
        (
            "liveness_store_forget_broadcasts_received_total",
            "forgets announced by other instances that dropped a local entry",
        ),
    ] {
        describe_counter!(name, what);
    }
    describe_gauge!(
        "liveness_store_health",
        "backend health: 0 healthy, 1 degraded, 2 down"
    );
    describe_gauge!(
        "liveness_store_data_losses",
        "times the backend was found to have lost its data"
    );
}

impl<S: LivenessStore> Instrumented<S> {
    /// Wraps `inner`, registering the metric handles with the recorder installed now.
    #[must_use]
    pub fn new(inner: S) -> Self {
        Instrumented {
            inner,
            metrics: Handles::register(),
            created: Instant::now(),
            next_publish_ms: AtomicU64::new(0),
        }
    }

    /// The wrapped store.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Publishes the inner store's [`stats`](LivenessStore::stats) and
    /// [`health`](LivenessStore::health) now (counters as absolute values).
    pub fn publish(&self) {
        let stats: StoreStats = self.inner.stats();
        let health: Health = self.inner.health();
        let m = &self.metrics;
        m.touches.absolute(stats.touches);
        m.coalesced_touches.absolute(stats.coalesced_touches);
        m.remote_writes.absolute(stats.remote_writes);
        m.remote_write_round_trips
            .absolute(stats.remote_write_batches);
        m.remote_lookup_round_trips
            .absolute(stats.remote_lookup_batches);
        m.local_hits.absolute(stats.local_hits);
        m.remote_lookups.absolute(stats.remote_lookups);
        m.errors.absolute(stats.errors);
        m.epoch_resets.absolute(stats.epoch_resets);
        m.forget_broadcasts_received
            .absolute(stats.forget_broadcasts_received);
        m.health.set(match health.status {
            HealthStatus::Healthy => 0.0,
            HealthStatus::Degraded => 1.0,
            HealthStatus::Down => 2.0,
        });
        // Precision past 2^53 losses is not a concern.
        #[allow(clippy::cast_precision_loss)]
        m.data_losses.set(health.data_losses as f64);
    }

    /// Records a call that began at `start`, and publishes if the interval has passed.
    fn finish<T>(
        &self,
        start: Instant,
        histogram: &Histogram,
        failed: Option<&Counter>,
        result: &Result<T>,
    ) {
        let end = Instant::now();
        histogram.record(end.duration_since(start).as_secs_f64());
        if let (Some(failed), Err(_)) = (failed, result) {
            failed.increment(1);
        }
        let now_ms =
            u64::try_from(end.duration_since(self.created).as_millis()).unwrap_or(u64::MAX);
        let next = self.next_publish_ms.load(Relaxed);
        // One caller per interval wins the exchange and publishes; the rest go on.
        if now_ms >= next {
            let interval = u64::try_from(METRICS_PUBLISH_INTERVAL.as_millis()).unwrap_or(u64::MAX);
            if self
                .next_publish_ms
                .compare_exchange(next, now_ms.saturating_add(interval), Relaxed, Relaxed)
                .is_ok()
            {
                self.publish();
            }
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Instrumented<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<S: LivenessStore> LivenessStore for Instrumented<S> {
    fn available(&self) -> bool {
        self.inner.available()
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        let start = Instant::now();
        let result = self.inner.touch(runtime_id, ttl).await;
        let m = &self.metrics;
        self.finish(start, &m.touch_seconds, Some(&m.failed_touch), &result);
        result
    }

    async fn touch_lease(
        &self,
        runtime_id: &str,
        ttl: Duration,
        presented: Option<&Lease>,
    ) -> Result<Lease> {
        let start = Instant::now();
        let result = self.inner.touch_lease(runtime_id, ttl, presented).await;
        let m = &self.metrics;
        self.finish(start, &m.touch_seconds, Some(&m.failed_touch), &result);
        result
    }

    fn lease_key(&self, runtime_id: &str) -> Option<LeaseKey> {
        self.inner.lease_key(runtime_id)
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        let start = Instant::now();
        let result = self.inner.is_alive_batch(runtime_ids).await;
        let m = &self.metrics;
        self.finish(
            start,
            &m.is_alive_batch_seconds,
            Some(&m.failed_is_alive_batch),
            &result,
        );
        result
    }

    async fn forget(&self, runtime_id: &str) {
        let start = Instant::now();
        self.inner.forget(runtime_id).await;
        self.finish(start, &self.metrics.forget_seconds, None, &Ok(()));
    }

    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        let start = Instant::now();
        let result = self.inner.touch_many(beats).await;
        let m = &self.metrics;
        self.finish(
            start,
            &m.touch_many_seconds,
            Some(&m.failed_touch_many),
            &result,
        );
        result
    }

    async fn is_alive(&self, runtime_id: &str) -> Result<bool> {
        // A batch of one: same histogram, same failure count.
        let start = Instant::now();
        let result = self.inner.is_alive(runtime_id).await;
        let m = &self.metrics;
        self.finish(
            start,
            &m.is_alive_batch_seconds,
            Some(&m.failed_is_alive_batch),
            &result,
        );
        result
    }

    fn health(&self) -> Health {
        self.inner.health()
    }

    fn data_losses(&self) -> u64 {
        self.inner.data_losses()
    }

    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoopStore;

    /// Forwarding: the wrapper changes no answer, with or without a recorder installed.
    #[tokio::test]
    async fn forwards_every_answer() {
        let store = Instrumented::new(NoopStore::new());
        assert!(!store.available());
        assert!(store.touch("rt-1", Duration::from_secs(1)).await.is_ok());
        assert!(store.is_alive_batch(&["rt-1"]).await.is_err());
        assert!(store.is_alive("rt-1").await.is_err());
        assert!(store.touch("", Duration::from_secs(1)).await.is_err());
        store.forget("rt-1").await;
        store.publish();
        assert_eq!(store.stats(), StoreStats::default());
        assert!(store.health().is_healthy());
        assert_eq!(store.data_losses(), 0);
        assert!(format!("{store:?}").contains("NoopStore"));
    }
}
