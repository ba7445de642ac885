//! The noop store: no backend, the caller's database is the only truth.

use std::time::Duration;

use crate::{Error, LivenessStore, Result, validate};

/// The default store: always unavailable, exactly like the reference's noop store.
///
/// `touch` succeeds without doing anything (the caller writes its database anyway, because
/// [`available`](LivenessStore::available) is `false`), `is_alive_batch` answers
/// `Err(Error::Unavailable)` so the caller trusts its database's stale window, and `forget`
/// does nothing. Unlike the reference's noop store it checks its input like every other
/// backend, so a caller's bad id or ttl shows up in development, before a real backend is
/// configured.
///
/// ```
/// use liveness_store::{Error, LivenessStore, NoopStore};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = NoopStore::new();
/// assert!(!store.available());
/// assert!(matches!(store.is_alive_batch(&["rt-1"]).await, Err(Error::Unavailable)));
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopStore;

impl NoopStore {
    /// The noop store.
    #[must_use]
    pub fn new() -> Self {
        NoopStore
    }
}

#[async_trait::async_trait]
impl LivenessStore for NoopStore {
    fn available(&self) -> bool {
        false
    }

    async fn touch(&self, runtime_id: &str, ttl: Duration) -> Result<()> {
        validate::beat(runtime_id, ttl)
    }

    async fn is_alive_batch(&self, runtime_ids: &[&str]) -> Result<Vec<bool>> {
        validate::runtime_ids(runtime_ids)?;
        Err(Error::Unavailable)
    }

    async fn forget(&self, _runtime_id: &str) {}

    async fn touch_many(&self, beats: &[(&str, Duration)]) -> Result<()> {
        beats
            .iter()
            .try_for_each(|(runtime_id, ttl)| validate::beat(runtime_id, *ttl))
    }
}
