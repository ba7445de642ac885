//! What the Redis and the Redis Cluster backends share: how a record is written, how data loss
//! is detected, and how a connection's failures are read. Neither backend imports the other.
//!
//! Data loss (invariant 4) has three detectors and one consequence:
//!
//! - [`epoch`]: a record without expiry beside the runtimes' records; missing or changed, it
//!   says the keyspace was emptied or replaced (`FLUSHALL`, a restart without persistence, a
//!   replica promoted empty);
//! - [`marker`]: a script of this store's own in the server's script cache, which no snapshot
//!   and no replica holds; gone, it says the server restarted (from a snapshot too) or another
//!   server took over (a failover to a replica that may be behind);
//! - the server's uptime at the first connection: a server younger than the recovery window
//!   may have restarted, and lost writes, before this store ever saw it;
//!
//! and [`recovery`] turns what they find into loss events: counted, logged, and followed by a
//! window during which "dead" answers are [`Error::Recovering`](crate::Error::Recovering).

pub(crate) mod contact;
pub(crate) mod epoch;
pub(crate) mod marker;
pub(crate) mod recovery;
pub(crate) mod settings;

use std::time::Duration;

use redis::{ErrorKind, RedisError};

pub(crate) use crate::unix_time::unix_ms;
pub use settings::DEFAULT_KEY_PREFIX;

use crate::log_limit::LogLimit;
use crate::{Error, Result};

/// `ttl` as the argument of `PX`: whole milliseconds, rounded up. Rounded down, a record could
/// lapse up to a millisecond before the ttl its writer promised (invariant 1).
pub(crate) fn px(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// A remote call's result, and whether a server answered it. An error reply (`OOM`, `NOPERM`)
/// is an answer: Redis is up, and reads may well work, so only calls that no server answered
/// count against the circuit breaker.
#[derive(Debug)]
pub(crate) struct Attempt<T> {
    pub(crate) result: Result<T>,
    pub(crate) answered: bool,
}

impl<T> Attempt<T> {
    /// A call a server answered, with this result.
    pub(crate) fn answered(result: Result<T>) -> Attempt<T> {
        Attempt {
            result,
            answered: true,
        }
    }

    /// A call that failed with `error`; `answered` says whether a server replied.
    pub(crate) fn failed(error: Error, answered: bool) -> Attempt<T> {
        Attempt {
            result: Err(error),
            answered,
        }
    }
}

/// A call that failed, and whether a server answered it (see [`Attempt`]).
#[cfg(feature = "cluster")]
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) answered: bool,
}

#[cfg(feature = "cluster")]
impl<T> From<Failure> for Attempt<T> {
    fn from(failure: Failure) -> Attempt<T> {
        Attempt::failed(failure.error, failure.answered)
    }
}

/// The `uptime_in_seconds` of an `INFO server` reply.
pub(crate) fn uptime(info: &str) -> Option<Duration> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("uptime_in_seconds:"))
        .and_then(|seconds| seconds.parse().ok())
        .map(Duration::from_secs)
}

/// Whether the error is a reply from the server, which proves the connection works.
pub(crate) fn server_answered(error: &RedisError) -> bool {
    matches!(error.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

/// Logs a failed `forget` (it returns nothing to its caller): not while the breaker is open,
/// which logged the outage when it opened, and at most one line per interval, because many
/// forgets in flight can fail together (a hung Redis times them all out; an error reply never
/// opens the breaker).
pub(crate) fn log_failed_forget(log: &LogLimit, result: Result<()>) {
    match result {
        Ok(()) | Err(Error::Unavailable) => {}
        Err(error) => {
            if let Some(suppressed) = log.allow() {
                tracing::warn!(
                    %error,
                    suppressed,
                    "liveness forget failed; the record's ttl will reap it"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_uptime_of_an_info_reply() {
        let info =
            "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:42\r\nuptime_in_days:0\r\n";
        assert_eq!(uptime(info), Some(Duration::from_secs(42)));
        assert_eq!(uptime("# Server\r\n"), None);
    }

    #[test]
    fn px_rounds_up_to_the_next_millisecond() {
        assert_eq!(px(Duration::from_millis(1)), 1);
        assert_eq!(px(Duration::from_micros(1_001)), 2);
        assert_eq!(px(Duration::from_nanos(90_000_000_001)), 90_001);
        assert_eq!(px(Duration::from_secs(90)), 90_000);
        assert_eq!(px(Duration::MAX), u64::MAX);
    }
}
