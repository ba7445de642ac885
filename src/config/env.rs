//! A configuration read from environment variables (or any lookup of names to values).

use std::time::Duration;

use super::{Backend, StoreConfig};
use crate::{Error, Result};

/// Environment variable naming the backend.
pub const ENV_BACKEND: &str = "LIVENESS_BACKEND";
/// Environment variable holding the Redis URL; for the cluster backends, the seed nodes' URLs
/// separated by commas (see [`StoreConfig::from_env`] for commas in passwords).
pub const ENV_REDIS_URL: &str = "LIVENESS_REDIS_URL";
/// Fallback for [`ENV_REDIS_URL`], the name most platforms set.
pub const ENV_REDIS_URL_FALLBACK: &str = "REDIS_URL";
/// Environment variable holding the key prefix.
pub const ENV_KEY_PREFIX: &str = "LIVENESS_KEY_PREFIX";
/// Environment variable holding the operation timeout in milliseconds.
pub const ENV_OP_TIMEOUT_MS: &str = "LIVENESS_OP_TIMEOUT_MS";
/// Environment variable holding the layered store's debounce window in milliseconds.
pub const ENV_DEBOUNCE_MS: &str = "LIVENESS_DEBOUNCE_MS";
/// Environment variable holding the recovery floor in milliseconds: the largest ttl callers
/// pass (see `RedisStoreBuilder::recovery_floor`).
pub const ENV_RECOVERY_FLOOR_MS: &str = "LIVENESS_RECOVERY_FLOOR_MS";
/// Environment variable holding how far apart the wall clocks of a fleet's instances may be,
/// in milliseconds: every lease is trusted for this much less (see
/// `LayeredStoreBuilder::lease_skew_margin`).
pub const ENV_LEASE_SKEW_MARGIN_MS: &str = "LIVENESS_LEASE_SKEW_MARGIN_MS";
/// Environment variable that makes an unreachable Redis an error at start (`1`) instead of a
/// store that starts down and connects in the background (`0`, the default).
pub const ENV_REQUIRE_CONNECTION: &str = "LIVENESS_REQUIRE_CONNECTION";

impl StoreConfig {
    /// Reads the configuration from the process environment:
    ///
    /// | variable | meaning | default |
    /// |---|---|---|
    /// | `LIVENESS_BACKEND` | `noop`, `memory`, `redis`, `layered`, `cluster` or `layered-cluster` | `noop` |
    /// | `LIVENESS_REDIS_URL` | Redis URL (falls back to `REDIS_URL`); for the cluster backends, the seed nodes' URLs separated by commas | none |
    /// | `LIVENESS_KEY_PREFIX` | key prefix | `mul:runtime:hb:` |
    /// | `LIVENESS_OP_TIMEOUT_MS` | operation timeout in ms | `250` |
    /// | `LIVENESS_DEBOUNCE_MS` | the layered store's debounce window in ms | `30000` |
    /// | `LIVENESS_RECOVERY_FLOOR_MS` | the largest ttl callers pass, in ms: after a possible loss "dead" is distrusted for one and a half times this | `90000` |
    /// | `LIVENESS_LEASE_SKEW_MARGIN_MS` | how far apart the instances' clocks may be, in ms: a lease is trusted for this much less than it says | `1000` |
    /// | `LIVENESS_REQUIRE_CONNECTION` | `1` (or `true`): an unreachable Redis fails `open()`; `0` (or `false`): the store starts down and connects in the background | `0` |
    ///
    /// Cluster seeds are split only at a comma that a URL scheme follows (`redis://`,
    /// `rediss://`, `valkey://` or `valkeys://`, in any case, spaces allowed), and a trailing
    /// comma is ignored: a raw comma in a password stays part of it
    /// (`redis://:pa,ss@10.0.0.1:6379/,redis://10.0.0.2:6379/` is two seeds), and so does a
    /// percent-encoded one (`%2C`).
    ///
    /// Nothing set gives the noop store; `REDIS_URL` alone does not turn Redis on. An empty
    /// variable counts as unset.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the variable and the fix when a value is malformed.
    pub fn from_env() -> Result<StoreConfig> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `lookup` (for tests and for
    /// servers with their own configuration source).
    ///
    /// # Errors
    ///
    /// As [`from_env`](Self::from_env).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<StoreConfig> {
        let set = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let backend = match set(ENV_BACKEND) {
            None => Backend::Noop,
            Some(name) => name.parse().map_err(|e: Error| {
                Error::Config(format!("{ENV_BACKEND}: {}", unwrap_config(e)))
            })?,
        };
        let milliseconds = |name: &str, zero_ok: bool| {
            set(name)
                .map(|ms| match ms.trim().parse::<u64>() {
                    Ok(ms) if ms > 0 || zero_ok => Ok(Duration::from_millis(ms)),
                    _ => Err(Error::Config(format!(
                        "{name}=`{ms}` is not a {} whole number of milliseconds; set it like \
                         {name}=250 or unset it",
                        if zero_ok { "non-negative" } else { "positive" }
                    ))),
                })
                .transpose()
        };
        let flag = |name: &str| {
            set(name)
                .map(|value| match value.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => Ok(true),
                    "0" | "false" | "no" | "off" => Ok(false),
                    _ => Err(Error::Config(format!(
                        "{name}=`{value}` is not a flag; set it to 1 or 0, or unset it"
                    ))),
                })
                .transpose()
        };
        Ok(StoreConfig {
            backend,
            redis_url: set(ENV_REDIS_URL).or_else(|| set(ENV_REDIS_URL_FALLBACK)),
            key_prefix: set(ENV_KEY_PREFIX),
            op_timeout: milliseconds(ENV_OP_TIMEOUT_MS, false)?,
            debounce: milliseconds(ENV_DEBOUNCE_MS, true)?,
            recovery_floor: milliseconds(ENV_RECOVERY_FLOOR_MS, true)?,
            lease_skew_margin: milliseconds(ENV_LEASE_SKEW_MARGIN_MS, true)?,
            require_connection: flag(ENV_REQUIRE_CONNECTION)?,
        })
    }
}

fn unwrap_config(error: Error) -> String {
    match error {
        Error::Config(message) => message,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<StoreConfig> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        StoreConfig::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn nothing_set_is_noop() {
        assert_eq!(config(&[]).unwrap(), StoreConfig::default());
        // A platform's REDIS_URL alone does not turn Redis on.
        let c = config(&[("REDIS_URL", "redis://x/")]).unwrap();
        assert_eq!(c.backend, Backend::Noop);
        // An empty variable is unset, not an empty key prefix.
        let c = config(&[("LIVENESS_KEY_PREFIX", "")]).unwrap();
        assert_eq!(c.key_prefix, None);
    }

    #[test]
    fn reads_every_variable() {
        let c = config(&[
            ("LIVENESS_BACKEND", " Redis "),
            ("REDIS_URL", "redis://fallback/"),
            ("LIVENESS_KEY_PREFIX", "hb:"),
            ("LIVENESS_OP_TIMEOUT_MS", "100"),
            ("LIVENESS_DEBOUNCE_MS", "0"),
            ("LIVENESS_REQUIRE_CONNECTION", "True"),
            ("LIVENESS_LEASE_SKEW_MARGIN_MS", "20"),
        ])
        .unwrap();
        assert_eq!(c.require_connection, Some(true));
        assert_eq!(c.lease_skew_margin, Some(Duration::from_millis(20)));
        assert_eq!(c.backend, Backend::Redis);
        assert_eq!(c.redis_url.as_deref(), Some("redis://fallback/"));
        assert_eq!(c.key_prefix.as_deref(), Some("hb:"));
        assert_eq!(c.op_timeout, Some(Duration::from_millis(100)));
        assert_eq!(c.debounce, Some(Duration::ZERO));
        let c = config(&[
            ("LIVENESS_REDIS_URL", "redis://primary/"),
            ("REDIS_URL", "redis://fallback/"),
        ])
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://primary/"));
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let e = config(&[("LIVENESS_BACKEND", "mongo")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("LIVENESS_BACKEND") && e.contains("mongo"), "{e}");
        for bad in ["0", "-5", "1.5", "fast"] {
            let e = config(&[("LIVENESS_OP_TIMEOUT_MS", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("LIVENESS_OP_TIMEOUT_MS"), "{e}");
        }
        for bad in ["2", "maybe", "-1"] {
            let e = config(&[("LIVENESS_REQUIRE_CONNECTION", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("LIVENESS_REQUIRE_CONNECTION"), "{e}");
        }
        for variable in [
            "LIVENESS_DEBOUNCE_MS",
            "LIVENESS_RECOVERY_FLOOR_MS",
            "LIVENESS_LEASE_SKEW_MARGIN_MS",
        ] {
            for bad in ["-5", "1.5", "90s", "99999999999999999999"] {
                let e = config(&[(variable, bad)]).unwrap_err().to_string();
                assert!(e.contains(variable), "{e}");
            }
        }
    }
}
