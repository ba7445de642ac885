//! The one table: a column per store, a row per figure, and when two stores ran (`--compare`)
//! a last column with the second's figure over the first's. `--json` prints the same
//! [`Summary`] through serde.

use std::time::Duration;

use serde::Serialize;

use crate::redis_side::RedisInfo;
use crate::run::{Durations, Run, SHARDS, Touch, nanos};
use crate::stores::Store;
use crate::{Args, TIME_SCALE};

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// The command line (without the Redis URL, which may hold a password).
    pub(crate) settings: Args,
    /// The Redis the Redis-backed stores ran on, if any did.
    pub(crate) redis: Option<RedisInfo>,
    /// One per store, in the order they ran.
    pub(crate) runs: Vec<Run>,
    /// No false "dead", no malformed answer, no failed run.
    pub(crate) ok: bool,
    pub(crate) failures: Vec<String>,
}

/// Why `run` fails the check, if it does.
pub(crate) fn failures(run: &Run) -> Vec<String> {
    let store = run.backend.type_name();
    let mut failures = Vec::new();
    if run.false_dead > 0 {
        failures.push(format!(
            "{store}: {} false \"dead\" answers: a read that began after a touch returned Ok and \
             ended within that touch's ttl answered Ok(false)",
            run.false_dead
        ));
    }
    if run.malformed > 0 {
        failures.push(format!(
            "{store}: {} is_alive_batch calls did not answer one entry per id",
            run.malformed
        ));
    }
    failures
}

/// A cell's text, and its value when the ratio of two stores' means something.
struct Cell {
    text: String,
    value: Option<f64>,
}

fn number(value: Option<f64>, show: fn(f64) -> String) -> Option<Cell> {
    value.map(|value| Cell {
        text: show(value),
        value: Some(value),
    })
}

fn text(text: Option<String>) -> Option<Cell> {
    text.map(|text| Cell { text, value: None })
}

fn count(n: f64) -> String {
    thousands(n.round() as u64)
}

pub(crate) fn micros(us: f64) -> String {
    fmt_duration(Duration::from_secs_f64(us / 1e6))
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// `n / of`, `None` when `of` is 0.
fn share(n: u64, of: u64) -> Option<f64> {
    (of > 0).then(|| n as f64 / of as f64)
}

/// The p50, p99 and max rows of `latencies`.
fn percentiles(labels: [&'static str; 3], spans: &Durations) -> [(&'static str, Option<Cell>); 3] {
    let p = spans.percentiles();
    let [p50, p99, max] = labels;
    [
        (p50, number(p.map(|p| p.p50_us), micros)),
        (p99, number(p.map(|p| p.p99_us), micros)),
        (max, number(p.map(|p| p.max_us), micros)),
    ]
}

/// The figures of one run, in the table's order: every run has every row, with no cell where
/// it lacks the figure; a fleet's run has one more. (One row a line, as in the table, so
/// rustfmt keeps off.)
#[rustfmt::skip]
fn figures(r: &Run, fleet: bool) -> Vec<(&'static str, Option<Cell>)> {
    let per_second = |n: u64| (r.seconds > 0.0).then(|| n as f64 / r.seconds);
    let redis = r.redis.as_ref();
    let per_beat = |command| share(*redis?.commands.get(command).unwrap_or(&0), r.touch.items);
    let stats = r.store_stats;
    let delay = r.false_alive_delay.percentiles();
    let mut rows = vec![
        ("beats/s", number(per_second(r.touch.items), count)),
        ("  of the beats due", text(share(r.touch.items, r.beats_scheduled).map(percent))),
        ("touch calls/s", number(per_second(r.touch.calls), count)),
    ];
    rows.extend(percentiles(["touch p50", "touch p99", "touch max"], &r.touch.latency));
    rows.extend(percentiles(["beat lag p50", "beat lag p99", "beat lag max"], &r.beat_lag));
    rows.push(("batch calls/s", number(per_second(r.batch.calls), count)));
    rows.push(("ids checked/s", number(per_second(r.batch.items), count)));
    rows.extend(percentiles(["batch p50", "batch p99", "batch max"], &r.batch.latency));
    rows.extend([
        ("touch errors (beats)", number(Some(r.touch.failed_items as f64), count)),
        ("Err answers (ids)", number(Some(r.batch.failed_items as f64), count)),
        ("malformed answers (must be 0)", number(Some(r.malformed as f64).filter(|&n| n > 0.0), count)),
        ("false dead (must be 0)", number(Some(r.false_dead as f64), count)),
        ("silenced seen dead", text(Some(format!("{} of {}", r.silenced_seen_dead, r.silenced)))),
        ("false-alive delay p50 (1)", number(delay.map(|d| d.p50_us), micros)),
        ("false-alive delay max (1)", number(delay.map(|d| d.max_us), micros)),
        ("Redis commands/s (2)", number(redis.and_then(|c| per_second(c.total())), count)),
        ("Redis commands per beat (2)", number(redis.and_then(|c| share(c.total(), r.touch.items)), fmt_ratio)),
        ("  SET per beat", number(per_beat("set"), fmt_ratio)),
        ("  MGET per beat", number(per_beat("mget"), fmt_ratio)),
        ("  GET (epoch) per beat", number(per_beat("get"), fmt_ratio)),
        ("round trips/s (3)", number(r.round_trips.and_then(per_second), count)),
        ("round trips per beat (5)", number(r.round_trips.filter(|_| fleet).and_then(|n| share(n, r.touch.items)), fmt_ratio)),
        ("remote writes per beat (4)", number(stats.and_then(|s| share(s.remote_writes, s.touches)), fmt_ratio)),
        ("ids answered locally (4)", number(stats.and_then(|s| share(s.local_hits, s.local_hits + s.remote_lookups)), percent)),
    ]);
    rows
}

const FOOTNOTES: [&str; 5] = [
    "(1) How long after its last touch + ttl a runtime that stopped beating still read alive;
      LayeredStore's bound is its debounce (clamped to ttl/2) + its remote-positive ttl.",
    "(2) Counted by Redis, not by the store: INFO commandstats before and after each run (and
      during it, for the plot). SET: one per record written; MGET: one per batch chunk; GET:
      the epoch read in every pipeline but a single touch's. Not counted: the simulator's INFO
      and connection set-up (CONFIG, PING, CLIENT, HELLO, SELECT, AUTH).",
    "(3) RedisStore: one per call (each is one pipeline). LayeredStore: its
      StoreStats::remote_write_batches + remote_lookup_batches.",
    "(4) The store's own StoreStats: remote_writes / touches, local_hits / (local_hits +
      remote_lookups).",
    "(5) Of the whole fleet, the sweeper's instance included: Redis counts every instance's
      commands (2); round trips (3) and StoreStats (4) are the instances' added up.",
];

/// The report for people: what ran, the table, its footnotes, notes and the verdict.
pub(crate) fn table(summary: &Summary) -> String {
    let runs = &summary.runs;
    let fleet = summary.settings.instances > 1;
    let columns: Vec<_> = runs.iter().map(|run| figures(run, fleet)).collect();
    let mut header = vec![String::new()];
    header.extend(runs.iter().map(|r| r.backend.type_name().to_owned()));
    if let [first, second] = &runs[..] {
        header.push(format!(
            "{} / {}",
            second.backend.name(),
            first.backend.name()
        ));
    }
    let mut lines = vec![header];
    for (row, (label, _)) in columns.first().into_iter().flatten().enumerate() {
        let cells: Vec<&Option<Cell>> = columns.iter().map(|column| &column[row].1).collect();
        if cells.iter().all(|cell| cell.is_none()) {
            continue;
        }
        let mut line = vec![label.to_string()];
        line.extend(
            cells
                .iter()
                .map(|c| c.as_ref().map_or("-".into(), |c| c.text.clone())),
        );
        if let [Some(first), Some(second)] = cells[..] {
            line.push(match (first.value, second.value) {
                (Some(first), Some(second)) if first > 0.0 => format!("{:.2}", second / first),
                _ => String::new(),
            });
        }
        lines.push(line);
    }
    let width = |cells: Vec<&String>| cells.iter().map(|c| c.chars().count()).max().unwrap_or(0);
    let label_width = width(lines.iter().map(|l| &l[0]).collect());
    let cell_width = width(lines.iter().flat_map(|l| &l[1..]).collect()).max(12);

    let mut out = header_lines(summary);
    for line in &lines {
        let mut text = format!("  {:<label_width$}", line[0]);
        for cell in &line[1..] {
            text.push_str(&format!("  {cell:>cell_width$}"));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out.push('\n');
    // The footnotes of the rows shown.
    for note in FOOTNOTES {
        if lines.iter().any(|line| line[0].ends_with(&note[..3])) {
            out.push_str(&format!("  {note}\n"));
        }
    }
    for run in runs {
        let store = run.backend.type_name();
        let errors = [
            ("touch", &run.touch.first_error),
            ("batch", &run.batch.first_error),
        ];
        for (what, error) in errors {
            if let Some(error) = error {
                out.push_str(&format!("  {store}: first {what} error: {error}\n"));
            }
        }
        for example in &run.false_dead_examples {
            out.push_str(&format!("  false dead ({store}): {example}\n"));
        }
    }
    out.push_str(if summary.ok {
        "  result: OK (no false \"dead\" answer)\n"
    } else {
        "  result: FAILED\n"
    });
    out
}

/// What ran, on what, at which settings.
fn header_lines(summary: &Summary) -> String {
    let (settings, runs) = (&summary.settings, &summary.runs);
    let stores: Vec<String> = runs
        .iter()
        .map(|r| match r.backend {
            Store::Layered => format!("{} (over a RedisStore)", r.backend.type_name()),
            _ => r.backend.type_name().to_owned(),
        })
        .collect();
    let each = if runs.len() > 1 { " each" } else { "" };
    let interrupted = runs.iter().find(|r| r.interrupted).map(|r| {
        let after = fmt_duration(Duration::from_secs_f64(r.seconds));
        format!(
            " ({} interrupted by Ctrl-C after {after})",
            r.backend.type_name()
        )
    });
    let interrupted = interrupted.unwrap_or_default();
    let sends = match (settings.touch, settings.instances) {
        (Touch::Many, 1) => "a touch_many per shard wake-up with the beats due",
        (Touch::Many, _) => "a touch_many per shard wake-up and instance with the beats due",
        (Touch::One, _) => "one touch per beat",
    };
    let ms = |ms: u64| Duration::from_millis(ms);
    let intervals = [
        settings.beat_ms,
        settings.ttl_ms,
        settings.debounce_ms,
        settings.remote_positive_ms,
        settings.sweep_ms,
    ];
    let [beat, ttl, debounce, positive, sweep] = intervals.map(|i| fmt_duration(ms(i)));
    let reference = intervals
        .map(|i| fmt_duration(ms(i) * TIME_SCALE))
        .join(", ");
    let mut out = format!(
        "\nliveness-sim: {}, {}{each}{interrupted}\n  runtimes    {} in {} shards, {sends}; {}% \
         silent from half-time\n  time scale  beat {beat}, ttl {ttl}, debounce {debounce}, \
         remote-positive {positive}, sweep {sweep} = the reference's {reference} / {TIME_SCALE}\n",
        stores.join(", then "),
        fmt_duration(Duration::from_secs_f64(settings.duration_secs)),
        thousands(settings.runtimes as u64),
        SHARDS.min(settings.runtimes),
        settings.silent_percent,
    );
    if settings.instances > 1 {
        out.push_str(&format!(
            "  fleet       {} instances of the store (a pool each) on one Redis, routing {}; \
             the sweeper asks one more of its own\n",
            settings.instances,
            settings.routing.describe(),
        ));
    }
    if settings.leases {
        out.push_str(
            "  leases      every runtime presents the lease its last beat returned with its next \
             (one touch_lease per beat)\n",
        );
    }
    if let Some(redis) = &summary.redis {
        let version = redis
            .version
            .as_ref()
            .map(|v| format!("redis-server {v}, "));
        let whose = if redis.started_by_sim {
            "started by the simulator, flushed between stores"
        } else {
            "given; shared with whoever else uses it"
        };
        let (address, version) = (&redis.address, version.unwrap_or_default());
        out.push_str(&format!("  redis       {address} ({version}{whose})\n"));
    }
    out.push('\n');
    out
}

/// A small ratio with about three significant digits: `1.00`, `0.402`, `0.000512`.
pub(crate) fn fmt_ratio(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let digits = (2 - value.abs().log10().floor() as i32).clamp(2, 6) as usize;
    format!("{value:.digits$}")
}

/// A span of time for people, to three significant digits: `850 ns`, `52.9 µs`, `1.25 ms`,
/// `15 s`.
pub(crate) fn fmt_duration(duration: Duration) -> String {
    let ns = nanos(duration) as f64;
    let (value, unit) = match ns {
        ..1e3 => (ns, "ns"),
        ..1e6 => (ns / 1e3, "µs"),
        ..1e9 => (ns / 1e6, "ms"),
        _ => (ns / 1e9, "s"),
    };
    let decimals = (2 - value.max(1.0).log10().floor() as i32).clamp(0, 2) as usize;
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} {unit}")
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use clap::Parser;
    use liveness_store::{MemoryStore, NoopStore, StoreStats};

    use super::*;
    use crate::fleet::Routing;
    use crate::redis_side::{Counted, Rate};
    use crate::run::tests::short_run;

    /// Two short real runs, as `--compare` would report them, with what Redis would have
    /// counted (a SET per beat, an MGET per batch call) and the second store's own counters.
    pub(crate) async fn compared() -> Summary {
        let mut runs = vec![
            short_run(Store::Redis, Arc::new(NoopStore::new())).await,
            short_run(Store::Layered, Arc::new(MemoryStore::new())).await,
        ];
        for run in &mut runs {
            let commands = [("set", run.touch.items), ("mget", run.batch.calls)];
            run.redis = Some(Counted {
                commands: commands.map(|(name, n)| (name.to_owned(), n)).into(),
                not_counted: [("info".to_owned(), 3)].into(),
                rate: vec![Rate {
                    t_s: run.seconds,
                    commands_per_s: run.touch.items as f64 / run.seconds,
                }],
            });
        }
        let mut stats = StoreStats::default();
        (stats.touches, stats.remote_writes) = (runs[1].touch.items, runs[1].touch.items / 2);
        runs[1].store_stats = Some(stats);
        Summary {
            settings: Args::parse_from(["liveness-sim", "--compare"]),
            redis: Some(RedisInfo {
                address: "127.0.0.1:6379".into(),
                version: Some("7.2.4".into()),
                started_by_sim: true,
            }),
            ok: true,
            failures: runs.iter().flat_map(failures).collect(),
            runs,
        }
    }

    /// The cells of the row `label`.
    fn cells<'a>(table: &'a str, label: &str) -> Vec<&'a str> {
        let label = label.trim_start();
        let line = table
            .lines()
            .map(str::trim_start)
            .find(|l| l.starts_with(label));
        let line = line.unwrap_or_else(|| panic!("no {label} in\n{table}"));
        let cells = line[label.len()..].split("  ").map(str::trim);
        cells.filter(|c| !c.is_empty()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_table_has_a_column_per_store_and_their_ratio() {
        let summary = compared().await;
        let table = table(&summary);
        let (redis, layered) = (&summary.runs[0], &summary.runs[1]);
        assert_eq!(
            cells(&table, "RedisStore"),
            ["LayeredStore", "layered / redis"]
        );
        let per_second = |r: &Run| r.touch.items as f64 / r.seconds;
        let beats = cells(&table, "beats/s");
        assert_eq!(beats[0], count(per_second(redis)));
        assert_eq!(
            beats[2],
            format!("{:.2}", per_second(layered) / per_second(redis))
        );
        assert_eq!(cells(&table, "  SET per beat")[..2], ["1.00", "1.00"]);
        assert_eq!(cells(&table, "remote writes per beat (4)")[..1], ["-"]);
        assert_eq!(cells(&table, "false dead (must be 0)")[..2], ["0", "0"]);
        assert!(
            !table.contains("malformed"),
            "rows no store has are left out"
        );
        assert!(
            table.contains("(4) The store's own")
                && table.ends_with("result: OK (no false \"dead\" answer)\n")
        );
        let mut summary = summary;
        summary.runs.truncate(1);
        summary.runs[0].redis = None;
        let table = super::table(&summary);
        println!("{table}");
        assert_eq!(
            cells(&table, "RedisStore"),
            Vec::<&str>::new(),
            "one store: no ratio"
        );
        assert!(!table.contains("Redis commands") && !table.contains("(2)"));
        assert!(!table.contains("fleet") && !table.contains("(5)"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fleet_says_so_and_counts_round_trips_per_beat() {
        let mut summary = compared().await;
        (summary.settings.instances, summary.settings.routing) = (4, Routing::RoundRobin);
        let table = table(&summary);
        assert!(table.contains("fleet       4 instances of the store (a pool each)"));
        assert!(table.contains("routing round-robin (the next instance per beat"));
        assert!(table.contains("a touch_many per shard wake-up and instance"));
        let redis = &summary.runs[0];
        let per_beat = redis.round_trips.unwrap() as f64 / redis.touch.items as f64;
        assert_eq!(
            cells(&table, "round trips per beat (5)")[0],
            fmt_ratio(per_beat)
        );
        assert!(table.contains("(5) Of the whole fleet"));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["settings"]["instances"], 4);
        assert_eq!(json["settings"]["routing"], "round-robin");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_json_is_the_summary_with_store_stats_itself() {
        let json = serde_json::to_value(compared().await).unwrap();
        let keys = |value: &serde_json::Value| {
            let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&json), ["failures", "ok", "redis", "runs", "settings"]);
        let settings = keys(&json["settings"]);
        assert!(settings.contains(&"ttl_ms".to_owned()));
        assert!(
            !settings.contains(&"redis_url".to_owned()),
            "it may hold a password"
        );
        let layered = &json["runs"][1];
        assert_eq!(layered["backend"], "layered");
        assert_eq!(
            keys(&layered["touch"]["latency"]),
            ["max_us", "p50_us", "p99_us"]
        );
        let stats = serde_json::to_value(StoreStats::default()).unwrap();
        assert_eq!(
            keys(&layered["store_stats"]),
            keys(&stats),
            "StoreStats, not a mirror"
        );
        assert!(json["runs"][0]["store_stats"].is_null());
        assert_eq!(
            layered["redis"]["commands"]["set"],
            layered["touch"]["items"]
        );
    }

    #[test]
    fn figures_format() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(fmt_duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(fmt_duration(Duration::from_nanos(52_864)), "52.9 µs");
        assert_eq!(fmt_duration(Duration::ZERO), "0 ns");
        assert_eq!(fmt_duration(Duration::from_micros(1_250)), "1.25 ms");
        assert_eq!(fmt_duration(Duration::from_secs(15)), "15 s");
        for (value, shown) in [
            (0.0, "0"),
            (1.0, "1.00"),
            (0.40234, "0.402"),
            (0.000512, "0.000512"),
            (12.5, "12.50"),
        ] {
            assert_eq!(fmt_ratio(value), shown);
        }
    }
}
