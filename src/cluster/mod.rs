//! The Redis Cluster backend: the Redis backend's records, spread over a cluster's masters.

mod builder;
mod connection;
mod epochs;
mod plan;
mod slot;
mod topology;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

pub use builder::ClusterStoreBuilder;
use connection::Connection;
use epochs::ClusterEpochs;
use plan::{Group, Part};
use topology::TopologyCell;

use crate::breaker::Breaker;
use crate::health::{Health, remote_health};
use crate::log_limit::LogLimit;
use crate::redact::scrub;
use crate::redis::connection::server_answered;
use crate::redis::{log_failed_forget, unix_ms};
use crate::{Error, LivenessStore, Result, validate};

/// Liveness records on Redis Cluster, with [`RedisStore`](crate::RedisStore)'s contract, key
/// format and errors.
///
/// Keys are `<prefix><id>` as on a single Redis, so a runtime's record lives in the slot of its
/// key; an id holding a hash tag (`{tenant-7}:rt-1`) shares a slot with the others of its tag.
/// A batch is split by master: one pipeline per master, all sent at once, with one `GET` or
/// `MGET` per slot inside it; touches are grouped the same way. A command whose slot moved meanwhile
/// (`MOVED`, or `ASK` during a reshard) is sent once more on its own, through redis-rs's
/// redirect handling, and the store refreshes its slot map; all of it within the operation
/// timeout. Every reply is checked for server errors.
///
/// Deadlines, the circuit breaker (one for the cluster), input checks and data-loss detection
/// work as for `RedisStore`. Every slot has an epoch record, read after the keys for each slot
/// where a batch found a key missing (one more round trip, for batches with "dead" answers
/// only), so a replica promoted without the data, or slots handed empty to another master,
/// make "dead" answers [`Error::Recovering`]; a loss anywhere in the cluster does so for every
/// batch with a "dead" answer, for the recovery window.
///
/// ```no_run
/// use std::time::Duration;
/// use liveness_store::{ClusterStore, LivenessStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> liveness_store::Result<()> {
/// let store = ClusterStore::builder(["redis://10.0.0.1:6379/", "redis://10.0.0.2:6379/"])
///     .op_timeout(Duration::from_millis(100))
///     .build()
///     .await?;
/// store.touch("rt-1", Duration::from_secs(90)).await?;
/// assert_eq!(store.is_alive_batch(&["rt-1"]).await?, vec![true]);
/// # Ok(())
/// # }
/// ```
pub struct ClusterStore {
    connection: Arc<Connection>,
    topology: Arc<TopologyCell>,
    epochs: ClusterEpochs,
    key_prefix: Vec<u8>,
    op_timeout: Duration,
    max_batch: usize,
    /// The seeds, comma-separated: error texts are scrubbed of their passwords.
    seeds: String,
    /// The seeds with passwords redacted, for logs and `Debug`.
    name: String,
    breaker: Breaker,
    forget_log: LogLimit,
    /// Set while missing epoch records are being created, so one run goes at a time.
    creating_records: Arc<AtomicBool>,
}

impl fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterStore")
            .field("seeds", &self.name)
            .field("key_prefix", &String::from_utf8_lossy(&self.key_prefix))
            .field("op_timeout", &self.op_timeout)
            .field("max_batch", &self.max_batch)
            .field("masters", &self.topology.current().masters())
            .field("health", &self.health().status)
            .finish()
    }
}

/// What became of one master's pipeline.
enum GroupOutcome {
    /// Every command answered; `retry` holds the commands whose slot moved, to send again.
    Answered { retry: Vec<Part> },
    /// The master (or the way to it) failed; `answered` says whether a server replied.
    Failed { error: RedisError, answered: bool },
}

impl ClusterStore {
    /// A builder for a store on the cluster that `seeds` belong to: `redis://[user[:password]@]host:port/`
    /// URLs of some of its nodes (any will do; more survive a seed being down).
    pub fn builder<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> ClusterStoreBuilder {
        ClusterStoreBuilder::new(seeds.into_iter().map(Into::into).collect())
    }

    /// The Redis key of a runtime's record, as [`RedisStore::key`](crate::RedisStore::key).
    #[must_use]
    pub fn key(&self, runtime_id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.key_prefix.len() + runtime_id.len());
        key.extend_from_slice(&self.key_prefix);
        key.extend_from_slice(runtime_id.as_bytes());
        key
    }

    /// The keys of the epoch records that detect data loss: `<prefix>`, a NUL byte, `epoch`
    /// and a hash tag, one in every slot (16,384 keys of about 60 bytes). They have no expiry;
    /// deleting one makes every instance that reads its slot treat the cluster as having lost
    /// data.
    #[must_use]
    pub fn epoch_keys(&self) -> Vec<Vec<u8>> {
        self.epochs.keys().map(|(_, key)| key.to_vec()).collect()
    }

    fn timed_out(&self, op: &'static str) -> Error {
        Error::Timeout {
            op,
            after: self.op_timeout,
        }
    }

    fn backend_error(&self, op: &'static str, error: &RedisError) -> Error {
        if error.is_timeout() {
            return self.timed_out(op);
        }
        // The client library's text could quote a seed URL.
        Error::backend(op, scrub(&error.to_string(), &self.seeds))
    }

    /// Runs `call` behind the breaker and within the op timeout (invariant 5). `call` returns
    /// its result and whether every master it reached answered.
    async fn guarded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = (Result<T>, bool)>,
    ) -> Result<T> {
        let permit = self.breaker.admit()?;
        let (result, answered) = match tokio::time::timeout(self.op_timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => (Err(self.timed_out(op)), false),
        };
        permit.record(answered);
        if !answered {
            // Twice in a row: the master may be gone, and the connection stuck on it (see
            // `connection`). Once may be a slow reply.
            if self.breaker.status().2 >= 2 {
                self.connection.replace_soon();
            }
            self.topology
                .refresh_soon(&self.connection.get(), self.op_timeout);
        }
        result
    }

    /// Sends every group's pipeline to its master at once and reads each command's reply
    /// with `answer`, which says whether the reply is an answer (else it is a redirect, and
    /// the command is sent again on its own).
    async fn send_groups(
        &self,
        groups: Vec<Group>,
        mut answer: impl FnMut(&Part, &Value) -> std::result::Result<bool, RedisError>,
    ) -> Vec<GroupOutcome> {
        let sends = groups.into_iter().map(|group| {
            let mut connection = self.connection.get();
            let route =
                SingleNodeRoutingInfo::SpecificNode(Route::new(group.route_slot, SlotAddr::Master));
            async move {
                let reply = connection
                    .route_pipeline(group.pipeline, 0, group.commands, route)
                    .await;
                (group.parts, group.check, group.commands, reply)
            }
        });
        let mut missing = false;
        let mut outcomes = Vec::new();
        for (parts, check, commands, reply) in join_all(sends).await {
            let replies = match reply {
                Ok(replies) if replies.len() == commands => replies,
                Ok(replies) => {
                    let error = RedisError::from((
                        ErrorKind::Parse,
                        "reply count",
                        format!("{} replies for {commands} commands", replies.len()),
                    ));
                    outcomes.push(GroupOutcome::Failed {
                        error,
                        answered: true,
                    });
                    continue;
                }
                // redis-rs follows a redirect of any command in a pipeline with the whole
                // pipeline, so a master that serves some of its slots but not others answers
                // with an error: its commands go again one by one, each to its slot's master.
                Err(error) if is_redirect(&error) => {
                    outcomes.push(GroupOutcome::Answered { retry: parts });
                    continue;
                }
                Err(error) => {
                    let answered = server_answered(&error);
                    outcomes.push(GroupOutcome::Failed { error, answered });
                    continue;
                }
            };
            let mut retry = Vec::new();
            let mut failure = None;
            for (part, reply) in parts.into_iter().zip(&replies) {
                match answer(&part, reply) {
                    Ok(true) => {}
                    Ok(false) => retry.push(part),
                    Err(error) => failure = Some(error),
                }
            }
            if let (Some(check), Some(record)) = (check, replies.last()) {
                missing |= self.epochs.observe(check, record).missing;
            }
            outcomes.push(match failure {
                Some(error) => GroupOutcome::Failed {
                    error,
                    answered: true,
                },
                None => GroupOutcome::Answered { retry },
            });
        }
        if missing {
            self.create_records_soon();
        }
        outcomes
    }

    /// Sends `commands` one by one, at once, each routed by redis-rs by its keys' slot to
    /// wherever it finds it now (following one `MOVED` or `ASK`), and refreshes the store's own
    /// slot map meanwhile.
    async fn resend(&self, commands: Vec<Cmd>) -> Vec<std::result::Result<Value, RedisError>> {
        self.topology
            .refresh_soon(&self.connection.get(), self.op_timeout);
        let sends = commands.into_iter().map(|command| {
            let mut connection = self.connection.get();
            async move {
                connection
                    .req_packed_command(&command)
                    .await
                    .and_then(Value::extract_error)
            }
        });
        join_all(sends).await
    }

    /// Folds the groups' outcomes into one: the first failure, else the commands to send
    /// again. A failed master also makes the store refresh its slot map: it may have failed
    /// over.
    fn settle(
        &self,
        op: &'static str,
        outcomes: Vec<GroupOutcome>,
    ) -> std::result::Result<Vec<Part>, (Error, bool)> {
        let mut retry = Vec::new();
        for outcome in outcomes {
            match outcome {
                GroupOutcome::Answered { retry: parts } => retry.extend(parts),
                GroupOutcome::Failed { error, answered } => {
                    self.topology
                        .refresh_soon(&self.connection.get(), self.op_timeout);
                    return Err((self.backend_error(op, &error), answered));
                }
            }
        }
        Ok(retry)
    }

    /// At connect: creates the epoch records that are missing, all with one value, and
    /// reads every one, so that each is first seen with the recovery window of a store that
    /// has written nothing yet (the floor), as `RedisStore` sees its one record at connect.
    async fn first_look(&self, timeout: Duration) -> Result<()> {
        let op = "connect";
        let topology = self.topology.current();
        let groups = plan::record_creation(&topology, &self.epochs, &epochs::fresh_value(), true);
        let look = self.send_groups(groups, |part, reply| match (reply, part.check) {
            (Value::ServerError(error), _) if redirected(error.kind()) => Ok(false),
            (Value::ServerError(_), _) => Err(unexpected(reply)),
            (_, Some(check)) => {
                self.epochs.observe(check, reply);
                Ok(true)
            }
            (_, None) => Ok(true),
        });
        let outcomes = tokio::time::timeout(timeout, look)
            .await
            .map_err(|_| Error::Timeout { op, after: timeout })?;
        // A record whose slot moved meanwhile is read, and if need be created, later.
        self.settle(op, outcomes)
            .map(drop)
            .map_err(|(error, _)| error)
    }

    /// After a read found an epoch record missing (a loss, or a slot that never had one):
    /// creates every missing record again, together, in the background, one run at a time.
    /// Records read for the first time after that are young, so "dead" beside them waits out
    /// the recovery window.
    fn create_records_soon(&self) {
        if self.creating_records.swap(true, Ordering::AcqRel) {
            return;
        }
        let topology = self.topology.current();
        let groups = plan::record_creation(&topology, &self.epochs, &epochs::fresh_value(), false);
        let connection = self.connection.get();
        let timeout = self.op_timeout;
        let creating = Arc::clone(&self.creating_records);
        tokio::spawn(async move {
            let sends = groups.into_iter().map(|group| {
                let mut connection = connection.clone();
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(
                    group.route_slot,
                    SlotAddr::Master,
                ));
                async move {
                    // Best effort: a record still missing is created after the next read.
                    let _ = tokio::time::timeout(
                        timeout,
                        connection.route_pipeline(group.pipeline, 0, group.commands, route),
                    )
                    .await;
                }
            });
            join_all(sends).await;
            creating.store(false, Ordering::Release);
        });
    }

    /// Reads one lookup command's reply into `alive`: `Ok(false)` for a redirect.
    fn read_lookup(
        part: &Part,
        reply: &Value,
        alive: &mut [bool],
    ) -> std::result::Result<bool, RedisError> {
        let values = match reply {
            Value::Array(values) if values.len() == part.positions.len() => values.as_slice(),
            Value::Nil | Value::BulkString(_) | Value::SimpleString(_)
                if part.positions.len() == 1 =>
            {
                std::slice::from_ref(reply)
            }
            Value::ServerError(error) if redirected(error.kind()) => return Ok(false),
            other => return Err(unexpected(other)),
        };
        for (&position, value) in part.positions.iter().zip(values) {
            alive[position] = !matches!(value, Value::Nil);
        }
        Ok(true)
    }

    /// Reads the epoch records of `slots`, where a batch found keys missing: records read
    /// after the keys show any loss that happened before the keys were read. Returns whether
    /// every one was read (vouching for the "dead" answers beside it), and whether any was
    /// missing.
    async fn vouch(&self, slots: &[u16]) -> std::result::Result<(bool, bool), (Error, bool)> {
        let op = "is_alive_batch";
        let topology = self.topology.current();
        let groups = plan::record_reads(&topology, &self.epochs, slots);
        let mut vouched = 0;
        let mut missing = false;
        let mut observe = |part: &Part, reply: &Value| match (reply, part.check) {
            (Value::ServerError(error), _) if redirected(error.kind()) => Ok(false),
            (Value::ServerError(_), _) => Err(unexpected(reply)),
            (_, Some(check)) => {
                let read = self.epochs.observe(check, reply);
                vouched += usize::from(read.vouches);
                missing |= read.missing;
                Ok(true)
            }
            (_, None) => Err(unexpected(reply)),
        };
        let outcomes = self.send_groups(groups, &mut observe).await;
        let retry = self.settle(op, outcomes)?;
        if !retry.is_empty() {
            let reads: Vec<(Cmd, Part)> = retry
                .iter()
                .filter_map(|part| plan::record_read(&self.epochs, part.slot))
                .collect();
            let (commands, parts): (Vec<Cmd>, Vec<Part>) = reads.into_iter().unzip();
            for (part, reply) in parts.iter().zip(self.resend(commands).await) {
                match reply {
                    Ok(value) => {
                        observe(part, &value).map_err(|e| (self.backend_error(op, &e), true))?;
                    }
                    Err(error) => {
                        let answered = server_answered(&error);
                        return Err((self.backend_error(op, &error), answered));
                    }
                }
            }
        }
        Ok((vouched == slots.len(), missing))
    }

    fn slots(&self, keys: &[Vec<u8>]) -> Vec<u16> {
        keys.iter().map(|key| slot::key_slot(key)).collect()
    }

    /// `SET <key> <unix-ms> PX <ttl>`, as `RedisStore` writes it.
    fn set_command(key: &[u8], ttl: Duration, now_ms: u64) -> Cmd {
        let mut command = redis::cmd("SET");
        command
            .arg(key)
            .arg(now_ms)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        command
    }

    /// The whole of `is_alive_batch` once the input is checked.
    async fn lookup(&self, keys: &[Vec<u8>]) -> (Result<Vec<bool>>, bool) {
        let op = "is_alive_batch";
        let slots = self.slots(keys);
        let topology = self.topology.current();
        let groups = plan::lookups(&topology, keys, &slots, self.max_batch);
        let mut alive = vec![false; keys.len()];
        let outcomes = self
            .send_groups(groups, |part, reply| {
                Self::read_lookup(part, reply, &mut alive)
            })
            .await;
        let retry = match self.settle(op, outcomes) {
            Ok(retry) => retry,
            Err((error, answered)) => return (Err(error), answered),
        };
        if !retry.is_empty() {
            // Each command again as it was: redis-rs routes it by its one slot.
            let commands = retry
                .iter()
                .map(|part| plan::lookup_command(keys, part.slot, &part.positions).0)
                .collect();
            for (part, reply) in retry.iter().zip(self.resend(commands).await) {
                let read =
                    reply.and_then(|value| match Self::read_lookup(part, &value, &mut alive) {
                        Ok(true) => Ok(()),
                        Ok(false) => Err(unexpected(&value)),
                        Err(error) => Err(error),
                    });
                if let Err(error) = read {
                    let answered = server_answered(&error);
                    return (Err(self.backend_error(op, &error)), answered);
                }
            }
        }
        // "Dead" answers are vouched for by their slots' epoch records, read after them; a
        // batch where every runtime is alive needs none.
        let mut dead_slots: Vec<u16> = (0..keys.len())
            .filter(|&position| !alive[position])
            .map(|position| slots[position])
            .collect();
        if !dead_slots.is_empty() {
            dead_slots.sort_unstable();
            dead_slots.dedup();
            match self.vouch(&dead_slots).await {
                Ok((all_vouched, missing)) => {
                    if missing {
                        self.create_records_soon();
                    }
                    if !all_vouched {
                        return (
                            Err(Error::backend(
                                op,
                                "a slot's epoch record could not be read, so its \"dead\" \
                                 answers cannot be trusted; retry",
                            )),
                            true,
                        );
                    }
                }
                Err((error, answered)) => return (Err(error), answered),
            }
        }
        // A record present now was written after any loss, so "alive" stands; "dead" may be a
        // lost record until every live runtime has beaten again.
        if let Some(remaining) = self.epochs.recovering_for()
            && alive.contains(&false)
        {
            return (Err(Error::Recovering { remaining }), true);
        }
        (Ok(alive), true)
    }

    /// The whole of `touch_many` once the input is checked.
    async fn write(&self, beats: &[(&str, Duration)]) -> (Result<()>, bool) {
        let op = "touch_many";
        let now_ms = unix_ms();
        let keys: Vec<Vec<u8>> = beats.iter().map(|(id, _)| self.key(id)).collect();
        let slots = self.slots(&keys);
        let topology = self.topology.current();
        let groups = plan::writes(&topology, &self.epochs, &slots, |position| {
            Self::set_command(&keys[position], beats[position].1, now_ms)
        });
        let outcomes = self
            .send_groups(groups, |_, reply| match reply {
                Value::Okay => Ok(true),
                Value::SimpleString(text) if text == "OK" => Ok(true),
                Value::ServerError(error) if redirected(error.kind()) => Ok(false),
                other => Err(unexpected(other)),
            })
            .await;
        let retry = match self.settle(op, outcomes) {
            Ok(retry) => retry,
            Err((error, answered)) => return (Err(error), answered),
        };
        if !retry.is_empty() {
            let commands = retry
                .iter()
                .flat_map(|part| &part.positions)
                .map(|&position| Self::set_command(&keys[position], beats[position].1, now_ms))
                .collect();
            for reply in self.resend(commands).await {
                if let Err(error) = reply {
                    let answered = server_answered(&error);
                    return (Err(self.backend_error(op, &error)), answered);
                }
            }
        }
        (Ok(()), true)
    }

    /// One single-key command, routed and redirected by redis-rs.
    async fn single(&self, op: &'static str, command: Cmd) -> (Result<()>, bool) {
        match self.resend_one(command).await {
            Ok(_) => (Ok(()), true),
            Err(error) => {
                let answered = server_answered(&error);
                if !answered || is_redirect(&error) {
                    self.topology
                        .refresh_soon(&self.connection.get(), self.op_timeout);
                }
                (Err(self.backend_error(op, &error)), answered)
            }
        }
    }

    async fn resend_one(&self, command: Cmd) -> std::result::Result<Value, RedisError> {
        let mut connection = self.connection.get();
        connection
            .req_packed_command(&command)
            .await
            .and_then(Value::extract_error)
    }
}

/// Whether a server error says the key is served elsewhere or not right now: the command
/// may succeed when sent again (to the right master, or after a failover or reshard step).
fn redirected(kind: Option<ServerErrorKind>) -> bool {
    matches!(
        kind,
        Some(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
        )
    )
}

fn is_redirect(error: &RedisError) -> bool {
    match error.kind() {
        ErrorKind::Server(kind) => redirected(Some(kind)),
        _ => false,
    }
}

fn unexpected(reply: &Value) -> RedisError {
    match reply.clone().extract_error() {
        Err(error) => error,
        Ok(other) => RedisError::from((ErrorKind::Parse, "unexpected reply", format!("{other:?}"))),
    }
}

#[async_trait::async_trait]
impl LivenessStore for ClusterStore {
    fn available(&self) -> bool {
        true
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        validate::beat(runtime_id, ttl)?;
        self.epochs.note_ttl(ttl);
        let command = Self::set_command(&self.key(runtime_id), ttl, unix_ms());
        self.guarded("touch", self.single("touch", command)).await
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        validate::runtime_ids(runtime_ids)?;
        if runtime_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = runtime_ids.iter().map(|id| self.key(id)).collect();
        self.guarded("is_alive_batch", self.lookup(&keys)).await
    }

    async fn forget(&self, runtime_id: &str) {
        if validate::runtime_id(runtime_id).is_err() {
            return;
        }
        let command = redis::cmd("DEL").arg(self.key(runtime_id)).clone();
        let result = self.guarded("forget", self.single("forget", command)).await;
        log_failed_forget(&self.forget_log, result);
    }

    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        for (runtime_id, ttl) in beats {
            validate::beat(runtime_id, *ttl)?;
        }
        if beats.is_empty() {
            return Ok(());
        }
        for (_, ttl) in beats {
            self.epochs.note_ttl(*ttl);
        }
        self.guarded("touch_many", self.write(beats)).await
    }

    fn health(&self) -> Health {
        let (losses, recovery) = self.epochs.status();
        remote_health(self.breaker.status(), losses, recovery)
    }

    fn data_losses(&self) -> u64 {
        self.epochs.losses()
    }
}
