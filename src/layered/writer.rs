//! Group commit: touches that need a remote write join the next pipeline.
//!
//! A flusher task takes every queued write as soon as a pipeline slot is free and sends them as
//! one `touch_many` (one round trip on Redis). An idle store pays one round trip per touch; a
//! loaded one pays one per batch. The flusher exits once the queue is empty, so it never
//! outlives the work the store gave it; the next write that finds no flusher starts one, and so
//! does a touch that joins a queued write (the flusher that was to send it may have died with
//! its runtime).
//!
//! A queued write whose every waiter has timed out is dropped, not sent: sent late, it would
//! keep a record alive past the false-alive bound, and nobody waits for its result.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::Shared;
use super::entry::{LocalEntry, WriteState};
use crate::stats::Counters;
use crate::{Error, LivenessStore, Result};

/// One remote write: a runtime's record with the ttl that outlasts the debounce window.
pub(super) struct Job {
    pub(super) runtime_id: String,
    pub(super) ttl: Duration,
    pub(super) entry: Arc<LocalEntry>,
    pub(super) state: Arc<WriteState>,
    pub(super) outcome: watch::Sender<Option<Result<()>>>,
}

/// Writes waiting for the next pipeline.
#[derive(Debug)]
pub(super) struct WriteQueue {
    jobs: Mutex<Vec<Job>>,
    flushing: AtomicBool,
    /// Pipelines allowed in flight at once.
    slots: Arc<Semaphore>,
    /// Writes one pipeline carries at most, so that a burst (a cold start, a recovery) never
    /// becomes one pipeline too big to finish within the op timeout.
    max_batch: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("runtime_id", &self.runtime_id)
            .field("ttl", &self.ttl)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl WriteQueue {
    pub(super) fn new(pipelines_in_flight: usize, max_batch: usize) -> Self {
        WriteQueue {
            jobs: Mutex::new(Vec::new()),
            flushing: AtomicBool::new(false),
            slots: Arc::new(Semaphore::new(pipelines_in_flight)),
            max_batch,
        }
    }

    /// The next pipeline's writes, oldest first, without those every waiter gave up on by
    /// `now`.
    fn take_batch(&self, now: u64) -> Vec<Job> {
        let mut batch = Vec::new();
        while batch.is_empty() {
            let taken: Vec<Job> = {
                let mut jobs = self.jobs.lock();
                if jobs.is_empty() {
                    return batch;
                }
                let end = jobs.len().min(self.max_batch);
                jobs.drain(..end).collect()
            };
            batch = taken
                .into_iter()
                .filter_map(|job| job.unless_abandoned(now))
                .collect();
        }
        batch
    }
}

impl Job {
    /// The job, unless every touch waiting for it has timed out by `now`: then it is dropped,
    /// and its entry stops waiting for it (under the entry's lock, which a touch joining it
    /// holds too, so that no touch joins a write being dropped).
    fn unless_abandoned(self, now: u64) -> Option<Job> {
        let mut pending = self.entry.pending.lock();
        if !self.state.abandoned(now) {
            drop(pending);
            return Some(self);
        }
        if pending.is(&self.state) {
            pending.write = None;
        }
        None
    }
}

/// Clears the `flushing` flag if a flusher ends without doing so itself (its task was dropped,
/// say because its runtime shut down), so that the next write starts a new flusher instead of
/// waiting forever for one that is gone.
struct FlushingGuard<'a> {
    queue: &'a WriteQueue,
    armed: bool,
}

impl Drop for FlushingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.queue.flushing.store(false, Ordering::Release);
        }
    }
}

/// Queues `job` and makes sure a flusher will send it.
pub(super) fn enqueue<R: LivenessStore + 'static>(shared: &Arc<Shared<R>>, job: Job) {
    shared.queue.jobs.lock().push(job);
    ensure_flusher(shared);
}

/// Starts a flusher unless one runs.
pub(super) fn ensure_flusher<R: LivenessStore + 'static>(shared: &Arc<Shared<R>>) {
    if shared.queue.flushing.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(flush(Arc::clone(shared)));
}

async fn flush<R: LivenessStore + 'static>(shared: Arc<Shared<R>>) {
    let queue = &shared.queue;
    let mut guard = FlushingGuard { queue, armed: true };
    loop {
        // Waiting for a free slot is what gathers the writes of a busy store into one batch.
        let Ok(slot) = Arc::clone(&queue.slots).acquire_owned().await else {
            return;
        };
        let jobs = queue.take_batch(shared.clock.now());
        if jobs.is_empty() {
            queue.flushing.store(false, Ordering::Release);
            // A job queued between the take and the store above saw `flushing` still set and
            // started no flusher: this one carries on for it, unless another has started.
            if queue.jobs.lock().is_empty() || queue.flushing.swap(true, Ordering::AcqRel) {
                guard.armed = false;
                return;
            }
            continue;
        }
        tokio::spawn(send(Arc::clone(&shared), jobs, slot));
    }
}

async fn send<R: LivenessStore>(
    shared: Arc<Shared<R>>,
    jobs: Vec<Job>,
    _slot: OwnedSemaphorePermit,
) {
    let beats: Vec<(&str, Duration)> = jobs
        .iter()
        .map(|job| (job.runtime_id.as_str(), job.ttl))
        .collect();
    let timeout = shared.settings.op_timeout;
    let losses_before = shared.remote_losses();
    // The remote bounds its own calls; this guard keeps a misbehaving one from holding the
    // slot forever.
    let result = tokio::time::timeout(timeout, shared.remote.touch_many(&beats))
        .await
        .unwrap_or(Err(Error::Timeout {
            op: "touch",
            after: timeout,
        }));
    shared.note_remote_losses();
    let counters = &shared.counters;
    Counters::add(&counters.remote_write_batches, 1);
    Counters::add(&counters.remote_writes, jobs.len() as u64);
    if result.is_err() {
        Counters::add(&counters.errors, 1);
    }
    for job in jobs {
        // Invariant 1: only a write Redis acknowledged lets later touches coalesce, and only
        // while the remote has lost no data since it was sent (invariant 4): a loss detected
        // in this very pipeline may have come after the writes. The entry also stops waiting
        // for it, or every runtime would keep its last write's channel for as long as it stays
        // in the local layer; touches still waiting hold their own receivers.
        let covered = result.is_ok().then_some(losses_before);
        job.entry.write_acknowledged(&job.state, covered);
        job.outcome.send_replace(Some(result.clone()));
    }
}
