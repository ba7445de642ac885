//! Data-loss detection (invariant 4): an epoch record that every lookup reads back.
//!
//! The store writes a random epoch value once (`SET NX`, no expiry) and reads it (`GET`) in the
//! same pipeline as every batch of `MGET`s, after them; it writes again only after finding it
//! missing. If it comes back missing or different,
//! Redis lost its data (restart without persistence, `FLUSHALL`, failover to an empty
//! replica) after the store last looked: a missing record may then be a live runtime whose
//! record is gone, so "dead" answers are not trusted until one full ttl has passed, by when
//! every live runtime has beaten again.
//!
//! The epoch's key is `<prefix>` + NUL + `epoch`: under the prefix, so ACL key patterns that
//! cover the records cover it too, yet outside the id space, because no valid runtime id
//! contains a NUL byte (`<prefix>meta:epoch` would be the record of a runtime named
//! `meta:epoch`).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Pipeline, Value};
use tokio::time::Instant;

/// The epoch key's suffix after the prefix; the NUL keeps it out of the id space.
const EPOCH_SUFFIX: &[u8] = b"\0epoch";

/// How long "dead" answers are distrusted after data loss, at least, by default: the
/// reference deployment's ttl. Set it to the largest ttl in use.
pub const DEFAULT_RECOVERY_FLOOR: Duration = Duration::from_secs(90);

/// What one store instance knows about the epoch.
#[derive(Debug)]
pub(super) struct Epoch {
    key: Vec<u8>,
    /// Distrust lasts at least this long, for instances that read but never write (they see
    /// no ttl).
    recovery_floor: Duration,
    /// The largest ttl this instance has written, in milliseconds.
    max_ttl_ms: AtomicU64,
    state: Mutex<EpochState>,
    /// Names the backend in log lines (a redacted URL).
    name: String,
}

#[derive(Debug, Default)]
struct EpochState {
    /// The epoch value last read; `None` before the first read.
    known: Option<Vec<u8>>,
    /// Counts changes of `known`, so that a reply to a pipeline built before the latest change
    /// is not compared with a value it never saw.
    generation: u64,
    /// While recovering: when detection happened and when trust returns.
    recovery: Option<(Instant, Instant)>,
    losses: u64,
}

impl Epoch {
    pub(super) fn new(prefix: &[u8], recovery_floor: Duration, name: String) -> Epoch {
        let mut key = prefix.to_vec();
        key.extend_from_slice(EPOCH_SUFFIX);
        Epoch {
            key,
            recovery_floor,
            max_ttl_ms: AtomicU64::new(0),
            state: Mutex::new(EpochState::default()),
            name,
        }
    }

    /// The epoch record's key.
    pub(super) fn key(&self) -> &[u8] {
        &self.key
    }

    /// Remembers a ttl this instance wrote: the recovery window covers the longest one.
    pub(super) fn note_ttl(&self, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.max_ttl_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Appends the epoch read to `pipeline` and returns what [`observe`](Self::observe) needs
    /// to read its reply. Until this instance knows an epoch (the first look, or after finding it
    /// missing) a `SET NX` with a fresh random value goes first: a re-created epoch never
    /// equals an old one, and of several instances racing to create it one wins and all adopt
    /// its value.
    pub(super) fn add_check(&self, pipeline: &mut Pipeline) -> EpochCheck {
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

    /// Takes the reply of the epoch `GET` of `check` and returns whether it shows data loss
    /// since the previous check. Detection starts the recovery window and is logged once,
    /// loudly.
    pub(super) fn observe(&self, check: EpochCheck, reply: &Value) -> bool {
        let current = match reply {
            Value::BulkString(bytes) => Some(bytes.as_slice()),
            Value::SimpleString(text) => Some(text.as_bytes()),
            _ => None,
        };
        let mut state = self.state.lock();
        if check.generation != state.generation {
            // Concurrent calls: a newer one already moved the epoch on (detected the loss, or
            // adopted the new value). Comparing this older reply with it would count one loss
            // twice; a loss after that newer call shows in the next one.
            return false;
        }
        let lost = match (&state.known, current) {
            (None, _) => false, // The first look: nothing to compare with.
            (Some(known), Some(current)) => known.as_slice() != current,
            (Some(_), None) => true,
        };
        if state.known.as_deref() != current {
            state.known = current.map(<[u8]>::to_vec);
            state.generation += 1;
        }
        if lost {
            let now = Instant::now();
            let max_ttl = Duration::from_millis(self.max_ttl_ms.load(Ordering::Relaxed));
            let window = self.recovery_floor.max(max_ttl);
            state.recovery = Some((now, now + window));
            state.losses += 1;
            tracing::error!(
                backend = %self.name,
                recovery_window = ?window,
                "liveness store: redis lost its data (epoch record missing or changed); \
                 answering Recovering instead of \"dead\" until every live runtime has \
                 beaten again"
            );
        }
        lost
    }

    /// While recovering, how long until "dead" answers are trusted again.
    pub(super) fn recovering_for(&self) -> Option<Duration> {
        let state = self.state.lock();
        let (_, until) = state.recovery?;
        let now = Instant::now();
        (now < until).then(|| until - now)
    }

    /// The recovery part of the store's health: losses so far, and the window (start, end) of
    /// the latest one.
    pub(super) fn status(&self) -> (u64, Option<(Instant, Instant)>) {
        let state = self.state.lock();
        (state.losses, state.recovery)
    }
}

/// What a pipeline's epoch read added: how many replies, and which state it was built on.
#[derive(Debug, Clone, Copy)]
pub(super) struct EpochCheck {
    /// Replies the epoch commands add at the end of the pipeline (its `GET` is the last).
    pub(super) replies: usize,
    generation: u64,
}

/// A new epoch value: the time and 64 random bits, unique per call.
fn fresh_value() -> String {
    let random = RandomState::new().hash_one(Instant::now());
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{unix_ms}-{random:016x}")
}
