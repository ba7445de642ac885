//! One run: the simulation's shared state, the tasks that drive it, and what they report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;
use liveness_store::LivenessStore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::options::Options;
use crate::progress;
use crate::shards::{TouchReport, run_shard};
use crate::sweeper::{SweepReport, run_sweeper};

/// Tasks that drive the runtimes' heartbeats.
pub(crate) const SHARDS: usize = 8;
/// "No touch returned yet" in the per-runtime instants.
pub(crate) const NEVER: u64 = u64::MAX;

/// What a finished run hands back: its state, and what the shards and the sweeper saw.
pub(crate) struct Outcome {
    pub(crate) sim: Arc<Sim>,
    pub(crate) touch: TouchReport,
    pub(crate) sweep: SweepReport,
    /// How long the run lasted, in ns.
    pub(crate) run_ns: u64,
    /// Stopped early by Ctrl-C.
    pub(crate) interrupted: bool,
    /// Tasks that failed.
    pub(crate) failures: Vec<String>,
}

/// Drives `store` with the shards and the sweeper for the run's duration, or until Ctrl-C,
/// moving `bar` along.
pub(crate) async fn simulate(
    store: Arc<dyn LivenessStore>,
    opts: Options,
    bar: ProgressBar,
) -> Outcome {
    let sim = Arc::new(Sim::new(store, opts));
    let follower =
        (!bar.is_hidden()).then(|| tokio::spawn(progress::follow(bar.clone(), Arc::clone(&sim))));
    let shards: Vec<JoinHandle<TouchReport>> = (0..SHARDS.min(sim.ids.len()))
        .map(|shard| tokio::spawn(run_shard(Arc::clone(&sim), shard)))
        .collect();
    let sweeper = tokio::spawn(run_sweeper(Arc::clone(&sim)));

    let end = sim.start + Duration::from_nanos(sim.end_ns);
    let interrupted = tokio::select! {
        () = tokio::time::sleep_until(end) => false,
        Ok(()) = tokio::signal::ctrl_c() => true,
    };
    let run_ns = sim.now_ns().min(sim.end_ns);
    sim.stop.store(true, Ordering::Relaxed);
    if let Some(follower) = follower {
        let _ = follower.await;
    }

    let mut failures: Vec<String> = Vec::new();
    let mut touch = TouchReport::default();
    for (shard, handle) in shards.into_iter().enumerate() {
        match handle.await {
            Ok(report) => touch.merge(report),
            Err(error) => failures.push(format!("shard task {shard} failed: {error}")),
        }
    }
    let sweep = match sweeper.await {
        Ok(report) => report,
        Err(error) => {
            failures.push(format!("sweeper task failed: {error}"));
            SweepReport::new(sim.silent_count)
        }
    };

    Outcome {
        sim,
        touch,
        sweep,
        run_ns,
        interrupted,
        failures,
    }
}

pub(crate) struct Sim {
    pub(crate) store: Arc<dyn LivenessStore>,
    pub(crate) opts: Options,
    pub(crate) ids: Vec<String>,
    /// For each runtime, its index among the silenced ones, if it is one.
    pub(crate) silent_slot: Vec<Option<usize>>,
    pub(crate) silent_count: usize,
    /// For each runtime, when (ns since `start`) its last touch that returned `Ok` was called,
    /// or [`NEVER`]. Written once the touch has returned.
    pub(crate) last_ok: Vec<AtomicU64>,
    /// For each runtime, when its last touch returned, `Ok` or not, or [`NEVER`]. A failed
    /// touch may still have written its record, so false-alive delays count from here.
    pub(crate) last_try: Vec<AtomicU64>,
    pub(crate) start: Instant,
    pub(crate) end_ns: u64,
    pub(crate) silence_ns: u64,
    pub(crate) stop: AtomicBool,
    /// Beats sent so far, and false "dead" answers seen so far: for the progress bar.
    pub(crate) beats_sent: AtomicU64,
    pub(crate) false_dead_seen: AtomicU64,
}

impl Sim {
    pub(crate) fn new(store: Arc<dyn LivenessStore>, opts: Options) -> Sim {
        let n = opts.runtimes;
        let silent_count = ((n as f64) * opts.silent_percent / 100.0).round() as usize;
        let silent_count = silent_count.min(n);
        let end_ns = nanos(opts.duration);
        Sim {
            store,
            ids: (0..n).map(|i| format!("sim-rt-{i:07}")).collect(),
            silent_slot: spread(n, silent_count),
            silent_count,
            last_ok: (0..n).map(|_| AtomicU64::new(NEVER)).collect(),
            last_try: (0..n).map(|_| AtomicU64::new(NEVER)).collect(),
            start: Instant::now(),
            end_ns,
            silence_ns: end_ns / 2,
            stop: AtomicBool::new(false),
            beats_sent: AtomicU64::new(0),
            false_dead_seen: AtomicU64::new(0),
            opts,
        }
    }

    pub(crate) fn ns_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.start))
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    pub(crate) fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.now_ns() >= self.end_ns
    }

    pub(crate) fn is_silenced(&self, runtime: usize) -> bool {
        matches!(self.silent_slot.get(runtime), Some(Some(_)))
    }

    /// When, within each beat interval, a runtime beats.
    pub(crate) fn phase_ns(&self, runtime: usize) -> u64 {
        splitmix64(runtime as u64) % nanos(self.opts.beat).max(1)
    }

    /// Beats due before `until_ns` (silenced runtimes' only before half-time).
    pub(crate) fn scheduled_beats(&self, until_ns: u64) -> u64 {
        let beat = nanos(self.opts.beat).max(1);
        (0..self.ids.len())
            .map(|runtime| {
                let cutoff = if self.is_silenced(runtime) {
                    until_ns.min(self.silence_ns)
                } else {
                    until_ns
                };
                let phase = self.phase_ns(runtime);
                if phase < cutoff {
                    (cutoff - phase - 1) / beat + 1
                } else {
                    0
                }
            })
            .sum()
    }
}

/// Picks `count` of `n` runtimes, evenly spaced; returns each one's slot among the picked.
pub(crate) fn spread(n: usize, count: usize) -> Vec<Option<usize>> {
    let (n64, count64) = (n as u64, count as u64);
    let mut slot = 0;
    (0..n64)
        .map(|i| {
            if (i + 1) * count64 / n64 > i * count64 / n64 {
                slot += 1;
                Some(slot - 1)
            } else {
                None
            }
        })
        .collect()
}

/// A well-mixed hash of `x` (SplitMix64's finaliser): deterministic phases, no `rand`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn micros_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silenced_runtimes_are_exactly_counted_and_spread() {
        let slots = spread(20_000, 400);
        let picked: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
        assert_eq!(picked.len(), 400);
        assert!(picked.windows(2).all(|w| w[1] - w[0] == 50));
        assert_eq!(slots[picked[399]], Some(399));
        assert!(spread(7, 0).iter().all(Option::is_none));
        assert!(spread(7, 7).iter().all(Option::is_some));
    }
}
