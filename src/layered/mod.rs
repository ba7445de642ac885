//! The layered backend: a local moka layer in front of a remote store.

#[cfg(any(feature = "redis", feature = "cluster"))]
mod broadcast;
mod builder;
mod entry;
mod forgets;
mod leases;
mod local;
#[cfg(any(feature = "redis", feature = "cluster"))]
mod subscriber;
mod writer;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[cfg(any(feature = "redis", feature = "cluster"))]
pub use broadcast::ForgetBroadcast;
pub use builder::LayeredStoreBuilder;
use entry::{Clock, LocalEntry, Outcome, PendingWrite, WriteState, nanos, whole_millis};
use forgets::Forgets;
use leases::LeaseCover;
use local::Local;
use writer::{Job, WriteQueue};

use crate::log_limit::LogLimit;
use crate::stats::Counters;
use crate::validate::{self, MAX_TTL};
use crate::{Error, Health, Lease, LeaseKey, LivenessStore, Result, StoreStats};

/// A local TTL cache in front of a remote store, so that the heartbeat hot path rarely leaves
/// the process.
///
/// - **touch**: the local entry's deadline moves at once (read your writes); the remote
///   record is written only when, as last written, it would lapse before this touch's ttl
///   runs out — with ttl + debounce, so a steady beat writes about once per debounce window.
///   Concurrent touches of one runtime share one write; writes of all runtimes are
///   group-committed into pipelines. Each touch returns its own write's result, so "fall back
///   to the database on `Err`" still holds.
/// - **is_alive_batch**: runtimes with a live local deadline are answered from memory; only
///   the rest go to the remote, in one call. Remote "alive" answers are reused locally for
///   `remote_positive_ttl`; "dead" answers never are.
/// - **forget**: the local entry goes at once, then the remote record. Other instances notice
///   when their entries lapse (a cached "alive" after `remote_positive_ttl`, their own touches
///   after their ttl), or at once with a `forget_broadcast` (features `layered` and `redis`).
///
/// Like every tokio-based client, it is used from within a tokio runtime: writes are sent by a
/// task it spawns there.
///
/// A runtime that stopped beating at `t` with ttl `T` reads dead everywhere by
/// `t + T + D + C` (D the clamped debounce, C the remote-positive ttl), and never reads dead
/// before `t + T` on any instance sharing the remote.
///
/// ```
/// # #[cfg(feature = "memory")]
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// use std::time::Duration;
/// use liveness_store::{LayeredStore, LivenessStore, MemoryStore};
///
/// // A MemoryStore stands in for Redis here; in production the remote is a RedisStore.
/// let store = LayeredStore::builder(MemoryStore::new())
///     .debounce(Duration::from_secs(30))
///     .build()?;
/// for _ in 0..10 {
///     store.touch("rt-1", Duration::from_secs(90)).await?;
/// }
/// assert_eq!(store.stats().remote_writes, 1); // nine beats coalesced
/// assert_eq!(store.is_alive_batch(&["rt-1"]).await?, vec![true]);
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "memory"))]
/// # fn main() {}
/// ```
pub struct LayeredStore<R> {
    shared: Arc<Shared<R>>,
}

/// The state the store shares with its group-commit tasks.
struct Shared<R> {
    remote: R,
    /// What this instance knows of each runtime.
    local: Local,
    clock: Clock,
    settings: Settings,
    counters: Counters,
    queue: WriteQueue,
    /// The remote's data-loss count as of this store's last remote call.
    losses_seen: AtomicU64,
    /// Forgets in flight, which batches must not undo.
    forgets: Forgets,
    /// Unix milliseconds of the latest loss or forget this instance saw: a lease issued before
    /// it is not taken.
    no_leases_before_ms: AtomicU64,
    /// Keeps timed-out forgets from flooding the log (see `log_limit`).
    forget_log: LogLimit,
    /// The forget broadcast, if the builder was given one.
    #[cfg(any(feature = "redis", feature = "cluster"))]
    broadcast: Option<broadcast::Link>,
}

impl<R: LivenessStore> Shared<R> {
    /// The runtime's entry, if this instance has one.
    fn entry(&self, runtime_id: &str) -> Option<Arc<LocalEntry>> {
        self.local.get(runtime_id)
    }

    /// The local part of a forget: this instance answers "dead" at once (invariant 3), and
    /// no write queued before it covers anything or is joined (invariant 1).
    async fn drop_local(&self, runtime_id: &str) {
        self.distrust_earlier_leases();
        for entry in self.local.remove(runtime_id).await {
            entry.forget_remote();
        }
    }

    /// A loss or a forget happened: no lease issued until now is taken any more.
    fn distrust_earlier_leases(&self) {
        self.no_leases_before_ms
            .fetch_max(crate::unix_time::unix_ms(), Ordering::Relaxed);
    }

    /// How many times the remote has detected data loss.
    fn remote_losses(&self) -> u64 {
        self.remote.data_losses()
    }

    /// The remote's loss count as of this store's last remote call: a record written under
    /// an older count covers nothing (invariant 4).
    fn losses(&self) -> u64 {
        self.losses_seen.load(Ordering::Relaxed)
    }

    /// After a remote call: takes note if the remote detected data loss since the last look.
    /// Every record this instance wrote before it stops covering touches at once, because the
    /// count changed, so each runtime's next touch writes through instead of coalescing on a
    /// record that is gone.
    fn note_remote_losses(&self) {
        let losses = self.remote_losses();
        let seen = self.losses_seen.fetch_max(losses, Ordering::Relaxed);
        if losses > seen {
            self.distrust_earlier_leases();
            Counters::add(&self.counters.epoch_resets, 1);
            tracing::warn!(
                "liveness store: the remote lost its data; coalescing reset, every runtime's \
                 next touch writes through"
            );
        }
    }
}

/// What a touch that the remote record did not cover does about it.
enum Write {
    /// A write acknowledged meanwhile covers it after all.
    Covered,
    /// It waits for a write: the one another touch started, or its own.
    Wait(Outcome),
}

#[derive(Debug, Clone)]
struct Settings {
    debounce: Duration,
    remote_positive_ttl: Duration,
    op_timeout: Duration,
    /// Signs and verifies leases instead of the remote's key.
    lease_key: Option<LeaseKey>,
    /// How far instances' clocks may disagree: every lease is trusted for this much less.
    lease_skew_margin: Duration,
}

impl<R: fmt::Debug> fmt::Debug for LayeredStore<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        let mut f = f.debug_struct("LayeredStore");
        f.field("remote", &shared.remote)
            .field("debounce", &shared.settings.debounce)
            .field("remote_positive_ttl", &shared.settings.remote_positive_ttl)
            .field("op_timeout", &shared.settings.op_timeout)
            .field("local_entries", &shared.local.entry_count());
        #[cfg(any(feature = "redis", feature = "cluster"))]
        f.field(
            "forget_broadcast",
            &shared.broadcast.as_ref().map(|link| &link.broadcast),
        );
        f.finish()
    }
}

impl<R: LivenessStore + 'static> LayeredStore<R> {
    /// A layered store over `remote` with every setting at its default.
    pub fn new(remote: R) -> LayeredStore<R> {
        Self::builder(remote)
            .build()
            .expect("the default settings are valid")
    }

    /// A builder for a layered store over `remote`.
    pub fn builder(remote: R) -> LayeredStoreBuilder<R> {
        LayeredStoreBuilder::new(remote)
    }

    /// The remote store.
    pub fn remote(&self) -> &R {
        &self.shared.remote
    }

    /// The local part of a touch: moves the deadline, and returns the remote write to wait
    /// for, if the remote record does not already cover this touch.
    async fn begin_touch(
        &self,
        runtime_id: &str,
        ttl: Duration,
        now: u64,
        lease: Option<LeaseCover>,
    ) -> Option<Outcome> {
        let shared = &self.shared;
        Counters::add(&shared.counters.touches, 1);
        let needed = now.saturating_add(nanos(ttl));
        let entry = match shared.entry(runtime_id) {
            Some(entry) => entry,
            // Boxed: this rare path's future is large, and the hot path (a lookup, a coalesced
            // touch) should not carry it.
            None => Box::pin(shared.local.get_or_create(runtime_id, needed)).await,
        };
        // Invariant 2: this instance answers "alive" at once, whatever the remote does.
        shared.local.extend_alive(runtime_id, &entry, needed);
        if let Some(lease) = lease {
            self.cover(&entry, lease);
        }
        if entry.outlives_its_expiry() {
            // moka computed the entry's expiry during the lookup, from the deadlines before
            // this touch; another lookup makes it count the new one, so that the local layer
            // keeps answering for this runtime while the remote is down. A steady beat whose
            // record covers it leaves the deadlines where they were and skips this.
            Box::pin(shared.local.refresh_expiry(runtime_id)).await;
        }
        // Invariant 1: coalesce only when the record as written outlives this touch's ttl.
        if entry.remote_covers(needed, shared.losses()) {
            Counters::add(&shared.counters.coalesced_touches, 1);
            return None;
        }
        match self.join_or_start_write(&entry, runtime_id, ttl, now, needed) {
            Write::Covered => {
                Counters::add(&shared.counters.coalesced_touches, 1);
                None
            }
            Write::Wait(outcome) => Some(outcome),
        }
    }

    /// Single flight: joins the write under way if it covers `needed`, else queues a new one.
    fn join_or_start_write(
        &self,
        entry: &Arc<LocalEntry>,
        runtime_id: &str,
        ttl: Duration,
        now: u64,
        needed: u64,
    ) -> Write {
        let shared = &self.shared;
        // The latest this touch waits (invariant 5): a queued write outlives no waiter.
        let gives_up_at = now.saturating_add(nanos(shared.settings.op_timeout));
        let mut pending = entry.pending.lock();
        // A write acknowledged between the caller's check and this lock covers us already:
        // without this second look the touch would start a duplicate write.
        if entry.remote_covers(needed, shared.losses()) {
            return Write::Covered;
        }
        if let Some(write) = pending.write.as_ref()
            && write.joinable(needed, now)
        {
            write
                .state
                .waiters_until
                .fetch_max(gives_up_at, Ordering::Relaxed);
            let outcome = write.outcome.clone();
            drop(pending);
            // The flusher that was to send it may have died with its runtime.
            writer::ensure_flusher(shared);
            return Write::Wait(outcome);
        }
        // The record outlives the ttl by the debounce window, so the touches of the next D
        // coalesce; half the ttl at most keeps the false-alive delay within 1.5 ttl. In whole
        // milliseconds, rounded up, as Redis's `PX` takes it: the record lapses exactly when
        // this store believes (invariant 1).
        let debounce = shared.settings.debounce.min(ttl / 2);
        let write_ttl = whole_millis((ttl + debounce).min(MAX_TTL));
        let state = Arc::new(WriteState {
            // `now` precedes the write, so the record lapses no earlier than this.
            covers_until: now.saturating_add(nanos(write_ttl)),
            generation: pending.generation,
            waiters_until: AtomicU64::new(gives_up_at),
        });
        let (sender, outcome) = tokio::sync::watch::channel(None);
        pending.write = Some(PendingWrite {
            state: Arc::clone(&state),
            outcome: outcome.clone(),
        });
        drop(pending);
        let job = Job {
            runtime_id: runtime_id.to_owned(),
            ttl: write_ttl,
            entry: Arc::clone(entry),
            state,
            outcome: sender,
        };
        writer::enqueue(shared, job);
        Write::Wait(outcome)
    }

    /// The latest a call that started at `start` (clock nanos) may return (invariant 5).
    fn deadline(&self, start: u64) -> tokio::time::Instant {
        self.shared.clock.instant(start) + self.shared.settings.op_timeout
    }

    /// Waits for a remote write's result, until `deadline` at the latest.
    async fn finish_touch(
        &self,
        mut outcome: Outcome,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let timed_out = Error::Timeout {
            op: "touch",
            after: self.shared.settings.op_timeout,
        };
        match tokio::time::timeout_at(deadline, outcome.wait_for(Option::is_some)).await {
            Ok(Ok(result)) => result.clone().unwrap_or(Err(timed_out)),
            Ok(Err(_)) => Err(Error::backend("touch", "the remote write was abandoned")),
            Err(_) => Err(timed_out),
        }
    }
}

#[async_trait::async_trait]
impl<R: LivenessStore + 'static> LivenessStore for LayeredStore<R> {
    fn available(&self) -> bool {
        self.shared.remote.available()
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        validate::beat(runtime_id, ttl)?;
        // One clock read serves the whole touch: the coalesced path is a lookup and atomics.
        let now = self.shared.clock.now();
        match self.begin_touch(runtime_id, ttl, now, None).await {
            None => Ok(()),
            // Boxed: this wait is the write path's, and the future of every touch, coalesced
            // or not, is as big as its biggest part. Kept under ~1 KiB, the allocation that
            // `async_trait` makes per call stays in the allocator's fast per-thread cache.
            Some(outcome) => Box::pin(self.finish_touch(outcome, self.deadline(now))).await,
        }
    }

    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        for (runtime_id, ttl) in beats {
            validate::beat(runtime_id, *ttl)?;
        }
        // Queue every write before waiting for any, so they share pipelines; one deadline for
        // the whole call, so waiting on several writes never adds up their timeouts.
        let now = self.shared.clock.now();
        let deadline = self.deadline(now);
        let mut outcomes = Vec::new();
        for (runtime_id, ttl) in beats {
            outcomes.extend(self.begin_touch(runtime_id, *ttl, now, None).await);
        }
        let mut result = Ok(());
        for outcome in outcomes {
            if let Err(error) = self.finish_touch(outcome, deadline).await {
                result = Err(error);
            }
        }
        result
    }

    async fn touch_lease(
        &self,
        runtime_id: &str,
        ttl: Duration,
        presented: Option<&Lease>,
    ) -> Result<Lease> {
        validate::beat(runtime_id, ttl)?;
        let now = self.shared.clock.now();
        let key = self.lease_key_for(runtime_id);
        let cover = match (presented, &key) {
            (Some(lease), Some(key)) => self.take_lease(runtime_id, lease, key, now),
            _ => None,
        };
        if let Some(outcome) = self.begin_touch(runtime_id, ttl, now, cover).await {
            Box::pin(self.finish_touch(outcome, self.deadline(now))).await?;
        }
        Ok(self.lease_for(runtime_id, key, now))
    }

    fn lease_key(&self, runtime_id: &str) -> Option<LeaseKey> {
        self.lease_key_for(runtime_id)
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        validate::runtime_ids(runtime_ids)?;
        let shared = &self.shared;
        let now = shared.clock.now();
        let mut answers = vec![false; runtime_ids.len()];
        // The index in the input of every id memory cannot prove alive.
        let mut misses = Vec::new();
        for (index, id) in runtime_ids.iter().enumerate() {
            if shared.local.is_alive(id, now) {
                answers[index] = true;
            } else {
                misses.push(index);
            }
        }
        let counters = &shared.counters;
        Counters::add(
            &counters.local_hits,
            (runtime_ids.len() - misses.len()) as u64,
        );
        if misses.is_empty() {
            return Ok(answers);
        }
        let miss_ids: Vec<&str> = misses.iter().map(|index| runtime_ids[*index]).collect();
        Counters::add(&counters.remote_lookups, miss_ids.len() as u64);
        Counters::add(&counters.remote_lookup_batches, 1);
        let timeout = shared.settings.op_timeout;
        let forgets = shared.forgets.look();
        let lookup = tokio::time::timeout(timeout, shared.remote.is_alive_batch(&miss_ids));
        let answer = lookup.await.unwrap_or(Err(Error::Timeout {
            op: "is_alive_batch",
            after: timeout,
        }));
        shared.note_remote_losses();
        let remote = match answer {
            Ok(remote) if remote.len() == miss_ids.len() => remote,
            Ok(remote) => {
                Counters::add(&counters.errors, 1);
                return Err(Error::backend(
                    "is_alive_batch",
                    format!("remote answered {} of {} ids", remote.len(), miss_ids.len()),
                ));
            }
            Err(error) => {
                Counters::add(&counters.errors, 1);
                return Err(error);
            }
        };
        let cache_until = now.saturating_add(nanos(shared.settings.remote_positive_ttl));
        // Not while a forget ran: the lookup may have read a record its `DEL` then removed.
        let cache_positives =
            !shared.settings.remote_positive_ttl.is_zero() && shared.forgets.none_since(forgets);
        for (index, alive) in misses.into_iter().zip(remote) {
            if !alive {
                continue; // Negatives are never cached: a new beat must show at once.
            }
            answers[index] = true;
            if cache_positives {
                let id = runtime_ids[index];
                // Not a new entry over an existing one: a touch may have created it during the
                // lookup, and its deadlines and pending write must survive.
                let entry = match shared.entry(id) {
                    Some(entry) => entry,
                    None => shared.local.get_or_create(id, cache_until).await,
                };
                shared.local.extend_alive(id, &entry, cache_until);
            }
        }
        Ok(answers)
    }

    async fn forget(&self, runtime_id: &str) {
        if validate::runtime_id(runtime_id).is_err() {
            return;
        }
        // Local first: this instance answers "dead" at once (invariant 3).
        let shared = &self.shared;
        let _forgetting = shared.forgets.begin();
        shared.drop_local(runtime_id).await;
        // The remote bounds its own calls; this keeps a misbehaving one from blocking forever.
        let timeout = shared.settings.op_timeout;
        if tokio::time::timeout(timeout, shared.remote.forget(runtime_id))
            .await
            .is_err()
        {
            // Every forget in flight times out together when the remote hangs.
            if let Some(suppressed) = shared.forget_log.allow() {
                tracing::warn!(
                    suppressed,
                    "liveness forget timed out; the record's ttl will reap it"
                );
            }
        }
        // A touch that came in while the record was being deleted may believe its write
        // still stands, or be waiting for a write the delete undid; make its next touch write
        // through anew (invariant 1).
        if let Some(entry) = shared.entry(runtime_id) {
            entry.forget_remote();
        }
        // Last, once the record is deleted: an instance that drops the runtime on this message
        // and asks the remote at once must not find the record still there.
        #[cfg(any(feature = "redis", feature = "cluster"))]
        if let Some(link) = &shared.broadcast {
            link.publish(runtime_id, timeout).await;
        }
    }

    /// The remote's health: the local layer itself cannot fail. While the remote is down the
    /// store still answers what local deadlines prove, and touches write through again once a
    /// probe finds the remote back.
    fn health(&self) -> Health {
        self.shared.remote.health()
    }

    fn data_losses(&self) -> u64 {
        self.shared.remote.data_losses()
    }

    fn stats(&self) -> StoreStats {
        self.shared.counters.snapshot()
    }
}
