//! The layered store's own promises, on tokio's paused clock over a `MemoryStore` stand-in
//! remote (deterministic), and against real Redis where Redis owns the clock and counts the
//! commands.
#![cfg(all(feature = "layered", feature = "memory"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use liveness_store::{Error, LayeredStore, LivenessStore, MemoryStore, Result};

const MS: Duration = Duration::from_millis(1);

/// A remote that fails or stalls on demand and counts the write calls it got.
#[derive(Debug, Default)]
struct FlakyRemote {
    inner: MemoryStore,
    failing: AtomicBool,
    write_calls: AtomicU64,
    /// Milliseconds each write and forget takes.
    delay_ms: AtomicU64,
}

impl FlakyRemote {
    async fn stall(&self) {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    }
}

impl FlakyRemote {
    fn check(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(Error::Timeout {
                op: "test",
                after: MS,
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl LivenessStore for FlakyRemote {
    fn available(&self) -> bool {
        true
    }
    async fn touch(&self, id: &str, ttl: Duration) -> Result<()> {
        self.touch_many(&[(id, ttl)]).await
    }
    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        self.write_calls.fetch_add(1, Ordering::SeqCst);
        self.stall().await;
        self.check()?;
        self.inner.touch_many(beats).await
    }
    async fn is_alive_batch(&self, ids: &[&str]) -> Result<Vec<bool>> {
        self.check()?;
        self.inner.is_alive_batch(ids).await
    }
    async fn forget(&self, id: &str) {
        self.stall().await;
        self.inner.forget(id).await;
    }
}

/// Beats at the reference's ratios (every 15 s, ttl 90 s, debounce 30 s) for ten minutes:
/// the remote is written only when the record as written would lapse before the beat's ttl.
#[tokio::test(start_paused = true)]
async fn a_steady_beat_writes_about_once_per_debounce_window() {
    let (beat, ttl, debounce) = (
        Duration::from_secs(15),
        Duration::from_secs(90),
        Duration::from_secs(30),
    );
    let store = LayeredStore::builder(MemoryStore::new())
        .debounce(debounce)
        .build()
        .unwrap();
    // The rule, modelled: a write at w covers until w + ttl + debounce; a beat at t needs
    // t + ttl covered.
    let mut expected_writes = 0;
    let mut covered_until = None;
    for i in 0..=40u32 {
        let now = beat * i;
        if covered_until.is_none_or(|until| until < now + ttl) {
            expected_writes += 1;
            covered_until = Some(now + ttl + debounce);
        }
        store.touch("rt", ttl).await.unwrap();
        tokio::time::advance(beat).await;
    }
    let stats = store.stats();
    assert_eq!(stats.touches, 41);
    assert_eq!(stats.remote_writes, expected_writes);
    assert_eq!(stats.coalesced_touches, 41 - expected_writes);
    assert!(expected_writes <= 14, "{expected_writes}");
}

/// Invariant 1 and 3 across instances: B never reads a runtime that beats on A as dead, and
/// both read it dead by ttl + debounce + remote-positive ttl after it stops.
#[tokio::test(start_paused = true)]
async fn a_second_instance_never_reads_a_beating_runtime_dead() {
    let remote = MemoryStore::new(); // clones share one cache: one "Redis"
    let (ttl, debounce, positive) = (1_000 * MS, 300 * MS, 1_000 * MS);
    let build = || {
        LayeredStore::builder(remote.clone())
            .debounce(debounce)
            .remote_positive_ttl(positive)
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let start = tokio::time::Instant::now();
    let mut last_touch = start;
    let mut polls = 0;
    while start.elapsed() < 5_000 * MS {
        if start.elapsed().as_millis().is_multiple_of(200) {
            a.touch("rt", ttl).await.unwrap();
            last_touch = tokio::time::Instant::now();
        }
        assert_eq!(
            b.is_alive_batch(&["rt"]).await.unwrap(),
            [true],
            "at {:?}",
            start.elapsed()
        );
        polls += 1;
        tokio::time::advance(20 * MS).await;
    }
    assert!(polls >= 250);
    // Beats stop. Alive until last_touch + ttl on both, dead on both by the bound.
    let bound = ttl + debounce + positive;
    let mut dead_at = [None, None];
    while last_touch.elapsed() <= bound {
        for (i, store) in [&a, &b].into_iter().enumerate() {
            let alive = store.is_alive("rt").await.unwrap();
            if last_touch.elapsed() < ttl {
                assert!(alive, "instance {i} read dead before the ttl ran out");
            }
            if !alive && dead_at[i].is_none() {
                dead_at[i] = Some(last_touch.elapsed());
            }
            if alive {
                assert!(dead_at[i].is_none(), "instance {i} came back to life");
            }
        }
        tokio::time::advance(20 * MS).await;
    }
    for (i, dead) in dead_at.iter().enumerate() {
        let dead = dead.unwrap_or_else(|| panic!("instance {i} still alive past {bound:?}"));
        assert!(
            dead >= ttl && dead <= bound,
            "instance {i} dead after {dead:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_touches_of_one_id_share_one_write() {
    let store = Arc::new(LayeredStore::new(FlakyRemote::default()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let store = Arc::clone(&store);
        tasks.spawn(async move { store.touch("hot", Duration::from_secs(90)).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap().unwrap();
    }
    assert_eq!(store.remote().write_calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.stats().remote_writes, 1);
    assert_eq!(store.stats().touches, 10_000);
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_fails_its_touches_and_the_next_touch_writes_again() {
    let store = LayeredStore::new(FlakyRemote::default());
    let ttl = Duration::from_secs(90);
    store.remote().failing.store(true, Ordering::SeqCst);
    let failed = store.touch_many(&[("a", ttl), ("b", ttl)]).await;
    assert!(matches!(failed, Err(Error::Timeout { .. })), "{failed:?}");
    let failed = store.touch("a", ttl).await;
    assert!(
        failed.is_err(),
        "a touch must not coalesce on a failed write: {failed:?}"
    );
    // This instance took the beats: it still answers from memory (read your writes)...
    assert_eq!(
        store.is_alive_batch(&["a", "b"]).await.unwrap(),
        [true, true]
    );
    store.remote().failing.store(false, Ordering::SeqCst);
    let calls_before = store.remote().write_calls.load(Ordering::SeqCst);
    store.touch("a", ttl).await.unwrap();
    store.touch("b", ttl).await.unwrap();
    // ...and both wrote through once the remote was back.
    assert_eq!(
        store.remote().write_calls.load(Ordering::SeqCst),
        calls_before + 2
    );
    assert_eq!(
        store
            .remote()
            .inner
            .is_alive_batch(&["a", "b"])
            .await
            .unwrap(),
        [true, true]
    );
    assert!(store.stats().errors >= 2);
}

/// Past its capacity the local layer evicts entries; that costs remote calls, never a wrong
/// answer: every runtime touched reads alive (from the remote where its entry is gone), and a
/// forgotten one reads dead.
#[tokio::test(start_paused = true)]
async fn past_its_capacity_the_store_answers_from_the_remote() {
    let remote = Arc::new(MemoryStore::new());
    let store = LayeredStore::builder(Arc::clone(&remote))
        .local_capacity(100)
        .build()
        .unwrap();
    let ids: Vec<String> = (0..10_000).map(|i| format!("rt-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    for chunk in ids.chunks(500) {
        let beats: Vec<(&str, Duration)> = chunk
            .iter()
            .map(|id| (*id, Duration::from_secs(90)))
            .collect();
        store.touch_many(&beats).await.unwrap();
    }
    store.forget("rt-7").await;
    let answers = store.is_alive_batch(&ids).await.unwrap();
    for (id, alive) in ids.iter().zip(&answers) {
        assert_eq!(*alive, *id != "rt-7", "{id}");
    }
    let stats = store.stats();
    assert_eq!(stats.local_hits + stats.remote_lookups, ids.len() as u64);
    assert!(
        stats.local_hits <= 100 + 500,
        "{} local answers past a capacity of 100",
        stats.local_hits
    );
}

#[tokio::test(start_paused = true)]
async fn remote_positives_are_cached_and_negatives_are_not() {
    let remote = MemoryStore::new();
    let positive = 1_000 * MS;
    let reader = LayeredStore::builder(remote.clone())
        .remote_positive_ttl(positive)
        .build()
        .unwrap();
    remote.touch("up", Duration::from_secs(90)).await.unwrap();
    assert_eq!(
        reader.is_alive_batch(&["up", "down"]).await.unwrap(),
        [true, false]
    );
    assert_eq!(reader.stats().remote_lookups, 2);
    // Within C the positive comes from memory; the negative is asked again.
    assert_eq!(
        reader.is_alive_batch(&["up", "down"]).await.unwrap(),
        [true, false]
    );
    let stats = reader.stats();
    assert_eq!((stats.local_hits, stats.remote_lookups), (1, 3));
    // A beat that arrives for the negative shows at once.
    remote.touch("down", Duration::from_secs(90)).await.unwrap();
    assert_eq!(reader.is_alive_batch(&["down"]).await.unwrap(), [true]);
    // Past C the positive is asked again.
    tokio::time::advance(positive).await;
    reader.is_alive_batch(&["up"]).await.unwrap();
    assert_eq!(reader.stats().remote_lookups, 5);
}

#[tokio::test(start_paused = true)]
async fn forget_is_seen_at_once_on_the_forgetting_instance() {
    let remote = MemoryStore::new();
    let store = LayeredStore::new(remote.clone());
    store.touch("rt", Duration::from_secs(90)).await.unwrap();
    store.forget("rt").await;
    assert_eq!(store.is_alive_batch(&["rt"]).await.unwrap(), [false]);
    assert_eq!(remote.is_alive_batch(&["rt"]).await.unwrap(), [false]);
    // The next beat writes through again (the coalescing state went with the entry).
    store.touch("rt", Duration::from_secs(90)).await.unwrap();
    assert_eq!(remote.is_alive_batch(&["rt"]).await.unwrap(), [true]);
}

/// A touch that lands while `forget` deletes the record must not keep coalescing on a record
/// the delete removed: its next touch writes through (invariant 1).
#[tokio::test(start_paused = true)]
async fn a_touch_during_forget_writes_through_next_time() {
    let store = Arc::new(LayeredStore::new(FlakyRemote::default()));
    let ttl = Duration::from_secs(90);
    store.touch("rt", ttl).await.unwrap();
    store.remote().delay_ms.store(100, Ordering::SeqCst);
    let forgetting = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.forget("rt").await })
    };
    tokio::time::sleep(10 * MS).await; // forget has dropped the entry and is deleting
    store.remote().delay_ms.store(0, Ordering::SeqCst);
    store.touch("rt", ttl).await.unwrap(); // written before the delete lands
    forgetting.await.unwrap();
    assert!(!store.remote().inner.is_alive("rt").await.unwrap());
    store.touch("rt", ttl).await.unwrap();
    assert!(
        store.remote().inner.is_alive("rt").await.unwrap(),
        "the touch coalesced"
    );
}

/// Lets each call of one kind through only when the test says so, so that a test orders the
/// replies of concurrent calls.
#[derive(Debug)]
struct Gate {
    held: AtomicBool,
    permits: tokio::sync::Semaphore,
    arrived: tokio::sync::watch::Sender<usize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            held: AtomicBool::new(false),
            permits: tokio::sync::Semaphore::new(0),
            arrived: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Gate {
    /// A call arrives; it waits here while the gate is held, until released.
    async fn pass(&self) {
        self.arrived.send_modify(|n| *n += 1);
        if self.held.load(Ordering::SeqCst) {
            self.permits.acquire().await.unwrap().forget();
        }
    }

    fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    /// Lets one waiting (or the next) call through.
    fn release_one(&self) {
        self.permits.add_permits(1);
    }

    fn open(&self) {
        self.held.store(false, Ordering::SeqCst);
        self.permits.add_permits(1_000);
    }

    /// Waits until `n` calls have arrived in all.
    async fn arrivals(&self, n: usize) {
        let mut arrived = self.arrived.subscribe();
        arrived.wait_for(|count| *count >= n).await.unwrap();
    }

    fn arrived(&self) -> usize {
        *self.arrived.borrow()
    }
}

/// A remote whose writes land at once and are acknowledged when the test releases them, whose
/// lookups read at once and answer when released, and whose deletes land when released.
#[derive(Debug, Default)]
struct GatedRemote {
    inner: MemoryStore,
    writes: Gate,
    lookups: Gate,
    forgets: Gate,
    /// The ttl of every record written, in order.
    written_ttls: parking_lot::Mutex<Vec<Duration>>,
    /// The next write panics (a bug in the remote), before writing anything.
    panic_next_write: AtomicBool,
}

#[async_trait::async_trait]
impl LivenessStore for GatedRemote {
    fn available(&self) -> bool {
        true
    }
    async fn touch(&self, id: &str, ttl: Duration) -> Result<()> {
        self.touch_many(&[(id, ttl)]).await
    }
    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        assert!(
            !self.panic_next_write.swap(false, Ordering::SeqCst),
            "the remote failed while writing"
        );
        self.written_ttls
            .lock()
            .extend(beats.iter().map(|(_, ttl)| *ttl));
        let written = self.inner.touch_many(beats).await;
        self.writes.pass().await;
        written
    }
    async fn is_alive_batch(&self, ids: &[&str]) -> Result<Vec<bool>> {
        let answer = self.inner.is_alive_batch(ids).await;
        self.lookups.pass().await;
        answer
    }
    async fn forget(&self, id: &str) {
        self.forgets.pass().await;
        self.inner.forget(id).await;
    }
}

fn gated() -> Arc<LayeredStore<GatedRemote>> {
    Arc::new(
        LayeredStore::builder(GatedRemote::default())
            .op_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
}

/// `forget` on a task of its own, its remote delete held until the test releases it.
async fn forget_held(store: &Arc<LayeredStore<GatedRemote>>) -> tokio::task::JoinHandle<()> {
    store.remote().forgets.hold();
    let forgetting = {
        let store = Arc::clone(store);
        tokio::spawn(async move { store.forget("rt").await })
    };
    store.remote().forgets.arrivals(1).await;
    forgetting
}

/// A write acknowledged after a concurrent `forget` deleted its record does not let later
/// touches coalesce on it (invariant 1).
#[tokio::test(start_paused = true)]
async fn a_write_acknowledged_after_a_forget_covers_nothing() {
    let store = gated();
    let ttl = Duration::from_secs(90);
    let forgetting = forget_held(&store).await;
    // A touch while the delete is under way: its write lands first, its ack waits.
    store.remote().writes.hold();
    let touching = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.touch("rt", ttl).await })
    };
    store.remote().writes.arrivals(1).await;
    store.remote().forgets.release_one();
    forgetting.await.unwrap();
    assert!(
        !store.remote().inner.is_alive("rt").await.unwrap(),
        "deleted"
    );
    store.remote().writes.open();
    touching.await.unwrap().unwrap();
    // The record is gone: the next touch must write it again, not coalesce.
    store.touch("rt", ttl).await.unwrap();
    assert!(
        store.remote().inner.is_alive("rt").await.unwrap(),
        "a touch returned Ok while the remote reads the runtime dead"
    );
}

/// A touch that starts after `forget` returned never joins a write queued before it, whose
/// record the delete removed (invariant 1).
#[tokio::test(start_paused = true)]
async fn a_touch_after_forget_never_joins_a_write_from_before_it() {
    let store = gated();
    let ttl = Duration::from_secs(90);
    let forgetting = forget_held(&store).await;
    store.remote().writes.hold();
    let touching = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.touch("rt", ttl).await })
    };
    store.remote().writes.arrivals(1).await;
    store.remote().forgets.release_one();
    forgetting.await.unwrap();
    // forget has returned; the earlier write is still unacknowledged.
    let after = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.touch("rt", ttl).await })
    };
    let own_write = tokio::time::timeout(Duration::from_secs(1), store.remote().writes.arrivals(2));
    assert!(
        own_write.await.is_ok(),
        "the touch joined the write from before the forget"
    );
    store.remote().writes.open();
    touching.await.unwrap().unwrap();
    after.await.unwrap().unwrap();
    assert_eq!(store.remote().writes.arrived(), 2, "a write of its own");
    assert!(store.remote().inner.is_alive("rt").await.unwrap());
}

/// A batch whose remote lookup read the record before `forget` deleted it does not bring the
/// runtime back on the forgetting instance (invariant 3).
#[tokio::test(start_paused = true)]
async fn a_lookup_from_before_a_forget_does_not_bring_the_runtime_back() {
    let store = gated();
    // Alive in the remote, written by another instance; unknown locally.
    store
        .remote()
        .inner
        .touch("rt", Duration::from_secs(90))
        .await
        .unwrap();
    store.remote().lookups.hold();
    let looking = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.is_alive_batch(&["rt"]).await })
    };
    store.remote().lookups.arrivals(1).await;
    store.forget("rt").await;
    store.remote().lookups.release_one();
    // Concurrent with the forget: either answer is right.
    looking.await.unwrap().unwrap();
    store.remote().lookups.open();
    assert_eq!(
        store.is_alive_batch(&["rt"]).await.unwrap(),
        [false],
        "the forgetting instance answered alive after forget returned"
    );
}

/// The task that sends a write dies (here: the remote panics): the next touch writes anew
/// instead of waiting on the dead write until it times out.
#[tokio::test(start_paused = true)]
async fn a_write_whose_task_died_is_not_joined() {
    let store = gated();
    let ttl = Duration::from_secs(90);
    store
        .remote()
        .panic_next_write
        .store(true, Ordering::SeqCst);
    assert!(store.touch("rt", ttl).await.is_err(), "its write died");
    let start = tokio::time::Instant::now();
    store.touch("rt", ttl).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the touch waited on a dead write"
    );
    assert!(store.remote().inner.is_alive("rt").await.unwrap());
}

/// A queued write whose every waiter timed out is dropped, not sent late (it would keep the
/// record alive past the false-alive bound), and covers nothing.
#[tokio::test(start_paused = true)]
async fn a_write_nobody_waits_for_is_not_sent() {
    let op_timeout = Duration::from_millis(250);
    let store = Arc::new(
        LayeredStore::builder(GatedRemote::default())
            .op_timeout(op_timeout)
            .pipelines_in_flight(1)
            .build()
            .unwrap(),
    );
    let ttl = Duration::from_secs(90);
    store.remote().writes.hold();
    // The first write takes the only pipeline slot; the second queues behind it.
    let first = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.touch("a", ttl).await })
    };
    store.remote().writes.arrivals(1).await;
    assert!(matches!(
        store.touch("b", ttl).await,
        Err(Error::Timeout { .. })
    ));
    assert!(first.await.unwrap().is_err(), "timed out too");
    store.remote().writes.open();
    // Give the flusher every chance to send what is queued.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(op_timeout).await;
    assert!(
        !store.remote().inner.is_alive("b").await.unwrap(),
        "a write nobody waited for was sent late"
    );
    // It covers nothing: the next touch writes.
    store.touch("b", ttl).await.unwrap();
    assert!(store.remote().inner.is_alive("b").await.unwrap());
}

/// The record's ttl goes out in whole milliseconds, rounded up, and the store's idea of when
/// it lapses is that exact ttl: ttl + debounce.
#[tokio::test(start_paused = true)]
async fn write_ttls_are_whole_milliseconds_rounded_up() {
    let store = gated();
    let ttl = Duration::from_secs(90) + Duration::from_micros(1);
    store.touch("rt", ttl).await.unwrap();
    assert_eq!(
        *store.remote().written_ttls.lock(),
        [Duration::from_millis(120_001)]
    );
    // Covered until exactly then: a touch whose ttl ends there coalesces, one that ends a
    // millisecond later does not.
    tokio::time::advance(Duration::from_secs(30)).await;
    store
        .touch("rt", Duration::from_millis(90_001))
        .await
        .unwrap();
    assert_eq!(store.remote().written_ttls.lock().len(), 1, "coalesced");
    store
        .touch("rt", Duration::from_millis(90_002))
        .await
        .unwrap();
    assert_eq!(store.remote().written_ttls.lock().len(), 2, "written");
}

/// The local entry outlives the short-lived entry a cached positive created: moka's expiry
/// follows the touch's deadline. moka keeps real time, so this waits real time.
#[tokio::test]
async fn a_touch_extends_an_entry_a_cached_positive_created() {
    let remote = FlakyRemote::default();
    remote
        .inner
        .touch("rt", Duration::from_secs(90))
        .await
        .unwrap();
    let store = LayeredStore::builder(remote)
        .remote_positive_ttl(50 * MS)
        .build()
        .unwrap();
    assert!(store.is_alive("rt").await.unwrap()); // cached for 50 ms
    store.touch("rt", Duration::from_secs(90)).await.unwrap();
    tokio::time::sleep(300 * MS).await;
    store.remote().failing.store(true, Ordering::SeqCst);
    // Only the local entry can answer now.
    assert!(store.is_alive("rt").await.unwrap());
}

/// A flusher dropped with its runtime (while waiting for a pipeline slot) must not leave the
/// store believing one still runs: writes on another runtime go through.
#[test]
fn writes_survive_a_flusher_dropped_with_its_runtime() {
    let store = LayeredStore::builder(FlakyRemote::default())
        .pipelines_in_flight(1)
        .op_timeout(50 * MS)
        .build()
        .unwrap();
    store.remote().delay_ms.store(60_000, Ordering::SeqCst);
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        // The first write holds the only slot; the second one's flusher waits for it.
        assert!(store.touch("a", Duration::from_secs(90)).await.is_err());
        assert!(store.touch("b", Duration::from_secs(90)).await.is_err());
    });
    drop(first);
    store.remote().delay_ms.store(0, Ordering::SeqCst);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        let touched = tokio::time::timeout(
            Duration::from_secs(5),
            store.touch("c", Duration::from_secs(90)),
        )
        .await;
        assert!(matches!(touched, Ok(Ok(()))), "{touched:?}");
    });
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let builds = [
        LayeredStore::builder(MemoryStore::new())
            .local_capacity(0)
            .build(),
        LayeredStore::builder(MemoryStore::new())
            .pipelines_in_flight(0)
            .build(),
        LayeredStore::builder(MemoryStore::new())
            .max_batch(0)
            .build(),
        LayeredStore::builder(MemoryStore::new())
            .op_timeout(Duration::ZERO)
            .build(),
        LayeredStore::builder(MemoryStore::new())
            .debounce(Duration::from_secs(400 * 24 * 3600))
            .build(),
    ];
    for build in builds {
        assert!(matches!(build, Err(Error::Config(_))), "{build:?}");
    }
}

/// Against real Redis: the command counts and round trips the issue asks for.
#[cfg(feature = "redis")]
mod over_redis {
    use super::*;
    use crate::support::RedisServer;
    use liveness_store::RedisStore;

    async fn redis(server: &RedisServer) -> RedisStore {
        crate::support::store_builder(&server.url())
            .build()
            .await
            .unwrap()
    }

    /// A Redis store whose calls may take seconds, for tests about counts, not latency.
    async fn relaxed_redis(server: &RedisServer) -> RedisStore {
        crate::support::store_builder(&server.url())
            .op_timeout(Duration::from_secs(5))
            .build()
            .await
            .unwrap()
    }

    /// Two instances over one Redis, real time: B polls every 20 ms while A beats.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_instances_over_one_redis() {
        let server = RedisServer::start();
        let (ttl, debounce, positive) = (1_000 * MS, 300 * MS, 200 * MS);
        // Generous timeouts: this test is about answers, not latency, on a busy CI machine.
        let build = |remote| {
            LayeredStore::builder(remote)
                .debounce(debounce)
                .remote_positive_ttl(positive)
                .op_timeout(Duration::from_secs(2))
                .build()
                .unwrap()
        };
        let a = Arc::new(build(relaxed_redis(&server).await));
        let b = build(relaxed_redis(&server).await);
        a.touch("rt", ttl).await.unwrap();
        let beater = {
            let a = Arc::clone(&a);
            tokio::spawn(async move {
                let mut last_ok = tokio::time::Instant::now();
                for _ in 0..15 {
                    tokio::time::sleep(200 * MS).await;
                    a.touch("rt", ttl).await.unwrap();
                    last_ok = tokio::time::Instant::now();
                }
                last_ok
            })
        };
        let mut polls = 0;
        while !beater.is_finished() {
            assert_eq!(b.is_alive_batch(&["rt"]).await.unwrap(), [true]);
            polls += 1;
            tokio::time::sleep(20 * MS).await;
        }
        let last_touch = beater.await.unwrap();
        assert!(polls > 50, "{polls} polls");
        // A wrote about once per (debounce + beat), not once per beat.
        // 8 on time; a late beat can add one.
        assert!(
            server.calls("set") <= 12,
            "{} SETs for 16 beats",
            server.calls("set")
        );
        let bound = ttl + debounce + positive + 100 * MS;
        let mut dead = [false, false];
        while dead != [true, true] && last_touch.elapsed() < bound {
            for (i, store) in [&*a, &b].into_iter().enumerate() {
                let answer = store.is_alive_batch(&["rt"]).await.unwrap()[0];
                if last_touch.elapsed() < ttl - 50 * MS {
                    assert!(answer, "instance {i} read dead before the ttl ran out");
                }
                dead[i] |= !answer;
            }
            tokio::time::sleep(20 * MS).await;
        }
        assert_eq!(
            dead,
            [true, true],
            "still alive {:?} after the last beat",
            last_touch.elapsed()
        );
    }

    /// 100 runtimes beating every 100 ms for 3 s with ttl 1 s and debounce 500 ms: the
    /// layered store sends at most 30% of the SETs the plain Redis store sends.
    #[tokio::test]
    async fn layered_sends_a_fraction_of_the_sets() {
        async fn beat_for_3s(store: &dyn LivenessStore, ids: &[String]) {
            let start = tokio::time::Instant::now();
            for tick in 0..30u32 {
                tokio::time::sleep_until(start + 100 * MS * tick).await;
                let beats: Vec<(&str, Duration)> =
                    ids.iter().map(|id| (id.as_str(), 1_000 * MS)).collect();
                store.touch_many(&beats).await.unwrap();
            }
        }
        let ids: Vec<String> = (0..100).map(|i| format!("rt-{i}")).collect();
        let server = RedisServer::start();
        // Counted after connecting: a connect creates the epoch record with one SET NX.
        let plain = redis(&server).await;
        server.reset_stats();
        beat_for_3s(&plain, &ids).await;
        let plain_sets = server.calls("set");
        server.flushall();
        let layered = LayeredStore::builder(redis(&server).await)
            .debounce(500 * MS)
            .build()
            .unwrap();
        server.reset_stats();
        beat_for_3s(&layered, &ids).await;
        let layered_sets = server.calls("set");
        assert_eq!(plain_sets, 3_000);
        assert!(
            layered_sets * 10 <= plain_sets * 3,
            "layered {layered_sets} SETs vs plain {plain_sets}"
        );
        println!("SETs: layered {layered_sets}, RedisStore {plain_sets}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_concurrent_touches() {
        let server = RedisServer::start();
        let store = Arc::new(
            LayeredStore::builder(relaxed_redis(&server).await)
                .op_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        );
        server.reset_stats();
        let burst = |ids: Vec<String>| {
            let mut tasks = tokio::task::JoinSet::new();
            for id in ids {
                let store = Arc::clone(&store);
                tasks.spawn(async move { store.touch(&id, Duration::from_secs(90)).await });
            }
            tasks
        };
        let mut tasks = burst(vec!["hot".to_owned(); 10_000]);
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        assert_eq!(server.calls("set"), 1, "one id, one write");

        let mut tasks = burst((0..10_000).map(|i| format!("rt-{i}")).collect());
        while let Some(result) = tasks.join_next().await {
            result.unwrap().unwrap();
        }
        let stats = store.stats();
        assert_eq!(server.calls("set"), 10_001);
        let batches = stats.remote_write_batches - 1;
        assert!(batches <= 200, "{batches} round trips for 10,000 writes");
        println!("10,000 distinct touches: {batches} write round trips");
    }

    #[tokio::test]
    async fn local_answers_send_nothing_and_misses_share_one_round_trip() {
        let server = RedisServer::start();
        let store = LayeredStore::new(redis(&server).await);
        let ids: Vec<String> = (0..1_000).map(|i| format!("rt-{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let beats: Vec<(&str, Duration)> = refs[..500]
            .iter()
            .map(|id| (*id, Duration::from_secs(90)))
            .collect();
        store.touch_many(&beats).await.unwrap();

        server.reset_stats();
        let answers = store.is_alive_batch(&refs[..500]).await.unwrap();
        assert_eq!(answers, vec![true; 500]);
        assert_eq!(server.total_calls(), 0, "all-local batch sent commands");

        let before = store.stats();
        let answers = store.is_alive_batch(&refs).await.unwrap();
        let expected: Vec<bool> = (0..1_000).map(|i| i < 500).collect();
        assert_eq!(answers, expected);
        assert_eq!(server.calls("mget"), 1);
        // The loss checks ride in the same pipeline: the epoch read and the marker check.
        assert_eq!(server.calls("get"), 1);
        assert_eq!(server.calls("script|exists"), 1);
        assert_eq!(server.total_calls(), 3);
        let after = store.stats();
        assert_eq!(
            after.remote_lookup_batches - before.remote_lookup_batches,
            1
        );
        assert_eq!(after.remote_lookups - before.remote_lookups, 500);
        assert_eq!(after.local_hits - before.local_hits, 500);
    }
}
