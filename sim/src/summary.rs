//! What a session measured, as plain data: the tables, the JSON and the plot all render this.

use liveness_store::{Backend, StoreStats};
use serde::Serialize;

use crate::TIME_SCALE;
use crate::commandstats::{self, Calls, Counted, Rate, SAMPLE_EVERY};
use crate::options::Options;
use crate::run::{Outcome, SHARDS};
use crate::stores::store_name;

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) settings: Settings,
    /// The Redis the Redis-backed stores ran on, if any did.
    pub(crate) redis: Option<RedisInfo>,
    /// One per store, in the order they ran.
    pub(crate) runs: Vec<RunSummary>,
    /// LayeredStore / RedisStore, when `--compare` ran both.
    pub(crate) comparison: Option<Comparison>,
    /// No false "dead" answer, no malformed answer, no failed task.
    pub(crate) ok: bool,
    pub(crate) failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    pub(crate) runtimes: usize,
    /// Per store.
    pub(crate) duration_s: f64,
    pub(crate) beat_ms: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) debounce_ms: u64,
    /// The layered store's remote-positive ttl.
    pub(crate) remote_positive_ms: u64,
    pub(crate) sweep_ms: u64,
    pub(crate) silent_percent: f64,
    pub(crate) batch: usize,
    /// `many` (one `touch_many` per shard wake-up) or `one` (one `touch` per beat).
    pub(crate) touch: &'static str,
    pub(crate) shards: usize,
    /// The reference's intervals are this many times longer.
    pub(crate) time_scale: u32,
}

impl Settings {
    pub(crate) fn new(opts: &Options) -> Settings {
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Settings {
            runtimes: opts.runtimes,
            duration_s: opts.duration.as_secs_f64(),
            beat_ms: ms(opts.beat),
            ttl_ms: ms(opts.ttl),
            debounce_ms: ms(opts.debounce),
            remote_positive_ms: ms(opts.remote_positive),
            sweep_ms: ms(opts.sweep),
            silent_percent: opts.silent_percent,
            batch: opts.batch,
            touch: opts.touch.name(),
            shards: SHARDS.min(opts.runtimes),
            time_scale: TIME_SCALE,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RedisInfo {
    /// `host:port`: never the URL, which may hold a password.
    pub(crate) address: String,
    pub(crate) version: Option<String>,
    /// A private redis-server the simulator started (and flushed between the stores).
    pub(crate) started_by_sim: bool,
}

/// The figures of one store's run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunSummary {
    /// `memory`, `redis`, `layered` or `noop`.
    pub(crate) backend: String,
    /// `MemoryStore`, `RedisStore`, ...
    pub(crate) store: &'static str,
    pub(crate) available: bool,
    pub(crate) duration_s: f64,
    /// Stopped early by Ctrl-C.
    pub(crate) interrupted: bool,
    pub(crate) beats: Beats,
    pub(crate) touch: Touches,
    pub(crate) batch: Batches,
    pub(crate) false_dead: FalseDead,
    pub(crate) silenced: Silenced,
    /// The store's own counters (the layered store's; the others keep none).
    pub(crate) store_stats: Option<Stats>,
    /// What Redis received, for the Redis-backed stores.
    pub(crate) redis: Option<RedisFigures>,
}

/// Nearest-rank percentiles, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Latency {
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
}

impl Latency {
    /// Of unsorted samples; `None` without any.
    pub(crate) fn of(samples: &mut [u32]) -> Option<Latency> {
        samples.sort_unstable();
        Some(Latency {
            p50_us: u64::from(percentile(samples, 0.5)?),
            p99_us: u64::from(percentile(samples, 0.99)?),
            max_us: u64::from(*samples.last()?),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Beats {
    pub(crate) total: u64,
    pub(crate) per_second: f64,
    /// Beats due in the run (silenced runtimes' only before half-time).
    pub(crate) scheduled: u64,
    /// How late calls started after the earliest beat they carried was due.
    pub(crate) lag: Option<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Touches {
    /// `touch_many` or `touch` calls.
    pub(crate) calls: u64,
    pub(crate) per_second: f64,
    pub(crate) err_calls: u64,
    pub(crate) err_beats: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) latency: Option<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Batches {
    /// `is_alive_batch` calls.
    pub(crate) calls: u64,
    pub(crate) per_second: f64,
    pub(crate) sweeps: u64,
    pub(crate) ids: u64,
    pub(crate) err_calls: u64,
    pub(crate) err_ids: u64,
    /// Calls whose answer did not hold one entry per id.
    pub(crate) malformed_calls: u64,
    pub(crate) first_error: Option<String>,
    pub(crate) latency: Option<Latency>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FalseDead {
    /// `Ok(false)` about a runtime from a call that began after one of its touches returned
    /// `Ok` and ended before that touch's ttl ran out: must be 0.
    pub(crate) count: u64,
    /// The earliest one's call ended this long before the record was due to lapse.
    pub(crate) worst_early_us: u64,
    pub(crate) examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Silenced {
    /// Runtimes that stopped beating at half-time.
    pub(crate) runtimes: usize,
    pub(crate) at_s: f64,
    /// Asked about after their last touch plus the ttl.
    pub(crate) observed: usize,
    pub(crate) seen_dead: usize,
    /// How long after last touch + ttl they were still answered alive: the false-alive delay.
    pub(crate) false_alive_delay: Option<Delay>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Delay {
    pub(crate) p50_us: u64,
    pub(crate) max_us: u64,
}

/// [`StoreStats`], which is `#[non_exhaustive]` and not `Serialize`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Stats {
    pub(crate) touches: u64,
    pub(crate) coalesced_touches: u64,
    pub(crate) remote_writes: u64,
    pub(crate) remote_write_batches: u64,
    pub(crate) local_hits: u64,
    pub(crate) remote_lookups: u64,
    pub(crate) remote_lookup_batches: u64,
    pub(crate) errors: u64,
    pub(crate) epoch_resets: u64,
}

impl From<StoreStats> for Stats {
    fn from(s: StoreStats) -> Stats {
        Stats {
            touches: s.touches,
            coalesced_touches: s.coalesced_touches,
            remote_writes: s.remote_writes,
            remote_write_batches: s.remote_write_batches,
            local_hits: s.local_hits,
            remote_lookups: s.remote_lookups,
            remote_lookup_batches: s.remote_lookup_batches,
            errors: s.errors,
            epoch_resets: s.epoch_resets,
        }
    }
}

/// What Redis received during one run, from `INFO commandstats` deltas.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RedisFigures {
    /// Counted commands by name (`set`, `mget`, `get`): the store's work.
    pub(crate) commands: Calls,
    /// Commands left out of the count: the simulator's `INFO`, connection set-up.
    pub(crate) not_counted: Calls,
    pub(crate) total: u64,
    pub(crate) per_second: f64,
    pub(crate) per_beat: f64,
    /// Round trips to Redis: the layered store's `remote_write_batches +
    /// remote_lookup_batches`; one per call for RedisStore.
    pub(crate) round_trips: u64,
    pub(crate) round_trips_per_second: f64,
    /// `store stats` or `one per call`.
    pub(crate) round_trips_from: &'static str,
    /// Commands/s over time, one point per sampling interval.
    pub(crate) rate: Vec<Rate>,
}

impl RedisFigures {
    /// Calls of one command per beat.
    pub(crate) fn per_beat_of(&self, command: &str, beats: u64) -> f64 {
        ratio(self.commands.get(command).copied().unwrap_or(0), beats)
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Comparison {
    /// LayeredStore's Redis commands per beat / RedisStore's.
    pub(crate) commands_per_beat: Option<f64>,
    pub(crate) commands_per_second: Option<f64>,
    pub(crate) round_trips_per_second: Option<f64>,
}

impl Comparison {
    pub(crate) fn of(runs: &[RunSummary]) -> Option<Comparison> {
        let find = |backend: Backend| runs.iter().find(|r| r.backend == backend.name());
        let redis = find(Backend::Redis)?.redis.as_ref()?;
        let layered = find(Backend::Layered)?.redis.as_ref()?;
        let over = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        Some(Comparison {
            commands_per_beat: over(layered.per_beat, redis.per_beat),
            commands_per_second: over(layered.per_second, redis.per_second),
            round_trips_per_second: over(
                layered.round_trips_per_second,
                redis.round_trips_per_second,
            ),
        })
    }
}

/// Turns a finished run into its figures; `counted` is what Redis received, if it was asked.
pub(crate) fn summarize(
    backend: Backend,
    mut outcome: Outcome,
    counted: Option<Counted>,
) -> RunSummary {
    let sim = &outcome.sim;
    let secs = outcome.run_ns as f64 / 1e9;
    let per_second = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let touch = &mut outcome.touch;
    let sweep = &mut outcome.sweep;
    let stats = sim.store.stats();
    let store_stats = (stats.touches > 0).then(|| Stats::from(stats));
    let redis = counted.map(|counted| {
        let (commands, not_counted) = commandstats::split(&counted.calls);
        let total: u64 = commands.values().sum();
        let (round_trips, round_trips_from) = if backend == Backend::Layered {
            (
                stats.remote_write_batches + stats.remote_lookup_batches,
                "store stats",
            )
        } else {
            (touch.calls + sweep.calls, "one per call")
        };
        RedisFigures {
            total,
            per_second: per_second(total),
            per_beat: ratio(total, touch.beats),
            round_trips,
            round_trips_per_second: per_second(round_trips),
            round_trips_from,
            rate: commandstats::rates(&counted.samples, SAMPLE_EVERY.as_secs_f64() / 2.0),
            commands,
            not_counted,
        }
    });
    let mut delays: Vec<u64> = sweep
        .silenced
        .iter()
        .filter(|v| v.observed)
        .map(|v| v.late_alive_ns / 1_000)
        .collect();
    delays.sort_unstable();
    let false_alive_delay = match (percentile(&delays, 0.5), delays.last()) {
        (Some(p50_us), Some(&max_us)) => Some(Delay { p50_us, max_us }),
        _ => None,
    };
    RunSummary {
        backend: backend.name().to_owned(),
        store: store_name(backend),
        available: sim.store.available(),
        duration_s: secs,
        interrupted: outcome.interrupted,
        beats: Beats {
            total: touch.beats,
            per_second: per_second(touch.beats),
            scheduled: sim.scheduled_beats(outcome.run_ns),
            lag: Latency::of(&mut touch.lag_us),
        },
        touch: Touches {
            calls: touch.calls,
            per_second: per_second(touch.calls),
            err_calls: touch.err_calls,
            err_beats: touch.err_beats,
            first_error: touch.first_error.take(),
            latency: Latency::of(&mut touch.latency_us),
        },
        batch: Batches {
            calls: sweep.calls,
            per_second: per_second(sweep.calls),
            sweeps: sweep.sweeps,
            ids: sweep.ids,
            err_calls: sweep.err_calls,
            err_ids: sweep.err_ids,
            malformed_calls: sweep.malformed_calls,
            first_error: sweep.first_error.take(),
            latency: Latency::of(&mut sweep.latency_us),
        },
        false_dead: FalseDead {
            count: sweep.false_dead,
            worst_early_us: sweep.worst_early_ns / 1_000,
            examples: std::mem::take(&mut sweep.examples),
        },
        silenced: Silenced {
            runtimes: sim.silent_count,
            at_s: sim.silence_ns as f64 / 1e9,
            observed: delays.len(),
            seen_dead: sweep.silenced.iter().filter(|v| v.seen_dead).count(),
            false_alive_delay,
        },
        store_stats,
        redis,
    }
}

/// Why a run failed the check, if it did: false "dead" answers or malformed ones.
pub(crate) fn failures_of(run: &RunSummary) -> Vec<String> {
    let mut failures = Vec::new();
    if run.false_dead.count > 0 {
        failures.push(format!(
            "{}: {} false \"dead\" answers: a batch call that began after a touch returned Ok \
             and ended within that touch's ttl answered Ok(false)",
            run.store, run.false_dead.count
        ));
    }
    if run.batch.malformed_calls > 0 {
        failures.push(format!(
            "{}: {} is_alive_batch calls did not answer one entry per id",
            run.store, run.batch.malformed_calls
        ));
    }
    failures
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(last)).copied()
}

/// `n / of`, 0 when `of` is 0.
pub(crate) fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 { 0.0 } else { n as f64 / of as f64 }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use liveness_store::{LivenessStore, NoopStore};

    use super::*;
    use crate::options::tests::parse;
    use crate::run::Sim;
    use crate::shards::TouchReport;
    use crate::sweeper::SweepReport;

    fn calls(pairs: &[(&str, u64)]) -> Calls {
        pairs.iter().map(|&(n, c)| (n.to_owned(), c)).collect()
    }

    fn latency(p50_us: u64) -> Option<Latency> {
        Some(Latency {
            p50_us,
            p99_us: p50_us * 10,
            max_us: p50_us * 30,
        })
    }

    /// A run of `backend` over 10 s with 1,000 beats, `commands` counted by Redis if any.
    pub(crate) fn run(backend: Backend, commands: Option<Calls>) -> RunSummary {
        let total = commands.as_ref().map_or(0, |c| c.values().sum());
        let layered = backend == Backend::Layered;
        RunSummary {
            backend: backend.name().to_owned(),
            store: store_name(backend),
            available: true,
            duration_s: 10.0,
            interrupted: false,
            beats: Beats {
                total: 1_000,
                per_second: 100.0,
                scheduled: 1_000,
                lag: latency(900),
            },
            touch: Touches {
                calls: 100,
                per_second: 10.0,
                err_calls: 0,
                err_beats: 0,
                first_error: None,
                latency: latency(if layered { 5 } else { 800 }),
            },
            batch: Batches {
                calls: 20,
                per_second: 2.0,
                sweeps: 10,
                ids: 20_000,
                err_calls: 0,
                err_ids: 0,
                malformed_calls: 0,
                first_error: None,
                latency: latency(if layered { 300 } else { 1_500 }),
            },
            false_dead: FalseDead {
                count: 0,
                worst_early_us: 0,
                examples: Vec::new(),
            },
            silenced: Silenced {
                runtimes: 4,
                at_s: 5.0,
                observed: 4,
                seen_dead: 4,
                false_alive_delay: Some(Delay {
                    p50_us: 100_000,
                    max_us: if layered { 500_000 } else { 150_000 },
                }),
            },
            store_stats: layered.then_some(Stats {
                touches: 1_000,
                coalesced_touches: 600,
                remote_writes: 400,
                remote_write_batches: 40,
                local_hits: 19_990,
                remote_lookups: 10,
                remote_lookup_batches: 10,
                errors: 0,
                epoch_resets: 0,
            }),
            redis: commands.map(|commands| RedisFigures {
                total,
                per_second: total as f64 / 10.0,
                per_beat: total as f64 / 1_000.0,
                round_trips: if layered { 50 } else { 120 },
                round_trips_per_second: if layered { 5.0 } else { 12.0 },
                round_trips_from: if layered {
                    "store stats"
                } else {
                    "one per call"
                },
                rate: commandstats::rates(&[(0.0, 0), (5.0, total / 2), (10.0, total)], 0.0),
                not_counted: calls(&[("info", 60)]),
                commands,
            }),
        }
    }

    fn report(runs: Vec<RunSummary>, redis: Option<RedisInfo>) -> Report {
        let opts = parse(&[]).unwrap().unwrap();
        Report {
            settings: Settings::new(&opts),
            redis,
            comparison: Comparison::of(&runs),
            failures: runs.iter().flat_map(failures_of).collect(),
            ok: true,
            runs,
        }
    }

    pub(crate) fn compare_report() -> Report {
        report(
            vec![
                run(
                    Backend::Redis,
                    Some(calls(&[("set", 1_000), ("mget", 20), ("get", 0)])),
                ),
                run(
                    Backend::Layered,
                    Some(calls(&[("set", 400), ("mget", 4), ("get", 4)])),
                ),
            ],
            Some(RedisInfo {
                address: "127.0.0.1:6379".into(),
                version: Some("7.0.15".into()),
                started_by_sim: true,
            }),
        )
    }

    pub(crate) fn memory_report() -> Report {
        report(vec![run(Backend::Memory, None)], None)
    }

    #[test]
    fn comparison_is_layered_over_redis() {
        let report = compare_report();
        let comparison = report.comparison.unwrap();
        assert!((comparison.commands_per_beat.unwrap() - 0.4).abs() < 1e-9);
        assert!((comparison.round_trips_per_second.unwrap() - 5.0 / 12.0).abs() < 1e-9);
        assert!(Comparison::of(&memory_report().runs).is_none());
    }

    #[test]
    fn false_dead_and_malformed_answers_fail_the_run() {
        let mut run = run(Backend::Memory, None);
        assert!(failures_of(&run).is_empty());
        run.false_dead.count = 2;
        run.batch.malformed_calls = 1;
        let failures = failures_of(&run);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("2 false \"dead\""), "{failures:?}");
    }

    /// `summarize` counts round trips from the store's stats for the layered store and one per
    /// call for the others, and Redis's commands per beat from the deltas.
    #[test]
    fn summaries_count_commands_and_round_trips() {
        let store: Arc<dyn LivenessStore> = Arc::new(NoopStore::new());
        let opts = parse(&["--runtimes", "10", "--silent-percent", "0"])
            .unwrap()
            .unwrap();
        let touch = TouchReport {
            calls: 4,
            beats: 200,
            latency_us: vec![30, 10, 20, 40],
            ..TouchReport::default()
        };
        let mut sweep = SweepReport::new(0);
        sweep.calls = 6;
        sweep.latency_us = vec![5, 1];
        let outcome = Outcome {
            sim: Arc::new(Sim::new(store, opts)),
            touch,
            sweep,
            run_ns: 2_000_000_000,
            interrupted: false,
            failures: Vec::new(),
        };
        let counted = Counted {
            calls: calls(&[
                ("set", 200),
                ("get", 10),
                ("info", 9),
                ("client|setinfo", 2),
            ]),
            samples: vec![(0.0, 0), (1.0, 100), (2.0, 210)],
        };
        let summary = summarize(Backend::Redis, outcome, Some(counted));
        assert_eq!(summary.store, "RedisStore");
        assert_eq!(summary.beats.per_second, 100.0);
        assert_eq!(
            summary.touch.latency,
            Some(Latency {
                p50_us: 20,
                p99_us: 40,
                max_us: 40
            })
        );
        let redis = summary.redis.unwrap();
        assert_eq!(redis.total, 210, "SET and GET, not INFO nor CLIENT");
        assert_eq!(redis.per_beat, 1.05);
        assert_eq!(redis.per_beat_of("set", 200), 1.0);
        assert_eq!(
            (redis.round_trips, redis.round_trips_from),
            (10, "one per call")
        );
        assert_eq!(
            redis.not_counted,
            calls(&[("client|setinfo", 2), ("info", 9)])
        );
        assert_eq!(redis.rate.len(), 2);
        assert!(summary.store_stats.is_none());
    }
}
