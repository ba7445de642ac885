//! The store's operations on the cluster, once the input is checked: lookups, writes, single
//! commands, the first look at connect, and the sweep of the epoch records after a loss.

use std::time::Duration;

use futures_util::future::join_all;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisError, Value};

use super::dispatch::{is_redirect, not_connected, redirected, unexpected};
use super::plan::{self, Part};
use super::{Inner, slot};
use crate::remote::epoch::fresh_value;
use crate::remote::{Attempt, px, server_answered, unix_ms, uptime};
use crate::{Error, Result};

/// `SET <key> <unix-ms> PX <ttl>`, as `RedisStore` writes it.
pub(super) fn set_command(key: &[u8], ttl: Duration, now_ms: u64) -> Cmd {
    let mut command = redis::cmd("SET");
    command.arg(key).arg(now_ms).arg("PX").arg(px(ttl));
    command
}

/// Reads one lookup command's reply into `alive`: `Ok(false)` for a redirect.
fn read_lookup(
    part: &Part,
    reply: &Value,
    alive: &mut [bool],
) -> std::result::Result<bool, RedisError> {
    let values = match reply {
        Value::Array(values) if values.len() == part.positions.len() => values.as_slice(),
        Value::Nil | Value::BulkString(_) | Value::SimpleString(_) if part.positions.len() == 1 => {
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

impl Inner {
    fn slots(&self, keys: &[Vec<u8>]) -> Vec<u16> {
        keys.iter().map(|key| slot::key_slot(key)).collect()
    }

    /// The whole of `is_alive_batch` once the input is checked.
    pub(super) async fn lookup(&self, keys: &[Vec<u8>]) -> Attempt<Vec<bool>> {
        let op = "is_alive_batch";
        let slots = self.slots(keys);
        let topology = self.topology.current();
        let groups = plan::lookups(&topology, keys, &slots, self.max_batch);
        let mut alive = vec![false; keys.len()];
        let outcomes = self
            .send_groups(groups, |part, reply| read_lookup(part, reply, &mut alive))
            .await;
        let retry = match self.settle(op, outcomes) {
            Ok(retry) => retry,
            Err(failure) => return failure.into(),
        };
        if !retry.is_empty() {
            // Each command again as it was: redis-rs routes it by its one slot.
            let commands = retry
                .iter()
                .map(|part| plan::lookup_command(keys, part.slot, &part.positions).0)
                .collect();
            for (part, reply) in retry.iter().zip(self.resend(commands).await) {
                let read = reply.and_then(|value| match read_lookup(part, &value, &mut alive) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(unexpected(&value)),
                    Err(error) => Err(error),
                });
                if let Err(error) = read {
                    return self.failed(op, &error).into();
                }
            }
        }
        // "Dead" answers are vouched for by their slots' records and masters' markers, read
        // after them; a batch where every runtime is alive needs none.
        let mut dead_slots: Vec<u16> = (0..keys.len())
            .filter(|&position| !alive[position])
            .map(|position| slots[position])
            .collect();
        if !dead_slots.is_empty() {
            dead_slots.sort_unstable();
            dead_slots.dedup();
            match self.vouch(&dead_slots).await {
                Ok(true) => {}
                Ok(false) => {
                    return Attempt::answered(Err(Error::backend(
                        op,
                        "a slot's epoch record could not be read beside its master's marker, \
                         so its \"dead\" answers cannot be trusted; retry",
                    )));
                }
                Err(failure) => return failure.into(),
            }
        }
        // A record present now was written after any loss, so "alive" stands; "dead" may be a
        // lost record until every live runtime has beaten again.
        if let Some(remaining) = self.losses.recovering_for()
            && alive.contains(&false)
        {
            return Attempt::answered(Err(Error::Recovering { remaining }));
        }
        Attempt::answered(Ok(alive))
    }

    /// The whole of `touch_many` once the input is checked.
    pub(super) async fn write(&self, beats: &[(&str, Duration)]) -> Attempt<()> {
        let op = "touch_many";
        let now_ms = unix_ms();
        let keys: Vec<Vec<u8>> = beats.iter().map(|(id, _)| self.key(id)).collect();
        let slots = self.slots(&keys);
        let topology = self.topology.current();
        let groups = plan::writes(&topology, &self.losses, &slots, |position| {
            set_command(&keys[position], beats[position].1, now_ms)
        });
        let outcomes = self
            .send_groups(groups, |part, reply| match reply {
                Value::ServerError(error) if redirected(error.kind()) => Ok(false),
                // The slot's record, read after the writes: a loss there stops the coalescing
                // of a layered store above (invariant 4).
                _ if part.check.is_some() => {
                    let _ = self.observe_record(part, reply);
                    Ok(true)
                }
                Value::Okay => Ok(true),
                Value::SimpleString(text) if text == "OK" => Ok(true),
                other => Err(unexpected(other)),
            })
            .await;
        let retry = match self.settle(op, outcomes) {
            Ok(retry) => retry,
            Err(failure) => return failure.into(),
        };
        if !retry.is_empty() {
            let commands = retry
                .iter()
                .flat_map(|part| &part.positions)
                .map(|&position| set_command(&keys[position], beats[position].1, now_ms))
                .collect();
            for reply in self.resend(commands).await {
                if let Err(error) = reply {
                    return self.failed(op, &error).into();
                }
            }
        }
        Attempt::answered(Ok(()))
    }

    /// One single-key command, routed and redirected by redis-rs.
    pub(super) async fn single(&self, op: &'static str, command: Cmd) -> Attempt<()> {
        match self.resend_one(&command).await {
            Ok(_) => Attempt::answered(Ok(())),
            Err(error) => {
                if !server_answered(&error) || is_redirect(&error) {
                    self.refresh_topology();
                }
                self.failed(op, &error).into()
            }
        }
    }

    /// At connect: creates the epoch records that are missing, all with one value, and reads
    /// every one, so that each is first seen with the recovery window of a store that has
    /// written nothing yet (the floor), as `RedisStore` sees its one record at connect; loads
    /// the store's marker into every master and reads its uptime.
    pub(super) async fn first_look(&self, timeout: Duration) -> Result<()> {
        let op = "connect";
        let look = async {
            let topology = self.topology.current();
            let groups = plan::record_creation(&topology, &self.losses.records, &fresh_value());
            let outcomes = self
                .send_groups(groups, |part, reply| match (reply, part.check) {
                    (Value::ServerError(error), _) if redirected(error.kind()) => Ok(false),
                    (Value::ServerError(_), _) => Err(unexpected(reply)),
                    (_, Some(check)) => {
                        let (_, _) = self.losses.observe_record(check, reply);
                        Ok(true)
                    }
                    (_, None) => Ok(true),
                })
                .await;
            // A record whose slot moved meanwhile is read, and if need be created, later.
            if let Err(failure) = self.settle(op, outcomes) {
                return Err(failure.error);
            }
            for (slot, master) in topology.one_slot_each() {
                self.reach(slot, master)
                    .await
                    .map_err(|error| self.backend_error(op, &error))?;
            }
            Ok(())
        };
        tokio::time::timeout(timeout, look)
            .await
            .map_err(|_| Error::Timeout { op, after: timeout })?
    }

    /// At connect, on the master of `slot`: loads the marker and reads the uptime. A master
    /// that refuses either (an ACL) leaves that detector off, which is logged; an error that is
    /// no reply fails the connect.
    async fn reach(&self, slot: u16, master: &str) -> std::result::Result<(), RedisError> {
        let route = || {
            redis::cluster_routing::RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                Route::new(slot, SlotAddr::Master),
            ))
        };
        let Some(mut connection) = self.connection.get() else {
            return Err(not_connected());
        };
        match connection
            .route_command(self.losses.marker.load_command(), route())
            .await
        {
            Ok(reply) => {
                if self.losses.marker.loaded(&reply) {
                    self.losses.reached(master);
                }
            }
            Err(error) if server_answered(&error) => tracing::warn!(
                error = %crate::redact::scrub(&error.to_string(), &self.seeds),
                "liveness store: a cluster master refuses SCRIPT LOAD, so its restart from a \
                 snapshot or a failover to a replica that is behind goes unnoticed; grant \
                 +script|load and +script|exists"
            ),
            Err(error) => return Err(error),
        }
        let info = redis::cmd("INFO").arg("server").clone();
        match connection.route_command(info, route()).await {
            Ok(Value::BulkString(bytes)) => {
                if let Some(uptime) = uptime(&String::from_utf8_lossy(&bytes)) {
                    self.losses.uptime(uptime);
                }
            }
            Ok(_) => {}
            Err(error) if server_answered(&error) => {}
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// After a loss, or a record found missing: creates every missing record again, together,
    /// and reads every record, in the background, one sweep at a time. Records read for the
    /// first time after that are young, so "dead" beside them waits out the recovery window;
    /// losses the sweep finds belong to the event that started it (see `loss`).
    ///
    /// `event` says the sweep was claimed already, by the loss that asks for it.
    pub(super) fn sweep_soon(&self, event: bool) {
        if !event && !self.losses.begin_sweep() {
            return;
        }
        let Some(connection) = self.connection.get() else {
            self.losses.end_sweep();
            return;
        };
        let topology = self.topology.current();
        let groups = plan::record_creation(&topology, &self.losses.records, &fresh_value());
        let timeout = self.op_timeout;
        let losses = std::sync::Arc::clone(&self.losses);
        tokio::spawn(async move {
            let sends = groups.into_iter().map(|group| {
                let mut connection = connection.clone();
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(
                    group.route_slot,
                    SlotAddr::Master,
                ));
                let parts = group.parts;
                async move {
                    // Best effort: a record still missing is created after the next read.
                    let sent = connection.route_pipeline(group.pipeline, 0, group.commands, route);
                    (parts, tokio::time::timeout(timeout, sent).await)
                }
            });
            for (parts, replies) in join_all(sends).await {
                let Ok(Ok(replies)) = replies else { continue };
                for (part, reply) in parts.iter().zip(&replies) {
                    if let Some(check) = part.check {
                        let (_, _) = losses.observe_record(check, reply);
                    }
                }
            }
            losses.end_sweep();
        });
    }
}
