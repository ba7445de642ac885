//! Cross-instance invalidation of `forget`: a Redis pub/sub channel that tells every other
//! instance to drop its local knowledge of a forgotten runtime.
//!
//! Without it, an instance that cached a remote "alive" answer, or that took touches of the
//! runtime itself, keeps answering "alive" after another instance's `forget` until its entry
//! lapses: up to `remote_positive_ttl` for a cached answer, up to the ttl for its own touches.
//!
//! Only `forget` publishes. A touch never does: a two-level cache that broadcasts every write
//! floods the channel with one message per beat to every instance, which is the cost the local
//! layer exists to avoid; touches need no invalidation anyway, because "alive" answers only
//! ever lag behind a runtime that stopped beating by the bounds the settings state.
//!
//! This file holds the public settings, the wire format and the publishing side; the receiving
//! side is `subscriber.rs`.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::log_limit::LogLimit;
use crate::redact::{redact_url, scrub};
use crate::{Error, Result};
use tokio_util::task::AbortOnDropHandle;

/// The channel's suffix after the key prefix; the NUL keeps it out of the id space, as the
/// epoch key's does.
const CHANNEL_SUFFIX: &[u8] = b"\0forget";

/// Hex digits of the sender id that starts every message.
const SENDER_LEN: usize = 16;

/// Redis to announce `forget`s on, so that other [`LayeredStore`](crate::LayeredStore)
/// instances over the same Redis drop the runtime at once; see
/// [`LayeredStoreBuilder::forget_broadcast`](crate::LayeredStoreBuilder::forget_broadcast).
///
/// The channel is `<key prefix>`, a NUL byte, `forget` (the key prefix of the records, e.g.
/// [`DEFAULT_KEY_PREFIX`](crate::DEFAULT_KEY_PREFIX)): outside the id space, like the epoch
/// key, and shared by every instance that shares the records. Pub/sub channels are not scoped
/// by database number: instances on other databases of the same Redis with the same prefix
/// would drop each other's entries too, which costs remote calls, never a wrong answer.
///
/// Give one URL for a single Redis. For a Redis Cluster, give its seed nodes: a classic
/// `PUBLISH` reaches the subscribers of every node over the cluster bus, so publishing through
/// any node and subscribing on any one node is enough; when a node fails, the next URL is
/// tried. `rediss://` URLs use redis-rs's default trust roots.
///
/// Messages sent while an instance is disconnected are lost; that instance then drops the
/// runtime when its entry lapses, as without the broadcast (bounded staleness, never a wrong
/// "dead").
#[derive(Clone)]
pub struct ForgetBroadcast {
    urls: Vec<String>,
    clients: Vec<redis::Client>,
    key_prefix: String,
}

impl ForgetBroadcast {
    /// The broadcast over the Redis at `urls` (one, or a cluster's seed nodes) for records
    /// under `key_prefix` (the `RedisStore`'s key prefix).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty list or a URL that does not parse (its password
    /// redacted). Nothing connects yet: the store connects when it is built.
    pub fn new(
        urls: impl IntoIterator<Item = impl Into<String>>,
        key_prefix: impl Into<String>,
    ) -> Result<ForgetBroadcast> {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err(Error::Config(
                "forget_broadcast needs at least one Redis URL".to_owned(),
            ));
        }
        let clients = urls
            .iter()
            .map(|url| {
                redis::Client::open(url.as_str()).map_err(|error| {
                    Error::Config(format!(
                        "forget_broadcast: invalid Redis URL {}: {}",
                        redact_url(url),
                        scrub(&error.to_string(), url)
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(ForgetBroadcast {
            urls,
            clients,
            key_prefix: key_prefix.into(),
        })
    }

    /// The pub/sub channel: `<key prefix>`, a NUL byte, `forget`.
    #[must_use]
    pub fn channel(&self) -> Vec<u8> {
        let mut channel = self.key_prefix.as_bytes().to_vec();
        channel.extend_from_slice(CHANNEL_SUFFIX);
        channel
    }

    pub(super) fn clients(&self) -> &[redis::Client] {
        &self.clients
    }

    /// The redacted URL of the client at `index`, for log lines.
    pub(super) fn name(&self, index: usize) -> String {
        redact_url(&self.urls[index])
    }

    /// `message` without any password of these URLs.
    pub(super) fn scrub(&self, message: &str) -> String {
        self.urls
            .iter()
            .fold(message.to_owned(), |clean, url| scrub(&clean, url))
    }
}

impl fmt::Debug for ForgetBroadcast {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|url| redact_url(url)).collect();
        f.debug_struct("ForgetBroadcast")
            .field("urls", &urls)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// One store's end of the broadcast: who it is, how it publishes, and its subscriber.
pub(super) struct Link {
    pub(super) broadcast: ForgetBroadcast,
    pub(super) channel: Vec<u8>,
    /// Starts every message this instance sends, so that its subscriber can skip them: the
    /// instance has already dropped the runtime itself.
    pub(super) sender: String,
    /// The publishing connection, opened by the first `forget` and after a failure, with the
    /// `next_url` count it was opened at, which names it. A parking_lot lock, never held
    /// across an await: dropping a failed connection must never wait, or a forget would
    /// outlive its deadline behind another forget's connect.
    connection: parking_lot::Mutex<Option<Opened>>,
    /// Held across a connect, so that concurrent forgets share one connect instead of opening
    /// one each; every wait for it lies within the waiting forget's deadline.
    connecting: tokio::sync::Mutex<()>,
    /// Counts the failed URLs: the next connect uses `next_url % urls`. Each failure moves it
    /// on once, whoever sees it: a failure advances it only from the count the failed
    /// connection (or connect) was made at.
    next_url: AtomicUsize,
    publish_log: LogLimit,
    /// Ends the subscriber task when the store is dropped.
    pub(super) subscriber: OnceLock<AbortOnDropHandle<()>>,
}

/// A publishing connection and the `next_url` count it was opened at.
struct Opened {
    url: usize,
    connection: MultiplexedConnection,
}

impl Link {
    pub(super) fn new(broadcast: ForgetBroadcast) -> Link {
        Link {
            channel: broadcast.channel(),
            broadcast,
            sender: new_sender_id(),
            connection: parking_lot::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_url: AtomicUsize::new(0),
            publish_log: LogLimit::new(),
            subscriber: OnceLock::new(),
        }
    }

    /// Publishes the forget of `runtime_id`: one `PUBLISH`, connect included, bounded by
    /// `timeout`: every step, waits for another forget's connect included, runs against one
    /// deadline, and what follows a failure never waits. Failures are logged, rate-limited:
    /// `forget` has no error to return, and every other instance still drops the runtime
    /// when its entry lapses.
    pub(super) async fn publish(&self, runtime_id: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let payload = encode(&self.sender, runtime_id);
        let result = match self.try_publish(&payload, timeout, deadline).await {
            // The connection kept from an earlier forget died since (a restart, a failed
            // node), unnoticed because nothing else uses it: one more try, on a fresh
            // connection to the next URL, within the same deadline, so that the first forget
            // after a restart is not lost. (If the first `PUBLISH` did arrive, a second drop
            // of the runtime is harmless.)
            Err(Failure {
                error: Some(error),
                culprit: Culprit::Connection(url),
                reused: true,
            }) if error.is_unrecoverable_error() => {
                self.discard(Culprit::Connection(url));
                self.try_publish(&payload, timeout, deadline).await
            }
            result => result,
        };
        let Err(failure) = result else { return };
        // The connection (or URL) that failed may be dead or hung (a paused node): the next
        // forget connects afresh, to the next URL. A forget that timed out waiting for
        // another's connect blames nothing: that connect's own forget does.
        let url = self.discard(failure.culprit);
        let error = match failure.error {
            Some(error) => self.broadcast.scrub(&error.to_string()),
            None => format!("timed out after {timeout:?}"),
        };
        if let Some(suppressed) = self.publish_log.allow() {
            tracing::warn!(
                backend = %self.broadcast.name(url),
                error = %error,
                suppressed,
                "liveness forget broadcast failed; other instances drop the runtime when \
                 their entries lapse"
            );
        }
    }

    /// Drops the failed connection, if it is still the one kept, and moves on to the next URL
    /// (for a cluster, another node); returns the index of the URL that failed. A connection
    /// opened since by another forget stays, and the URL moves on once however many forgets
    /// saw the failure: one forget's failure must not discard a connection that works.
    fn discard(&self, culprit: Culprit) -> usize {
        let url = match culprit {
            Culprit::Nothing => return self.url_index(self.next_url.load(Ordering::Relaxed)),
            // The connect moved the URL on itself, before the next connect could start.
            Culprit::Connect(url) => return self.url_index(url),
            Culprit::Connection(url) => url,
        };
        // Under the slot's lock, so that a connect, which reads the count under it when it
        // finds the slot empty, never opens a connection named like the dropped one.
        let mut slot = self.connection.lock();
        if slot.as_ref().is_some_and(|opened| opened.url == url) {
            *slot = None;
            self.advance(url);
        }
        self.url_index(url)
    }

    /// Moves on from the URL at count `url`, unless a failure did already.
    fn advance(&self, url: usize) {
        let _ = self.next_url.compare_exchange(
            url,
            url.wrapping_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn url_index(&self, url: usize) -> usize {
        url % self.broadcast.clients.len()
    }

    /// The kept connection, if any.
    fn kept(&self) -> Option<(usize, MultiplexedConnection)> {
        let slot = self.connection.lock();
        slot.as_ref()
            .map(|opened| (opened.url, opened.connection.clone()))
    }

    async fn try_publish(
        &self,
        payload: &[u8],
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let (url, mut connection, reused) = match self.kept() {
            Some((url, connection)) => (url, connection, true),
            None => self.connect(timeout, deadline).await?,
        };
        // The reply counts the receivers on the node that took it (on a cluster, not all of
        // them), so it proves nothing either way.
        let mut command = redis::cmd("PUBLISH");
        command.arg(&self.channel).arg(payload);
        let publish = command.query_async::<i64>(&mut connection);
        match tokio::time::timeout_at(deadline, publish).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(Failure::new(Some(error), Culprit::Connection(url), reused)),
            Err(_) => Err(Failure::new(None, Culprit::Connection(url), reused)),
        }
    }

    /// Opens the publishing connection and keeps it, or takes the one another forget opened
    /// while this one waited its turn.
    async fn connect(
        &self,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(usize, MultiplexedConnection, bool), Failure> {
        let _turn = tokio::time::timeout_at(deadline, self.connecting.lock())
            .await
            .map_err(|_| Failure::new(None, Culprit::Nothing, false))?;
        // Read with the slot under one lock: a discard empties it and moves the count on at
        // once, so the count read here names no connection opened before.
        let url = {
            let slot = self.connection.lock();
            if let Some(opened) = &*slot {
                return Ok((opened.url, opened.connection.clone(), false));
            }
            self.next_url.load(Ordering::Relaxed)
        };
        let client = &self.broadcast.clients[self.url_index(url)];
        // The connection keeps this response timeout for its later `PUBLISH`es too.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let connecting = client.get_multiplexed_async_connection_with_config(&config);
        let error = match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(connection)) => {
                *self.connection.lock() = Some(Opened {
                    url,
                    connection: connection.clone(),
                });
                return Ok((url, connection, false));
            }
            Ok(Err(error)) => Some(error),
            Err(_) => None,
        };
        // Moved on while this forget still holds the turn, so that the next connect, whoever
        // makes it, tries the next URL.
        self.advance(url);
        Err(Failure::new(error, Culprit::Connect(url), false))
    }
}

/// A failed publish: the error (`None` when the deadline passed), what to blame, and whether
/// it went over a connection opened by an earlier forget.
struct Failure {
    error: Option<redis::RedisError>,
    culprit: Culprit,
    reused: bool,
}

impl Failure {
    fn new(error: Option<redis::RedisError>, culprit: Culprit, reused: bool) -> Failure {
        Failure {
            error,
            culprit,
            reused,
        }
    }
}

/// What a failed publish blames, by the `next_url` count it was made at.
#[derive(Clone, Copy)]
enum Culprit {
    /// Nothing: the deadline passed while another forget was connecting.
    Nothing,
    /// The connect to the URL at that count, which moved the count on itself.
    Connect(usize),
    /// The kept connection opened at that count.
    Connection(usize),
}

/// 64 random bits as 16 hex digits, from the standard library's randomly keyed hasher (each
/// `RandomState` gets new keys), so that no random-number crate is needed.
fn new_sender_id() -> String {
    format!("{:016x}", RandomState::new().hash_one(std::process::id()))
}

/// A message: the sender id, `:`, the runtime id.
pub(super) fn encode(sender: &str, runtime_id: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(SENDER_LEN + 1 + runtime_id.len());
    payload.extend_from_slice(sender.as_bytes());
    payload.push(b':');
    payload.extend_from_slice(runtime_id.as_bytes());
    payload
}

/// The sender and runtime id of a message, if it is one. The id may hold `:` itself: the
/// sender id has a fixed length, so the first `:` after it is the separator.
pub(super) fn decode(payload: &[u8]) -> Option<(&[u8], &str)> {
    if payload.len() <= SENDER_LEN || payload[SENDER_LEN] != b':' {
        return None;
    }
    let (sender, rest) = payload.split_at(SENDER_LEN);
    let runtime_id = std::str::from_utf8(&rest[1..]).ok()?;
    Some((sender, runtime_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_any_id() {
        let sender = new_sender_id();
        assert_eq!(sender.len(), SENDER_LEN);
        assert_ne!(sender, new_sender_id(), "each instance draws its own");
        for id in ["rt-1", "a:b:c", "with space\r\n", "{tag}*", "ünï"] {
            let payload = encode(&sender, id);
            assert_eq!(decode(&payload), Some((sender.as_bytes(), id)));
        }
        assert_eq!(decode(b"short:rt"), None);
        assert_eq!(decode(b"0123456789abcdef-rt"), None);
        assert_eq!(
            decode(b"0123456789abcdef:"),
            Some((&b"0123456789abcdef"[..], ""))
        );
    }

    #[test]
    fn the_channel_lies_outside_the_id_space_and_urls_are_checked() {
        let broadcast = ForgetBroadcast::new(["redis://:s3cret@127.0.0.1:6379/"], "p:").unwrap();
        assert_eq!(broadcast.channel(), b"p:\0forget");
        let debug = format!("{broadcast:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(matches!(
            ForgetBroadcast::new(Vec::<String>::new(), "p:"),
            Err(Error::Config(_))
        ));
        let bad = ForgetBroadcast::new(
            ["redis://:s3cret@127.0.0.1:6379/", "nope://:s3cret@x"],
            "p:",
        );
        match bad {
            Err(Error::Config(message)) => assert!(!message.contains("s3cret"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
