//! `ClusterStore` against a real Redis Cluster (3 masters, 3 replicas on loopback, started by
//! the test kit): keys land in their masters' slots, one pipeline per master,
//! slots resharded and masters failed over while runtimes beat, a replica promoted without the
//! data, configuration from the environment, and the forget broadcast across a cluster.
//!
//! The contract suite runs on a cluster too, in `contract.rs`. The cases here start a
//! cluster each and run one at a time (the fault cases measure latencies on a 2-core machine).
//! Measured figures are printed: `cargo test --all-features --test it cluster:: -- --nocapture`.
#![cfg(feature = "cluster")]
// Without `layered` the fault cases (their fleet beats through a layered store) do not run.
#![cfg_attr(not(feature = "layered"), allow(dead_code, unused_imports))]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::cluster::RedisCluster;
use liveness_store::{ClusterStore, Error, LivenessStore, StoreConfig};

const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// What "a few ms" past the operation timeout may be, on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(50);
const LONG: Duration = Duration::from_secs(90);

fn builder(cluster: &RedisCluster, prefix: &str) -> liveness_store::ClusterStoreBuilder {
    ClusterStore::builder(cluster.seed_urls())
        .key_prefix(prefix)
        .op_timeout(OP_TIMEOUT)
        .breaker_cooldown(Duration::from_millis(200))
        .breaker_max_cooldown(Duration::from_millis(400))
        // A test's cluster holds everything the test wrote: trust it at once.
        .recovery_floor(Duration::ZERO)
}

async fn store(cluster: &RedisCluster, prefix: &str) -> ClusterStore {
    builder(cluster, prefix)
        .build()
        .await
        .expect("connect to the test cluster")
}

/// Makes the epoch records under `prefix` look a minute old, as in a fleet that has run a
/// while: a younger record is distrusted from the start, which would hide a loss.
async fn age_epoch_records(cluster: &RedisCluster, prefix: &str) {
    let probe = store(cluster, prefix).await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let old = format!("{}-0", now_ms - 60_000);
    for key in probe.epoch_keys() {
        let owner = cluster.owner_of_slot(RedisCluster::slot_of(&key));
        cluster.node(owner).set_raw(&[b"SET", &key, old.as_bytes()]);
    }
}

/// Waits (bounded) until every store trusts "dead" answers: a store distrusts a cluster whose
/// masters started less than a recovery window ago, and a test's cluster is new. Panics after
/// the longest such window the tests use.
async fn wait_until_trusted(stores: &[&ClusterStore]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stores
        .iter()
        .any(|store| store.health().recovering_for.is_some())
    {
        assert!(Instant::now() < deadline, "still distrusted after 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a blocking harness step (a reshard, a failover) off the runtime's threads, so the
/// workload keeps running meanwhile; gives the cluster back.
async fn blocking<T: Send + 'static>(
    mut cluster: RedisCluster,
    step: impl FnOnce(&mut RedisCluster) -> T + Send + 'static,
) -> (RedisCluster, T) {
    tokio::task::spawn_blocking(move || {
        let out = step(&mut cluster);
        (cluster, out)
    })
    .await
    .expect("the cluster step panicked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_in_their_masters_slots_and_batches_go_one_pipeline_per_master() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    let store = store(&cluster, "placement:").await;
    let plain: Vec<String> = (0..300).map(|i| format!("rt-{i}")).collect();
    let tagged: Vec<String> = (0..10)
        .flat_map(|t| (0..30).map(move |i| format!("{{tenant-{t}}}:rt-{i}")))
        .collect();
    let all: Vec<&str> = plain.iter().chain(&tagged).map(String::as_str).collect();
    let beats: Vec<(&str, Duration)> = all.iter().step_by(2).map(|id| (*id, LONG)).collect();
    store.touch_many(&beats).await.unwrap();
    store.touch(all[1], LONG).await.unwrap();

    // Every record sits on the master that serves its key's slot.
    for (id, _) in &beats {
        let key = store.key(id);
        let owner = cluster.owner_of_slot(RedisCluster::slot_of(&key));
        assert!(
            cluster.node(owner).get(&key).is_some(),
            "{id} is not on the master of its slot"
        );
    }
    let answers = store.is_alive_batch(&all).await.unwrap();
    for (i, alive) in answers.iter().enumerate() {
        assert_eq!(*alive, i % 2 == 0 || i == 1, "{}", all[i]);
    }

    // A batch is a GET per slot holding one of its keys and an MGET per slot holding more, in
    // one pipeline per master, then a GET of the epoch record of each slot where a key was
    // missing: nothing crosses slots, nothing is redirected.
    for (name, offset, ids) in [("plain", 0, &plain), ("tagged", plain.len(), &tagged)] {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut per_slot: BTreeMap<u16, usize> = BTreeMap::new();
        let mut dead_slots: BTreeSet<u16> = BTreeSet::new();
        for (i, id) in refs.iter().enumerate() {
            let slot = RedisCluster::slot_of(&store.key(id));
            *per_slot.entry(slot).or_default() += 1;
            if !answers[offset + i] {
                dead_slots.insert(slot);
            }
        }
        let singles = per_slot.values().filter(|n| **n == 1).count() as u64;
        let multis = per_slot.len() as u64 - singles;
        // One marker check per master that vouches for a dead slot.
        let vouching_masters = dead_slots
            .iter()
            .map(|slot| cluster.owner_of_slot(*slot))
            .collect::<BTreeSet<usize>>()
            .len() as u64;
        cluster.reset_stats();
        store.is_alive_batch(&refs).await.unwrap();
        assert_eq!(cluster.calls("mget"), multis, "{name}: MGETs");
        assert_eq!(
            cluster.calls("get"),
            singles + dead_slots.len() as u64,
            "{name}: GETs"
        );
        assert_eq!(
            cluster.calls("script|exists"),
            vouching_masters,
            "{name}: marker checks"
        );
        assert_eq!(
            cluster.total_calls(),
            per_slot.len() as u64 + dead_slots.len() as u64 + vouching_masters,
            "{name}: other commands"
        );
        assert_eq!(cluster.calls("asking"), 0, "{name}: redirected");
        println!(
            "{name}: {} ids in {} slots: {singles} GET + {multis} MGET, then {} epoch reads and \
             {vouching_masters} marker checks",
            refs.len(),
            per_slot.len(),
            dead_slots.len()
        );
    }
    // The tenants' ids share their tag's slot: ten slots.
    let tenant_slots: BTreeSet<u16> = tagged
        .iter()
        .map(|id| RedisCluster::slot_of(&store.key(id)))
        .collect();
    assert_eq!(tenant_slots.len(), 10);

    // Every slot holds its epoch record, on the slot's master.
    let records = store.epoch_keys();
    assert_eq!(records.len(), 16_384);
    let slots: BTreeSet<u16> = records.iter().map(|k| RedisCluster::slot_of(k)).collect();
    assert_eq!(slots.len(), 16_384);
    for key in records.iter().step_by(97) {
        let owner = cluster.owner_of_slot(RedisCluster::slot_of(key));
        assert!(
            cluster.node(owner).get(key).is_some(),
            "a missing epoch record"
        );
    }
}

#[cfg(feature = "layered")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layered_store_over_a_cluster_coalesces_and_reads_locally() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    let remote = store(&cluster, "layered:").await;
    let layered = liveness_store::LayeredStore::builder(remote)
        .debounce(Duration::from_secs(30))
        .build()
        .unwrap();
    let ids: Vec<String> = (0..200).map(|i| format!("rt-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for id in &refs {
        layered.touch(id, LONG).await.unwrap();
    }
    cluster.reset_stats();
    for _ in 0..5 {
        for id in &refs {
            layered.touch(id, LONG).await.unwrap();
        }
        assert!(
            layered
                .is_alive_batch(&refs)
                .await
                .unwrap()
                .iter()
                .all(|a| *a)
        );
    }
    // 1,000 touches and 5 batches of 200, all answered from local memory.
    assert_eq!(
        cluster.total_calls(),
        0,
        "the layered store went to the cluster"
    );
    let stats = layered.stats();
    println!("layered over cluster: {stats:?}");
    assert_eq!(stats.coalesced_touches, 1_000);
}

/// A fleet as the fault cases drive it: a layered store over the cluster beats and reads, a
/// plain `ClusterStore` (no local layer to hide behind) reads too.
#[cfg(feature = "layered")]
async fn fleet(cluster: &RedisCluster, prefix: &str) -> crate::support::workload::Workload {
    let layered = liveness_store::LayeredStore::builder(store(cluster, prefix).await)
        .debounce(Duration::from_millis(300))
        .remote_positive_ttl(Duration::from_millis(200))
        .op_timeout(OP_TIMEOUT)
        .build()
        .unwrap();
    let instances: Vec<Arc<dyn LivenessStore>> =
        vec![Arc::new(layered), Arc::new(store(cluster, prefix).await)];
    let rhythm = crate::support::workload::Rhythm {
        runtimes: 200,
        ttl: Duration::from_secs(1),
        beat: Duration::from_millis(100),
        read_every: Duration::from_millis(20),
    };
    crate::support::workload::Workload::start("runtime-", instances, rhythm).await
}

#[cfg(feature = "layered")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_resharded_while_runtimes_beat() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    let prefix = "reshard:";
    let workload = fleet(&cluster, prefix).await;
    let probe = store(&cluster, prefix).await;
    // Every slot holding a runtime of the busiest master moves to another master, with the
    // slot's epoch record: it moves with the data and must not read as a loss.
    let slot_of_runtime = |id: &str| RedisCluster::slot_of(&probe.key(id));
    let mut by_master: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
    for id in workload.ids.iter() {
        let slot = slot_of_runtime(id);
        by_master
            .entry(cluster.owner_of_slot(slot))
            .or_default()
            .insert(slot);
    }
    let (&from, _) = by_master
        .iter()
        .max_by_key(|(_, slots)| slots.len())
        .unwrap();
    let to = *cluster.masters().iter().find(|m| **m != from).unwrap();
    let slots = by_master[&from].clone();
    let moved = slots.len();

    let started = Instant::now();
    let (cluster, ()) = blocking(cluster, move |c| c.migrate_slots(slots, to)).await;
    let took = started.elapsed();
    let recovered = workload.wait_until_recovered(Duration::from_secs(5)).await;
    let instances = workload.instances.clone();
    let report = workload.stop().await;
    println!("resharded {moved} slots in {took:?}; every instance healthy {recovered:?} later");
    let summary = report.assert_bounded("reshard", OP_TIMEOUT + SLACK);
    report.assert_no_false_dead("reshard");
    // Redirects are followed within the call: a reshard costs no errors beyond a handful.
    assert!(
        summary.errors * 100 <= summary.calls,
        "reshard: {} errors in {} calls",
        summary.errors,
        summary.calls
    );
    assert_eq!(
        report.recovering_reads(),
        0,
        "a migration read as data loss"
    );
    for instance in &instances {
        assert_eq!(instance.data_losses(), 0);
    }
    drop(cluster);
}

#[cfg(feature = "layered")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_fails_over_with_calls_bounded() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    let prefix = "failover:";
    let workload = fleet(&cluster, prefix).await;
    let probe = store(&cluster, prefix).await;
    let victim = cluster.owner_of_slot(RedisCluster::slot_of(&probe.key("runtime-0")));

    let killed = Instant::now();
    let (cluster, new_master) =
        blocking(cluster, move |c| c.kill_master_and_wait_failover(victim)).await;
    let failover = killed.elapsed();
    let recovered = workload.wait_until_recovered(Duration::from_secs(5)).await;
    let instances = workload.instances.clone();
    let report = workload.stop().await;
    println!(
        "master {victim} killed; replica {new_master} took over and the cluster was healthy \
         after {failover:?}; every instance healthy and answering {recovered:?} later"
    );
    let summary = report.assert_bounded("failover", OP_TIMEOUT + SLACK);
    report.assert_no_false_dead("failover");
    assert!(
        summary.errors > 0,
        "the failover went unnoticed: was a master killed?"
    );
    // The replica had the data, but no store can know that it was not behind: a failover is a
    // possible loss, counted, and "dead" waits out a window (never a false "dead", above). The
    // writer's pipelines check the new master's marker; the plain reader, whose answers are all
    // "alive", needs no check and may not have made one.
    assert!(
        instances[0].data_losses() >= 1,
        "a failover went unsuspected by the writer: {:?}",
        instances[0].health()
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_without_the_data_reads_recovering_never_dead() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    // Longer than a promotion takes, so that the runtimes are within their ttl throughout.
    let ttl = Duration::from_secs(6);
    age_epoch_records(&cluster, "lost:").await;
    let writer = builder(&cluster, "lost:")
        .recovery_floor(ttl)
        .build()
        .await
        .unwrap();
    // A reader that never writes knows no ttl: its floor is the largest ttl in use.
    let reader = builder(&cluster, "lost:")
        .recovery_floor(ttl)
        .build()
        .await
        .unwrap();
    wait_until_trusted(&[&writer, &reader]).await;
    let ids: Vec<String> = (0..300).map(|i| format!("rt-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let beats: Vec<(&str, Duration)> = refs.iter().map(|id| (*id, ttl)).collect();
    writer.touch_many(&beats).await.unwrap();
    for store in [&writer, &reader] {
        assert!(
            store
                .is_alive_batch(&refs)
                .await
                .unwrap()
                .iter()
                .all(|a| *a)
        );
        assert!(store.health().is_healthy());
    }
    let victim = cluster.owner_of_slot(RedisCluster::slot_of(&writer.key("rt-0")));

    let (cluster, promoted) = blocking(cluster, move |c| c.promote_empty_replica(victim)).await;
    assert_eq!(cluster.node(promoted).dbsize(), 0, "the replica kept data");
    // Every answer from now on is either "all alive" or an error; the first that gets through
    // to the empty master says Recovering (bounded: the slot maps catch up within seconds).
    for store in [&writer, &reader] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let remaining = loop {
            match store.is_alive_batch(&refs).await {
                Ok(answers) => assert!(
                    answers.iter().all(|a| *a),
                    "a runtime within its ttl read dead after the promotion"
                ),
                Err(Error::Recovering { remaining }) => break remaining,
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "no Recovering within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let health = store.health();
        println!("after the promotion: Recovering for {remaining:?}; {health:?}");
        // One and a half ttls: the ttl, and the largest debounce a layered writer may add.
        assert!(remaining <= ttl + ttl / 2);
        assert_eq!(store.data_losses(), 1);
        assert!(health.recovering_for.is_some() && !health.is_healthy());
    }
    // Runtimes that beat again are alive at once; those of the lost master that have not
    // stay Recovering, not dead, for the rest of the window.
    writer.touch_many(&beats[..150]).await.unwrap();
    assert!(
        writer
            .is_alive_batch(&refs[..150])
            .await
            .unwrap()
            .iter()
            .all(|a| *a)
    );
    assert!(matches!(
        reader.is_alive_batch(&refs).await,
        Err(Error::Recovering { .. })
    ));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_emptied_on_its_own_reads_recovering_never_dead() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    age_epoch_records(&cluster, "slot:").await;
    let store = builder(&cluster, "slot:")
        .recovery_floor(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    wait_until_trusted(&[&store]).await;
    let ids: Vec<String> = (0..50).map(|i| format!("{{tenant}}:rt-{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let beats: Vec<(&str, Duration)> = refs.iter().map(|id| (*id, LONG)).collect();
    store.touch_many(&beats).await.unwrap();
    assert!(
        store
            .is_alive_batch(&refs)
            .await
            .unwrap()
            .iter()
            .all(|a| *a)
    );
    // One slot loses its keys, its epoch record with them, while its master and every other
    // slot keep theirs (as when a master without a replica dies and its slots are handed,
    // empty, to another master).
    let slot = RedisCluster::slot_of(&store.key(refs[0]));
    assert_eq!(
        empty_slot(&cluster, slot),
        51,
        "50 runtimes and the slot's epoch record"
    );
    let answer = store.is_alive_batch(&refs).await;
    assert!(
        matches!(answer, Err(Error::Recovering { .. })),
        "expected Recovering, got {answer:?}"
    );
    assert_eq!(store.data_losses(), 1);

    // A second slot loses its keys while the first loss's window is still open: writes made
    // since the first may be what it lost, so it counts too (once the store has swept the
    // records after the first: losses it finds meanwhile belong to that one).
    let others: Vec<String> = (0..50).map(|i| format!("{{other}}:rt-{i}")).collect();
    let others: Vec<&str> = others.iter().map(String::as_str).collect();
    let beats: Vec<(&str, Duration)> = others.iter().map(|id| (*id, LONG)).collect();
    store.touch_many(&beats).await.unwrap();
    let second = RedisCluster::slot_of(&store.key(others[0]));
    assert_ne!(second, slot);
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.data_losses() < 2 {
        assert!(Instant::now() < deadline, "the second loss never counted");
        empty_slot(&cluster, second);
        // Recovering, or an error while the record is being created again: never "dead".
        let answer = store.is_alive_batch(&others).await;
        assert!(
            answer.is_err(),
            "a runtime within its ttl read dead: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.data_losses(), 2);
    assert!(store.health().recovering_for.is_some());
}

/// Deletes every key of `slot` (its runtimes and its epoch record) on its master; returns how
/// many there were.
fn empty_slot(cluster: &RedisCluster, slot: u16) -> usize {
    let owner = cluster.owner_of_slot(slot);
    let mut connection = cluster.node(owner).connection();
    let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1_000)
        .query(&mut connection)
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query(&mut connection).unwrap();
    }
    keys.len()
}

/// A layered store that only writes (its group commit carries every beat; it never reads)
/// still notices that one slot lost its records, and stops coalescing on them (invariant 4).
#[cfg(feature = "layered")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_only_instance_notices_one_slot_losing_its_records() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    let debounce = Duration::from_millis(300);
    let writer = liveness_store::LayeredStore::builder(store(&cluster, "writes:").await)
        .debounce(debounce)
        .op_timeout(OP_TIMEOUT)
        .build()
        .unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("{{tenant}}:rt-{i}")).collect();
    let beat = Duration::from_millis(50);
    let ttl = Duration::from_secs(1);
    for id in &ids {
        writer.touch(id, ttl).await.unwrap();
    }
    let slot = RedisCluster::slot_of(&writer.remote().key(&ids[0]));
    empty_slot(&cluster, slot);
    let emptied = Instant::now();
    // The writer's next write of that slot, once the records it wrote would lapse within the
    // debounce window, reads the slot's record after the writes.
    let limit = debounce + beat + OP_TIMEOUT + SLACK;
    while writer.data_losses() == 0 {
        assert!(
            emptied.elapsed() < limit,
            "no loss noticed {limit:?} after the slot was emptied: {:?}",
            writer.stats()
        );
        for id in &ids {
            writer.touch(id, ttl).await.unwrap();
        }
        tokio::time::sleep(beat).await;
    }
    let noticed = emptied.elapsed();
    let stats = writer.stats();
    println!("a write-only instance noticed a slot's loss {noticed:?} after it; {stats:?}");
    assert_eq!(stats.remote_lookup_batches, 0, "it never read");
    assert!(stats.epoch_resets >= 1, "its coalescing was reset");
    // Its next touches write through and restore the records.
    for id in &ids {
        writer.touch(id, ttl).await.unwrap();
    }
    assert!(
        writer
            .remote()
            .is_alive_batch(&ids.iter().map(String::as_str).collect::<Vec<_>>())
            .await
            .is_ok_and(|alive| alive.iter().all(|a| *a))
            || writer.remote().health().recovering_for.is_some()
    );
}

/// A master killed and restarted from a snapshot taken before the latest write of a runtime
/// comes back with the runtime's older record, which lapses first: the store suspects the
/// restart (its marker is gone from the master), so the runtime reads Recovering, not dead,
/// within the ttl of its latest touch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_from_a_snapshot_is_suspected() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    age_epoch_records(&cluster, "snapshot:").await;
    let store = builder(&cluster, "snapshot:")
        .recovery_floor(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    wait_until_trusted(&[&store]).await;
    let short = Duration::from_secs(2);
    store.touch("rt", short).await.unwrap();
    let master = cluster.owner_of_slot(RedisCluster::slot_of(&store.key("rt")));
    cluster.node(master).set_raw(&[b"SAVE"]);
    // The latest touch, after the snapshot: the restart loses it.
    store.touch("rt", LONG).await.unwrap();
    let (cluster, ()) = blocking(cluster, move |c| c.restart_node(master)).await;
    // Past the snapshot's record's ttl, well within the latest touch's.
    tokio::time::sleep(short + Duration::from_millis(500)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.is_alive_batch(&["rt"]).await {
            Ok(alive) => assert_eq!(alive, [true], "read dead within the ttl of its touch"),
            Err(Error::Recovering { .. }) => break,
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "never Recovering after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.data_losses() >= 1, "{:?}", store.health());
    println!(
        "after a master's restart from a snapshot: {:?}",
        store.health()
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_backend_opens_from_the_environment() {
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    // Seeds separated by commas, spaces allowed.
    let seeds = cluster.seed_urls()[..3].join(", ");
    let backends: &[&str] = if cfg!(feature = "layered") {
        &["cluster", "layered-cluster"]
    } else {
        &["cluster"]
    };
    for &backend in backends {
        let config = StoreConfig::from_lookup(|name| match name {
            "LIVENESS_BACKEND" => Some(backend.to_owned()),
            "LIVENESS_REDIS_URL" => Some(seeds.clone()),
            "LIVENESS_KEY_PREFIX" => Some(format!("{backend}:")),
            "LIVENESS_RECOVERY_FLOOR_MS" => Some("0".to_owned()),
            _ => None,
        })
        .unwrap();
        let store = liveness_store::open(&config).await.expect(backend);
        store.touch("rt-1", LONG).await.unwrap();
        assert_eq!(
            store.is_alive_batch(&["rt-1", "rt-2"]).await.unwrap(),
            [true, false]
        );
        let key = format!("{backend}:rt-1");
        let owner = cluster.owner_of_slot(RedisCluster::slot_of(key.as_bytes()));
        assert!(cluster.node(owner).get(key.as_bytes()).is_some());
    }
}

#[tokio::test]
async fn bad_seeds_are_clear_errors_without_the_password() {
    let no_seed = ClusterStore::builder(Vec::<String>::new()).build().await;
    assert!(matches!(no_seed, Err(Error::Config(_))), "{no_seed:?}");
    let garbage = ClusterStore::builder(["not a url"]).build().await;
    assert!(matches!(garbage, Err(Error::Config(_))), "{garbage:?}");
    // Nobody listens on port 1: with require_connection, a prompt error naming the seed and
    // what to check, not a hang; without, a store that starts down.
    let secret = "redis://:hunter2@127.0.0.1:1/";
    let builder = ClusterStore::builder([secret]).connect_timeout(Duration::from_millis(500));
    assert!(!format!("{builder:?}").contains("hunter2"));
    let started = Instant::now();
    let refused = builder.require_connection(true).build().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let error = refused.expect_err("nothing listens on port 1");
    let text = format!("{error} {error:?}");
    assert!(!text.contains("hunter2"), "{error:?}");
    assert!(
        text.contains("127.0.0.1:1") && text.contains("require_connection"),
        "{text}"
    );
    let down = ClusterStore::builder([secret])
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("starts down");
    assert_eq!(down.health().status, liveness_store::HealthStatus::Down);
    assert!(matches!(
        down.is_alive_batch(&["rt"]).await,
        Err(Error::Unavailable)
    ));
    assert!(!format!("{down:?}").contains("hunter2"));
    let zero = ClusterStore::builder([secret])
        .op_timeout(Duration::ZERO)
        .build()
        .await;
    assert!(matches!(zero, Err(Error::Config(_))));
}

#[cfg(feature = "layered")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forget_reaches_every_instance_across_the_cluster() {
    use liveness_store::{ForgetBroadcast, LayeredStore};
    let _alone = crate::support::serial::alone().await;
    let cluster = RedisCluster::start();
    let prefix = "broadcast:";
    let mut instances = Vec::new();
    // Each instance subscribes through a different seed: PUBLISH crosses the cluster bus.
    for seeds in [
        cluster.seed_urls(),
        cluster.seed_urls().into_iter().rev().collect(),
    ] {
        let broadcast = ForgetBroadcast::new(seeds, prefix).unwrap();
        let store = LayeredStore::builder(store(&cluster, prefix).await)
            .remote_positive_ttl(Duration::from_secs(10))
            .forget_broadcast(broadcast)
            .build()
            .unwrap();
        instances.push(store);
    }
    let (a, b) = (&instances[0], &instances[1]);
    let mut delays = Vec::new();
    for i in 0..20 {
        let id = format!("rt-{i}");
        a.touch(&id, LONG).await.unwrap();
        // B caches A's record as alive for 10 s; only the broadcast can undo that sooner.
        assert_eq!(b.is_alive_batch(&[&id]).await.unwrap(), [true]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let started = loop {
            // The first forget may race the subscriptions being set up: retry, bounded.
            let started = Instant::now();
            a.forget(&id).await;
            let seen = loop {
                if b.is_alive_batch(&[&id]).await.unwrap() == [false] {
                    break true;
                }
                if started.elapsed() > Duration::from_millis(100) {
                    break false;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            if seen {
                break started;
            }
            assert!(
                i == 0 && Instant::now() < deadline,
                "B missed A's forget of {id}"
            );
            a.touch(&id, LONG).await.unwrap();
            assert_eq!(b.is_alive_batch(&[&id]).await.unwrap(), [true]);
        };
        delays.push(started.elapsed());
    }
    delays.sort();
    println!(
        "forget seen by the other instance across the cluster: median {:?}, max {:?}",
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert!(delays[delays.len() - 1] <= Duration::from_millis(100));
}
