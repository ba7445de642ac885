//! Proves the Redis Cluster harness in `testkit::cluster` does what the cluster tests
//! will rely on: slot computation, ownership, slot migration, both kinds of failover, restarts,
//! and a drop that leaves no process behind.

use testkit as support;

use std::process::{Command, Stdio};
use std::time::Instant;

use support::cluster::RedisCluster;

/// True while a process with this pid exists (`kill -0`).
fn process_exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run kill -0")
        .success()
}

/// `SET key value` on the node serving the key's slot, by the harness's own slot function.
fn set_at_owner(cluster: &RedisCluster, key: &[u8], value: &[u8]) {
    let owner = cluster.owner_of_slot(RedisCluster::slot_of(key));
    let mut con = cluster.node(owner).connection();
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut con)
        .unwrap_or_else(|e| panic!("SET {key:?} at node {owner}: {e}"));
}

/// `GET key` on node `index`; a `MOVED` or `ASK` redirection is an error.
fn get_at(cluster: &RedisCluster, index: usize, key: &[u8]) -> redis::RedisResult<Option<Vec<u8>>> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut cluster.node(index).connection())
}

/// `WAIT 1 2000` on master `index`: how many replicas acknowledged every write so far.
fn wait_for_replica(cluster: &RedisCluster, index: usize) -> u64 {
    redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut cluster.node(index).connection())
        .expect("WAIT")
}

/// Every pid of the cluster's running nodes.
fn pids(cluster: &RedisCluster) -> Vec<u32> {
    (0..cluster.node_count())
        .filter_map(|index| cluster.node(index).pid())
        .collect()
}

#[test]
fn slot_of_agrees_with_cluster_keyslot() {
    // The function alone, against values every Redis client agrees on.
    assert_eq!(RedisCluster::slot_of(b"foo"), 12182);
    // CRC16/XMODEM's check value, already below 16384.
    assert_eq!(RedisCluster::slot_of(b"123456789"), 0x31C3);
    assert_eq!(
        RedisCluster::slot_of(b"{user1000}.following"),
        RedisCluster::slot_of(b"user1000")
    );
    assert_ne!(RedisCluster::slot_of(b"x{}y"), RedisCluster::slot_of(b""));
    assert_eq!(
        RedisCluster::slot_of(b"a{b}c{d}"),
        RedisCluster::slot_of(b"b")
    );
}

/// The whole life of a 3+3 cluster, in one test to start one cluster only.
#[test]
fn cluster_life() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start();
    eprintln!("cluster formed in {:?}", started.elapsed());
    assert_eq!(cluster.node_count(), 6);
    assert_eq!(cluster.seed_urls().len(), 6);
    assert_eq!(cluster.seed_urls()[2], cluster.node(2).url());
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "masters {masters:?}");
    let mut replicas: Vec<usize> = masters
        .iter()
        .map(|&m| cluster.replica_of(m).expect("every master has a replica"))
        .collect();
    replicas.sort_unstable();
    replicas.dedup();
    assert_eq!(replicas.len(), 3);
    assert!(replicas.iter().all(|r| !masters.contains(r)));
    for index in 0..cluster.node_count() {
        let id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.node(index).connection())
            .unwrap();
        assert_eq!(cluster.node_id(index), id);
    }
    for slot in [0, 5460, 5461, 10922, 10923, 16383] {
        assert!(masters.contains(&cluster.owner_of_slot(slot)));
    }

    // slot_of agrees with CLUSTER KEYSLOT, hash tags included.
    let mut keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key:{i}").into_bytes()).collect();
    for tagged in [
        &b"{a}x"[..],
        b"x{}y",
        b"{}{a}",
        b"a{b}c{d}",
        b"{",
        b"}{",
        b"{{a}}",
        b"",
        b"\xff\x00binary",
    ] {
        keys.push(tagged.to_vec());
    }
    let mut con = cluster.node(0).connection();
    for key in &keys {
        let expected: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key.as_slice())
            .query(&mut con)
            .unwrap();
        assert_eq!(
            RedisCluster::slot_of(key),
            expected,
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    drop(con);

    // Writes through the owners, counted once each.
    cluster.reset_stats();
    for i in 0..200 {
        set_at_owner(&cluster, format!("key:{i}").as_bytes(), b"v");
    }
    for i in 0..200 {
        let key = format!("key:{i}");
        let owner = cluster.owner_of_slot(RedisCluster::slot_of(key.as_bytes()));
        assert_eq!(
            get_at(&cluster, owner, key.as_bytes()).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
    assert_eq!(cluster.calls("set"), 200);
    assert_eq!(cluster.calls("get"), 200);
    assert_eq!(cluster.total_calls(), 400);
    assert_eq!(cluster.dbsize(), 200);
    cluster.flushall();
    assert_eq!(cluster.dbsize(), 0);

    // A slot with more keys than one MIGRATE batch moves, keys and all.
    let slot = RedisCluster::slot_of(b"{mig}");
    let source = cluster.owner_of_slot(slot);
    let target = *masters.iter().find(|&&m| m != source).unwrap();
    let migrated: Vec<Vec<u8>> = (0..150)
        .map(|i| format!("{{mig}}{i}").into_bytes())
        .collect();
    for key in &migrated {
        set_at_owner(&cluster, key, key);
    }
    let moving = Instant::now();
    cluster.migrate_slot(slot, target);
    eprintln!("slot with 150 keys migrated in {:?}", moving.elapsed());
    assert_eq!(cluster.owner_of_slot(slot), target);
    for key in &migrated {
        assert_eq!(get_at(&cluster, target, key).unwrap().as_ref(), Some(key));
    }
    let moved = get_at(&cluster, source, &migrated[0]).unwrap_err();
    assert_eq!(
        moved.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::Moved),
        "{moved}"
    );
    assert_eq!(cluster.node(source).dbsize(), 0);
    // Empty slots, several at once, and back.
    let (next, after) = ((slot + 1) % 16384, (slot + 2) % 16384);
    cluster.migrate_slots([next, after], target);
    assert_eq!(cluster.owner_of_slot(after), target);
    cluster.migrate_slots([slot, next, after], source);
    assert_eq!(cluster.owner_of_slot(slot), source);
    assert_eq!(cluster.node(source).dbsize(), 150);

    // A failover keeps the data the replica had.
    let master = source;
    let replica = cluster.replica_of(master).unwrap();
    assert_eq!(wait_for_replica(&cluster, master), 1);
    let master_pid = cluster.node(master).pid().unwrap();
    let new_master = cluster.kill_master_and_wait_failover(master);
    eprintln!("failover took {:?}", cluster.last_failover().unwrap());
    assert!(!process_exists(master_pid));
    assert_eq!(new_master, replica);
    assert_eq!(cluster.owner_of_slot(slot), new_master);
    assert!(cluster.masters().contains(&new_master));
    assert!(!cluster.masters().contains(&master));
    for key in &migrated {
        assert_eq!(
            get_at(&cluster, new_master, key).unwrap().as_ref(),
            Some(key)
        );
    }

    // The old master rejoins as the new master's replica (and resyncs).
    cluster.restart_node(master);
    assert_eq!(cluster.replica_of(new_master), Some(master));
    assert_eq!(cluster.node(master).dbsize(), 150);

    // A replica promoted without the data.
    let victim = *cluster
        .masters()
        .iter()
        .find(|&&m| m != new_master)
        .unwrap();
    let victim_slot = RedisCluster::slot_of(b"{victim}");
    cluster.migrate_slot(victim_slot, victim);
    for i in 0..20 {
        set_at_owner(&cluster, format!("{{victim}}{i}").as_bytes(), b"lost");
    }
    assert_eq!(wait_for_replica(&cluster, victim), 1);
    let empty = cluster.promote_empty_replica(victim);
    assert_ne!(empty, victim);
    assert!(cluster.node(victim).pid().is_none());
    assert_eq!(cluster.owner_of_slot(victim_slot), empty);
    assert_eq!(cluster.node(empty).dbsize(), 0);
    assert_eq!(get_at(&cluster, empty, b"{victim}0").unwrap(), None);
    assert_eq!(cluster.masters().len(), 3);

    // Dropping the cluster leaves no process behind.
    let pids = pids(&cluster);
    assert_eq!(pids.len(), 5);
    drop(cluster);
    for pid in pids {
        assert!(
            !process_exists(pid),
            "redis-server {pid} outlived its cluster"
        );
    }
    eprintln!("cluster_life took {:?}", started.elapsed());
}

/// The small shapes: one master alone (formed by hand), three without replicas (redis-cli).
#[test]
fn small_clusters() {
    let single = RedisCluster::start_with(1, 0);
    assert_eq!(single.node_count(), 1);
    assert_eq!(single.masters(), vec![0]);
    assert_eq!(single.replica_of(0), None);
    assert_eq!(single.owner_of_slot(0), 0);
    assert_eq!(single.owner_of_slot(16383), 0);
    set_at_owner(&single, b"k", b"v");
    assert_eq!(
        get_at(&single, 0, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(single.dbsize(), 1);
    let pids_single = pids(&single);
    drop(single);

    let three = RedisCluster::start_with(3, 0);
    assert_eq!(three.node_count(), 3);
    assert_eq!(three.masters(), vec![0, 1, 2]);
    assert!((0..3).all(|m| three.replica_of(m).is_none()));
    let slot = RedisCluster::slot_of(b"{three}");
    let to = (three.owner_of_slot(slot) + 1) % 3;
    set_at_owner(&three, b"{three}k", b"v");
    three.migrate_slot(slot, to);
    assert_eq!(
        get_at(&three, to, b"{three}k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
    let pids_three = pids(&three);
    drop(three);
    for pid in pids_single.into_iter().chain(pids_three) {
        assert!(
            !process_exists(pid),
            "redis-server {pid} outlived its cluster"
        );
    }
}
