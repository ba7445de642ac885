//! Counting what Redis really received: `INFO commandstats` read on a plain connection of the
//! simulator's own, before, during (every [`SAMPLE_EVERY`]) and after a run.
//!
//! The store does not count its own commands here: the server does. What is counted is every
//! command but [`BOOKKEEPING`]: the records' `SET`s, the batches' `MGET`s, and the `GET` of the
//! epoch record that rides in every pipeline but a single touch's (its `SET NX` comes when the
//! store connects, before the first snapshot). Not counted: the simulator's own `INFO` calls,
//! connection set-up (`CLIENT SETINFO`, `HELLO`, `SELECT`, `PING`, the store's `CONFIG GET` of
//! the eviction policy) and the `FLUSHALL` between runs.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// How often commands are sampled during a run, for the commands/s curve.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Commands that are not the store's work: they are reported apart, not counted.
pub(crate) const BOOKKEEPING: &[&str] = &[
    "info", "config", "ping", "client", "hello", "select", "flushall", "auth",
];
/// The longest any of the simulator's own requests may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Calls per command name (lower case; subcommands as `parent|sub`), since the server started.
pub(crate) type Calls = BTreeMap<String, u64>;

/// Parses the `cmdstat_<name>:calls=N,...` lines of `INFO commandstats`.
pub(crate) fn parse(info: &str) -> Calls {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_ascii_lowercase(), calls))
        })
        .collect()
}

/// The calls made between two snapshots. A command missing from `before` was not called yet;
/// a count that went down (someone ran `CONFIG RESETSTAT`) counts from zero.
pub(crate) fn delta(before: &Calls, after: &Calls) -> Calls {
    after
        .iter()
        .map(|(name, &calls)| {
            let was = before.get(name).copied().unwrap_or(0);
            let made = if calls >= was { calls - was } else { calls };
            (name.clone(), made)
        })
        .filter(|&(_, made)| made > 0)
        .collect()
}

/// `"config|get"` → `"config"`.
fn base(name: &str) -> &str {
    name.split('|').next().unwrap_or(name)
}

pub(crate) fn is_bookkeeping(name: &str) -> bool {
    BOOKKEEPING.contains(&base(name))
}

/// The counted calls (the store's work) and the bookkeeping ones, apart.
pub(crate) fn split(calls: &Calls) -> (Calls, Calls) {
    calls
        .iter()
        .map(|(name, &made)| (name.clone(), made))
        .partition(|(name, _)| !is_bookkeeping(name))
}

/// The sum of the counted calls.
pub(crate) fn counted(calls: &Calls) -> u64 {
    calls
        .iter()
        .filter(|(name, _)| !is_bookkeeping(name))
        .map(|(_, &made)| made)
        .sum()
}

/// Commands per second between successive samples of `(seconds since the run began, counted
/// commands since then)`, each rate placed at the end of its interval. Intervals shorter than
/// `shortest` seconds are left out: the last snapshot, taken once the run's tasks have
/// stopped, closes a sliver of an interval whose rate would only be noise.
pub(crate) fn rates(samples: &[(f64, u64)], shortest: f64) -> Vec<Rate> {
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

/// Commands per second over one sampling interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Rate {
    /// End of the interval, in seconds since the run began.
    pub(crate) t_s: f64,
    pub(crate) commands_per_s: f64,
}

/// What one run sent, as the server counted it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counted {
    /// Every call between the snapshots, bookkeeping included.
    pub(crate) calls: Calls,
    /// `(seconds since the first snapshot, counted calls since then)`, from 0 to the end.
    pub(crate) samples: Vec<(f64, u64)>,
}

/// A plain connection to the Redis under test, apart from the store's pool.
#[derive(Clone)]
pub(crate) struct StatsConnection {
    connection: MultiplexedConnection,
}

impl StatsConnection {
    pub(crate) async fn open(url: &str) -> Result<StatsConnection, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL: {e}"))?;
        let connection =
            tokio::time::timeout(REQUEST_TIMEOUT, client.get_multiplexed_async_connection())
                .await
                .map_err(|_| format!("no connection to Redis within {REQUEST_TIMEOUT:?}"))?
                .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        Ok(StatsConnection { connection })
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, String> {
        let mut connection = self.connection.clone();
        tokio::time::timeout(REQUEST_TIMEOUT, command.query_async(&mut connection))
            .await
            .map_err(|_| format!("Redis did not answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())
    }

    /// Every command's calls so far.
    pub(crate) async fn snapshot(&self) -> Result<Calls, String> {
        let info: String = self
            .query(redis::cmd("INFO").arg("commandstats"))
            .await
            .map_err(|e| format!("INFO commandstats: {e}"))?;
        Ok(parse(&info))
    }

    /// The server's version, from `INFO server`.
    pub(crate) async fn version(&self) -> Option<String> {
        let info: String = self.query(redis::cmd("INFO").arg("server")).await.ok()?;
        info.lines()
            .find_map(|line| line.trim().strip_prefix("redis_version:"))
            .map(str::to_owned)
    }

    /// Empties the server: only ever called on a server the simulator started itself.
    pub(crate) async fn flushall(&self) -> Result<(), String> {
        self.query::<()>(&redis::cmd("FLUSHALL"))
            .await
            .map_err(|e| format!("FLUSHALL: {e}"))
    }

    /// Deletes `key` (the store's epoch record, which has no expiry).
    pub(crate) async fn delete(&self, key: &[u8]) -> Result<(), String> {
        self.query::<()>(redis::cmd("DEL").arg(key))
            .await
            .map_err(|e| format!("DEL: {e}"))
    }
}

/// Counts a run: the first snapshot at [`Sampler::start`], one every [`SAMPLE_EVERY`], the
/// last at [`Sampler::finish`].
pub(crate) struct Sampler {
    connection: StatsConnection,
    before: Calls,
    started: Instant,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Vec<(f64, u64)>>,
}

impl Sampler {
    pub(crate) async fn start(connection: &StatsConnection) -> Result<Sampler, String> {
        let before = connection.snapshot().await?;
        let started = Instant::now();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(sample(connection.clone(), before.clone(), started, stopped));
        Ok(Sampler {
            connection: connection.clone(),
            before,
            started,
            stop,
            task,
        })
    }

    pub(crate) async fn finish(self) -> Result<Counted, String> {
        let _ = self.stop.send(());
        let mut samples = self.task.await.unwrap_or_default();
        let after = self.connection.snapshot().await?;
        let calls = delta(&self.before, &after);
        samples.push((self.started.elapsed().as_secs_f64(), counted(&calls)));
        Ok(Counted { calls, samples })
    }
}

async fn sample(
    connection: StatsConnection,
    before: Calls,
    started: Instant,
    mut stopped: oneshot::Receiver<()>,
) -> Vec<(f64, u64)> {
    let mut samples = vec![(0.0, 0)];
    let mut ticker = tokio::time::interval_at(started + SAMPLE_EVERY, SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut stopped => break,
        }
        // A missed sample only coarsens the curve; the totals come from the last snapshot.
        if let Ok(now) = connection.snapshot().await {
            let t = started.elapsed().as_secs_f64();
            samples.push((t, counted(&delta(&before, &now))));
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Commandstats\r\n\
        cmdstat_set:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=90,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_config|get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# Commandstats\r\n\
        cmdstat_set:calls=1010,usec=5050,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_get:calls=7,usec=7,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_MGET:calls=4,usec=400,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=9,usec=270,usec_per_call=30.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setinfo:calls=4,usec=4,usec_per_call=1.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_config|get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        not a stat line\r\n\
        cmdstat_broken:usec=3\r\n";

    #[test]
    fn commandstats_lines_parse_into_calls() {
        let calls = parse(AFTER);
        assert_eq!(calls.get("set"), Some(&1010));
        assert_eq!(calls.get("mget"), Some(&4), "names are lower-cased");
        assert_eq!(calls.get("client|setinfo"), Some(&4));
        assert_eq!(
            calls.len(),
            6,
            "lines without calls= are skipped: {calls:?}"
        );
        assert!(parse("").is_empty());
    }

    #[test]
    fn deltas_count_the_store_and_set_bookkeeping_apart() {
        let made = delta(&parse(BEFORE), &parse(AFTER));
        let expected: Calls = [
            ("set", 1000),
            ("get", 7),
            ("mget", 4),
            ("info", 6),
            ("client|setinfo", 4),
        ]
        .into_iter()
        .map(|(name, calls)| (name.to_owned(), calls))
        .collect();
        assert_eq!(made, expected, "config|get did not move, so it is left out");
        assert_eq!(
            counted(&made),
            1011,
            "SET + GET + MGET; not INFO nor CLIENT"
        );
        let (store, bookkeeping) = split(&made);
        assert_eq!(store.keys().collect::<Vec<_>>(), ["get", "mget", "set"]);
        assert_eq!(
            bookkeeping.keys().collect::<Vec<_>>(),
            ["client|setinfo", "info"]
        );
        // A reset in between counts from zero instead of going negative.
        assert_eq!(delta(&parse(AFTER), &parse(BEFORE)).get("set"), Some(&10));
    }

    #[test]
    fn rates_are_per_interval() {
        let rate = |t_s, commands_per_s| Rate {
            t_s,
            commands_per_s,
        };
        let samples = [
            (0.0, 0),
            (0.25, 500),
            (0.5, 500),
            (0.5, 600),
            (1.0, 1100),
            (1.01, 1101),
        ];
        assert_eq!(
            rates(&samples, 0.1),
            vec![rate(0.25, 2_000.0), rate(0.5, 0.0), rate(1.0, 1_000.0)],
            "no rate over no time, nor over the last 10 ms"
        );
        assert_eq!(rates(&samples, 0.0).len(), 4);
        assert!(rates(&samples[..1], 0.0).is_empty());
    }
}
