//! Restarts and failovers that keep the epoch record: a marker in the server's script cache.
//!
//! A Redis that restarts from an RDB snapshot or an AOF file comes back with the epoch record
//! and an older copy of every other record: writes since the snapshot are gone, yet nothing in
//! the keyspace says so. A replica promoted in a failover holds the epoch its master replicated,
//! and may be a few writes behind (replication is asynchronous). Both are a server this store
//! has not talked to before, holding data that may lack what the fleet wrote.
//!
//! The server's Lua script cache tells them apart: it is neither saved in snapshots nor
//! replicated (Redis 7 and later, Valkey), and `FLUSHALL` keeps it. So when a store first
//! reaches a server it loads a script of its own there (`SCRIPT LOAD` of a body unique to the
//! store), and every pipeline that vouches for "dead" answers or carries writes asks, after the
//! keys, whether the server still holds it (`SCRIPT EXISTS`). A server without it is not the
//! one the store loaded it into: the server restarted, whatever its persistence, or another
//! one took over, or someone ran `SCRIPT FLUSH`. Each counts as a possible loss. The marker is
//! per store, so each instance notices on its own, at its next call, through proxies and
//! client-side reconnects alike; it costs one short command per such pipeline.
//!
//! A server that refuses scripts (an ACL without `+script|load +script|exists`, a managed
//! service) leaves the store without this detector, which it logs once at connect.

use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;
use redis::{Cmd, Pipeline, Value};

/// This store's script: a body unique to it, and the SHA1 the server named it by.
#[derive(Debug)]
pub(crate) struct Marker {
    body: String,
    sha: Mutex<Option<String>>,
}

impl Marker {
    pub(crate) fn new() -> Marker {
        let random = RandomState::new().hash_one(std::process::id());
        Marker {
            body: format!("return 'liveness-store marker {random:016x}'"),
            sha: Mutex::new(None),
        }
    }

    /// `SCRIPT LOAD` of the marker.
    pub(crate) fn load_command(&self) -> Cmd {
        let mut command = redis::cmd("SCRIPT");
        command.arg("LOAD").arg(&self.body);
        command
    }

    /// Takes the reply of a [`load_command`](Self::load_command): the script's SHA1. Whether it
    /// was one.
    pub(crate) fn loaded(&self, reply: &Value) -> bool {
        let sha = match reply {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(text) => text.clone(),
            _ => return false,
        };
        *self.sha.lock() = Some(sha);
        true
    }

    /// The marker's SHA1, once a server has loaded it.
    fn sha(&self) -> Option<String> {
        self.sha.lock().clone()
    }
}

/// What this store knows of one server (a single Redis, or one master of a cluster): whether
/// its marker is there, as of which change.
///
/// A new one expects the marker: built when the store loads it into a server it connects to.
/// A server first reached later (a cluster's master that was not one at connect) lacks it, and
/// that counts: it may be a replica promoted behind its master.
#[derive(Debug, Default)]
pub(crate) struct Incarnation {
    state: Mutex<IncarnationState>,
}

#[derive(Debug, Default)]
struct IncarnationState {
    /// Counts what changed, so that a reply to a pipeline built before the latest change is
    /// not read as news: the same restart is counted once.
    generation: u64,
    /// The marker has to be loaded (again): until a pipeline that loads it returns, a missing
    /// marker is what the store expects, not news.
    reloading: bool,
}

/// What a pipeline's marker commands added, and the state they were built on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IncarnationCheck {
    /// Replies the marker commands add: `SCRIPT EXISTS`, and `SCRIPT LOAD` while reloading.
    pub(crate) replies: usize,
    generation: u64,
}

/// What one pipeline's marker replies told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The marker is there: the server is the one the store loaded it into.
    Same,
    /// The marker is gone: the server restarted or was replaced since. A possible loss.
    Replaced,
    /// The marker was loaded again, as expected after a replacement, or on a server the store
    /// had not reached before.
    Loaded,
    /// A concurrent call moved the state on meanwhile, or the reply was no answer.
    Stale,
}

impl Incarnation {
    /// Appends the marker check to `pipeline`, after the keys it vouches for: `SCRIPT EXISTS`,
    /// and while the marker has to be loaded again, `SCRIPT LOAD`. `None` (nothing added) when
    /// no server has loaded the marker: scripts are refused, the detector is off.
    pub(crate) fn add_check(
        &self,
        marker: &Marker,
        pipeline: &mut Pipeline,
    ) -> Option<IncarnationCheck> {
        let sha = marker.sha()?;
        let state = self.state.lock();
        pipeline.cmd("SCRIPT").arg("EXISTS").arg(sha);
        if state.reloading {
            pipeline.add_command(marker.load_command());
        }
        Some(IncarnationCheck {
            replies: 1 + usize::from(state.reloading),
            generation: state.generation,
        })
    }

    /// Takes the replies of `check`'s commands (the `SCRIPT EXISTS`, then any `SCRIPT LOAD`).
    pub(crate) fn observe(&self, check: IncarnationCheck, replies: &[Value]) -> Seen {
        let present = match replies.first() {
            Some(Value::Array(flags)) => matches!(flags.first(), Some(Value::Int(1))),
            _ => return Seen::Stale,
        };
        let loaded_now = check.replies == 2
            && matches!(
                replies.get(1),
                Some(Value::BulkString(_) | Value::SimpleString(_))
            );
        let mut state = self.state.lock();
        if check.generation != state.generation {
            // Built before the latest change: a restart that this reply may show has already
            // been counted, or will show in the next call. (A second restart within the few
            // milliseconds of a reload would go uncounted; the window the first one opened
            // covers it.)
            return Seen::Stale;
        }
        if present && !state.reloading {
            return Seen::Same;
        }
        if state.reloading {
            if present || loaded_now {
                state.reloading = false;
                state.generation += 1;
                return Seen::Loaded;
            }
            return Seen::Stale;
        }
        state.reloading = true;
        state.generation += 1;
        Seen::Replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exists(present: bool) -> Value {
        Value::Array(vec![Value::Int(i64::from(present))])
    }

    fn sha() -> Value {
        Value::BulkString(b"0123".to_vec())
    }

    fn marker() -> Marker {
        let marker = Marker::new();
        assert!(marker.loaded(&sha()));
        marker
    }

    #[test]
    fn each_store_has_its_own_marker() {
        assert_ne!(Marker::new().body, Marker::new().body);
        let unloaded = Marker::new();
        assert!(!unloaded.loaded(&Value::Nil));
        assert!(
            Incarnation::default()
                .add_check(&unloaded, &mut redis::pipe())
                .is_none(),
            "no marker loaded: no check"
        );
    }

    #[test]
    fn a_missing_marker_is_one_replacement_then_it_is_loaded_again() {
        let marker = marker();
        let server = Incarnation::default();
        let check = server.add_check(&marker, &mut redis::pipe()).unwrap();
        assert_eq!(check.replies, 1);
        assert_eq!(server.observe(check, &[exists(true)]), Seen::Same);
        // Two calls in flight across a restart: the first reply counts, the second is stale.
        let first = server.add_check(&marker, &mut redis::pipe()).unwrap();
        let second = server.add_check(&marker, &mut redis::pipe()).unwrap();
        assert_eq!(server.observe(first, &[exists(false)]), Seen::Replaced);
        assert_eq!(server.observe(second, &[exists(false)]), Seen::Stale);
        // Until a load comes back, a missing marker is expected.
        let loading = server.add_check(&marker, &mut redis::pipe()).unwrap();
        let also_loading = server.add_check(&marker, &mut redis::pipe()).unwrap();
        assert_eq!(loading.replies, 2, "reloading: SCRIPT LOAD too");
        assert_eq!(
            server.observe(loading, &[exists(false), sha()]),
            Seen::Loaded
        );
        assert_eq!(
            server.observe(also_loading, &[exists(true), sha()]),
            Seen::Stale
        );
        // Loaded: the next restart is news again.
        let check = server.add_check(&marker, &mut redis::pipe()).unwrap();
        assert_eq!(check.replies, 1);
        assert_eq!(server.observe(check, &[exists(false)]), Seen::Replaced);
    }

    #[test]
    fn a_server_never_reached_counts_and_an_error_reply_tells_nothing() {
        let marker = marker();
        let server = Incarnation::default();
        let check = server.add_check(&marker, &mut redis::pipe()).unwrap();
        assert_eq!(
            server.observe(check, &[Value::Nil]),
            Seen::Stale,
            "no answer"
        );
        let check = server.add_check(&marker, &mut redis::pipe()).unwrap();
        assert_eq!(server.observe(check, &[exists(false)]), Seen::Replaced);
    }
}
