//! Starting without the backend: what a failed first contact means, and the task that keeps
//! trying it.
//!
//! A fleet restarting during a Redis outage must still serve heartbeats (from its database),
//! so a backend that cannot be reached at build is no reason to fail: the store starts down
//! (calls fail fast with `Unavailable`, the breaker held open) and keeps trying with the
//! breaker's backoff; the first contact that succeeds makes it healthy, with no restart. What a
//! deploy must fix instead (a server that answers but refuses the credentials or a command, a
//! certificate that does not verify) fails the build at once, as does an unreachable backend
//! when the builder's `require_connection` is set. The first contact is the same either way.

use std::future::Future;
use std::sync::Arc;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio_util::task::AbortOnDropHandle;

use crate::Error;
use crate::breaker::{Breaker, BreakerSettings};

/// Why a first contact failed.
pub(crate) enum Failure {
    /// Nothing answered: the backend is down, or not up yet. Worth waiting for.
    Unreachable(Error),
    /// Something answered, and said no (credentials, permissions, a certificate): a
    /// configuration to fix.
    Refused(Error),
}

impl From<Failure> for Error {
    fn from(failure: Failure) -> Error {
        match failure {
            Failure::Unreachable(error) | Failure::Refused(error) => error,
        }
    }
}

impl Failure {
    /// The build's answer when the backend could not be reached: `Ok` (start down) unless
    /// `require_connection`.
    pub(crate) fn at_build(self, require_connection: bool) -> Result<Error, Error> {
        match self {
            Failure::Unreachable(error) if !require_connection => Ok(error),
            Failure::Unreachable(error) => Err(Error::backend(
                "connect",
                format!(
                    "{error}; require_connection is set, so the store does not start (unset \
                     it, or LIVENESS_REQUIRE_CONNECTION, to start down and connect in the \
                     background)"
                ),
            )),
            Failure::Refused(error) => Err(error),
        }
    }
}

/// Whether nothing answered: refused, timed out, no route or no address for the host (it may
/// not be up yet), or a server still loading its data.
pub(crate) fn unreachable(error: &RedisError) -> bool {
    let text = error.to_string();
    if error.kind() == ErrorKind::AuthenticationFailed
        || error.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
        || text.contains("certificate")
    {
        return false;
    }
    error.is_connection_refusal()
        || error.is_timeout()
        || error.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading)
        || (error.kind() == ErrorKind::Io
            && [
                "lookup address",
                "unreachable",
                "No route to host",
                "initial connections",
            ]
            .iter()
            .any(|cause| text.contains(cause)))
}

/// The hint a connect error ends with: what to check.
pub(crate) fn hint(error: &RedisError, connect_timeout: std::time::Duration) -> String {
    if unreachable(error) {
        if error.is_timeout() {
            format!("no answer within connect_timeout ({connect_timeout:?})")
        } else {
            "check the host and port, and that the server is up".to_owned()
        }
    } else {
        match error.kind() {
            ErrorKind::AuthenticationFailed => "check the user and password in the URL".to_owned(),
            ErrorKind::Server(ServerErrorKind::NoPerm) => {
                "grant the ACL user the commands in docs/operations.md".to_owned()
            }
            _ if error.to_string().contains("certificate") => {
                "check the CA and the host name in the URL".to_owned()
            }
            _ => "check the URL, the credentials and the server".to_owned(),
        }
    }
}

/// Starts down, and tries `contact` again in the background, after the breaker's cool-down,
/// doubling to its maximum, until it succeeds; then the store is up. The task ends with the
/// returned handle (the store).
pub(crate) fn keep_trying<F, C>(
    breaker: Arc<Breaker>,
    settings: BreakerSettings,
    target: String,
    error: &Error,
    contact: C,
) -> AbortOnDropHandle<()>
where
    C: Fn() -> F + Send + 'static,
    F: Future<Output = Result<(), Failure>> + Send,
{
    breaker.hold_open();
    tracing::warn!(
        backend = %target,
        %error,
        "liveness store: the backend is unreachable; starting down (calls fail fast with \
         Unavailable) and connecting in the background (set require_connection, or \
         LIVENESS_REQUIRE_CONNECTION=1, to refuse to start instead)"
    );
    AbortOnDropHandle::new(tokio::spawn(async move {
        let mut wait = settings.cooldown;
        loop {
            tokio::time::sleep(wait).await;
            match contact().await {
                Ok(()) => {
                    breaker.release();
                    tracing::warn!(backend = %target, "liveness store: connected; up");
                    return;
                }
                Err(Failure::Unreachable(_)) => {}
                Err(Failure::Refused(error)) => tracing::error!(
                    backend = %target,
                    %error,
                    "liveness store: the backend answers but refuses this store; still down"
                ),
            }
            wait = wait.saturating_mul(2).min(settings.max_cooldown);
        }
    }))
}
