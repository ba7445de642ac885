//! Data-loss detection (invariant 4): an epoch record that every lookup reads back.
//!
//! The store writes an epoch value (its creation time and 64 random bits) once (`SET NX`, no expiry) and reads it (`GET`) in the
//! same pipeline as every batch of `MGET`s, after them; it writes again only after finding it
//! missing. If it comes back missing or different,
//! Redis lost its data (restart without persistence, `FLUSHALL`, failover to an empty
//! replica) after the store last looked: a missing record may then be a live runtime whose
//! record is gone, so "dead" answers are not trusted until one full ttl has passed, by when
//! every live runtime has beaten again. For the same reason an instance that first sees an
//! epoch younger than that (it started with, or after, a new or emptied Redis) distrusts
//! "dead" until the epoch is a full window old: it cannot know what the Redis held before.
//!
//! The epoch's key is `<prefix>` + NUL + `epoch`: under the prefix, so ACL key patterns that
//! cover the records cover it too, yet outside the id space, because no valid runtime id
//! contains a NUL byte (`<prefix>meta:epoch` would be the record of a runtime named
//! `meta:epoch`).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::{Pipeline, Value};
use tokio::time::Instant;

/// The epoch key's suffix after the prefix; the NUL keeps it out of the id space.
pub(crate) const EPOCH_SUFFIX: &[u8] = b"\0epoch";

/// How long "dead" answers are distrusted after data loss, at least, by default: the
/// reference deployment's ttl. Set it to the largest ttl in use.
pub const DEFAULT_RECOVERY_FLOOR: Duration = Duration::from_secs(90);

/// What one store instance knows about the epoch.
#[derive(Debug)]
pub(crate) struct Epoch {
    key: Vec<u8>,
    /// Distrust lasts at least this long, for instances that read but never write (they see
    /// no ttl).
    recovery_floor: Duration,
    /// The largest ttl this instance has written, in milliseconds (shared by a cluster's
    /// epochs: one store writes them all).
    max_ttl_ms: Arc<AtomicU64>,
    /// Losses detected, read without the lock on every layered write.
    losses: AtomicU64,
    state: Mutex<EpochState>,
    /// Names the backend in log lines (a redacted URL).
    name: Arc<str>,
    /// Whether this record logs its own losses; a cluster's records are many and log as one.
    logs: bool,
}

#[derive(Debug, Default)]
struct EpochState {
    /// The epoch value last read; `None` before the first read.
    known: Option<Vec<u8>>,
    /// Counts changes of `known`, so that a reply to a pipeline built before the latest change
    /// is not compared with a value it never saw.
    generation: u64,
    /// While recovering: when distrust began and when trust returns.
    recovery: Option<(Instant, Instant)>,
}

impl Epoch {
    pub(crate) fn new(prefix: &[u8], recovery_floor: Duration, name: String) -> Epoch {
        let mut key = prefix.to_vec();
        key.extend_from_slice(EPOCH_SUFFIX);
        let mut epoch = Epoch::with_key(key, recovery_floor, name.into(), Arc::default());
        epoch.logs = true;
        epoch
    }

    /// A silent epoch record at `key` (a cluster keeps one per slot and logs for all of them),
    /// whose recovery window covers the ttls noted in `max_ttl_ms`.
    pub(crate) fn with_key(
        key: Vec<u8>,
        recovery_floor: Duration,
        name: Arc<str>,
        max_ttl_ms: Arc<AtomicU64>,
    ) -> Epoch {
        Epoch {
            key,
            recovery_floor,
            logs: false,
            max_ttl_ms,
            losses: AtomicU64::new(0),
            state: Mutex::new(EpochState::default()),
            name,
        }
    }

    /// The epoch record's key.
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }

    /// Remembers a ttl this instance wrote: the recovery window covers the longest one.
    pub(crate) fn note_ttl(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.max_ttl_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Appends the epoch read to `pipeline` and returns what [`observe`](Self::observe) needs
    /// to read its reply. Until this instance knows an epoch (the first look, or after finding it
    /// missing) a `SET NX` with a fresh random value goes first: a re-created epoch never
    /// equals an old one, and of several instances racing to create it one wins and all adopt
    /// its value.
    pub(crate) fn add_check(&self, pipeline: &mut Pipeline) -> EpochCheck {
        let (create, generation) = {
            let state = self.state.lock();
            (state.known.is_none(), state.generation)
        };
        if create {
            pipeline
                .cmd("SET")
                .arg(&self.key)
                .arg(fresh_value())
                .arg("NX");
        }
        pipeline.cmd("GET").arg(&self.key);
        EpochCheck {
            replies: if create { 2 } else { 1 },
            generation,
        }
    }

    /// What a read of the record that a pipeline carries without creating it (a cluster's
    /// `MGET` holds its slot's record) needs to be compared: the state it was read against.
    #[cfg(feature = "cluster")]
    pub(crate) fn read_check(&self) -> EpochCheck {
        EpochCheck {
            replies: 1,
            generation: self.state.lock().generation,
        }
    }

    /// Takes the reply of the epoch `GET` of `check`. A missing or changed epoch is data loss;
    /// an epoch seen for the first time (at connect, or after a loss) that is younger than the
    /// recovery window means a Redis that may not hold every live runtime's record yet. Either
    /// way "dead" answers are distrusted until a full window has passed since the records
    /// began (invariant 4). Each loss is logged once, loudly.
    pub(crate) fn observe(&self, check: EpochCheck, reply: &Value) -> Observation {
        let current = match reply {
            Value::BulkString(bytes) => Some(bytes.as_slice()),
            Value::SimpleString(text) => Some(text.as_bytes()),
            _ => None,
        };
        let now = Instant::now();
        let window = self.window();
        let event = {
            let mut state = self.state.lock();
            let unchanged = matches!(
                (&state.known, current),
                (Some(known), Some(current)) if known.as_slice() == current
            );
            if unchanged {
                return Observation::Unchanged;
            }
            if check.generation != state.generation {
                // Concurrent calls: a newer one already moved the epoch on (detected the
                // loss, or adopted the new value). Comparing this older reply with it would
                // count one loss twice; a loss after that newer call shows in the next one.
                return Observation::Stale;
            }
            let event = match (&state.known, current) {
                // Still missing (it could not be created): nothing to compare yet.
                (None, None) => return Observation::StillMissing,
                (None, Some(current)) => {
                    let remaining = window.saturating_sub(age(current));
                    if remaining.is_zero() {
                        Event::AdoptedOld
                    } else {
                        state.distrust_until(now, remaining);
                        Event::AdoptedYoung { remaining }
                    }
                }
                (Some(_), _) => {
                    state.distrust_until(now, window);
                    self.losses.fetch_add(1, Ordering::Relaxed);
                    Event::Lost
                }
            };
            state.known = current.map(<[u8]>::to_vec);
            state.generation += 1;
            event
        };
        let observation = match event {
            Event::AdoptedOld | Event::AdoptedYoung { .. } => Observation::Adopted,
            Event::Lost => Observation::Lost,
        };
        if !self.logs {
            return observation;
        }
        match event {
            Event::AdoptedOld => {}
            Event::AdoptedYoung { remaining } => tracing::warn!(
                backend = %self.name,
                distrust_for = ?remaining,
                "liveness store: redis's records are younger than the recovery window (a new \
                 or emptied redis); answering Recovering instead of \"dead\" until they are \
                 not"
            ),
            Event::Lost => tracing::error!(
                backend = %self.name,
                recovery_window = ?window,
                "liveness store: redis lost its data (epoch record missing or changed); \
                 answering Recovering instead of \"dead\" until every live runtime has \
                 beaten again"
            ),
        }
        observation
    }

    /// How long "dead" answers are distrusted after a loss: the largest ttl this instance has
    /// written, at least the floor.
    pub(crate) fn window(&self) -> Duration {
        let max_ttl = Duration::from_millis(self.max_ttl_ms.load(Ordering::Relaxed));
        self.recovery_floor.max(max_ttl)
    }

    /// How many losses this instance has detected.
    pub(crate) fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// While recovering, how long until "dead" answers are trusted again.
    pub(crate) fn recovering_for(&self) -> Option<Duration> {
        let state = self.state.lock();
        let (_, until) = state.recovery?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }

    /// The recovery part of the store's health: losses so far, and the window (start, end) of
    /// the latest one.
    pub(crate) fn status(&self) -> (u64, Option<(Instant, Instant)>) {
        let recovery = self.state.lock().recovery;
        (self.losses(), recovery)
    }
}

/// What one epoch reply told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observation {
    /// The record is as last seen: "dead" answers read beside it stand (within any window).
    Unchanged,
    /// First seen (at connect, after a loss): trusted, or distrusted while it is young.
    Adopted,
    /// Missing or changed: data loss; "dead" is distrusted for the window.
    Lost,
    /// Compared with nothing: a concurrent call moved the state on meanwhile.
    Stale,
    /// Missing, and never seen: nothing to compare yet.
    StillMissing,
}

impl Observation {
    /// Whether the reply says the data beside it is the data the store knows: "dead" answers
    /// read with it may be given out (as `Recovering` while a window runs).
    #[cfg(feature = "cluster")]
    pub(crate) fn vouches(self) -> bool {
        matches!(
            self,
            Observation::Unchanged | Observation::Adopted | Observation::Lost
        )
    }
}

/// What an epoch reply changed, to log once the lock is released.
enum Event {
    AdoptedOld,
    AdoptedYoung { remaining: Duration },
    Lost,
}

impl EpochState {
    /// Distrusts "dead" answers for at least `window` from `now`.
    fn distrust_until(&mut self, now: Instant, window: Duration) {
        let until = now.checked_add(window).unwrap_or(now);
        self.recovery = match self.recovery {
            Some((start, end)) if end > now => Some((start, end.max(until))),
            _ => Some((now, until)),
        };
    }
}

/// How old an epoch value is: its creation time is its first field, Unix milliseconds. A value
/// this crate did not write counts as brand new, the safe side.
fn age(value: &[u8]) -> Duration {
    let created_ms = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.split('-').next())
        .and_then(|ms| ms.parse::<u64>().ok());
    created_ms.map_or(Duration::ZERO, |created| {
        Duration::from_millis(unix_ms().saturating_sub(created))
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a pipeline's epoch read added: how many replies, and which state it was built on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EpochCheck {
    /// Replies the epoch commands add at the end of the pipeline (its `GET` is the last).
    pub(crate) replies: usize,
    generation: u64,
}

/// A new epoch value: the time and 64 random bits, unique per call.
pub(crate) fn fresh_value() -> String {
    let random = RandomState::new().hash_one(Instant::now());
    format!("{}-{random:016x}", unix_ms())
}
