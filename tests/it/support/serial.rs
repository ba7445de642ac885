//! One timing-sensitive test at a time across the whole test binary.
//!
//! The suites share one binary, and cargo runs its tests on as many threads as there are
//! cores. A test that kills servers or measures how long a recovery takes holds this lock, so
//! that it never competes with another such test for the CPU; quick tests still run beside it.

use tokio::sync::{Mutex, MutexGuard};

static ALONE: Mutex<()> = Mutex::const_new(());

/// Waits until no other timing-sensitive test runs, and keeps it so until the guard drops.
/// (A tokio mutex: a test that fails while holding it does not poison it for the others.)
pub(crate) async fn alone() -> MutexGuard<'static, ()> {
    ALONE.lock().await
}
