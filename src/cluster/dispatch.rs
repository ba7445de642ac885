//! Sending a call's pipelines, one per master, and following the cluster's redirects.
//!
//! redis-rs follows a redirect of any command in a pipeline with the whole pipeline, so a
//! master that serves some of its slots but not others answers with an error: that master's
//! commands go again one by one, each routed by redis-rs to its slot's master (following one
//! `MOVED` or `ASK`), and the store fetches its slot map again meanwhile.

use futures_util::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ErrorKind, RedisError, ServerErrorKind, Value};

use super::Inner;
use super::loss::{Next, Read};
use super::plan::{Group, Part};
use crate::redact::scrub;
use crate::remote::{Attempt, Failure, server_answered};
use crate::{Error, Result};

/// What became of one master's pipeline.
pub(super) enum GroupOutcome {
    /// Every command answered; `retry` holds the commands whose slot moved, to send again.
    Answered { retry: Vec<Part> },
    /// The master (or the way to it) failed; `answered` says whether a server replied.
    Failed { error: RedisError, answered: bool },
}

impl Inner {
    pub(super) fn timed_out(&self, op: &'static str) -> Error {
        Error::Timeout {
            op,
            after: self.op_timeout,
        }
    }

    pub(super) fn backend_error(&self, op: &'static str, error: &RedisError) -> Error {
        if error.is_timeout() {
            return self.timed_out(op);
        }
        // The client library's text could quote a seed URL.
        Error::backend(op, scrub(&error.to_string(), &self.seeds))
    }

    /// A failure of `error` on a call named `op`.
    pub(super) fn failed(&self, op: &'static str, error: &RedisError) -> Failure {
        Failure {
            error: self.backend_error(op, error),
            answered: server_answered(error),
        }
    }

    /// Runs `call` behind the breaker and within the op timeout (invariant 5).
    pub(super) async fn guarded<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Attempt<T>>,
    ) -> Result<T> {
        let permit = self.breaker.admit()?;
        let attempt = match tokio::time::timeout(self.op_timeout, call).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::failed(self.timed_out(op), false),
        };
        permit.record(attempt.answered);
        if !attempt.answered {
            // Twice in a row: the master may be gone, and the connection stuck on it (see
            // `connection`). Once may be a slow reply.
            if self.breaker.status().consecutive_failures >= 2 {
                self.connection.replace_soon();
            }
            self.refresh_topology();
        }
        attempt.result
    }

    /// Fetches the slot map again soon (at most every 100 ms, in the background).
    pub(super) fn refresh_topology(&self) {
        if let Some(connection) = self.connection.get() {
            self.topology.refresh_soon(&connection, self.op_timeout);
        }
    }

    /// Sends every group's pipeline to its master at once and reads each command's reply
    /// with `answer`, which says whether the reply is an answer (else it is a redirect, and
    /// the command is sent again on its own). A group's marker check, at its end, is read
    /// here.
    pub(super) async fn send_groups(
        &self,
        groups: Vec<Group>,
        mut answer: impl FnMut(&Part, &Value) -> std::result::Result<bool, RedisError>,
    ) -> Vec<GroupOutcome> {
        let sends = groups.into_iter().map(|group| {
            let Group {
                route_slot,
                pipeline,
                commands,
                parts,
                marker,
            } = group;
            let connection = self.connection.get();
            let route =
                SingleNodeRoutingInfo::SpecificNode(Route::new(route_slot, SlotAddr::Master));
            async move {
                let reply = match connection {
                    Some(mut connection) => {
                        connection
                            .route_pipeline(pipeline, 0, commands, route)
                            .await
                    }
                    None => Err(not_connected()),
                };
                (parts, marker, commands, reply)
            }
        });
        let mut outcomes = Vec::new();
        for (parts, marker, commands, reply) in join_all(sends).await {
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
            let (answers, marker_replies) = replies.split_at(parts.len());
            let mut retry = Vec::new();
            let mut failure = None;
            for (part, reply) in parts.into_iter().zip(answers) {
                match answer(&part, reply) {
                    Ok(true) => {}
                    Ok(false) => retry.push(part),
                    Err(error) => failure = Some(error),
                }
            }
            if let Some(check) = &marker
                && self.losses.observe_marker(check, marker_replies) == Next::Sweep
            {
                self.sweep_soon(true);
            }
            outcomes.push(match failure {
                Some(error) => GroupOutcome::Failed {
                    error,
                    answered: true,
                },
                None => GroupOutcome::Answered { retry },
            });
        }
        outcomes
    }

    /// Takes the reply of an epoch record read: what it says of the "dead" answers before it,
    /// and a sweep of the records if it showed a loss or a missing record.
    pub(super) fn observe_record(&self, part: &Part, reply: &Value) -> Read {
        let Some(check) = part.check else {
            return Read {
                vouches: false,
                missing: false,
            };
        };
        let (read, next) = self.losses.observe_record(check, reply);
        if next == Next::Sweep {
            self.sweep_soon(true);
        } else if read.missing {
            self.sweep_soon(false);
        }
        read
    }

    /// Sends `commands` one by one, at once, each routed by redis-rs by its keys' slot to
    /// wherever it finds it now (following one `MOVED` or `ASK`), and refreshes the store's own
    /// slot map meanwhile.
    pub(super) async fn resend(
        &self,
        commands: Vec<Cmd>,
    ) -> Vec<std::result::Result<Value, RedisError>> {
        self.refresh_topology();
        join_all(commands.iter().map(|command| self.resend_one(command))).await
    }

    pub(super) async fn resend_one(&self, command: &Cmd) -> std::result::Result<Value, RedisError> {
        let Some(mut connection) = self.connection.get() else {
            return Err(not_connected());
        };
        connection
            .req_packed_command(command)
            .await
            .and_then(Value::extract_error)
    }

    /// Folds the groups' outcomes into one: the first failure, else the commands to send
    /// again. A failed master also makes the store refresh its slot map: it may have failed
    /// over.
    pub(super) fn settle(
        &self,
        op: &'static str,
        outcomes: Vec<GroupOutcome>,
    ) -> std::result::Result<Vec<Part>, Failure> {
        let mut retry = Vec::new();
        for outcome in outcomes {
            match outcome {
                GroupOutcome::Answered { retry: parts } => retry.extend(parts),
                GroupOutcome::Failed { error, answered } => {
                    self.refresh_topology();
                    return Err(Failure {
                        error: self.backend_error(op, &error),
                        answered,
                    });
                }
            }
        }
        Ok(retry)
    }
}

/// Whether a server error says the key is served elsewhere or not right now: the command
/// may succeed when sent again (to the right master, or after a failover or reshard step).
pub(super) fn redirected(kind: Option<ServerErrorKind>) -> bool {
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

pub(super) fn is_redirect(error: &RedisError) -> bool {
    match error.kind() {
        ErrorKind::Server(kind) => redirected(Some(kind)),
        _ => false,
    }
}

/// The error of a call made before the cluster was first reached (the breaker keeps calls out
/// until then; a race may still get here).
pub(super) fn not_connected() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the cluster has not been reached yet",
    ))
}

pub(super) fn unexpected(reply: &Value) -> RedisError {
    match reply.clone().extract_error() {
        Err(error) => error,
        Ok(other) => RedisError::from((ErrorKind::Parse, "unexpected reply", format!("{other:?}"))),
    }
}
