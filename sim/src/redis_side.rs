//! The Redis of the Redis-backed stores: the one given, or a `redis-server` of its own
//! (testkit's, killed at exit); and what it received during each run, counted by the server
//! itself (`INFO commandstats`), not by the store.
//!
//! The simulator's own connection is a blocking one, used between the runs and, during a run,
//! by a thread of its own: none of its I/O runs on the tokio runtime whose latencies are
//! measured.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use testkit::RedisServer;
use testkit::commandstats::{Calls, calls_between, is_bookkeeping, read_command_stats};

/// How often commands are counted during a run, for the commands/s curve.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The longest any of the simulator's own requests may take.
const TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct RedisSide {
    pub(crate) url: String,
    client: redis::Client,
    /// Dropping it kills the server: kept until the session ends. `None` when given.
    server: Option<RedisServer>,
}

/// The Redis in the report.
#[derive(Debug, Serialize)]
pub(crate) struct RedisInfo {
    /// `host:port`: never the URL, which may hold a password.
    pub(crate) address: String,
    pub(crate) version: Option<String>,
    /// A redis-server the simulator started (and flushes between the stores).
    pub(crate) started_by_sim: bool,
}

/// What Redis received during one run.
#[derive(Debug, Serialize)]
pub(crate) struct Counted {
    /// The store's commands by name (`set`, `mget`, `get`).
    pub(crate) commands: Calls,
    /// Not the store's work: the simulator's `INFO`, connection set-up.
    pub(crate) not_counted: Calls,
    /// Commands/s over time, one point per sampling interval.
    pub(crate) rate: Vec<Rate>,
}

/// Commands per second over one sampling interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Rate {
    /// End of the interval, in seconds since the run began.
    pub(crate) t_s: f64,
    pub(crate) commands_per_s: f64,
}

impl Counted {
    pub(crate) fn total(&self) -> u64 {
        self.commands.values().sum()
    }
}

impl RedisSide {
    /// `given`, or a `redis-server` of its own when `None`; connected to once, so that a
    /// wrong URL fails before any run.
    pub(crate) fn open(given: Option<String>) -> Result<RedisSide, String> {
        let (url, server) = match given {
            Some(url) => (url, None),
            None => {
                let server = RedisServer::try_start()
                    .map_err(|e| format!("{e}\n(or pass --redis-url redis://HOST:PORT/)"))?;
                (server.url(), Some(server))
            }
        };
        let client =
            redis::Client::open(url.as_str()).map_err(|e| format!("bad Redis URL: {e}"))?;
        let side = RedisSide {
            url,
            client,
            server,
        };
        side.connect()?;
        Ok(side)
    }

    pub(crate) fn started_by_sim(&self) -> bool {
        self.server.is_some()
    }

    fn connect(&self) -> Result<redis::Connection, String> {
        let failed = |e: redis::RedisError| format!("cannot connect to Redis: {e}");
        let connection = self
            .client
            .get_connection_with_timeout(TIMEOUT)
            .map_err(failed)?;
        connection.set_read_timeout(Some(TIMEOUT)).map_err(failed)?;
        connection
            .set_write_timeout(Some(TIMEOUT))
            .map_err(failed)?;
        Ok(connection)
    }

    fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, String> {
        command
            .query(&mut self.connect()?)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn info(&self) -> RedisInfo {
        let info: Option<String> = self.query(redis::cmd("INFO").arg("server")).ok();
        RedisInfo {
            address: self.client.get_connection_info().addr().to_string(),
            version: info.as_deref().and_then(|info| {
                info.lines()
                    .find_map(|line| line.trim().strip_prefix("redis_version:"))
                    .map(str::to_owned)
            }),
            started_by_sim: self.started_by_sim(),
        }
    }

    /// Empties a server of its own, so that every store starts on an empty Redis; never done
    /// to a Redis that was given.
    pub(crate) fn flush_if_own(&self) -> Result<(), String> {
        if self.started_by_sim() {
            self.query::<()>(&redis::cmd("FLUSHALL"))
                .map_err(|e| format!("FLUSHALL: {e}"))?;
        }
        Ok(())
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), String> {
        self.query::<()>(redis::cmd("DEL").arg(key))
            .map_err(|e| format!("DEL: {e}"))
    }

    /// Starts counting a run: a first reading now, one every [`SAMPLE_EVERY`], the last at
    /// [`Sampler::finish`].
    pub(crate) fn count(&self) -> Result<Sampler, String> {
        let mut connection = self.connect()?;
        let read = |connection: &mut redis::Connection| {
            read_command_stats(connection).map_err(|e| format!("INFO commandstats: {e}"))
        };
        let before = read(&mut connection)?;
        let started = Instant::now();
        let (stop, stopped) = mpsc::channel();
        let thread = thread::spawn(move || {
            let counted = |now: &Calls| {
                let calls = calls_between(&before, now);
                calls
                    .iter()
                    .filter(|(name, _)| !is_bookkeeping(name))
                    .map(|(_, n)| n)
                    .sum()
            };
            let mut samples = vec![(0.0, 0)];
            while stopped.recv_timeout(SAMPLE_EVERY) == Err(RecvTimeoutError::Timeout) {
                // A missed sample only coarsens the curve: the totals come from the last one.
                if let Ok(now) = read(&mut connection) {
                    samples.push((started.elapsed().as_secs_f64(), counted(&now)));
                }
            }
            let after = read(&mut connection)?;
            samples.push((started.elapsed().as_secs_f64(), counted(&after)));
            let (not_counted, commands) = calls_between(&before, &after)
                .into_iter()
                .partition(|(name, _)| is_bookkeeping(name));
            Ok(Counted {
                commands,
                not_counted,
                rate: rates(&samples, SAMPLE_EVERY.as_secs_f64() / 2.0),
            })
        });
        Ok(Sampler { stop, thread })
    }
}

/// A run being counted.
pub(crate) struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Result<Counted, String>>,
}

impl Sampler {
    pub(crate) fn finish(self) -> Result<Counted, String> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| "the counting thread panicked".to_owned())?
    }
}

/// Commands per second between successive samples of `(seconds since the run began, commands
/// since then)`, each placed at the end of its interval. Intervals shorter than `shortest`
/// seconds are left out: the last sample, taken once the run's tasks stopped, closes a sliver
/// of an interval whose rate would only be noise.
fn rates(samples: &[(f64, u64)], shortest: f64) -> Vec<Rate> {
    samples
        .windows(2)
        .filter_map(|pair| {
            let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
            let dt = t1 - t0;
            (dt > 0.0 && dt >= shortest).then(|| Rate {
                t_s: t1,
                commands_per_s: c1.saturating_sub(c0) as f64 / dt,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_per_interval_without_slivers() {
        let samples = [
            (0.0, 0),
            (0.25, 500),
            (0.5, 500),
            (1.0, 1_100),
            (1.01, 1_101),
        ];
        let rates = rates(&samples, 0.1);
        let at: Vec<f64> = rates.iter().map(|r| r.t_s).collect();
        assert_eq!(at, [0.25, 0.5, 1.0], "not over the last 10 ms");
        let (t0, c0) = samples[2];
        let (t1, c1) = samples[3];
        assert_eq!(rates[2].commands_per_s, (c1 - c0) as f64 / (t1 - t0));
        assert_eq!(rates[1].commands_per_s, 0.0);
    }
}
