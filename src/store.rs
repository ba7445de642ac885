//! The [`LivenessStore`] trait: the one interface every backend implements.

use std::fmt::Debug;
use std::time::Duration;

use crate::{Health, Lease, LeaseKey, Result, StoreStats, validate};

/// Short-lived "this runtime heartbeated recently" records.
///
/// The interface mirrors the reference Go store and keeps its fall-back contract: a caller
/// that gets an `Err` from [`touch`](Self::touch) writes the heartbeat to its database instead,
/// and a caller that gets an `Err` from [`is_alive_batch`](Self::is_alive_batch) trusts its
/// database's stale window. Errors never leave a partial effect the caller must undo.
///
/// The trait is object safe, so a server can hold an `Arc<dyn LivenessStore>` and pick the
/// backend at run time with [`open`](crate::open).
#[async_trait::async_trait]
pub trait LivenessStore: Send + Sync + Debug {
    /// Whether a real backend is wired in. `false` means the caller's database is the only
    /// truth (the [`NoopStore`](crate::NoopStore)); it says nothing about the backend's health.
    fn available(&self) -> bool;

    /// Records a heartbeat of `runtime_id` that stays alive for `ttl`.
    ///
    /// Invalid input (see [`validate`](crate::validate)) is an `Err` and reaches no backend.
    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()>;

    /// Liveness of many runtimes: one entry per input id, in input order (duplicates allowed).
    ///
    /// `Err` means "don't know": the caller falls back to its database. An empty slice is
    /// `Ok(vec![])` without any I/O on every available backend.
    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>>;

    /// Drops the record of `runtime_id`. Best effort: failures are logged, not returned,
    /// because the record's TTL reaps it anyway.
    async fn forget(&self, runtime_id: &str);

    /// Records many heartbeats at once.
    ///
    /// Every pair is validated before anything is written, so bad input writes nothing. The
    /// provided method touches one by one; backends override it to send one round trip.
    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        for (runtime_id, ttl) in beats {
            validate::beat(runtime_id, *ttl)?;
        }
        for (runtime_id, ttl) in beats {
            self.touch(runtime_id, *ttl).await?;
        }
        Ok(())
    }

    /// Records a heartbeat like [`touch`](Self::touch), taking the lease the runtime presented
    /// with it (the one its previous beat's answer carried, from whichever instance) and
    /// returning the lease to hand back with this beat's answer.
    ///
    /// A lease lets an instance that did not write the runtime's record coalesce as if it had
    /// (see `LayeredStore`), so that coalescing holds across a fleet behind any load balancer.
    /// A lease that fails to verify, names another runtime, predates a loss or a `forget` this
    /// instance saw, or is [none](Lease::none) is ignored: the beat is recorded as if none was
    /// presented. Errors are `touch`'s.
    ///
    /// The provided method touches and returns [`Lease::none`]: only stores that coalesce
    /// (the layered store) issue and honour leases.
    async fn touch_lease(
        &self,
        runtime_id: &str,
        ttl: Duration,
        presented: Option<&Lease>,
    ) -> Result<Lease> {
        let _ = presented;
        self.touch(runtime_id, ttl).await?;
        Ok(Lease::none())
    }

    /// The key that signs and verifies the leases of `runtime_id`'s record on this backend,
    /// the same on every instance that shares it, and a new one when the backend lost its
    /// data (the Redis stores derive it from their epoch record). `None` for backends without
    /// one; the provided method.
    fn lease_key(&self, runtime_id: &str) -> Option<LeaseKey> {
        let _ = runtime_id;
        None
    }

    /// Liveness of one runtime; a batch of one.
    async fn is_alive(&self, runtime_id: &str) -> Result<bool> {
        let answers = self.is_alive_batch(&[runtime_id]).await?;
        answers
            .first()
            .copied()
            .ok_or_else(|| crate::Error::backend("is_alive", "the store gave no answer"))
    }

    /// Whether the backend works right now: healthy, degraded (recent failures, or recovering
    /// after data loss) or down (the circuit breaker is open and calls fail fast), and since
    /// when. Unlike [`available`](Self::available), which only says a backend is configured.
    ///
    /// Stores without a remote backend are always healthy.
    fn health(&self) -> Health {
        Health::always_healthy()
    }

    /// How many times the backend has detected that it lost its data (a Redis restarted
    /// empty, flushed, or failed over to an empty replica): the `data_losses` of
    /// [`health`](Self::health), which it defaults to. A layered store over this
    /// store watches it after each remote call to stop coalescing on records that are gone,
    /// so a wrapper around a store should forward it.
    fn data_losses(&self) -> u64 {
        self.health().data_losses
    }

    /// A snapshot of the store's counters; zeros for backends that keep none.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// A shared store is a store: what [`open`](crate::open) returns can be wrapped (in
/// `Instrumented`, feature `metrics`, or as the remote of a `LayeredStore`) like a concrete
/// one. Every method forwards, so nothing of the inner store's behaviour is lost.
#[async_trait::async_trait]
impl<S: LivenessStore + ?Sized> LivenessStore for std::sync::Arc<S> {
    fn available(&self) -> bool {
        (**self).available()
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        (**self).touch(runtime_id, ttl).await
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        (**self).is_alive_batch(runtime_ids).await
    }

    async fn forget(&self, runtime_id: &str) {
        (**self).forget(runtime_id).await;
    }

    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        (**self).touch_many(beats).await
    }

    async fn is_alive(&self, runtime_id: &str) -> Result<bool> {
        (**self).is_alive(runtime_id).await
    }

    async fn touch_lease(
        &self,
        runtime_id: &str,
        ttl: Duration,
        presented: Option<&Lease>,
    ) -> Result<Lease> {
        (**self).touch_lease(runtime_id, ttl, presented).await
    }

    fn lease_key(&self, runtime_id: &str) -> Option<LeaseKey> {
        (**self).lease_key(runtime_id)
    }

    fn health(&self) -> Health {
        (**self).health()
    }

    fn data_losses(&self) -> u64 {
        (**self).data_losses()
    }

    fn stats(&self) -> StoreStats {
        (**self).stats()
    }
}
