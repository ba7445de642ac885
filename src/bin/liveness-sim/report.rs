//! The figures of a run, as a table for people, and the verdict that sets the exit status.

use std::process::ExitCode;
use std::time::Duration;

use crate::TIME_SCALE;
use crate::options::TouchMode;
use crate::run::{SHARDS, Sim, nanos};
use crate::shards::TouchReport;
use crate::sweeper::{SilencedView, SweepReport};

pub(crate) struct Figures<'a> {
    pub(crate) sim: &'a Sim,
    pub(crate) touch: TouchReport,
    pub(crate) sweep: SweepReport,
    pub(crate) run_ns: u64,
    pub(crate) interrupted: bool,
}

impl Figures<'_> {
    fn per_second(&self, count: u64) -> String {
        let secs = self.run_ns as f64 / 1e9;
        let rate = if secs > 0.0 { count as f64 / secs } else { 0.0 };
        format!("{}/s", thousands(rate.round() as u64))
    }

    pub(crate) fn table(&mut self) -> String {
        let sim = self.sim;
        let opts = &sim.opts;
        self.touch.latency_us.sort_unstable();
        self.touch.lag_us.sort_unstable();
        self.sweep.latency_us.sort_unstable();
        let mut rows: Vec<(&str, String)> = Vec::new();

        let available = if sim.store.available() { "yes" } else { "no" };
        rows.push((
            "backend",
            format!("{} (available: {available})", opts.backend),
        ));
        let touch_mode = match opts.touch {
            TouchMode::Many => "touch_many per shard wake-up",
            TouchMode::One => "one touch per beat",
        };
        let shards = SHARDS.min(sim.ids.len());
        rows.push((
            "runtimes",
            format!(
                "{} in {shards} shards, {touch_mode}",
                thousands(opts.runtimes as u64)
            ),
        ));
        let stopped = if self.interrupted {
            " (interrupted)"
        } else {
            ""
        };
        rows.push(("duration", format!("{}{stopped}", fmt_nanos(self.run_ns))));
        rows.push(("time scale", self.scale()));
        rows.push((
            "silenced",
            format!(
                "{} ({}%) at {}, half-time",
                thousands(sim.silent_count as u64),
                opts.silent_percent,
                fmt_nanos(sim.silence_ns)
            ),
        ));
        self.touch_rows(&mut rows);
        self.sweep_rows(&mut rows);
        self.store_rows(&mut rows);

        let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
        let mut out = String::from("\nliveness-sim figures\n");
        for (label, value) in rows {
            out.push_str(&format!("  {label:<width$}  {value}\n"));
        }
        for example in &self.sweep.examples {
            out.push_str(&format!("  false dead: {example}\n"));
        }
        out
    }

    /// What the store itself counted (the layered store counts; the others report zeros).
    fn store_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let stats = self.sim.store.stats();
        if stats.touches == 0 {
            return;
        }
        let per_beat = stats.remote_writes as f64 / stats.touches as f64;
        rows.push((
            "remote writes",
            format!(
                "{} ({per_beat:.3} per beat, {} coalesced) in {} round trips",
                thousands(stats.remote_writes),
                thousands(stats.coalesced_touches),
                thousands(stats.remote_write_batches)
            ),
        ));
        rows.push((
            "batch lookups",
            format!(
                "{} ids local, {} ids remote in {} calls",
                thousands(stats.local_hits),
                thousands(stats.remote_lookups),
                thousands(stats.remote_lookup_batches)
            ),
        ));
    }

    fn scale(&self) -> String {
        let opts = &self.sim.opts;
        format!(
            "beat {}, ttl {}, sweep {} = the reference's {}, {}, {} / {TIME_SCALE}",
            fmt_duration(opts.beat),
            fmt_duration(opts.ttl),
            fmt_duration(opts.sweep),
            fmt_duration(opts.beat * TIME_SCALE),
            fmt_duration(opts.ttl * TIME_SCALE),
            fmt_duration(opts.sweep * TIME_SCALE),
        )
    }

    fn touch_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let touch = &self.touch;
        let scheduled = self.sim.scheduled_beats(self.run_ns);
        let share = if scheduled > 0 {
            format!("{:.1}%", touch.beats as f64 * 100.0 / scheduled as f64)
        } else {
            "-".into()
        };
        rows.push((
            "beats",
            format!(
                "{} total, {} ({share} of {} scheduled)",
                thousands(touch.beats),
                self.per_second(touch.beats),
                thousands(scheduled)
            ),
        ));
        rows.push((
            "touch calls",
            format!(
                "{} total, {}",
                thousands(touch.calls),
                self.per_second(touch.calls)
            ),
        ));
        let mut errors = format!(
            "{} calls ({} beats)",
            thousands(touch.err_calls),
            thousands(touch.err_beats)
        );
        if let Some(first) = &touch.first_error {
            errors.push_str(&format!("; first: {first}"));
        }
        rows.push(("touch errors", errors));
        rows.push(("touch latency", fmt_latencies(&touch.latency_us)));
        rows.push(("beat lag", fmt_latencies(&touch.lag_us)));
    }

    fn sweep_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let sweep = &self.sweep;
        let opts = &self.sim.opts;
        rows.push((
            "batch calls",
            format!(
                "{} total, {} ({} sweeps, up to {} ids per call)",
                thousands(sweep.calls),
                self.per_second(sweep.calls),
                thousands(sweep.sweeps),
                thousands(opts.batch as u64)
            ),
        ));
        rows.push((
            "ids checked",
            format!(
                "{} total, {}",
                thousands(sweep.ids),
                self.per_second(sweep.ids)
            ),
        ));
        rows.push(("batch latency", fmt_latencies(&sweep.latency_us)));
        let mut unknown = format!(
            "{} ids in {} calls",
            thousands(sweep.err_ids),
            thousands(sweep.err_calls)
        );
        if sweep.calls > 0 && sweep.err_calls == sweep.calls {
            unknown.push_str(" (every answer was \"unknown\")");
        }
        if let Some(first) = &sweep.first_error {
            unknown.push_str(&format!("; first: {first}"));
        }
        rows.push(("Err answers", unknown));
        if sweep.malformed_calls > 0 {
            rows.push((
                "malformed answers",
                format!("{} calls without one answer per id", sweep.malformed_calls),
            ));
        }
        let mut false_dead = format!("{} (must be 0)", thousands(sweep.false_dead));
        if sweep.false_dead > 0 {
            false_dead.push_str(&format!(
                "; the worst came {} before the record was due to lapse",
                fmt_nanos(sweep.worst_early_ns)
            ));
        }
        rows.push(("false dead", false_dead));
        self.silenced_rows(rows);
    }

    fn silenced_rows(&self, rows: &mut Vec<(&'static str, String)>) {
        let views = &self.sweep.silenced;
        let observed: Vec<&SilencedView> = views.iter().filter(|v| v.observed).collect();
        let seen_dead = views.iter().filter(|v| v.seen_dead).count();
        rows.push((
            "silenced seen dead",
            format!(
                "{} of {}",
                thousands(seen_dead as u64),
                thousands(views.len() as u64)
            ),
        ));
        let mut delays: Vec<u64> = observed.iter().map(|v| v.late_alive_ns).collect();
        delays.sort_unstable();
        let delay = match (percentile(&delays, 0.5), delays.last()) {
            (Some(p50), Some(&max)) => format!(
                "p50 {}, max {} (over {} silenced runtimes swept after last touch + ttl)",
                fmt_nanos(p50),
                fmt_nanos(max),
                thousands(delays.len() as u64)
            ),
            _ => "n/a (no answer about a silenced runtime after last touch + ttl)".into(),
        };
        rows.push(("false-alive delay", delay));
    }

    /// Prints the verdict and turns it into the exit status.
    pub(crate) fn verdict(&self, mut failures: Vec<String>) -> ExitCode {
        if self.sweep.false_dead > 0 {
            failures.push(format!(
                "{} false \"dead\" answers: a batch call that began after a touch returned Ok \
                 and ended within that touch's ttl answered Ok(false)",
                thousands(self.sweep.false_dead)
            ));
        }
        if self.sweep.malformed_calls > 0 {
            failures.push(format!(
                "{} is_alive_batch calls did not answer one entry per id",
                self.sweep.malformed_calls
            ));
        }
        if failures.is_empty() {
            println!("  result: OK (no false \"dead\" answer)");
            return ExitCode::SUCCESS;
        }
        println!("  result: FAILED");
        for failure in failures {
            eprintln!("liveness-sim: FAILED: {failure}");
        }
        ExitCode::FAILURE
    }
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(last)).copied()
}

pub(crate) fn fmt_latencies(sorted_us: &[u32]) -> String {
    match (
        percentile(sorted_us, 0.5),
        percentile(sorted_us, 0.99),
        sorted_us.last(),
    ) {
        (Some(p50), Some(p99), Some(&max)) => format!(
            "p50 {}, p99 {}, max {}",
            fmt_micros(p50),
            fmt_micros(p99),
            fmt_micros(max)
        ),
        _ => "no calls".into(),
    }
}

pub(crate) fn fmt_micros(us: u32) -> String {
    fmt_nanos(u64::from(us) * 1_000)
}

pub(crate) fn fmt_duration(duration: Duration) -> String {
    fmt_nanos(nanos(duration))
}

/// A span of time for people: `850 µs`, `1.25 ms`, `900 ms`, `15 s`, `2.5 s`.
pub(crate) fn fmt_nanos(ns: u64) -> String {
    let trim = |value: f64| {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{} µs", trim(ns as f64 / 1e3)),
        1_000_000..=999_999_999 => format!("{} ms", trim(ns as f64 / 1e6)),
        _ => format!("{} s", trim(ns as f64 / 1e9)),
    }
}

/// An instant of the run, as time since its start.
pub(crate) fn fmt_instant(ns: u64) -> String {
    format!("t={:.6} s", ns as f64 / 1e9)
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_format() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_nanos(850_000), "850 µs");
        assert_eq!(fmt_nanos(1_250_000), "1.25 ms");
        assert_eq!(fmt_duration(Duration::from_secs(15)), "15 s");
        assert_eq!(percentile(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 0.99), Some(4));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }
}
