//! `--json`: the report as JSON on stdout, for scripts and CI, instead of the table.
//!
//! The shape is [`Report`] serialised: `settings`, `redis`, `runs`
//! (one object per store), `comparison`, `ok` and `failures`. Durations are whole
//! microseconds (`*_us`) or seconds (`*_s`); absent figures are `null`.

use crate::summary::Report;

/// The report as pretty-printed JSON, ending in a newline.
pub(crate) fn render(report: &Report) -> String {
    // Serialising plain structs of numbers, strings and maps cannot fail; should it anyway,
    // the output still says so in JSON.
    let mut text = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        serde_json::json!({ "ok": false, "failures": [format!("cannot serialise: {e}")] })
            .to_string()
    });
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::summary::tests::{compare_report, memory_report};

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let json: Value = serde_json::from_str(&render(&compare_report())).unwrap();
        assert_eq!(
            keys(&json),
            ["comparison", "failures", "ok", "redis", "runs", "settings"]
        );
        assert_eq!(
            keys(&json["settings"]),
            [
                "batch",
                "beat_ms",
                "debounce_ms",
                "duration_s",
                "remote_positive_ms",
                "runtimes",
                "shards",
                "silent_percent",
                "sweep_ms",
                "time_scale",
                "touch",
                "ttl_ms"
            ]
        );
        assert_eq!(json["settings"]["ttl_ms"], 900);
        assert_eq!(json["redis"]["started_by_sim"], true);
        let runs = json["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let redis = &runs[0];
        assert_eq!(
            keys(redis),
            [
                "available",
                "backend",
                "batch",
                "beats",
                "duration_s",
                "false_dead",
                "interrupted",
                "redis",
                "silenced",
                "store",
                "store_stats",
                "touch"
            ]
        );
        assert_eq!(
            (redis["backend"].as_str(), redis["store"].as_str()),
            (Some("redis"), Some("RedisStore"))
        );
        assert_eq!(
            keys(&redis["touch"]["latency"]),
            ["max_us", "p50_us", "p99_us"]
        );
        assert_eq!(redis["false_dead"]["count"], 0);
        assert!(redis["silenced"]["false_alive_delay"]["max_us"].is_u64());
        assert_eq!(
            keys(&redis["redis"]),
            [
                "commands",
                "not_counted",
                "per_beat",
                "per_second",
                "rate",
                "round_trips",
                "round_trips_from",
                "round_trips_per_second",
                "total"
            ]
        );
        assert_eq!(redis["redis"]["commands"]["set"], 1_000);
        assert_eq!(redis["redis"]["not_counted"]["info"], 60);
        assert_eq!(keys(&redis["redis"]["rate"][0]), ["commands_per_s", "t_s"]);
        assert!(
            redis["store_stats"].is_null(),
            "RedisStore keeps no counters"
        );
        assert_eq!(runs[1]["store_stats"]["remote_write_batches"], 40);
        let ratio = json["comparison"]["commands_per_beat"].as_f64().unwrap();
        assert!((ratio - 0.4).abs() < 1e-9, "{ratio}");
        assert_eq!(json["ok"], true);
        assert_eq!(json["failures"], Value::Array(vec![]));
    }

    #[test]
    fn a_memory_run_has_nulls_where_redis_would_be() {
        let json: Value = serde_json::from_str(&render(&memory_report())).unwrap();
        assert!(json["redis"].is_null() && json["comparison"].is_null());
        assert!(json["runs"][0]["redis"].is_null());
        assert_eq!(json["runs"][0]["backend"], "memory");
    }
}
