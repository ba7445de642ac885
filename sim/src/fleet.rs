//! `--instances K`: the store instances of one run, as a heartbeat server's instances behind a
//! load balancer, all on one Redis; and `--routing`, which instance takes each beat.
//!
//! Coalescing is per instance: a layered instance skips a remote write only when its own last
//! write still covers the beat, so it pays off only while a runtime's beats keep reaching the
//! same instance. With K > 1 the sweeper asks an instance of its own, one that took no beat,
//! so that the false-dead checker judges the fleet from outside, as another server would. With
//! one instance (the default) that instance takes the beats and the sweeps, as ever.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::ValueEnum;
use liveness_store::{LivenessStore, StoreStats};
use serde::Serialize;

use crate::run::splitmix64;

/// Which instance takes a beat.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Routing {
    /// A fixed instance per runtime, from a hash of its id (session affinity)
    #[default]
    Sticky,
    /// An instance drawn at random for every beat
    Random,
    /// The next instance for every beat, whichever runtime sent it (an L7 balancer rotating
    /// requests)
    RoundRobin,
}

impl Routing {
    /// As on the command line.
    pub(crate) fn name(self) -> String {
        let value = self.to_possible_value();
        value.map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// For the table's header.
    pub(crate) fn describe(self) -> String {
        let how = match self {
            Routing::Sticky => "a fixed instance per runtime",
            Routing::Random => "an instance drawn per beat",
            Routing::RoundRobin => "the next instance per beat, fleet-wide",
        };
        format!("{} ({how})", self.name())
    }
}

/// The instances of one run.
pub(crate) struct Fleet {
    /// The beats' instances, then with more than one the sweeper's.
    stores: Vec<Arc<dyn LivenessStore>>,
    beating: usize,
    routing: Routing,
    /// Beats routed so far: round-robin's position, random's draw.
    requests: AtomicU64,
}

impl Fleet {
    /// How many stores a fleet of `instances` needs: one more for the sweeper when there are
    /// several.
    pub(crate) fn size(instances: usize) -> usize {
        instances + usize::from(instances > 1)
    }

    /// `stores`: the instances that take the beats, then, when there are several, the
    /// sweeper's ([`Fleet::size`]).
    pub(crate) fn new(stores: Vec<Arc<dyn LivenessStore>>, routing: Routing) -> Fleet {
        let beating = match stores.len() {
            1 => 1,
            n => n - 1,
        };
        Fleet {
            stores,
            beating,
            routing,
            requests: AtomicU64::new(0),
        }
    }

    /// How many instances take beats.
    pub(crate) fn len(&self) -> usize {
        self.beating
    }

    /// The instance that takes this beat of `runtime`.
    pub(crate) fn route(&self, runtime: usize) -> usize {
        let k = self.beating as u64;
        let instance = match self.routing {
            // Salted: the runtime's phase is a hash of its index too, and its instance should
            // not follow from its phase.
            Routing::Sticky => splitmix64(runtime as u64 ^ 0x5EED) % k,
            Routing::Random => splitmix64(self.requests.fetch_add(1, Ordering::Relaxed)) % k,
            Routing::RoundRobin => self.requests.fetch_add(1, Ordering::Relaxed) % k,
        };
        instance as usize
    }

    pub(crate) fn instance(&self, index: usize) -> &dyn LivenessStore {
        &*self.stores[index]
    }

    pub(crate) fn sweeper(&self) -> &dyn LivenessStore {
        &*self.stores[self.stores.len() - 1]
    }

    pub(crate) fn available(&self) -> bool {
        self.stores.iter().all(|store| store.available())
    }

    /// Every instance's counters (the sweeper's too), added up.
    pub(crate) fn stats(&self) -> StoreStats {
        let mut sum = StoreStats::default();
        for s in self.stores.iter().map(|store| store.stats()) {
            sum.touches += s.touches;
            sum.coalesced_touches += s.coalesced_touches;
            sum.remote_writes += s.remote_writes;
            sum.remote_write_batches += s.remote_write_batches;
            sum.local_hits += s.local_hits;
            sum.remote_lookups += s.remote_lookups;
            sum.remote_lookup_batches += s.remote_lookup_batches;
            sum.errors += s.errors;
            sum.epoch_resets += s.epoch_resets;
            sum.forget_broadcasts_received += s.forget_broadcasts_received;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use liveness_store::MemoryStore;

    use super::*;

    fn fleet(instances: usize, routing: Routing) -> Fleet {
        let stores = (0..Fleet::size(instances))
            .map(|_| Arc::new(MemoryStore::new()) as Arc<dyn LivenessStore>)
            .collect();
        Fleet::new(stores, routing)
    }

    /// How many of `beats` beats of each of 100 runtimes, sent round after round, each
    /// instance took, and how many instances each runtime's beats reached.
    fn spread(fleet: &Fleet, beats: usize) -> (Vec<usize>, Vec<usize>) {
        let mut taken = vec![0; fleet.len()];
        let mut reached = vec![vec![false; fleet.len()]; 100];
        for _ in 0..beats {
            for (runtime, reached) in reached.iter_mut().enumerate() {
                let instance = fleet.route(runtime);
                taken[instance] += 1;
                reached[instance] = true;
            }
        }
        let reached = reached.iter().map(|r| r.iter().filter(|&&r| r).count());
        (taken, reached.collect())
    }

    #[test]
    fn one_instance_takes_every_beat_and_the_sweeps() {
        let one = fleet(1, Routing::Random);
        assert_eq!((one.len(), spread(&one, 10).0), (1, vec![1_000]));
        assert!(std::ptr::addr_eq(one.sweeper(), one.instance(0)));
        let four = fleet(4, Routing::Sticky);
        assert!(!std::ptr::addr_eq(four.sweeper(), four.instance(3)));
    }

    #[test]
    fn sticky_keeps_a_runtime_on_one_instance_and_spreads_the_runtimes() {
        let (taken, reached) = spread(&fleet(4, Routing::Sticky), 10);
        assert!(reached.iter().all(|&n| n == 1), "{reached:?}");
        assert!(taken.iter().all(|&n| n >= 150), "{taken:?}");
    }

    #[test]
    fn random_and_round_robin_spread_each_runtimes_beats() {
        for routing in [Routing::Random, Routing::RoundRobin] {
            // 3 instances for 100 runtimes a round: round-robin moves each runtime on.
            let (taken, reached) = spread(&fleet(3, routing), 30);
            assert!(taken.iter().all(|&n| n >= 900), "{routing:?}: {taken:?}");
            assert!(reached.iter().all(|&n| n == 3), "{routing:?}: {reached:?}");
        }
        let round_robin = fleet(4, Routing::RoundRobin);
        let order: Vec<usize> = (0..6).map(|_| round_robin.route(7)).collect();
        assert_eq!(order, [0, 1, 2, 3, 0, 1]);
    }
}
