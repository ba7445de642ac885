//! The figures of one store's run as a table for people, the verdict line, and the number
//! formats every table shares.

use std::time::Duration;

use crate::TIME_SCALE;
use crate::run::nanos;
use crate::summary::{Latency, Report, RunSummary, Settings};

/// The detailed table of one run (`report.runs[index]`).
pub(crate) fn table(report: &Report, run: &RunSummary) -> String {
    let settings = &report.settings;
    let mut rows: Vec<(&str, String)> = Vec::new();
    let available = if run.available { "yes" } else { "no" };
    rows.push((
        "backend",
        format!("{} {} (available: {available})", run.backend, run.store),
    ));
    if let Some(redis) = &report.redis {
        rows.push(("redis", redis_line(redis)));
    }
    let touch_mode = match settings.touch {
        "one" => "one touch per beat",
        _ => "touch_many per shard wake-up",
    };
    rows.push((
        "runtimes",
        format!(
            "{} in {} shards, {touch_mode}",
            thousands(settings.runtimes as u64),
            settings.shards
        ),
    ));
    let stopped = if run.interrupted {
        " (interrupted)"
    } else {
        ""
    };
    rows.push(("duration", format!("{}{stopped}", fmt_secs(run.duration_s))));
    rows.push(("time scale", scale(settings)));
    rows.push((
        "silenced",
        format!(
            "{} ({}%) at {}, half-time",
            thousands(run.silenced.runtimes as u64),
            settings.silent_percent,
            fmt_secs(run.silenced.at_s)
        ),
    ));
    touch_rows(run, &mut rows);
    sweep_rows(run, settings, &mut rows);
    store_rows(run, &mut rows);
    redis_rows(run, &mut rows);

    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::from("\nliveness-sim figures\n");
    for (label, value) in rows {
        out.push_str(&format!("  {label:<width$}  {value}\n"));
    }
    for example in &run.false_dead.examples {
        out.push_str(&format!("  false dead: {example}\n"));
    }
    out
}

pub(crate) fn redis_line(redis: &crate::summary::RedisInfo) -> String {
    let version = redis
        .version
        .as_deref()
        .map(|v| format!("redis-server {v}, "))
        .unwrap_or_default();
    let whose = if redis.started_by_sim {
        "started by the simulator, flushed between stores"
    } else {
        "given; shared with whoever else uses it"
    };
    format!("{} ({version}{whose})", redis.address)
}

pub(crate) fn scale(settings: &Settings) -> String {
    let ms = |ms: u64| Duration::from_millis(ms);
    format!(
        "beat {}, ttl {}, debounce {}, remote-positive {}, sweep {} = the reference's {}, {}, \
         {}, {}, {} / {TIME_SCALE}",
        fmt_duration(ms(settings.beat_ms)),
        fmt_duration(ms(settings.ttl_ms)),
        fmt_duration(ms(settings.debounce_ms)),
        fmt_duration(ms(settings.remote_positive_ms)),
        fmt_duration(ms(settings.sweep_ms)),
        fmt_duration(ms(settings.beat_ms) * TIME_SCALE),
        fmt_duration(ms(settings.ttl_ms) * TIME_SCALE),
        fmt_duration(ms(settings.debounce_ms) * TIME_SCALE),
        fmt_duration(ms(settings.remote_positive_ms) * TIME_SCALE),
        fmt_duration(ms(settings.sweep_ms) * TIME_SCALE),
    )
}

fn per_second(rate: f64) -> String {
    format!("{}/s", thousands(rate.round() as u64))
}

fn touch_rows(run: &RunSummary, rows: &mut Vec<(&'static str, String)>) {
    let beats = &run.beats;
    let share = if beats.scheduled > 0 {
        format!(
            "{:.1}%",
            beats.total as f64 * 100.0 / beats.scheduled as f64
        )
    } else {
        "-".into()
    };
    rows.push((
        "beats",
        format!(
            "{} total, {} ({share} of {} scheduled)",
            thousands(beats.total),
            per_second(beats.per_second),
            thousands(beats.scheduled)
        ),
    ));
    let touch = &run.touch;
    rows.push((
        "touch calls",
        format!(
            "{} total, {}",
            thousands(touch.calls),
            per_second(touch.per_second)
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
    rows.push(("touch latency", fmt_latency(touch.latency)));
    rows.push(("beat lag", fmt_latency(beats.lag)));
}

fn sweep_rows(run: &RunSummary, settings: &Settings, rows: &mut Vec<(&'static str, String)>) {
    let batch = &run.batch;
    rows.push((
        "batch calls",
        format!(
            "{} total, {} ({} sweeps, up to {} ids per call)",
            thousands(batch.calls),
            per_second(batch.per_second),
            thousands(batch.sweeps),
            thousands(settings.batch as u64)
        ),
    ));
    let ids_per_second = if run.duration_s > 0.0 {
        batch.ids as f64 / run.duration_s
    } else {
        0.0
    };
    rows.push((
        "ids checked",
        format!(
            "{} total, {}",
            thousands(batch.ids),
            per_second(ids_per_second)
        ),
    ));
    rows.push(("batch latency", fmt_latency(batch.latency)));
    let mut unknown = format!(
        "{} ids in {} calls",
        thousands(batch.err_ids),
        thousands(batch.err_calls)
    );
    if batch.calls > 0 && batch.err_calls == batch.calls {
        unknown.push_str(" (every answer was \"unknown\")");
    }
    if let Some(first) = &batch.first_error {
        unknown.push_str(&format!("; first: {first}"));
    }
    rows.push(("Err answers", unknown));
    if batch.malformed_calls > 0 {
        rows.push((
            "malformed answers",
            format!("{} calls without one answer per id", batch.malformed_calls),
        ));
    }
    let false_dead = &run.false_dead;
    let mut text = format!("{} (must be 0)", thousands(false_dead.count));
    if false_dead.count > 0 {
        text.push_str(&format!(
            "; the worst came {} before the record was due to lapse",
            fmt_micros(false_dead.worst_early_us)
        ));
    }
    rows.push(("false dead", text));
    let silenced = &run.silenced;
    rows.push((
        "silenced seen dead",
        format!(
            "{} of {}",
            thousands(silenced.seen_dead as u64),
            thousands(silenced.runtimes as u64)
        ),
    ));
    let delay = match silenced.false_alive_delay {
        Some(delay) => format!(
            "p50 {}, max {} (over {} silenced runtimes swept after last touch + ttl)",
            fmt_micros(delay.p50_us),
            fmt_micros(delay.max_us),
            thousands(silenced.observed as u64)
        ),
        None => "n/a (no answer about a silenced runtime after last touch + ttl)".into(),
    };
    rows.push(("false-alive delay", delay));
}

/// What the store itself counted (the layered store counts; the others report zeros).
fn store_rows(run: &RunSummary, rows: &mut Vec<(&'static str, String)>) {
    let Some(stats) = run.store_stats else {
        return;
    };
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

/// What Redis received, from `INFO commandstats`.
fn redis_rows(run: &RunSummary, rows: &mut Vec<(&'static str, String)>) {
    let Some(redis) = &run.redis else {
        return;
    };
    let beats = run.beats.total;
    rows.push((
        "Redis commands",
        format!(
            "{} total, {}, {} per beat (SET {}, MGET {}, GET {})",
            thousands(redis.total),
            per_second(redis.per_second),
            fmt_ratio(redis.per_beat),
            fmt_ratio(redis.per_beat_of("set", beats)),
            fmt_ratio(redis.per_beat_of("mget", beats)),
            fmt_ratio(redis.per_beat_of("get", beats)),
        ),
    ));
    rows.push((
        "round trips",
        format!(
            "{} total, {} ({})",
            thousands(redis.round_trips),
            per_second(redis.round_trips_per_second),
            redis.round_trips_from
        ),
    ));
    let skipped: Vec<String> = redis
        .not_counted
        .iter()
        .map(|(name, calls)| format!("{name} {}", thousands(*calls)))
        .collect();
    let skipped = if skipped.is_empty() {
        "none".to_owned()
    } else {
        skipped.join(", ")
    };
    rows.push(("not counted", skipped));
}

/// The verdict line of a table.
pub(crate) fn verdict_line(report: &Report) -> &'static str {
    if report.ok {
        "  result: OK (no false \"dead\" answer)\n"
    } else {
        "  result: FAILED\n"
    }
}

/// A small ratio with about three significant digits: `1.00`, `0.402`, `0.00051`.
pub(crate) fn fmt_ratio(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let digits = (2 - value.abs().log10().floor() as i32).clamp(2, 6) as usize;
    format!("{value:.digits$}")
}

pub(crate) fn fmt_latency(latency: Option<Latency>) -> String {
    match latency {
        Some(l) => format!(
            "p50 {}, p99 {}, max {}",
            fmt_micros(l.p50_us),
            fmt_micros(l.p99_us),
            fmt_micros(l.max_us)
        ),
        None => "no calls".into(),
    }
}

pub(crate) fn fmt_micros(us: u64) -> String {
    fmt_nanos(us.saturating_mul(1_000))
}

pub(crate) fn fmt_duration(duration: Duration) -> String {
    fmt_nanos(nanos(duration))
}

pub(crate) fn fmt_secs(secs: f64) -> String {
    fmt_nanos((secs * 1e9).round() as u64)
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
    use crate::summary::percentile;

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

    #[test]
    fn ratios_keep_three_significant_digits() {
        assert_eq!(fmt_ratio(0.0), "0");
        assert_eq!(fmt_ratio(1.0), "1.00");
        assert_eq!(fmt_ratio(1.0123), "1.01");
        assert_eq!(fmt_ratio(0.40234), "0.402");
        assert_eq!(fmt_ratio(0.000512), "0.000512");
        assert_eq!(fmt_ratio(12.5), "12.50");
    }
}
