//! A throw-away Redis Cluster per test: masters, replicas, slot migrations and failovers.
//!
//! ```ignore
//! let mut cluster = RedisCluster::start(); // 3 masters, one replica each
//! let owner = cluster.owner_of_slot(RedisCluster::slot_of(b"{runtime}7"));
//! cluster.migrate_slot(RedisCluster::slot_of(b"{runtime}7"), other_master);
//! let new_master = cluster.kill_master_and_wait_failover(owner); // replica with the data
//! let empty = cluster.promote_empty_replica(another_master); // replica without the data
//! cluster.restart_node(owner); // rejoins as a replica
//! ```
//!
//! # Design, and why
//!
//! - **Every node is a [`RedisServer`]**, so it inherits the harness's guarantees: a private
//!   temporary directory, loopback only, a bounded start retried on fresh ports, and a drop that
//!   kills it. The node's `nodes.conf` lives in that directory, which [`RedisServer::restart`]
//!   keeps: a restarted node keeps its node id and rejoins the cluster it knew. Its data does
//!   not survive (no persistence), as after a real crash.
//! - **The cluster bus port is chosen explicitly** (`--cluster-port`, a free port per start
//!   attempt) instead of Redis's default `port + 10000`, which is no port at all for ports
//!   above 55535, and the free ports the harness picks reach 60999.
//! - **Roles are read back, never assumed.** `redis-cli --cluster create` decides which nodes
//!   become replicas, and failovers change roles; every question ([`RedisCluster::masters`],
//!   [`RedisCluster::replica_of`], [`RedisCluster::owner_of_slot`]) asks the live nodes
//!   (`CLUSTER NODES`). The harness only remembers each node's id, which never changes. A
//!   node frozen by hand (`cluster.node(i).pause()`) cannot answer, so those questions then
//!   panic (after a 1 s timeout) rather than guess its role.
//! - **Healthy means agreed.** A cluster is healthy when every live node reports
//!   `cluster_state:ok` with all 16384 slots served, every live node sees every other live node
//!   without `fail`/`fail?`/`handshake` flags and with the role that node claims for itself,
//!   every live node has the same slot map, and every replica's link to its live master is up
//!   (and that master counts it as an online replica). Forming, failovers and restarts return
//!   only once the cluster is healthy again, a slot migration once every live node agrees on
//!   the new owner, so a test never sees a half-done change.
//! - **Failover is fast but not flaky**: `--cluster-node-timeout 1000` and
//!   `--cluster-replica-validity-factor 0` (a replica fails over however long its link was
//!   down). A killed master is replaced, and the cluster healthy again, 2.2 to 2.6 s after the
//!   kill (measured over 5 runs on a 2-core machine with a load average of 3 to 4: one node
//!   timeout to suspect the master, gossip to fail it, the replica's 0.5 to 1 s election
//!   delay); the waits allow 20 s. No spurious failover was seen with that timeout.
//! - **Everything is bounded**: every wait has a deadline and panics with the reason of the
//!   last failed check and the log tails of all nodes; `redis-cli` is killed if it hangs.
//!   Dropping the cluster kills every node (paused ones too).
//!
//! Needs `redis-cli` (Debian: `apt-get install -y redis-tools`) to form clusters of 3 masters
//! or more, or `$LIVENESS_REDIS_CLI`.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::commandstats::{BOOKKEEPING_COMMANDS, base_command};
use crate::server::{RedisServer, free_port, is_executable, start_on_fresh_ports, try_connect};

/// Environment variable naming the `redis-cli` binary to use instead of the one on `PATH`.
pub const REDIS_CLI_ENV: &str = "LIVENESS_REDIS_CLI";

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// Arguments of every node, besides the bus port chosen per start attempt.
const NODE_ARGS: [&str; 12] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    // A node unreachable this long (ms) is suspected, then failed over: failover takes about
    // twice this (see the module docs).
    "--cluster-node-timeout",
    "1000",
    // A replica fails over however long it has been disconnected from its master, which
    // `promote_empty_replica` needs (its replica never had a link).
    "--cluster-replica-validity-factor",
    "0",
    // Roles change only when a test says so, never by replica migration.
    "--cluster-allow-replica-migration",
    "no",
    // A replica's first sync starts at once instead of after Redis's default 5 s.
    "--repl-diskless-sync-delay",
    "0",
];
/// How long a new cluster may take to become healthy.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `redis-cli --cluster create` may run before it is killed.
const REDIS_CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover (or a restarted node's rejoining) may take until healthy.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a slot migration may take, moving keys and agreeing on the new owner.
const MIGRATE_SLOT_TIMEOUT: Duration = Duration::from_secs(20);
/// Keys moved per `MIGRATE` (and asked for per `CLUSTER GETKEYSINSLOT`).
const MIGRATE_BATCH: usize = 100;
/// `MIGRATE`'s own timeout, in ms.
const MIGRATE_TIMEOUT_MS: u64 = 5000;
/// Timeout of the harness's own probe connections: short, so one wedged node cannot eat a
/// whole wait's budget.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Poll interval of every wait. Each poll asks every node three questions, so not too often.
const POLL_STEP: Duration = Duration::from_millis(50);
/// Commands the cluster harness sends (or replication and slot migration send between the
/// nodes) on top of [`BOOKKEEPING_COMMANDS`]; ignored by [`RedisCluster::total_calls`].
/// `ASKING` is not among them: a client sends it after an `-ASK` redirection.
const CLUSTER_BOOKKEEPING_COMMANDS: [&str; 7] = [
    "cluster",
    "readonly",
    "replconf",
    "psync",
    "sync",
    "migrate",
    "restore-asking",
];

const CLI_NOT_FOUND_MESSAGE: &str = "redis-cli not found: install it with `apt-get install -y redis-tools` (Debian) \
     or set LIVENESS_REDIS_CLI=/path/to/redis-cli";

/// The `redis-cli` binary to run: `$LIVENESS_REDIS_CLI` if set, else `redis-cli` found on
/// `PATH`. Panics with an actionable message when neither exists.
pub fn redis_cli_binary() -> PathBuf {
    if let Some(explicit) = std::env::var_os(REDIS_CLI_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        if path.is_file() {
            return path;
        }
        panic!(
            "{CLI_NOT_FOUND_MESSAGE} ({REDIS_CLI_ENV}={} is not a file)",
            path.display()
        );
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("redis-cli"))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| panic!("{CLI_NOT_FOUND_MESSAGE}"))
}

/// A Redis Cluster of private `redis-server` nodes on loopback. See the module docs.
pub struct RedisCluster {
    /// Indexed as the API's node indices; a killed node keeps its place (and its directory).
    nodes: Vec<RedisServer>,
    /// `CLUSTER MYID` of each node, read once after start: `nodes.conf` keeps it across
    /// restarts, so it identifies the node in every other node's `CLUSTER NODES`.
    ids: Vec<String>,
    /// How long the last [`RedisCluster::kill_master_and_wait_failover`] took.
    last_failover: Option<Duration>,
}

impl RedisCluster {
    /// 3 masters with one replica each; returns once the cluster is healthy (module docs),
    /// within 30 s, else panics with the nodes' log tails.
    pub fn start() -> RedisCluster {
        Self::start_with(3, 1)
    }

    /// `masters` masters with `replicas_per_master` replicas each, the slots spread evenly
    /// over the masters. Returns once the cluster is healthy and every master has its
    /// replicas attached, within 30 s, else panics with the nodes' log tails.
    ///
    /// `redis-cli --cluster create` forms clusters of 3 masters or more (it refuses fewer);
    /// smaller ones are formed by hand (`CLUSTER MEET`, `ADDSLOTSRANGE`, `REPLICATE`).
    pub fn start_with(masters: usize, replicas_per_master: usize) -> RedisCluster {
        assert!(masters >= 1, "a cluster needs at least one master");
        let count = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisServer> = (0..count).map(|_| start_node()).collect();
        let ids = nodes
            .iter()
            .map(|node| node.query(redis::cmd("CLUSTER").arg("MYID")))
            .collect();
        let cluster = RedisCluster {
            nodes,
            ids,
            last_failover: None,
        };
        if masters >= 3 {
            cluster.create_with_redis_cli(replicas_per_master);
        } else {
            cluster.create_by_hand(masters, replicas_per_master);
        }
        cluster.wait_until("the new cluster is healthy", FORM_TIMEOUT, || {
            cluster.check_health(&[], true)?;
            let found = cluster.masters();
            if found.len() != masters {
                return Err(format!("{} masters, expected {masters}", found.len()));
            }
            for master in found {
                let replicas = cluster.replicas_of(master, &[]).len();
                if replicas != replicas_per_master {
                    return Err(format!(
                        "master {master} has {replicas} replicas, expected {replicas_per_master}"
                    ));
                }
            }
            Ok(())
        });
        cluster
    }

    /// Number of nodes, dead or alive.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `index` (for its port, connection, commandstats, log...).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// `redis://127.0.0.1:PORT/` of every node, dead or alive, in index order.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Indices of the live nodes that are masters now, by their own account (`CLUSTER NODES`,
    /// `myself` line), in index order. Includes a master without slots.
    pub fn masters(&self) -> Vec<usize> {
        self.live(&[])
            .into_iter()
            .filter(|&index| self.own_entry(index).master)
            .collect()
    }

    /// The live replica of `master` with the lowest index (by the replicas' own account), or
    /// `None` if it has none.
    pub fn replica_of(&self, master: usize) -> Option<usize> {
        self.replicas_of(master, &[]).into_iter().next()
    }

    /// Index of the master serving `slot` now, according to the first live node.
    ///
    /// Panics if no node serves it (or a node that is not one of the cluster's).
    pub fn owner_of_slot(&self, slot: u16) -> usize {
        let asked = self.first_live(&[]);
        self.owner_in_view(asked, slot).unwrap_or_else(|| {
            panic!(
                "node {asked} knows no master for slot {slot}:\n{}",
                self.cluster_nodes_text(asked)
            )
        })
    }

    /// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the part between
    /// the first `{` and the next `}`, if not empty), modulo 16384. An implementation
    /// independent of the redis crate's, to test against.
    pub fn slot_of(key: &[u8]) -> u16 {
        let hashed = match key.iter().position(|&b| b == b'{') {
            Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &key[open + 1..open + 1 + len],
                _ => key,
            },
            None => key,
        };
        crc16_xmodem(hashed) % SLOTS
    }

    /// The node's cluster id (`CLUSTER MYID` as read at start; it survives restarts).
    pub fn node_id(&self, index: usize) -> String {
        self.ids[index].clone()
    }

    /// Moves `slot`, keys included, to master `to`, the way `redis-cli --cluster reshard`
    /// does: `SETSLOT IMPORTING` on the target, `MIGRATING` on the source, `GETKEYSINSLOT` and
    /// `MIGRATE ... REPLACE KEYS` in batches of 100 until the slot is empty on the source, then
    /// `SETSLOT NODE` on the target, the source and every other master. Returns once every live
    /// node agrees on the new owner and no slot is left importing or migrating (bounded, 20 s).
    ///
    /// No-op if `to` already serves `slot`. Panics if `to` is not a live master.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        assert!(slot < SLOTS, "slot {slot} out of range");
        assert!(
            self.masters().contains(&to),
            "cannot migrate slot {slot} to node {to}: not a live master"
        );
        let from = self.owner_of_slot(slot);
        if from == to {
            return;
        }
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        target.query::<()>(
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(&self.ids[from]),
        );
        source.query::<()>(
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(&self.ids[to]),
        );
        let deadline = Instant::now() + MIGRATE_SLOT_TIMEOUT;
        loop {
            let keys: Vec<Vec<u8>> = source.query(
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(MIGRATE_BATCH),
            );
            if keys.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} still has keys on node {from} after {MIGRATE_SLOT_TIMEOUT:?}"
            );
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(target.port())
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("REPLACE")
                .arg("KEYS");
            for key in &keys {
                migrate.arg(key.as_slice());
            }
            // `OK`, or `NOKEY` when the batch expired in the meantime.
            source.query::<redis::Value>(&migrate);
        }
        let mut assign = redis::cmd("CLUSTER");
        assign
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&self.ids[to]);
        target.query::<()>(&assign);
        source.query::<()>(&assign);
        for other in self.masters() {
            if other != from && other != to {
                self.nodes[other].query::<()>(&assign);
            }
        }
        self.wait_until(
            &format!("every node sees node {to} serving slot {slot}"),
            MIGRATE_SLOT_TIMEOUT,
            || {
                for index in self.live(&[]) {
                    let owner = self.try_owner_in_view(index, slot)?;
                    if owner != Some(to) {
                        return Err(format!("node {index} sees {owner:?} serving slot {slot}"));
                    }
                    if !self.try_own_entry(index)?.open_slots.is_empty() {
                        return Err(format!("node {index} still has slots open"));
                    }
                }
                Ok(())
            },
        );
    }

    /// [`RedisCluster::migrate_slot`] for each slot in turn.
    pub fn migrate_slots(&self, slots: impl IntoIterator<Item = u16>, to: usize) {
        for slot in slots {
            self.migrate_slot(slot, to);
        }
    }

    /// Kills master `master` (`SIGKILL`) and waits until one of its replicas has taken over
    /// its slots and the cluster is healthy again (bounded, 20 s; about 2.2 s in practice, see
    /// [`RedisCluster::last_failover`]). Returns the new master's index.
    ///
    /// The replica has the data the master had replicated to it; `WAIT 1 <ms>` on the master
    /// before the kill makes sure of that. Panics if `master` serves no slot or has no replica.
    pub fn kill_master_and_wait_failover(&mut self, master: usize) -> usize {
        let slot = self.a_slot_of(master);
        let replicas = self.replicas_of(master, &[]);
        assert!(
            !replicas.is_empty(),
            "master {master} has no replica to fail over to"
        );
        let started = Instant::now();
        self.nodes[master].kill();
        let new_master = self.wait_for_new_owner(slot, &replicas, &[], "failover");
        self.wait_healthy();
        self.last_failover = Some(started.elapsed());
        new_master
    }

    /// How long the last [`RedisCluster::kill_master_and_wait_failover`] took, from the kill
    /// until the cluster was healthy again.
    pub fn last_failover(&self) -> Option<Duration> {
        self.last_failover
    }

    /// "A replica promoted without the data": freezes master `master` (`SIGSTOP`), kills and
    /// restarts its replicas (they come back empty and cannot resync from the frozen master),
    /// waits until one of them has failed over and serves the master's slots with the cluster
    /// otherwise healthy, then kills the old master for good and waits until healthy (bounded,
    /// 20 s each). Returns the new master's index; its `DBSIZE` is 0.
    ///
    /// Panics if `master` serves no slot or has no replica.
    pub fn promote_empty_replica(&mut self, master: usize) -> usize {
        let slot = self.a_slot_of(master);
        let replicas = self.replicas_of(master, &[]);
        assert!(
            !replicas.is_empty(),
            "master {master} has no replica to promote"
        );
        self.nodes[master].pause();
        for &replica in &replicas {
            self.nodes[replica].restart();
        }
        let new_master = self.wait_for_new_owner(slot, &replicas, &[master], "empty failover");
        self.nodes[master].kill();
        self.wait_healthy();
        new_master
    }

    /// Starts killed node `index` again on its port (it has lost its data but kept
    /// `nodes.conf`, so it rejoins: a former master comes back as a replica of the node that
    /// replaced it), and waits until the cluster is healthy, the node's replication link
    /// included (bounded, 20 s).
    pub fn restart_node(&mut self, index: usize) {
        self.nodes[index].restart();
        self.wait_healthy();
    }

    /// Kills every node (`SIGKILL`): nothing listens on any seed until
    /// [`RedisCluster::restart_all`].
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every killed node again on its port; each keeps `nodes.conf`, so the cluster
    /// forms again with the same slots, empty. Waits until it is healthy (bounded, 20 s).
    pub fn restart_all(&mut self) {
        for node in &mut self.nodes {
            node.restart();
        }
        self.wait_healthy();
    }

    /// `FLUSHALL` on every live master (replicas follow).
    pub fn flushall(&self) {
        for master in self.masters() {
            self.nodes[master].flushall();
        }
    }

    /// [`RedisServer::calls`] summed over the live masters.
    ///
    /// Replicas are left out: they count every write they replay from their master (and its
    /// expirations, as `DEL`), so a write would count twice. A client's reads from a replica
    /// (after `READONLY`) are therefore not counted here; ask [`RedisCluster::node`]. A master
    /// that was a replica before a failover still counts what it replayed then, until
    /// [`RedisCluster::reset_stats`].
    pub fn calls(&self, command: &str) -> u64 {
        self.masters()
            .into_iter()
            .map(|index| self.nodes[index].calls(command))
            .sum()
    }

    /// [`RedisServer::total_calls`] summed over the live masters (see [`RedisCluster::calls`]
    /// for why not the replicas), also ignoring the cluster's own traffic: `CLUSTER` and
    /// `READONLY` (a cluster client's bookkeeping), replication (`REPLCONF`, `PSYNC`, `SYNC`)
    /// and the harness's slot migrations (`MIGRATE`, `RESTORE-ASKING`). `ASKING` is counted:
    /// a client sends it after an `-ASK` redirection.
    pub fn total_calls(&self) -> u64 {
        self.masters()
            .into_iter()
            .flat_map(|index| self.nodes[index].command_stats())
            .filter(|(name, _)| {
                let base = base_command(name);
                !BOOKKEEPING_COMMANDS.contains(&base)
                    && !CLUSTER_BOOKKEEPING_COMMANDS.contains(&base)
            })
            .map(|(_, calls)| calls)
            .sum()
    }

    /// [`RedisServer::reset_stats`] on every live node.
    pub fn reset_stats(&self) {
        for index in self.live(&[]) {
            self.nodes[index].reset_stats();
        }
    }

    /// `DBSIZE` summed over the live masters: the number of keys in the cluster.
    pub fn dbsize(&self) -> u64 {
        self.masters()
            .into_iter()
            .map(|master| self.nodes[master].dbsize())
            .sum()
    }

    /// Waits until the cluster is healthy (module docs) on every live node, bounded (20 s),
    /// else panics with the reason and the nodes' log tails.
    pub fn wait_healthy(&self) {
        self.wait_until("the cluster is healthy", FAILOVER_TIMEOUT, || {
            self.check_health(&[], true)
        });
    }
}

/// Forming the cluster.
impl RedisCluster {
    /// `redis-cli --cluster create` over every node (it needs 3 masters or more and picks the
    /// replicas itself), killed if it runs longer than 30 s.
    fn create_with_redis_cli(&self, replicas_per_master: usize) {
        let cli = redis_cli_binary();
        let output_path = self.nodes[0].dir().join("redis-cli.out");
        let output = fs::File::create(&output_path).expect("create redis-cli output file");
        let errors = output.try_clone().expect("clone redis-cli output file");
        let mut child = Command::new(&cli)
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot spawn {}: {e}\n{CLI_NOT_FOUND_MESSAGE}",
                    cli.display()
                )
            });
        let deadline = Instant::now() + REDIS_CLI_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(POLL_STEP),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("still running after {REDIS_CLI_TIMEOUT:?}"));
                }
                Err(e) => break Err(format!("cannot poll it: {e}")),
            }
        };
        if !matches!(&status, Ok(status) if status.success()) {
            panic!(
                "redis-cli --cluster create failed ({status:?}):\n{}\n{}",
                fs::read_to_string(&output_path).unwrap_or_default(),
                self.log_tails()
            );
        }
    }

    /// By hand, for fewer than 3 masters: `CLUSTER MEET` every node from node 0, slots spread
    /// over nodes `0..masters` with `ADDSLOTSRANGE`, and the other nodes `CLUSTER REPLICATE`
    /// their master once they know it.
    fn create_by_hand(&self, masters: usize, replicas_per_master: usize) {
        for node in &self.nodes[1..] {
            self.nodes[0].query::<()>(
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port())
                    .arg(bus_port(node)),
            );
        }
        for master in 0..masters {
            let first = master * usize::from(SLOTS) / masters;
            let last = (master + 1) * usize::from(SLOTS) / masters - 1;
            self.nodes[master].query::<()>(
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(first)
                    .arg(last),
            );
        }
        for replica in masters..masters * (1 + replicas_per_master) {
            let master = (replica - masters) % masters;
            self.wait_until(
                &format!("node {replica} replicates node {master}"),
                FORM_TIMEOUT,
                || {
                    let mut con = self.probe(replica)?;
                    redis::cmd("CLUSTER")
                        .arg("REPLICATE")
                        .arg(&self.ids[master])
                        .query::<()>(&mut con)
                        .map_err(|e| format!("node {replica}: CLUSTER REPLICATE: {e}"))
                },
            );
        }
    }
}

/// Reading the cluster's state.
impl RedisCluster {
    /// Indices of the nodes that are running, except `skip`.
    fn live(&self, skip: &[usize]) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|index| self.nodes[*index].pid().is_some() && !skip.contains(index))
            .collect()
    }

    fn first_live(&self, skip: &[usize]) -> usize {
        *self
            .live(skip)
            .first()
            .expect("every node of the test cluster is down")
    }

    /// A fresh connection to node `index` with a short timeout, or why not.
    fn probe(&self, index: usize) -> Result<redis::Connection, String> {
        let node = &self.nodes[index];
        try_connect(node.port(), &node.extra, PROBE_TIMEOUT)
            .map_err(|e| format!("node {index} (port {}) unreachable: {e}", node.port()))
    }

    /// `CLUSTER NODES` as node `index` sees it.
    fn try_view(&self, index: usize) -> Result<Vec<NodeEntry>, String> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut self.probe(index)?)
            .map_err(|e| format!("node {index}: CLUSTER NODES: {e}"))?;
        Ok(parse_cluster_nodes(&text))
    }

    fn cluster_nodes_text(&self, index: usize) -> String {
        self.nodes[index].query(redis::cmd("CLUSTER").arg("NODES"))
    }

    /// Node `index`'s `myself` line.
    fn try_own_entry(&self, index: usize) -> Result<NodeEntry, String> {
        self.try_view(index)?
            .into_iter()
            .find(|entry| entry.myself)
            .ok_or_else(|| format!("node {index}: no `myself` line in CLUSTER NODES"))
    }

    fn own_entry(&self, index: usize) -> NodeEntry {
        self.try_own_entry(index)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tails()))
    }

    /// The live replicas of `master` (by their own account) except `skip`, in index order.
    fn replicas_of(&self, master: usize, skip: &[usize]) -> Vec<usize> {
        self.live(skip)
            .into_iter()
            .filter(|&index| self.own_entry(index).replica_of.as_ref() == Some(&self.ids[master]))
            .collect()
    }

    /// The index of the node with cluster id `id`.
    fn index_of(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|known| known == id)
    }

    /// Who serves `slot` in node `index`'s view.
    fn try_owner_in_view(&self, index: usize, slot: u16) -> Result<Option<usize>, String> {
        Ok(self
            .try_view(index)?
            .iter()
            .find(|entry| entry.serves(slot))
            .and_then(|entry| self.index_of(&entry.id)))
    }

    fn owner_in_view(&self, index: usize, slot: u16) -> Option<usize> {
        self.try_owner_in_view(index, slot)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tails()))
    }

    /// One slot master `master` serves (by its own account). Panics if none.
    fn a_slot_of(&self, master: usize) -> u16 {
        let entry = self.own_entry(master);
        assert!(entry.master, "node {master} is not a master");
        entry
            .slots
            .first()
            .map(|range| range.0)
            .unwrap_or_else(|| panic!("master {master} serves no slot"))
    }

    /// Waits (20 s) until one of `candidates` serves `slot` and the cluster is healthy apart
    /// from `skip` and replication links (a candidate's old master may be frozen); returns it.
    fn wait_for_new_owner(
        &self,
        slot: u16,
        candidates: &[usize],
        skip: &[usize],
        what: &str,
    ) -> usize {
        self.wait_until(
            &format!("{what}: one of nodes {candidates:?} serves slot {slot}"),
            FAILOVER_TIMEOUT,
            || {
                self.check_health(skip, false)?;
                let asked = self.first_live(skip);
                match self.try_owner_in_view(asked, slot)? {
                    Some(owner) if candidates.contains(&owner) => Ok(owner),
                    owner => Err(format!("node {asked} sees {owner:?} serving slot {slot}")),
                }
            },
        )
    }

    /// `Ok` if the cluster, apart from nodes `skip`, is healthy (see the module docs), else
    /// the first reason it is not. `links`: also require every replica of a live master to be
    /// linked to it and counted online by it.
    fn check_health(&self, skip: &[usize], links: bool) -> Result<(), String> {
        let live = self.live(skip);
        if live.is_empty() {
            return Err("no live node".to_string());
        }
        let mut views = Vec::new();
        for &index in &live {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut self.probe(index)?)
                .map_err(|e| format!("node {index}: CLUSTER INFO: {e}"))?;
            for wanted in [
                "cluster_state:ok",
                "cluster_slots_assigned:16384",
                "cluster_slots_ok:16384",
            ] {
                if !info.lines().any(|line| line.trim() == wanted) {
                    return Err(format!("node {index}: no {wanted} in CLUSTER INFO"));
                }
            }
            views.push((index, self.try_view(index)?));
        }
        let mut own: HashMap<usize, &NodeEntry> = HashMap::new();
        for (index, view) in &views {
            let me = view
                .iter()
                .find(|entry| entry.myself)
                .ok_or_else(|| format!("node {index}: no `myself` line"))?;
            if me.id != self.ids[*index] {
                return Err(format!(
                    "node {index} has id {}, expected {}",
                    me.id, self.ids[*index]
                ));
            }
            if !me.open_slots.is_empty() {
                return Err(format!("node {index} has open slots {:?}", me.open_slots));
            }
            own.insert(*index, me);
        }
        let reference = slot_map(&views[0].1);
        for (index, view) in &views {
            if slot_map(view) != reference {
                return Err(format!(
                    "nodes {} and {index} disagree on the slot map",
                    views[0].0
                ));
            }
            for &other in &live {
                let claimed = own[&other];
                let seen = view
                    .iter()
                    .find(|entry| entry.id == self.ids[other])
                    .ok_or_else(|| format!("node {index} does not know node {other}"))?;
                if let Some(trouble) = &seen.trouble {
                    return Err(format!("node {index} sees node {other} as {trouble}"));
                }
                if (seen.master, &seen.replica_of) != (claimed.master, &claimed.replica_of) {
                    return Err(format!(
                        "node {index} sees node {other} as master={} replica_of={:?}, \
                         but it says master={} replica_of={:?}",
                        seen.master, seen.replica_of, claimed.master, claimed.replica_of
                    ));
                }
            }
        }
        if links {
            for &index in &live {
                let claimed = own[&index];
                if claimed.master {
                    let replicas = live
                        .iter()
                        .filter(|other| own[other].replica_of.as_ref() == Some(&claimed.id))
                        .count();
                    let online = self
                        .try_replication_info(index)?
                        .lines()
                        .filter(|line| line.starts_with("slave") && line.contains("state=online"))
                        .count();
                    if online != replicas {
                        return Err(format!(
                            "master {index} has {online} online replicas, expected {replicas}"
                        ));
                    }
                } else if let Some(master) = claimed
                    .replica_of
                    .as_deref()
                    .and_then(|id| self.index_of(id))
                    && live.contains(&master)
                {
                    let info = self.try_replication_info(index)?;
                    if !info
                        .lines()
                        .any(|line| line.trim() == "master_link_status:up")
                    {
                        return Err(format!("replica {index}'s link to master {master} is down"));
                    }
                }
            }
        }
        Ok(())
    }

    fn try_replication_info(&self, index: usize) -> Result<String, String> {
        redis::cmd("INFO")
            .arg("replication")
            .query(&mut self.probe(index)?)
            .map_err(|e| format!("node {index}: INFO replication: {e}"))
    }

    /// Polls `check` every 50 ms until it returns `Ok`, for at most `timeout`; then panics
    /// with `what`, the last error and the log tails of every node.
    fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match check() {
                Ok(value) => return value,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                panic!(
                    "test cluster: gave up after {timeout:?} waiting until {what}: {last_error}\n{}",
                    self.log_tails()
                );
            }
            thread::sleep(POLL_STEP);
        }
    }

    /// Every node's log tail, for panic messages.
    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                let state = if node.pid().is_some() { "" } else { ", down" };
                format!(
                    "--- node {index} (port {}{state}) log tail ---\n{}\n",
                    node.port(),
                    node.log_tail()
                )
            })
            .collect()
    }
}

/// Starts one cluster node (see [`NODE_ARGS`]) with a bus port of its own, retried on fresh
/// ports like [`RedisServer::start_with_args`].
fn start_node() -> RedisServer {
    start_on_fresh_ports("liveness-redis-cluster-", || {
        let mut extra: Vec<String> = NODE_ARGS.iter().map(|arg| arg.to_string()).collect();
        extra.push("--cluster-port".to_string());
        extra.push(free_port().to_string());
        extra
    })
}

/// The `--cluster-port` a node was started with.
fn bus_port(node: &RedisServer) -> u16 {
    node.extra
        .iter()
        .position(|arg| arg == "--cluster-port")
        .and_then(|i| node.extra.get(i + 1))
        .and_then(|port| port.parse().ok())
        .expect("a cluster node has a --cluster-port")
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeEntry {
    id: String,
    myself: bool,
    master: bool,
    /// The master's id, for a replica.
    replica_of: Option<String>,
    /// Why this node is not in good standing in the view: a `fail`, `fail?`, `handshake` or
    /// `noaddr` flag, or a disconnected link.
    trouble: Option<String>,
    /// Served slot ranges, inclusive.
    slots: Vec<(u16, u16)>,
    /// `[slot->-id]` (migrating) and `[slot-<-id]` (importing) markers.
    open_slots: Vec<String>,
}

impl NodeEntry {
    fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| first <= slot && slot <= last)
    }
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv>
/// <config-epoch> <link-state> <slot>...`.
fn parse_cluster_nodes(text: &str) -> Vec<NodeEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let flags: Vec<&str> = fields[2].split(',').collect();
            let trouble = flags
                .iter()
                .find(|flag| ["fail", "fail?", "handshake", "noaddr"].contains(flag))
                .map(|flag| flag.to_string())
                .or_else(|| {
                    (fields[7] != "connected" && !flags.contains(&"myself"))
                        .then(|| format!("link {}", fields[7]))
                });
            let mut slots = Vec::new();
            let mut open_slots = Vec::new();
            for field in &fields[8..] {
                if field.starts_with('[') {
                    open_slots.push(field.to_string());
                    continue;
                }
                let (first, last) = field.split_once('-').unwrap_or((field, field));
                if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                    slots.push((first, last));
                }
            }
            Some(NodeEntry {
                id: fields[0].to_string(),
                myself: flags.contains(&"myself"),
                master: flags.contains(&"master"),
                replica_of: (fields[3] != "-").then(|| fields[3].to_string()),
                trouble,
                slots,
                open_slots,
            })
        })
        .collect()
}

/// A view's slot map in a canonical form: `(first, last, owner id)` sorted.
fn slot_map(view: &[NodeEntry]) -> Vec<(u16, u16, &str)> {
    let mut map: Vec<(u16, u16, &str)> = view
        .iter()
        .flat_map(|entry| {
            entry
                .slots
                .iter()
                .map(|&(first, last)| (first, last, entry.id.as_str()))
        })
        .collect();
    map.sort_unstable();
    map
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), bit by bit: slow and obviously right.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}
