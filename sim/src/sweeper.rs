//! The sweeper: asks `is_alive_batch` about every runtime on schedule and judges each answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::report::{fmt_instant, fmt_nanos};
use crate::run::{NEVER, Sim, micros_u32, nanos};

/// False "dead" answers described in detail.
const EXAMPLES: usize = 5;

/// What the sweeper saw of one silenced runtime after its last touch plus the ttl.
#[derive(Default, Clone, Copy)]
pub(crate) struct SilencedView {
    /// Asked about at least once after its record should have lapsed.
    pub(crate) observed: bool,
    /// Answered "dead" at least once then.
    pub(crate) seen_dead: bool,
    /// The longest it was still answered "alive" after its record should have lapsed, in ns.
    pub(crate) late_alive_ns: u64,
}

pub(crate) struct SweepReport {
    pub(crate) sweeps: u64,
    pub(crate) calls: u64,
    pub(crate) ids: u64,
    pub(crate) err_calls: u64,
    pub(crate) err_ids: u64,
    pub(crate) first_error: Option<String>,
    /// Calls whose answer did not hold one entry per id.
    pub(crate) malformed_calls: u64,
    /// Every call's latency, in µs.
    pub(crate) latency_us: Vec<u32>,
    pub(crate) false_dead: u64,
    /// The earliest a false "dead" came, before its record was due to lapse, in ns.
    pub(crate) worst_early_ns: u64,
    pub(crate) examples: Vec<String>,
    pub(crate) silenced: Vec<SilencedView>,
}

impl SweepReport {
    pub(crate) fn new(silent_count: usize) -> SweepReport {
        SweepReport {
            sweeps: 0,
            calls: 0,
            ids: 0,
            err_calls: 0,
            err_ids: 0,
            first_error: None,
            malformed_calls: 0,
            latency_us: Vec::new(),
            false_dead: 0,
            worst_early_ns: 0,
            examples: Vec::new(),
            silenced: vec![SilencedView::default(); silent_count],
        }
    }
}

/// Asks about every runtime each sweep interval, until the run is over.
pub(crate) async fn run_sweeper(sim: Arc<Sim>) -> SweepReport {
    let mut report = SweepReport::new(sim.silent_count);
    let ids: Vec<&str> = sim.ids.iter().map(String::as_str).collect();
    let batch = sim.opts.batch;
    let mut snapshot = Vec::with_capacity(batch);
    let period = sim.opts.sweep;
    let mut ticker = tokio::time::interval_at(sim.start + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let end = sim.start + Duration::from_nanos(sim.end_ns);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = tokio::time::sleep_until(end) => break,
        }
        if sim.over() {
            break;
        }
        report.sweeps += 1;
        for (chunk_index, chunk) in ids.chunks(batch).enumerate() {
            if sim.over() {
                break;
            }
            sim.check_chunk(chunk_index * batch, chunk, &mut snapshot, &mut report)
                .await;
        }
    }
    report
}

impl Sim {
    /// One `is_alive_batch` call about `chunk`, whose first id is runtime `first`.
    pub(crate) async fn check_chunk(
        &self,
        first: usize,
        chunk: &[&str],
        snapshot: &mut Vec<u64>,
        report: &mut SweepReport,
    ) {
        // Touches that returned before the call starts; read before it, so none is later.
        snapshot.clear();
        snapshot.extend(
            self.last_ok
                .iter()
                .skip(first)
                .take(chunk.len())
                .map(|at| at.load(Ordering::Acquire)),
        );
        let started = Instant::now();
        let result = self.store.is_alive_batch(chunk).await;
        let returned = Instant::now();
        let latency = returned.saturating_duration_since(started);
        let call = (self.ns_at(started), self.ns_at(returned));
        report.calls += 1;
        report.ids += chunk.len() as u64;
        report.latency_us.push(micros_u32(latency));
        match result {
            Ok(answers) => {
                if answers.len() != chunk.len() {
                    report.malformed_calls += 1;
                }
                for (offset, (&alive, &last_ok)) in answers.iter().zip(snapshot.iter()).enumerate()
                {
                    self.judge(first + offset, alive, last_ok, call, report);
                }
            }
            Err(error) => {
                report.err_calls += 1;
                report.err_ids += chunk.len() as u64;
                report.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }

    /// Checks one answer about `runtime`, given by a call that ran from `call.0` to `call.1`
    /// (ns since the start), whose last `Ok` touch before that call was called at `last_ok`.
    ///
    /// The store may read its clock anywhere within the call (per id, or once after checking
    /// the input; Redis when it runs the `MGET`), so a "dead" answer is certainly false only
    /// when the whole call came before the record was due to lapse. A call that straddles the
    /// lapse may rightly say either: judging by its start flagged a busy machine's scheduling
    /// delay between the call and the store's clock reading as a broken invariant.
    pub(crate) fn judge(
        &self,
        runtime: usize,
        alive: bool,
        last_ok: u64,
        call: (u64, u64),
        report: &mut SweepReport,
    ) {
        let (asked, answered) = call;
        let ttl = nanos(self.opts.ttl);
        if !alive && last_ok != NEVER && last_ok <= asked {
            let lapses = last_ok.saturating_add(ttl);
            if answered < lapses {
                self.false_dead(runtime, last_ok, call, lapses - answered, report);
            }
        }
        if let Some(Some(slot)) = self.silent_slot.get(runtime)
            && asked >= self.silence_ns
        {
            self.judge_silenced(*slot, runtime, alive, asked, report);
        }
    }

    pub(crate) fn false_dead(
        &self,
        runtime: usize,
        last_ok: u64,
        call: (u64, u64),
        early: u64,
        report: &mut SweepReport,
    ) {
        report.false_dead += 1;
        self.false_dead_seen.fetch_add(1, Ordering::Relaxed);
        report.worst_early_ns = report.worst_early_ns.max(early);
        if report.examples.len() < EXAMPLES {
            let id = self.ids.get(runtime).map_or("?", String::as_str);
            let silenced = if self.is_silenced(runtime) {
                ", silenced"
            } else {
                ""
            };
            report.examples.push(format!(
                "{id}{silenced}: a touch called at {} returned Ok; the batch call ran from {} \
                 to {}, ending {} before the record was due to lapse",
                fmt_instant(last_ok),
                fmt_instant(call.0),
                fmt_instant(call.1),
                fmt_nanos(early)
            ));
        }
    }

    pub(crate) fn judge_silenced(
        &self,
        slot: usize,
        runtime: usize,
        alive: bool,
        asked: u64,
        report: &mut SweepReport,
    ) {
        let Some(last_try) = self
            .last_try
            .get(runtime)
            .map(|at| at.load(Ordering::Acquire))
        else {
            return;
        };
        if last_try == NEVER || last_try > asked {
            return;
        }
        let lapses = last_try.saturating_add(nanos(self.opts.ttl));
        let Some(view) = report.silenced.get_mut(slot) else {
            return;
        };
        if asked < lapses {
            return;
        }
        view.observed = true;
        if alive {
            view.late_alive_ns = view.late_alive_ns.max(asked - lapses);
        } else {
            view.seen_dead = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use liveness_store::LivenessStore;

    use super::*;
    use crate::options::tests::parse;

    #[test]
    fn a_dead_answer_before_last_ok_plus_ttl_is_false_dead() {
        let store: Arc<dyn LivenessStore> = Arc::new(liveness_store::NoopStore::new());
        let opts = parse(&["--runtimes", "1", "--silent-percent", "0"])
            .unwrap()
            .unwrap();
        let sim = Sim::new(store, opts);
        let ttl = nanos(sim.opts.ttl);
        let mut report = SweepReport::new(0);
        let lapses = 1_000 + ttl;
        sim.judge(0, false, 1_000, (lapses, lapses + 50), &mut report);
        sim.judge(0, false, NEVER, (5, 10), &mut report);
        sim.judge(0, true, 1_000, (1_500, 2_000), &mut report);
        // A call that straddles the lapse may answer either way.
        sim.judge(0, false, 1_000, (lapses - 10, lapses), &mut report);
        assert_eq!(report.false_dead, 0);
        sim.judge(0, false, 1_000, (lapses - 10, lapses - 1), &mut report);
        assert_eq!((report.false_dead, report.worst_early_ns), (1, 1));
        sim.judge(0, false, 1_000, (1_500, 2_000), &mut report);
        assert_eq!(
            (report.false_dead, report.worst_early_ns),
            (2, lapses - 2_000)
        );
        assert_eq!(report.examples.len(), 2);
    }
}
