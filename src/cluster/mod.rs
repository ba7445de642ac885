//! The Redis Cluster backend: the Redis backend's records, spread over a cluster's masters.

mod builder;
mod connection;
mod epochs;
mod plan;
mod slot;
mod topology;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

pub use builder::ClusterStoreBuilder;
use connection::Connection;
use epochs::ClusterEpochs;
use plan::Group;
use topology::TopologyCell;

use crate::breaker::Breaker;
use crate::health::{Health, remote_health};
use crate::log_limit::LogLimit;
use crate::redact::scrub;
use crate::redis::connection::server_answered;
use crate::{Error, LivenessStore, Result, validate};

/// Liveness records on Redis Cluster, with [`RedisStore`](crate::RedisStore)'s contract, key
/// format and errors.
///
/// Keys are `<prefix><id>` as on a single Redis, so a runtime's record lives in the slot of its
/// key; an id holding a hash tag (`{tenant-7}:rt-1`) shares a slot with the others of its tag.
/// A batch is split by master: one pipeline per master, all sent at once, with one `MGET` per
/// slot inside it; touches are grouped the same way. A key whose slot moved meanwhile
/// (`MOVED`, or `ASK` during a reshard) is sent once more on its own, through redis-rs's
/// redirect handling, and the store refreshes its slot map; all of it within the operation
/// timeout. Every reply is checked for server errors.
///
/// Deadlines, the circuit breaker (one for the cluster), input checks and data-loss detection
/// work as for `RedisStore`; each master is watched through an epoch record in its own slots,
/// so a replica promoted without the data makes "dead" answers [`Error::Recovering`].
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
    /// Every command answered; `retry` lists positions whose slot moved. `confirmed`: the
    /// master's epoch record was read in the same pipeline, so its "dead" answers are as
    /// trustworthy as the epoch says (a read of a record that had moved proves nothing).
    Answered {
        retry: Vec<usize>,
        answered: Vec<usize>,
        confirmed: bool,
    },
    /// The master (or the way to it) failed; `answered` says whether a server replied.
    Failed { error: RedisError, answered: bool },
}

/// The groups' outcomes, once none failed.
#[derive(Default)]
struct Settled {
    /// Positions to send again, one by one.
    retry: Vec<usize>,
    /// Positions answered by a master whose epoch record was not read beside them.
    unconfirmed: Vec<usize>,
    /// Groups whose epoch read was observed.
    confirmed_groups: usize,
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
    /// and a hash tag, one in each block of 64 slots. They have no expiry; deleting the one a
    /// master is watched through makes every instance treat that master as having lost its
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
            // The master may be gone, and the connection stuck on it (see `connection`).
            self.connection.replace_soon();
            self.topology
                .refresh_soon(&self.connection.get(), self.op_timeout);
        }
        result
    }

    /// Sends every group's pipeline to its master at once and reads each reply with
    /// `answer`, which takes a part's positions and reply and says whether the reply is an
    /// answer (else it is a redirect, and the part is sent again).
    async fn send_groups(
        &self,
        groups: Vec<Group>,
        mut answer: impl FnMut(&[usize], &Value) -> std::result::Result<bool, RedisError>,
    ) -> Vec<GroupOutcome> {
        let sends = groups.into_iter().map(|group| {
            let mut connection = self.connection.get();
            let route =
                SingleNodeRoutingInfo::SpecificNode(Route::new(group.route_slot, SlotAddr::Master));
            async move {
                let reply = connection
                    .route_pipeline(group.pipeline, 0, group.commands, route)
                    .await;
                (group.parts, group.check, reply)
            }
        });
        let mut lost = false;
        let mut outcomes = Vec::new();
        for (parts, check, reply) in join_all(sends).await {
            let replies = match reply {
                Ok(replies) if replies.len() == parts.len() + check.map_or(0, |c| c.replies()) => {
                    replies
                }
                Ok(replies) => {
                    let error = RedisError::from((
                        ErrorKind::Parse,
                        "reply count",
                        format!("{} replies for {} commands", replies.len(), parts.len()),
                    ));
                    outcomes.push(GroupOutcome::Failed {
                        error,
                        answered: true,
                    });
                    continue;
                }
                // redis-rs follows a redirect of any command in a pipeline with the whole
                // pipeline, so a master that serves some of its keys but not others answers
                // with an error: the keys go again one by one.
                Err(error) if is_redirect(&error) => {
                    outcomes.push(GroupOutcome::Answered {
                        retry: parts.concat(),
                        answered: Vec::new(),
                        confirmed: false,
                    });
                    continue;
                }
                Err(error) => {
                    let answered = server_answered(&error);
                    outcomes.push(GroupOutcome::Failed { error, answered });
                    continue;
                }
            };
            let mut retry = Vec::new();
            let mut answered = Vec::new();
            let mut failure = None;
            for (positions, reply) in parts.iter().zip(&replies) {
                match answer(positions, reply) {
                    Ok(true) => answered.extend_from_slice(positions),
                    Ok(false) => retry.extend_from_slice(positions),
                    Err(error) => failure = Some(error),
                }
            }
            let observed = match (check, replies.last()) {
                (Some(check), Some(epoch)) => self.epochs.observe(check, epoch),
                _ => None,
            };
            lost |= observed == Some(true);
            outcomes.push(match failure {
                Some(error) => GroupOutcome::Failed {
                    error,
                    answered: true,
                },
                None => GroupOutcome::Answered {
                    retry,
                    answered,
                    confirmed: observed.is_some(),
                },
            });
        }
        if lost {
            self.recreate_epochs();
        }
        outcomes
    }

    /// Sends `commands` one by one, at once, each routed by redis-rs by its key to wherever it
    /// finds it now (following one `MOVED` or `ASK`), and refreshes the store's own slot map meanwhile.
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

    /// Folds the groups' outcomes into one: the first failure, else the positions to send
    /// again and those answered without an epoch read beside them. A failed master also
    /// makes the store refresh its slot map: it may have failed over.
    fn settle(
        &self,
        op: &'static str,
        outcomes: Vec<GroupOutcome>,
    ) -> std::result::Result<Settled, (Error, bool)> {
        let mut settled = Settled::default();
        for outcome in outcomes {
            match outcome {
                GroupOutcome::Answered {
                    retry,
                    answered,
                    confirmed,
                } => {
                    settled.retry.extend(retry);
                    if confirmed {
                        settled.confirmed_groups += 1;
                    } else {
                        settled.unconfirmed.extend(answered);
                    }
                }
                GroupOutcome::Failed { error, answered } => {
                    self.topology
                        .refresh_soon(&self.connection.get(), self.op_timeout);
                    return Err((self.backend_error(op, &error), answered));
                }
            }
        }
        Ok(settled)
    }

    /// Before "dead" answers that no epoch read vouched for (they were resent after a
    /// redirect, or their master's record had moved) are given out: fetches the slot map
    /// afresh and reads every master's epoch record. A master that lost its data then shows
    /// as a loss, and the answers become `Recovering`; if the records cannot all be read
    /// (slots still moving), the call fails rather than risk a false "dead".
    async fn confirm_dead(&self, op: &'static str) -> std::result::Result<(), (Error, bool)> {
        self.topology
            .refresh_now(&mut self.connection.get())
            .await
            .map_err(|error| (self.backend_error(op, &error), server_answered(&error)))?;
        let topology = self.topology.current();
        let groups = plan::epoch_reads(&topology, &self.epochs);
        let masters = groups.len();
        let outcomes = self.send_groups(groups, |_, _| Ok(true)).await;
        let settled = self.settle(op, outcomes)?;
        let confirmed = masters == topology.masters()
            && settled.retry.is_empty()
            && settled.confirmed_groups == masters;
        if confirmed {
            Ok(())
        } else {
            Err((
                Error::backend(
                    op,
                    "slots are moving: could not confirm \"dead\" answers with every master's \
                     epoch record; retry",
                ),
                true,
            ))
        }
    }

    /// One pipeline per master that creates its missing epoch records (`SET NX`), all with
    /// one fresh value, and reads the one it is watched through.
    fn create_records(&self) -> Vec<Group> {
        let topology = self.topology.current();
        let slots: Vec<u16> = self.epochs.slots().collect();
        let keys: Vec<&[u8]> = self.epochs.keys().map(|(_, key)| key).collect();
        let value = epochs::fresh_value();
        plan::writes(&topology, &self.epochs, &slots, |pipeline, position| {
            pipeline
                .cmd("SET")
                .arg(keys[position])
                .arg(&value)
                .arg("NX");
        })
    }

    /// At connect: creates the epoch records that are missing, together, and reads every
    /// master's, so that the first batch already knows whether to trust "dead".
    async fn first_look(&self) -> Result<()> {
        let op = "connect";
        let look = self.send_groups(self.create_records(), |_, reply| match reply {
            Value::ServerError(error) if redirected(error.kind()) => Ok(false),
            Value::ServerError(_) => Err(unexpected(reply)),
            _ => Ok(true),
        });
        let outcomes = tokio::time::timeout(self.op_timeout, look)
            .await
            .map_err(|_| self.timed_out(op))?;
        // A record whose slot moved meanwhile is created by the first read of it.
        self.settle(op, outcomes)
            .map(drop)
            .map_err(|(error, _)| error)
    }

    /// After a master lost its data: every epoch record it held is gone, so all missing ones
    /// are created again together (in the background), and a later switch of the watched
    /// record finds one as old as the rest.
    fn recreate_epochs(&self) {
        let groups = self.create_records();
        let connection = self.connection.get();
        let timeout = self.op_timeout;
        tokio::spawn(async move {
            let sends = groups.into_iter().map(|group| {
                let mut connection = connection.clone();
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(
                    group.route_slot,
                    SlotAddr::Master,
                ));
                async move {
                    // Best effort: a record still missing is created by the next read of it.
                    let _ = tokio::time::timeout(
                        timeout,
                        connection.route_pipeline(group.pipeline, 0, group.commands, route),
                    )
                    .await;
                }
            });
            join_all(sends).await;
        });
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
        let groups = plan::lookups(&topology, &self.epochs, keys, &slots, self.max_batch);
        let mut answers = vec![false; keys.len()];
        let outcomes = self
            .send_groups(groups, |positions, reply| match reply {
                Value::Array(values) if values.len() == positions.len() => {
                    for (&position, value) in positions.iter().zip(values) {
                        answers[position] = !matches!(value, Value::Nil);
                    }
                    Ok(true)
                }
                Value::Nil | Value::BulkString(_) | Value::SimpleString(_)
                    if positions.len() == 1 =>
                {
                    answers[positions[0]] = !matches!(reply, Value::Nil);
                    Ok(true)
                }
                Value::ServerError(error) if redirected(error.kind()) => Ok(false),
                other => Err(unexpected(other)),
            })
            .await;
        let settled = match self.settle(op, outcomes) {
            Ok(settled) => settled,
            Err((error, answered)) => return (Err(error), answered),
        };
        let retry = settled.retry;
        if !retry.is_empty() {
            let commands = retry
                .iter()
                .map(|&position| redis::cmd("GET").arg(&keys[position]).clone())
                .collect();
            for (&position, reply) in retry.iter().zip(self.resend(commands).await) {
                match reply {
                    Ok(value) => answers[position] = !matches!(value, Value::Nil),
                    Err(error) => {
                        let answered = server_answered(&error);
                        return (Err(self.backend_error(op, &error)), answered);
                    }
                }
            }
        }
        let unvouched = settled.unconfirmed.iter().chain(&retry);
        if unvouched.into_iter().any(|&position| !answers[position])
            && let Err((error, answered)) = self.confirm_dead(op).await
        {
            return (Err(error), answered);
        }
        // A record present now was written after any loss, so "alive" stands; "dead" may be a
        // lost record until every live runtime has beaten again.
        if let Some(remaining) = self.epochs.recovering_for()
            && answers.contains(&false)
        {
            return (Err(Error::Recovering { remaining }), true);
        }
        (Ok(answers), true)
    }

    /// The whole of `touch_many` once the input is checked.
    async fn write(&self, beats: &[(&str, Duration)]) -> (Result<()>, bool) {
        let op = "touch_many";
        let now_ms = unix_ms();
        let keys: Vec<Vec<u8>> = beats.iter().map(|(id, _)| self.key(id)).collect();
        let slots = self.slots(&keys);
        let topology = self.topology.current();
        let groups = plan::writes(&topology, &self.epochs, &slots, |pipeline, position| {
            pipeline.add_command(Self::set_command(
                &keys[position],
                beats[position].1,
                now_ms,
            ));
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
            Ok(settled) => settled.retry,
            Err((error, answered)) => return (Err(error), answered),
        };
        if !retry.is_empty() {
            let commands = retry
                .iter()
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

fn unix_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
        match self.guarded("forget", self.single("forget", command)).await {
            Ok(()) | Err(Error::Unavailable) => {}
            Err(error) => {
                if let Some(suppressed) = self.forget_log.allow() {
                    tracing::warn!(
                        %error,
                        suppressed,
                        "liveness forget failed; the record's ttl will reap it"
                    );
                }
            }
        }
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
