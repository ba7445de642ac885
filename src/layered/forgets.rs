//! Forgets in flight, so that a batch never brings back a runtime a `forget` dropped.
//!
//! A batch that asked the remote before a `forget`'s `DEL` may hear "alive", and caching that
//! answer would make the forgetting instance answer "alive" after `forget` returned (invariant
//! 3). A batch therefore caches remote answers only if no forget was in flight at any moment of
//! its lookup: none when it began, none begun by its end. Forgets are rare, so the batches that
//! skip caching are too; they answer the same, only without keeping the answer.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(super) struct Forgets {
    started: AtomicU64,
    finished: AtomicU64,
}

/// A forget in flight; it ends when dropped.
pub(super) struct Forgetting<'a>(&'a Forgets);

/// What a batch saw of forgets when its lookup began.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
    started: u64,
    quiet: bool,
}

impl Forgets {
    pub(super) fn begin(&self) -> Forgetting<'_> {
        self.started.fetch_add(1, Ordering::AcqRel);
        Forgetting(self)
    }

    /// At the start of a lookup.
    pub(super) fn look(&self) -> Seen {
        // `finished` first: if it then equals `started`, no forget was in flight at a moment
        // between the two reads.
        let finished = self.finished.load(Ordering::Acquire);
        let started = self.started.load(Ordering::Acquire);
        Seen {
            started,
            quiet: started == finished,
        }
    }

    /// At the end of a lookup: whether no forget was in flight during it.
    pub(super) fn none_since(&self, seen: Seen) -> bool {
        seen.quiet && self.started.load(Ordering::Acquire) == seen.started
    }
}

impl Drop for Forgetting<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_overlapping_any_forget_is_not_quiet() {
        let forgets = Forgets::default();
        let seen = forgets.look();
        assert!(forgets.none_since(seen));
        // Begun during the lookup.
        let forgetting = forgets.begin();
        assert!(!forgets.none_since(seen));
        // In flight when the lookup began, over by its end.
        let seen = forgets.look();
        drop(forgetting);
        assert!(!forgets.none_since(seen));
        // Over before the lookup began.
        let seen = forgets.look();
        assert!(forgets.none_since(seen));
    }
}
