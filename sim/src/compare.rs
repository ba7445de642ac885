//! `--compare`: the stores' figures side by side, with the layered / redis ratio.

use crate::commandstats::SAMPLE_EVERY;
use crate::report::{
    fmt_duration, fmt_micros, fmt_ratio, fmt_secs, redis_line, scale, thousands, verdict_line,
};
use crate::summary::{Latency, RedisFigures, Report, RunSummary};

/// One line of the table: a label, a cell per run, and the ratio of the last run to the first.
struct Line {
    label: String,
    cells: Vec<String>,
    ratio: String,
}

/// A line of numbers: `value` of each run, shown with `show`, and their ratio.
fn numbers(
    label: &str,
    runs: &[RunSummary],
    value: impl Fn(&RunSummary) -> Option<f64>,
    show: impl Fn(f64) -> String,
) -> Line {
    let values: Vec<Option<f64>> = runs.iter().map(value).collect();
    let ratio = match (values.first(), values.get(1)) {
        (Some(Some(first)), Some(Some(second))) if *first > 0.0 && runs.len() == 2 => {
            format!("{:.2}", second / first)
        }
        _ => String::new(),
    };
    Line {
        label: label.to_owned(),
        cells: values
            .into_iter()
            .map(|v| v.map_or_else(|| "-".to_owned(), &show))
            .collect(),
        ratio,
    }
}

/// A line of text, without a ratio.
fn text(label: &str, runs: &[RunSummary], value: impl Fn(&RunSummary) -> String) -> Line {
    Line {
        label: label.to_owned(),
        cells: runs.iter().map(value).collect(),
        ratio: String::new(),
    }
}

fn count(n: f64) -> String {
    thousands(n.round() as u64)
}

fn micros(us: f64) -> String {
    fmt_micros(us as u64)
}

fn latency(run: &RunSummary, touch: bool, pick: fn(Latency) -> u64) -> Option<f64> {
    let latency = if touch {
        run.touch.latency
    } else {
        run.batch.latency
    };
    latency.map(|l| pick(l) as f64)
}

fn redis(run: &RunSummary) -> Option<&RedisFigures> {
    run.redis.as_ref()
}

/// The side-by-side table of every run in `report`, with its header and footnotes.
pub(crate) fn table(report: &Report) -> String {
    let runs = &report.runs;
    let settings = &report.settings;
    let per_beat = |command: &'static str| {
        move |r: &RunSummary| redis(r).map(|x| x.per_beat_of(command, r.beats.total))
    };
    let lines = vec![
        numbers("beats/s", runs, |r| Some(r.beats.per_second), count),
        text("  of the beats scheduled", runs, |r| {
            if r.beats.scheduled == 0 {
                "-".into()
            } else {
                format!(
                    "{:.1}%",
                    r.beats.total as f64 * 100.0 / r.beats.scheduled as f64
                )
            }
        }),
        numbers(
            "Redis commands/s (1)",
            runs,
            |r| redis(r).map(|x| x.per_second),
            count,
        ),
        numbers(
            "Redis commands per beat (1)",
            runs,
            |r| redis(r).map(|x| x.per_beat),
            fmt_ratio,
        ),
        numbers("  SET per beat", runs, per_beat("set"), fmt_ratio),
        numbers("  MGET per beat", runs, per_beat("mget"), fmt_ratio),
        numbers("  GET (epoch) per beat", runs, per_beat("get"), fmt_ratio),
        numbers(
            "round trips/s (2)",
            runs,
            |r| redis(r).map(|x| x.round_trips_per_second),
            count,
        ),
        numbers(
            "touch p50",
            runs,
            |r| latency(r, true, |l| l.p50_us),
            micros,
        ),
        numbers(
            "touch p99",
            runs,
            |r| latency(r, true, |l| l.p99_us),
            micros,
        ),
        numbers(
            "touch max",
            runs,
            |r| latency(r, true, |l| l.max_us),
            micros,
        ),
        numbers(
            "batch p50",
            runs,
            |r| latency(r, false, |l| l.p50_us),
            micros,
        ),
        numbers(
            "batch p99",
            runs,
            |r| latency(r, false, |l| l.p99_us),
            micros,
        ),
        numbers(
            "batch max",
            runs,
            |r| latency(r, false, |l| l.max_us),
            micros,
        ),
        text("touch errors (beats)", runs, |r| {
            thousands(r.touch.err_beats)
        }),
        text("Err answers (ids)", runs, |r| thousands(r.batch.err_ids)),
        text("false dead (must be 0)", runs, |r| {
            thousands(r.false_dead.count)
        }),
        numbers(
            "false-alive delay, max (3)",
            runs,
            |r| r.silenced.false_alive_delay.map(|d| d.max_us as f64),
            micros,
        ),
        text("silenced seen dead", runs, |r| {
            format!("{} of {}", r.silenced.seen_dead, r.silenced.runtimes)
        }),
    ];

    let mut header = Line {
        label: String::new(),
        cells: runs.iter().map(|r| r.store.to_owned()).collect(),
        ratio: if runs.len() == 2 {
            format!("{} / {}", runs[1].backend, runs[0].backend)
        } else {
            String::new()
        },
    };
    if runs.iter().any(|r| r.interrupted) {
        header.label = "(interrupted by Ctrl-C)".into();
    }
    let label_width = std::iter::once(&header)
        .chain(&lines)
        .map(|l| l.label.chars().count())
        .max()
        .unwrap_or(0);
    let cell_width = std::iter::once(&header)
        .chain(&lines)
        .flat_map(|l| l.cells.iter().chain(std::iter::once(&l.ratio)))
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0)
        .max(12);

    let duration = runs.first().map_or(settings.duration_s, |r| r.duration_s);
    let stores: Vec<String> = runs
        .iter()
        .map(|r| match r.backend.as_str() {
            "layered" => format!("{} (over a RedisStore)", r.store),
            _ => r.store.to_owned(),
        })
        .collect();
    let mut out = format!(
        "\nliveness-sim --compare: {}, {} each, on one Redis\n",
        stores.join(", then "),
        fmt_secs(duration)
    );
    let sends = if settings.touch == "one" {
        "one touch per beat"
    } else {
        "a touch_many per shard wake-up with the beats due"
    };
    out.push_str(&format!(
        "  runtimes    {} in {} shards, {sends}; {}% silent from half-time\n",
        thousands(settings.runtimes as u64),
        settings.shards,
        settings.silent_percent
    ));
    out.push_str(&format!("  time scale  {}\n", scale(settings)));
    if let Some(redis) = &report.redis {
        out.push_str(&format!("  redis       {}\n", redis_line(redis)));
    }
    out.push('\n');
    for line in std::iter::once(&header).chain(&lines) {
        let label = &line.label;
        out.push_str(&format!("  {label:<label_width$}"));
        for cell in &line.cells {
            out.push_str(&format!("  {cell:>cell_width$}"));
        }
        if runs.len() == 2 {
            out.push_str(&format!("  {:>cell_width$}", line.ratio));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&footnotes());
    for run in runs {
        for example in &run.false_dead.examples {
            out.push_str(&format!("  false dead ({}): {example}\n", run.store));
        }
    }
    out.push_str(verdict_line(report));
    out
}

fn footnotes() -> String {
    let sampled = fmt_duration(SAMPLE_EVERY);
    let lines = [
        "(1) Counted by Redis, not by the store: INFO commandstats deltas, read on a connection of"
            .to_owned(),
        format!(
            "    the simulator's own once the store had connected, every {sampled}, and after the run."
        ),
        "    Counted: SET (one per record written), MGET (one per batch chunk), GET (the epoch read"
            .to_owned(),
        "    in every pipeline but a single touch's). Not counted: INFO (the simulator's sampling),"
            .to_owned(),
        "    CONFIG, PING, CLIENT, HELLO, SELECT, AUTH (connection set-up), FLUSHALL (between the"
            .to_owned(),
        "    stores); the epoch's SET NX is sent at connect, before the first count.".to_owned(),
        "(2) RedisStore: one round trip per call (a touch, touch_many or is_alive_batch is one"
            .to_owned(),
        "    pipeline). LayeredStore: StoreStats::remote_write_batches + remote_lookup_batches."
            .to_owned(),
        "    The GETs of (1) count the same pipelines from the server's side.".to_owned(),
        "(3) How long after last touch + ttl a runtime that stopped beating still read alive;"
            .to_owned(),
        "    LayeredStore's bound is its debounce (clamped to ttl/2) + its remote-positive ttl."
            .to_owned(),
    ];
    lines.iter().map(|line| format!("  {line}\n")).collect()
}
