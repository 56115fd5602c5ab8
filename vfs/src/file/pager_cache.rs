//! SQLite's own page cache across transactions: which change counter a
//! new lock hold serves.
//!
//! SQLite keeps its page cache from one transaction to the next while the
//! change counter it reads at SHARED (header bytes 24..28) is the one its
//! pager already believes page 1 has, and then serves cached pages without
//! xRead. Keeping it is right exactly when nothing was committed to the
//! database since the store state those pages are:
//!
//! * That state is a versionstamp (`Transaction::last_change`): after a
//!   hold that only read, its snapshot's; after this connection's commit,
//!   the commit's (the commit validated every page SQLite may hold, so the
//!   cache is the store as of that commit). A new snapshot with the same
//!   value reads the same pages. Versionstamps, not versions: another
//!   process's commit sharing our commit's version, later in its batch,
//!   makes them differ.
//! * The new hold then serves the counter SQLite believes, and the pages
//!   SQLite may serve from its cache (every page read or written since the
//!   counter last changed) become assumed reads of the new transaction
//!   (`Transaction::assume_read`): a writer's commit, or a group commit
//!   that validates this transaction as a reader, validates them as if
//!   read at the new snapshot, which is exact since their content did not
//!   change.
//! * Otherwise — something changed, the state is unknown (a view reload
//!   behind a sibling's snapshot, time travel), a commit failed or was
//!   rolled back by SQLite, a rollback wrote, the option is off, the set
//!   grew past [`PAGER_CACHE_MAX_PAGES`] — the hold serves a fresh counter,
//!   past every counter served or written by this handle, so SQLite drops
//!   its cache, and the set starts empty.

use std::sync::Arc;

use pagestore::kv::Versionstamp;
use pagestore::{PageSet, Transaction};

use super::{MainFile, State};
use crate::header;

/// Pages SQLite's cache may hold while it keeps it across lock holds are
/// at most this many (2 GiB of 8 KiB pages); past it a fresh counter makes
/// SQLite drop its cache. Bounds the set's memory and the read set a
/// writer validates.
pub(super) const PAGER_CACHE_MAX_PAGES: u64 = 1 << 18;

/// What SQLite's page cache holds after a lock hold, when it may keep it
/// for the next.
#[derive(Debug)]
pub(super) struct PagerCache {
    /// The change counter SQLite's pager believes page 1 has.
    counter: u32,
    /// The store state its pages are.
    state: Versionstamp,
    /// Every page read or written since the counter last changed: what
    /// SQLite may serve without reading it.
    pages: Arc<PageSet>,
}

impl MainFile {
    /// The change counter the lock hold of `t` serves, and the pages
    /// SQLite may serve from its cache in it (recorded as read by `t`).
    pub(super) fn counter_for(&mut self, t: &mut Transaction) -> (u32, Arc<PageSet>) {
        let keep = self.keep_cache && !self.is_read_only();
        match self.pager_cache.take() {
            Some(c) if keep && t.last_change() == Some(c.state) => {
                if !c.pages.is_empty() {
                    t.assume_read(c.pages.clone());
                }
                (c.counter, c.pages)
            }
            _ => (self.fresh_counter(), Arc::default()),
        }
    }

    /// A counter SQLite's pager cannot believe page 1 has.
    pub(super) fn fresh_counter(&mut self) -> u32 {
        self.counter_high = header::fresh_counter(self.counter_high);
        self.counter_high
    }

    /// The store state SQLite's cache is when the lock hold ends in
    /// `old`, when it may keep the cache; also folds the hold's counters
    /// into [`MainFile::fresh_counter`]'s watermark.
    pub(super) fn cache_state(&mut self, old: &State) -> Option<Versionstamp> {
        let h = &self.hold;
        let seen = [Some(h.served), Some(h.pager_counter), h.written_high];
        for c in seen.into_iter().flatten() {
            self.counter_high = header::later_counter(self.counter_high, c);
        }
        if !self.keep_cache || self.at_version.is_some() || h.unsure {
            return None;
        }
        match old {
            State::Shared(t) if !t.has_writes() => h.base_change,
            State::Committed {
                versionstamp: Some(vs),
                ..
            } => Some(*vs),
            // A commit without writes: the snapshot's state.
            State::Committed { .. } => h.base_change,
            // A rollback that wrote, a failed or pending commit: unsure.
            _ => None,
        }
    }

    /// The lock hold is over and its transaction gone (so the page set is
    /// no longer shared, and grows in place): remembers what SQLite's
    /// cache holds if it is at store state `state`.
    pub(super) fn remember_pager_cache(&mut self, state: Option<Versionstamp>) {
        self.pager_cache = None;
        let Some(state) = state else {
            return;
        };
        let h = &mut self.hold;
        let mut pages = std::mem::take(&mut h.carried);
        Arc::make_mut(&mut pages).extend_from(&std::mem::take(&mut h.touched));
        if pages.len() > PAGER_CACHE_MAX_PAGES {
            return;
        }
        self.pager_cache = Some(PagerCache {
            counter: h.pager_counter,
            state,
            pages,
        });
    }
}
