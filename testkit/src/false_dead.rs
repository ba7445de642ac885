//! The false-dead checker: invariant 1 of the design, judged one answer at a time.
//!
//! After `touch(id, ttl)` returned `Ok`, no read may answer "dead" for `id` until the ttl has
//! run out. A store stamps the record somewhere within the touch call, so the ttl counts from
//! the call's *start* (the earliest the record can have been written). It reads its clock
//! somewhere within the read call, so a "dead" answer is certainly false only when the read
//! *ended* before the lapse: one that straddles it may rightly answer either way (judging by
//! its start flagged a busy machine's scheduling delay as a broken invariant). And a touch
//! binds only the reads that began after it returned.
//!
//! Hence two steps: [`FalseDead::touched`] records each `Ok` touch once it returned, and
//! [`FalseDead::promise`], taken before a read starts, is what that read owes
//! ([`Promise::broken_by`] judges its answer once it returned). A live run takes the promise
//! right before the call (the simulator's sweeper); a recorded one replays its calls in time
//! order ([`crate::workload::Report::assert_no_false_dead`]).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What every runtime's `Ok` touches promise, shared by the tasks that touch and read.
#[derive(Debug)]
pub struct FalseDead {
    ttl: Duration,
    /// Per runtime, the latest start of a touch that returned `Ok`. A lock per runtime, not
    /// one for all: beaters and readers of different runtimes never wait for each other.
    touched: Vec<Mutex<Option<Instant>>>,
}

/// A runtime must not read "dead" before `until`: a touch that started at `touched`
/// returned `Ok`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    pub touched: Instant,
    pub until: Instant,
}

impl FalseDead {
    /// A checker for runtimes `0..runtimes`, every one touched with `ttl`.
    pub fn new(runtimes: usize, ttl: Duration) -> FalseDead {
        FalseDead {
            ttl,
            touched: (0..runtimes).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// A touch of `runtime` that started at `start` has returned `Ok`. Concurrent touches may
    /// return out of order: the latest start counts.
    ///
    /// Panics if `runtime` is not below the checker's `runtimes`.
    pub fn touched(&self, runtime: usize, start: Instant) {
        let mut latest = self.touched[runtime].lock();
        *latest = Some(latest.map_or(start, |t| t.max(start)));
    }

    /// What a read of `runtime` that starts now owes: take it before the read starts, so that
    /// a touch returning during the read does not count. `None` before any `Ok` touch.
    pub fn promise(&self, runtime: usize) -> Option<Promise> {
        let touched = (*self.touched[runtime].lock())?;
        Some(Promise {
            touched,
            until: touched + self.ttl,
        })
    }
}

impl Promise {
    /// How long before [`Promise::until`] a read that ended at `end` answered "dead", if it
    /// did: `Some` is a false "dead".
    pub fn broken_by(self, end: Instant, alive: bool) -> Option<Duration> {
        (!alive && end < self.until).then(|| self.until - end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_answer_is_false_only_from_a_read_that_ended_within_the_ttl() {
        let ttl = Duration::from_millis(900);
        let checker = FalseDead::new(2, ttl);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(checker.promise(0), None, "nothing promised before a touch");
        checker.touched(0, ms(10));
        checker.touched(0, ms(5)); // returned after the one above, started before it
        let promise = checker.promise(0).unwrap();
        assert_eq!(promise.until, ms(10) + ttl, "the latest start counts");
        assert_eq!(
            promise.broken_by(ms(500), true),
            None,
            "alive is never false dead"
        );
        assert_eq!(
            promise.broken_by(ms(500), false),
            Some(promise.until - ms(500))
        );
        assert_eq!(
            promise.broken_by(promise.until, false),
            None,
            "a read that straddles the lapse may say dead"
        );
        assert_eq!(checker.promise(1), None, "runtimes are apart");
    }
}
