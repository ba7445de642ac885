//! Heartbeats: shard tasks that send every runtime's beats on schedule.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::options::TouchMode;
use crate::run::{SHARDS, Sim, micros_u32, nanos};

/// The most beats one `touch_many` call carries (a shard that fell behind catches up in groups).
const MAX_GROUP: usize = 1_000;

#[derive(Default)]
pub(crate) struct TouchReport {
    pub(crate) calls: u64,
    pub(crate) beats: u64,
    pub(crate) err_calls: u64,
    pub(crate) err_beats: u64,
    pub(crate) first_error: Option<String>,
    /// Every call's latency, in µs.
    pub(crate) latency_us: Vec<u32>,
    /// How late each call started after the earliest beat it carried was due, in µs.
    pub(crate) lag_us: Vec<u32>,
}

impl TouchReport {
    pub(crate) fn merge(&mut self, other: TouchReport) {
        self.calls += other.calls;
        self.beats += other.beats;
        self.err_calls += other.err_calls;
        self.err_beats += other.err_beats;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency_us.extend(other.latency_us);
        self.lag_us.extend(other.lag_us);
    }
}

/// A shard's runtimes in beat order: `(phase, runtime)` sorted, walked round after round.
pub(crate) struct Schedule {
    pub(crate) beats: Vec<(u64, usize)>,
    pub(crate) beat_ns: u64,
    pub(crate) round: u64,
    pub(crate) pos: usize,
}

impl Schedule {
    pub(crate) fn new(mut beats: Vec<(u64, usize)>, beat_ns: u64) -> Schedule {
        beats.sort_unstable();
        Schedule {
            beats,
            beat_ns,
            round: 0,
            pos: 0,
        }
    }

    /// When the next beat is due (ns since the start), and whose it is.
    pub(crate) fn next(&self) -> Option<(u64, usize)> {
        let (phase, runtime) = self.beats.get(self.pos).copied()?;
        let due = self
            .round
            .saturating_mul(self.beat_ns)
            .saturating_add(phase);
        Some((due, runtime))
    }

    pub(crate) fn advance(&mut self) {
        self.pos += 1;
        if self.pos >= self.beats.len() {
            self.pos = 0;
            self.round += 1;
        }
    }
}

/// Drives every `SHARDS`-th runtime, starting at `shard`, until the run is over.
pub(crate) async fn run_shard(sim: Arc<Sim>, shard: usize) -> TouchReport {
    let beats = (shard..sim.ids.len())
        .step_by(SHARDS)
        .map(|runtime| (sim.phase_ns(runtime), runtime))
        .collect();
    let mut schedule = Schedule::new(beats, nanos(sim.opts.beat));
    let mut report = TouchReport::default();
    let mut group = Vec::with_capacity(MAX_GROUP);
    while !sim.stop.load(Ordering::Relaxed) {
        let now = sim.now_ns();
        if now >= sim.end_ns {
            break;
        }
        if let Some(first_due) = sim.collect_due(&mut schedule, now, &mut group) {
            report.lag_us.push(micros_u32(Duration::from_nanos(
                now.saturating_sub(first_due),
            )));
            sim.beat(&group, &mut report).await;
            if group.len() == MAX_GROUP {
                // Behind schedule: catch up without sleeping, but let other tasks run.
                tokio::task::yield_now().await;
                continue;
            }
        }
        let Some((due, _)) = schedule.next() else {
            break;
        };
        let wake = Duration::from_nanos(due.min(sim.end_ns));
        tokio::time::sleep_until(sim.start + wake).await;
    }
    report
}

impl Sim {
    /// Fills `group` with the runtimes whose beat is due at `now` (at most [`MAX_GROUP`]),
    /// skipping silenced runtimes past half-time; returns when the earliest of them was due.
    pub(crate) fn collect_due(
        &self,
        schedule: &mut Schedule,
        now: u64,
        group: &mut Vec<usize>,
    ) -> Option<u64> {
        group.clear();
        let mut first_due = None;
        while group.len() < MAX_GROUP {
            match schedule.next() {
                Some((due, runtime)) if due <= now => {
                    schedule.advance();
                    if self.is_silenced(runtime) && due >= self.silence_ns {
                        continue;
                    }
                    first_due.get_or_insert(due);
                    group.push(runtime);
                }
                _ => break,
            }
        }
        first_due
    }

    /// Sends the beats of `group` and records when each one returned.
    pub(crate) async fn beat(&self, group: &[usize], report: &mut TouchReport) {
        let ttl = self.opts.ttl;
        match self.opts.touch {
            TouchMode::Many => {
                let beats: Vec<(&str, Duration)> = group
                    .iter()
                    .map(|&runtime| (self.ids[runtime].as_str(), ttl))
                    .collect();
                let started = Instant::now();
                let result = self.store.touch_many(&beats).await;
                self.record_touch(group, started, result, report);
            }
            TouchMode::One => {
                for &runtime in group {
                    let started = Instant::now();
                    let result = self.store.touch(&self.ids[runtime], ttl).await;
                    self.record_touch(&[runtime], started, result, report);
                }
            }
        }
    }

    pub(crate) fn record_touch(
        &self,
        runtimes: &[usize],
        started: Instant,
        result: liveness_store::Result<()>,
        report: &mut TouchReport,
    ) {
        let returned = Instant::now();
        let at = self.ns_at(returned);
        // A store can only stamp a record once the call has begun, never after it returned, so
        // invariant 1 counts a record's ttl from the call.
        let called = self.ns_at(started);
        let count = runtimes.len() as u64;
        self.beats_sent.fetch_add(count, Ordering::Relaxed);
        report.calls += 1;
        report.beats += count;
        report
            .latency_us
            .push(micros_u32(returned.saturating_duration_since(started)));
        for &runtime in runtimes {
            self.last_try[runtime].store(at, Ordering::Release);
        }
        match result {
            Ok(()) => {
                for &runtime in runtimes {
                    self.last_ok[runtime].store(called, Ordering::Release);
                }
            }
            Err(error) => {
                report.err_calls += 1;
                report.err_beats += count;
                report.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
}
