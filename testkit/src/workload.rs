//! A beating fleet for fault tests: runtimes touched through one store, read through several,
//! every call recorded, then checked for the two things a liveness store owes its caller under
//! failure — **bounded** (every call ends within the op timeout plus slack) and **no false
//! dead** (no read answers `Ok(false)` for a runtime within its ttl of a touch that returned
//! `Ok`).
//!
//! Generic over the store (`Arc<dyn LivenessStore>`): the cluster tests drive a layered store
//! over `ClusterStore` and a plain `ClusterStore` side by side with [`Workload`]; the fault
//! tests drive their own load through a proxy and check it with [`Report`], whose false-dead
//! check is the [`crate::false_dead`] checker the simulator uses too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use liveness_store::{Error, LivenessStore};
use parking_lot::Mutex;

use crate::false_dead::FalseDead;

/// How the fleet beats and reads.
#[derive(Debug, Clone, Copy)]
pub struct Rhythm {
    pub runtimes: usize,
    pub ttl: Duration,
    pub beat: Duration,
    pub read_every: Duration,
}

/// What one call did.
#[derive(Debug)]
pub struct Call {
    pub instance: usize,
    pub start: Instant,
    pub end: Instant,
    pub what: Outcome,
}

#[derive(Debug)]
pub enum Outcome {
    Touch { id: usize, ok: bool },
    Read(Result<Vec<bool>, Error>),
}

/// Runtimes beating through `instances[0]`, every instance reading all of them.
pub struct Workload {
    pub ids: Arc<Vec<String>>,
    pub instances: Vec<Arc<dyn LivenessStore>>,
    rhythm: Rhythm,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
    /// Set to end the beats while the reads go on: runtimes that stopped beating.
    silent: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Workload {
    /// Starts beating and reading, and returns once every runtime has beaten three times.
    pub async fn start(
        id_prefix: &str,
        instances: Vec<Arc<dyn LivenessStore>>,
        rhythm: Rhythm,
    ) -> Workload {
        let ids = (0..rhythm.runtimes)
            .map(|i| format!("{id_prefix}{i}"))
            .collect();
        let mut workload = Workload {
            ids: Arc::new(ids),
            instances,
            rhythm,
            calls: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            silent: Arc::new(AtomicBool::new(false)),
            tasks: tokio::task::JoinSet::new(),
        };
        workload.spawn_beater();
        for instance in 0..workload.instances.len() {
            workload.spawn_reader(instance);
        }
        tokio::time::sleep(3 * rhythm.beat).await;
        workload
    }

    fn spawn_beater(&mut self) {
        let (ids, store, calls, stop, silent, rhythm) = (
            Arc::clone(&self.ids),
            Arc::clone(&self.instances[0]),
            Arc::clone(&self.calls),
            Arc::clone(&self.stop),
            Arc::clone(&self.silent),
            self.rhythm,
        );
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(rhythm.beat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if silent.load(Ordering::Relaxed) {
                    break;
                }
                // Every runtime beats on its own, concurrently, as heartbeat handlers do.
                let mut beats = tokio::task::JoinSet::new();
                for id in 0..ids.len() {
                    let (ids, store, calls) =
                        (Arc::clone(&ids), Arc::clone(&store), Arc::clone(&calls));
                    beats.spawn(async move {
                        let start = Instant::now();
                        let ok = store.touch(&ids[id], rhythm.ttl).await.is_ok();
                        let end = Instant::now();
                        calls.lock().push(Call {
                            instance: 0,
                            start,
                            end,
                            what: Outcome::Touch { id, ok },
                        });
                    });
                }
                while beats.join_next().await.is_some() {}
            }
        });
    }

    fn spawn_reader(&mut self, instance: usize) {
        let (ids, store, calls, stop, every) = (
            Arc::clone(&self.ids),
            Arc::clone(&self.instances[instance]),
            Arc::clone(&self.calls),
            Arc::clone(&self.stop),
            self.rhythm.read_every,
        );
        self.tasks.spawn(async move {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let answer = store.is_alive_batch(&refs).await;
                let end = Instant::now();
                calls.lock().push(Call {
                    instance,
                    start,
                    end,
                    what: Outcome::Read(answer),
                });
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Every runtime stops beating, from the next beat on; the reads go on until
    /// [`stop`](Self::stop). The report then shows whether any was read dead within the ttl of
    /// its last beat.
    pub fn stop_beating(&self) {
        self.silent.store(true, Ordering::Relaxed);
    }

    /// Polls (every 10 ms, for at most `limit`) until every instance is healthy and answers
    /// "alive" for every beating runtime; returns how long that took.
    pub async fn wait_until_recovered(&self, limit: Duration) -> Duration {
        let refs: Vec<&str> = self.ids.iter().map(String::as_str).collect();
        let start = Instant::now();
        loop {
            let mut recovered = true;
            for store in &self.instances {
                recovered &= store.health().is_healthy()
                    && matches!(store.is_alive_batch(&refs).await, Ok(a) if a.iter().all(|x| *x));
            }
            if recovered {
                return start.elapsed();
            }
            let healths: Vec<_> = self.instances.iter().map(|s| s.health()).collect();
            assert!(
                start.elapsed() < limit,
                "not recovered after {limit:?}: {healths:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the load and returns every call it made.
    pub async fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(task) = self.tasks.join_next().await {
            task.expect("a load task panicked");
        }
        let calls = std::mem::take(&mut *self.calls.lock());
        Report {
            ids: Arc::clone(&self.ids),
            ttl: self.rhythm.ttl,
            calls,
        }
    }
}

/// Every call a workload made, for the checks.
pub struct Report {
    ids: Arc<Vec<String>>,
    ttl: Duration,
    pub calls: Vec<Call>,
}

/// What [`Report::assert_bounded`] measured.
#[derive(Debug, Default)]
pub struct Summary {
    pub calls: usize,
    pub errors: usize,
    pub worst_touch: Duration,
    pub worst_read: Duration,
}

impl Report {
    /// The calls of a load driven elsewhere, runtimes named by `ids` touched with `ttl`.
    pub fn new(ids: Arc<Vec<String>>, ttl: Duration, calls: Vec<Call>) -> Report {
        Report { ids, ttl, calls }
    }

    /// How many calls overlapped `window`.
    pub fn calls_during(&self, window: (Instant, Instant)) -> usize {
        self.calls
            .iter()
            .filter(|call| call.end >= window.0 && call.start <= window.1)
            .count()
    }

    /// Every call ended within `limit`. Prints and returns the worst latencies and the error
    /// count.
    pub fn assert_bounded(&self, name: &str, limit: Duration) -> Summary {
        let mut worst: HashMap<&str, Duration> = HashMap::new();
        for call in &self.calls {
            let took = call.end - call.start;
            let kind = match call.what {
                Outcome::Touch { .. } => "touch",
                Outcome::Read(_) => "is_alive_batch",
            };
            let entry = worst.entry(kind).or_default();
            *entry = (*entry).max(took);
            assert!(
                took <= limit,
                "{name}: a {kind} took {took:?}, over {limit:?}"
            );
        }
        let errors = self
            .calls
            .iter()
            .filter(|c| {
                matches!(
                    c.what,
                    Outcome::Touch { ok: false, .. } | Outcome::Read(Err(_))
                )
            })
            .count();
        let summary = Summary {
            calls: self.calls.len(),
            errors,
            worst_touch: worst.get("touch").copied().unwrap_or_default(),
            worst_read: worst.get("is_alive_batch").copied().unwrap_or_default(),
        };
        println!("{name}: {summary:?}");
        summary
    }

    /// No read that began after a touch returned `Ok` and ended before that touch's ttl ran
    /// out (from its start, the earliest the record can have been written) answered "dead":
    /// the calls replayed in time order through the [`FalseDead`] checker.
    pub fn assert_no_false_dead(&self, name: &str) {
        let checker = FalseDead::new(self.ids.len(), self.ttl);
        // A touch counts from when it returned, a read is bound from when it began; at one
        // instant, the touch first (it returned before the read began).
        let mut events: Vec<(Instant, bool, &Call)> = self
            .calls
            .iter()
            .filter_map(|call| match call.what {
                Outcome::Touch { ok: true, .. } => Some((call.end, false, call)),
                Outcome::Read(Ok(_)) => Some((call.start, true, call)),
                _ => None,
            })
            .collect();
        events.sort_by_key(|&(at, is_read, _)| (at, is_read));
        let mut reads = 0;
        for (_, _, call) in events {
            match &call.what {
                Outcome::Touch { id, .. } => checker.touched(*id, call.start),
                Outcome::Read(Ok(answers)) => {
                    reads += 1;
                    for (id, &alive) in answers.iter().enumerate() {
                        let Some(promise) = checker.promise(id) else {
                            continue;
                        };
                        assert!(
                            promise.broken_by(call.end, alive).is_none(),
                            "{name}: instance {} read {} dead {:?} after a touch that returned \
                             Ok (ttl {:?})",
                            call.instance,
                            self.ids[id],
                            call.start - promise.touched,
                            self.ttl
                        );
                    }
                }
                Outcome::Read(Err(_)) => {}
            }
        }
        assert!(reads > 0, "{name}: no read succeeded at all");
    }

    /// How many reads answered `Err(Recovering)`.
    pub fn recovering_reads(&self) -> usize {
        self.calls
            .iter()
            .filter(|c| matches!(c.what, Outcome::Read(Err(Error::Recovering { .. }))))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runtime 0 touched over 0..1 ms with a 100 ms ttl, then read dead by calls at `reads`.
    fn report(reads: &[(u64, u64)]) -> Report {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let touch = Call {
            instance: 0,
            start: ms(0),
            end: ms(1),
            what: Outcome::Touch { id: 0, ok: true },
        };
        let read = |&(start, end): &(u64, u64)| Call {
            instance: 1,
            start: ms(start),
            end: ms(end),
            what: Outcome::Read(Ok(vec![false])),
        };
        let calls = std::iter::once(touch)
            .chain(reads.iter().map(read))
            .collect();
        Report::new(
            Arc::new(vec!["rt".into()]),
            Duration::from_millis(100),
            calls,
        )
    }

    #[test]
    fn dead_is_allowed_before_the_touch_returned_and_from_the_ttl_on() {
        // Began before the touch returned; ended at the ttl; began after it.
        report(&[(0, 5), (50, 100), (120, 121)]).assert_no_false_dead("legal");
    }

    #[test]
    #[should_panic(expected = "read rt dead")]
    fn dead_within_the_ttl_of_a_returned_touch_is_a_false_dead() {
        report(&[(1, 99)]).assert_no_false_dead("false dead");
    }
}
