//! The receiving side of the forget broadcast: a task that stays subscribed to the channel
//! and drops the local entry of every runtime another instance forgot.
//!
//! The task holds only a `Weak` to the store's shared state, so it never keeps a dropped store
//! alive, and the state owns an `AbortOnDropHandle` that ends the task with it, even while the task
//! waits on a read that may never return. Any failure (a Redis restart, a failed node, a
//! connection gone silent) leads to a new connection, to the next URL, after a backoff of
//! 50 ms doubling to 1 s.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::Stream;
use redis::aio::{PubSub, PubSubStream};
use tokio_util::task::AbortOnDropHandle;

use super::Shared;
use crate::log_limit::LogLimit;
use crate::stats::Counters;
use crate::{LivenessStore, validate};

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// The longest a connect and `SUBSCRIBE` may take before the next URL is tried.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);
/// A connection that brought no message for this long is pinged: a half-open connection (a
/// node gone without closing it) delivers nothing and reports no error either.
const KEEPALIVE: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Starts the subscriber of the store whose state is `shared` on `runtime`; it ends when the
/// state is dropped.
pub(super) fn spawn<R: LivenessStore + 'static>(
    runtime: &tokio::runtime::Handle,
    shared: &Arc<Shared<R>>,
) {
    let Some(link) = &shared.broadcast else {
        return;
    };
    let task = runtime.spawn(run(Arc::downgrade(shared)));
    let _ = link.subscriber.set(AbortOnDropHandle::new(task));
}

/// Why a subscription ended.
enum End {
    /// The store is gone: nothing left to do.
    StoreDropped,
    /// The connection failed; resubscribe.
    Lost(String),
}

async fn run<R: LivenessStore + 'static>(shared: Weak<Shared<R>>) {
    // Cloned out once, so that the loop holds no strong reference between messages.
    let Some((broadcast, channel)) = shared.upgrade().and_then(|shared| {
        let link = shared.broadcast.as_ref()?;
        Some((link.broadcast.clone(), link.channel.clone()))
    }) else {
        return;
    };
    let log = LogLimit::new();
    let urls = broadcast.clients().len();
    let mut url = 0;
    let mut backoff = MIN_BACKOFF;
    let mut lost = false;
    loop {
        let connect = async {
            let mut pubsub = broadcast.clients()[url].get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<PubSub, redis::RedisError>(pubsub)
        };
        let end = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, connect).await {
            Ok(Ok(pubsub)) => {
                backoff = MIN_BACKOFF;
                if std::mem::take(&mut lost) {
                    tracing::info!(
                        backend = %broadcast.name(url),
                        "liveness forget broadcast: subscribed again"
                    );
                }
                listen(&shared, pubsub).await
            }
            Ok(Err(error)) => End::Lost(broadcast.scrub(&error.to_string())),
            Err(_) => End::Lost(format!("no subscription within {SUBSCRIBE_TIMEOUT:?}")),
        };
        let End::Lost(error) = end else {
            return;
        };
        lost = true;
        if let Some(suppressed) = log.allow() {
            tracing::warn!(
                backend = %broadcast.name(url),
                error = %error,
                suppressed,
                "liveness forget broadcast: not subscribed, reconnecting; forgets announced \
                 meanwhile are seen when the entries lapse"
            );
        }
        url = (url + 1) % urls;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Applies every message until the connection fails or the store is gone.
async fn listen<R: LivenessStore + 'static>(shared: &Weak<Shared<R>>, pubsub: PubSub) -> End {
    let (mut sink, mut messages) = pubsub.split();
    loop {
        let message = match tokio::time::timeout(KEEPALIVE, next(&mut messages)).await {
            Ok(Some(message)) => message,
            Ok(None) => return End::Lost("the connection closed".to_owned()),
            Err(_) => {
                if shared.strong_count() == 0 {
                    return End::StoreDropped;
                }
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(error)) => return End::Lost(error.to_string()),
                    Err(_) => return End::Lost(format!("no PING reply within {PING_TIMEOUT:?}")),
                }
            }
        };
        let Some(shared) = shared.upgrade() else {
            return End::StoreDropped;
        };
        let Some(link) = &shared.broadcast else {
            return End::StoreDropped;
        };
        let Some((sender, runtime_id)) = super::broadcast::decode(message.get_payload_bytes())
        else {
            continue;
        };
        // Its own forget: this instance dropped the runtime before it published.
        if sender == link.sender.as_bytes() || validate::runtime_id(runtime_id).is_err() {
            continue;
        }
        // The same local part as `forget`. The sender deleted the record before it published,
        // so any entry created from here on records only writes made after the delete, which
        // stand.
        let _forgetting = shared.forgets.begin();
        shared.drop_local(runtime_id).await;
        Counters::add(&shared.counters.forget_broadcasts_received, 1);
    }
}

/// The next message, or `None` once the connection is gone.
async fn next(messages: &mut PubSubStream) -> Option<redis::Msg> {
    std::future::poll_fn(|cx| Pin::new(&mut *messages).poll_next(cx)).await
}
