//! Settings of a [`LayeredStore`].

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::entry::Clock;
use super::forgets::Forgets;
use super::local::Local;
use super::writer::WriteQueue;
use super::{LayeredStore, Settings, Shared};
use crate::log_limit::LogLimit;
use crate::stats::Counters;
use crate::validate::MAX_TTL;
use crate::{Error, LeaseKey, LivenessStore, Result};

/// Builds a [`LayeredStore`]; see [`LayeredStore::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct LayeredStoreBuilder<R> {
    remote: R,
    settings: Settings,
    local_capacity: u64,
    pipelines_in_flight: usize,
    max_batch: usize,
    #[cfg(any(feature = "redis", feature = "cluster"))]
    broadcast: Option<super::ForgetBroadcast>,
}

impl<R: LivenessStore + 'static> LayeredStoreBuilder<R> {
    pub(super) fn new(remote: R) -> Self {
        LayeredStoreBuilder {
            remote,
            settings: Settings {
                // The reference's sweeper interval.
                debounce: Duration::from_secs(30),
                remote_positive_ttl: Duration::from_secs(1),
                op_timeout: Duration::from_millis(250),
                lease_key: None,
                lease_skew_margin: Duration::from_secs(1),
            },
            local_capacity: 1_000_000,
            pipelines_in_flight: 2,
            max_batch: 1_000,
            #[cfg(any(feature = "redis", feature = "cluster"))]
            broadcast: None,
        }
    }

    /// The debounce window D: a runtime's remote record is written with ttl + D, and rewritten
    /// only once it would otherwise lapse before the latest touch's ttl runs out — so a steady
    /// beat writes about once per D instead of once per beat.
    ///
    /// Each touch clamps it to half its ttl. A bigger D saves remote writes; it costs as much
    /// delay in seeing a stopped runtime dead (the record outlives the last beat by up to D).
    ///
    /// Defaults to 30 s (the reference's sweeper interval). Zero writes every touch through.
    pub fn debounce(mut self, debounce: Duration) -> Self {
        self.settings.debounce = debounce;
        self
    }

    /// How long an "alive" answer from the remote is reused locally (C). Negatives are never
    /// reused. A bigger C saves remote lookups; it adds as much to the delay before another
    /// instance's `forget` or a stopped runtime is seen.
    ///
    /// Defaults to 1 s. Zero asks the remote every time.
    pub fn remote_positive_ttl(mut self, ttl: Duration) -> Self {
        self.settings.remote_positive_ttl = ttl;
        self
    }

    /// How many runtimes the local layer tracks. Past it moka evicts entries by its own policy
    /// (which sees entries created and deadlines moved, not every lookup: those go around it),
    /// which costs a remote write or lookup later, never a wrong answer.
    ///
    /// Defaults to 1,000,000.
    pub fn local_capacity(mut self, runtimes: u64) -> Self {
        self.local_capacity = runtimes;
        self
    }

    /// The key that signs and verifies leases (see
    /// [`LivenessStore::touch_lease`](crate::LivenessStore::touch_lease)), in place of the
    /// remote's: give every instance the same. Without it, instances over the same Redis
    /// derive a key from its epoch record, with no configuration; over a remote without one
    /// (a `MemoryStore`), no leases are issued.
    ///
    /// Defaults to the remote's key.
    pub fn lease_key(mut self, key: LeaseKey) -> Self {
        self.settings.lease_key = Some(key);
        self
    }

    /// How far apart the wall clocks of instances may be. A lease says until when its record
    /// lives by the issuing instance's clock; every instance trusts it for this much less, so
    /// clocks that disagree by less cannot make a lease outlive its record (a false "dead").
    /// NTP keeps servers within milliseconds; a bigger margin only costs coverage.
    ///
    /// Defaults to 1 s.
    pub fn lease_skew_margin(mut self, margin: Duration) -> Self {
        self.settings.lease_skew_margin = margin;
        self
    }

    /// The longest a touch waits for its remote write, time in the queue included; past it
    /// the touch is an `Err(Timeout)` and the caller falls back to its database.
    ///
    /// Defaults to 250 ms.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.settings.op_timeout = timeout;
        self
    }

    /// How many write pipelines may be in flight at once. While they all are, new writes
    /// gather into the next one: fewer means bigger batches, more means less queueing.
    ///
    /// Defaults to 2.
    pub fn pipelines_in_flight(mut self, pipelines: usize) -> Self {
        self.pipelines_in_flight = pipelines;
        self
    }

    /// The most writes one group-commit pipeline carries; a bigger burst leaves as several
    /// pipelines, so none grows too big to finish within the op timeout. (Lookups are chunked
    /// by the remote itself, e.g. [`RedisStoreBuilder::max_batch`](crate::RedisStoreBuilder),
    /// so that all chunks still share one round trip.)
    ///
    /// Defaults to 1,000.
    pub fn max_batch(mut self, writes: usize) -> Self {
        self.max_batch = writes;
        self
    }

    /// Announces every `forget` of this store on a Redis pub/sub channel and listens there
    /// for the other instances' announcements, so that an instance that cached a remote
    /// "alive" answer, or took touches of the runtime itself, drops the runtime at once
    /// instead of after its [`remote_positive_ttl`](Self::remote_positive_ttl) (or its ttl).
    ///
    /// Each `forget` ends with one `PUBLISH` (a second on a fresh connection if the one kept
    /// from an earlier forget has died), bounded by the [`op_timeout`](Self::op_timeout) with
    /// its connect and any wait for another forget's connect, so a forget (the remote's delete,
    /// then the publish) may take up to twice that; a failure is a rate-limited warning. Touches never
    /// publish. A task spawned by [`build`](Self::build) stays subscribed, reconnecting
    /// after any failure, and ends with the store. An instance misses what is announced while
    /// it is disconnected, and then sees the forget when its entry lapses, as without the
    /// broadcast: staleness stays bounded, and no answer is a wrong "dead".
    ///
    /// Give it to every instance, with the key prefix of their `RedisStore`s.
    ///
    /// ```no_run
    /// use liveness_store::{DEFAULT_KEY_PREFIX, ForgetBroadcast, LayeredStore, RedisStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> liveness_store::Result<()> {
    /// let url = "redis://127.0.0.1:6379/";
    /// let store = LayeredStore::builder(RedisStore::connect(url).await?)
    ///     .forget_broadcast(ForgetBroadcast::new([url], DEFAULT_KEY_PREFIX)?)
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Defaults to none: nothing is published or subscribed.
    #[cfg(any(feature = "redis", feature = "cluster"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "redis", feature = "cluster"))))]
    pub fn forget_broadcast(mut self, broadcast: super::ForgetBroadcast) -> Self {
        self.broadcast = Some(broadcast);
        self
    }

    /// Checks the settings and builds the store.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a zero capacity, pipeline count, batch or timeout, or a window over 365
    /// days; with a [`forget_broadcast`](Self::forget_broadcast), also when called outside a
    /// tokio runtime (its subscriber task needs one).
    pub fn build(self) -> Result<LayeredStore<R>> {
        let settings = self.settings;
        let problem = if self.local_capacity == 0 {
            "local_capacity must be at least 1"
        } else if self.pipelines_in_flight == 0 {
            "pipelines_in_flight must be at least 1"
        } else if self.max_batch == 0 {
            "max_batch must be at least 1"
        } else if settings.op_timeout.is_zero() || settings.op_timeout > MAX_TTL {
            "op_timeout must be more than zero and at most 365 days"
        } else if settings.debounce > MAX_TTL || settings.remote_positive_ttl > MAX_TTL {
            "debounce and remote_positive_ttl must not exceed 365 days"
        } else if settings.lease_skew_margin > MAX_TTL {
            "lease_skew_margin must not exceed 365 days"
        } else {
            #[cfg(any(feature = "redis", feature = "cluster"))]
            let (broadcast, runtime) = match self.broadcast {
                None => (None, None),
                Some(broadcast) => match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => (Some(super::broadcast::Link::new(broadcast)), Some(runtime)),
                    Err(_) => {
                        return Err(Error::Config(
                            "forget_broadcast needs a tokio runtime: build the store inside one"
                                .to_owned(),
                        ));
                    }
                },
            };
            let clock = Clock::new();
            let losses_seen = AtomicU64::new(self.remote.health().data_losses);
            let shared = Arc::new(Shared {
                remote: self.remote,
                local: Local::new(self.local_capacity, clock),
                clock,
                settings,
                counters: Counters::default(),
                queue: WriteQueue::new(self.pipelines_in_flight, self.max_batch),
                losses_seen,
                forgets: Forgets::default(),
                no_leases_before_ms: AtomicU64::new(0),
                forget_log: LogLimit::new(),
                #[cfg(any(feature = "redis", feature = "cluster"))]
                broadcast,
            });
            #[cfg(any(feature = "redis", feature = "cluster"))]
            if let Some(runtime) = runtime {
                super::subscriber::spawn(&runtime, &shared);
            }
            return Ok(LayeredStore { shared });
        };
        Err(Error::Config(problem.to_owned()))
    }
}
