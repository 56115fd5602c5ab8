//! The commit path: the commit point (`SQLITE_FCNTL_SYNC`, xSync, phase
//! two), a multi-database commit's prepare and its outcome, a failed
//! commit's doom, and the chained begin of a new write transaction inside
//! one lock hold.

#![warn(clippy::too_many_lines)]

use std::sync::{Arc, MutexGuard};

use pagestore::kv::{Version, Versionstamp};
use pagestore::sync::lock as locked;
use pagestore::{PageNo, Transaction};
use tracing::{info, warn};

use super::group::{self, Outcome};
use super::{MainFile, State};
use crate::error::{Error, Misuse, Result};
use crate::header;
use crate::lock::{Event, Restore};

impl MainFile {
    /// SQLITE_FCNTL_SYNC: `super_journal` is the super-journal of a
    /// multi-database commit whose phase one syncs this file next (None:
    /// a single-database commit, or a rollback syncing restored pages).
    ///
    /// This is the commit point: `sqlite3PagerSync` sends it right before
    /// `xSync`, and also with `synchronous=OFF`, where no `xSync` follows;
    /// its error fails commit phase one exactly as an `xSync` error does,
    /// so SQLite rolls back from its journal. Committing later, in phase
    /// two, would be too late: SQLite has finalized its journal by then.
    pub fn sync_point(&mut self, super_journal: Option<String>) -> Result<()> {
        self.settle();
        let pending_elsewhere = match &*locked(&self.state) {
            State::Prepared { group, .. } => super_journal.as_deref() != Some(group.name()),
            _ => false,
        };
        if pending_elsewhere {
            // A prepared file is synced again without its super-journal:
            // SQLite is rolling back (`pager_playback` ends with a sync).
            self.abort_group("sync during rollback");
        }
        self.sync_super = super_journal;
        let out = self.sync_now();
        // On an error SQLite sends no xSync.
        self.synced_at_fcntl = out.is_ok();
        out
    }

    /// Resolves a prepared transaction once its group is decided.
    pub(super) fn settle(&mut self) {
        let mut st = locked(&self.state);
        let (snapshot, group, id) = match &*st {
            State::Prepared {
                snapshot,
                group,
                id,
            } => (*snapshot, group.clone(), *id),
            _ => return,
        };
        match group.outcome(id) {
            Outcome::Pending => {}
            Outcome::Committed(c) => {
                self.last_version = Some(c.version);
                let written = self.hold.page1_written.take();
                if group.fully_committed() {
                    // SQLite's page 1 now carries the counter it wrote
                    // (after a rollback it carries the old one again).
                    if let Some(w) = written {
                        self.hold.pager_counter = w;
                    }
                    *st = State::Committed {
                        version: c.version,
                        versionstamp: c.versionstamp,
                        reader: None,
                    };
                } else {
                    // Committed, but another store of the transaction
                    // failed and SQLite rolls back: drop its restoring
                    // writes; reads see what was committed.
                    self.hold.unsure = true;
                    *st = State::Doomed {
                        snapshot: c.version,
                        reader: None,
                        restore: Restore::Unchecked,
                    };
                }
            }
            Outcome::Failed => {
                self.hold.unsure = true;
                *st = State::Doomed {
                    snapshot,
                    reader: None,
                    restore: Restore::Expected,
                };
            }
        }
    }

    /// SQLite is rolling back while this file is prepared: nothing of the
    /// group may commit.
    pub(super) fn abort_group(&mut self, why: &str) {
        let group = match &*locked(&self.state) {
            State::Prepared { group, .. } => group.clone(),
            _ => return,
        };
        group.abort(why);
        self.settle();
    }

    /// Whether the pages written so far form a commit (rather than a
    /// rollback putting the original pages back).
    ///
    /// A commit writes page 1 with a new change counter or changes the
    /// size. Should SQLite's idea of the counter ever differ from the
    /// VFS's, a commit would pass for a rollback and be acknowledged with
    /// nothing written; so when written pages do not look like a commit,
    /// they are compared with the snapshot (only on that rare path: a
    /// rollback of pages SQLite spilled), and any difference is a commit.
    pub(super) fn wants_commit(&mut self) -> Result<bool> {
        let mut st = locked(&self.state);
        let Some(t) = st.active_mut() else {
            return Ok(false);
        };
        if !t.has_writes() {
            return Ok(false);
        }
        if self
            .hold
            .page1_written
            .is_some_and(|c| c != self.hold.pager_counter)
            || t.page_count() != self.hold.base_count
        {
            return Ok(true);
        }
        let mut base = self.db.begin_at(t.snapshot())?;
        let mut differs = false;
        for &p in &self.hold.written {
            let same = match (t.read_page(p)?, base.read_page(p)?) {
                (Some(mine), Some(orig)) => {
                    mine == orig
                        || (p == PageNo::FIRST && header::only_counters_differ(&orig, &mine))
                }
                (None, None) => true,
                _ => false,
            };
            if !same {
                warn!(database = %self.name, page = p.to_sqlite(), "pages written that are not the snapshot's, without a new change counter: committed as a commit");
                differs = true;
                break;
            }
        }
        base.rollback();
        Ok(differs)
    }

    /// xSync: nothing more when `SQLITE_FCNTL_SYNC` came first (it did
    /// the work, see [`MainFile::sync_point`]); otherwise the commit point.
    pub fn sync(&mut self) -> Result<()> {
        if std::mem::take(&mut self.synced_at_fcntl) {
            return Ok(());
        }
        self.sync_now()
    }

    /// The commit point of a single-database commit; for a multi-database
    /// commit (announced by `SQLITE_FCNTL_SYNC` with a super-journal of
    /// this VFS), the end of phase one: the transaction is prepared and
    /// commits with the others when SQLite deletes the super-journal.
    pub(super) fn sync_now(&mut self) -> Result<()> {
        self.refuse_duplicate()?;
        self.settle();
        let announced = self.sync_super.take();
        let wants_commit = self.wants_commit()?;
        let reserved = matches!(*locked(&self.state), State::Reserved(_));
        if reserved && wants_commit {
            match announced.as_deref().map(|n| (n, group::lookup(n))) {
                Some((_, Some(g))) => {
                    self.joining = Some(g);
                    let out = self.step(Event::GroupSync { wants_commit });
                    self.joining = None;
                    return out;
                }
                Some((n, None)) => warn!(
                    database = %self.name,
                    super_journal = n,
                    "the super-journal of this multi-database commit is not a file of the fdb VFS (the main database uses another VFS): this database commits alone, not atomically with the others"
                ),
                None => self.warn_if_siblings_write(),
            }
        }
        self.step(Event::Sync { wants_commit })
    }

    /// SQLITE_FCNTL_COMMIT_PHASETWO: the commit point of last resort, when
    /// SQLite synced neither through `SQLITE_FCNTL_SYNC` nor `xSync` (every
    /// SQLite this VFS supports sends `SQLITE_FCNTL_SYNC`, even with
    /// `synchronous=OFF`). Errors here are I/O errors ([`Op::PhaseTwo`]).
    ///
    /// [`Op::PhaseTwo`]: crate::error::Op::PhaseTwo
    pub fn commit_phase_two(&mut self) -> Result<()> {
        self.synced_at_fcntl = false;
        self.settle();
        if self.is_prepared() {
            self.abort_group("phase two before the super-journal was deleted");
            return Err(Misuse::PhaseTwoBeforeSuperJournal.into());
        }
        let wants_commit = self.wants_commit()?;
        self.step(Event::PhaseTwo { wants_commit })
    }

    /// Takes the active transaction for a commit, cut to the in-header
    /// database size (SQLite shrinks the file only in commit phase two,
    /// after the commit: the cut makes the commit complete). On failure
    /// the file is doomed.
    pub(super) fn take_for_commit(&mut self) -> Result<Transaction> {
        let old = std::mem::replace(&mut *locked(&self.state), State::Idle);
        let State::Reserved(mut t) = old else {
            *locked(&self.state) = old;
            return Err(Misuse::CommitWithoutTransaction.into());
        };
        t.set_durability(self.durability());
        let snapshot = t.snapshot();
        let store_ps = t.page_size().unwrap_or(0).max(1) as u64;
        let cut = match t.read_page(PageNo::FIRST) {
            // The header counts pages of SQLite's page size, which differs
            // from the store's after a VACUUM that changed it.
            Ok(Some(p1)) => header::trusted_db_bytes(&p1)
                .map(|b| b.div_ceil(store_ps))
                .filter(|n| *n < t.page_count()),
            Ok(None) => None,
            Err(e) => {
                self.doom(snapshot);
                return Err(e.into());
            }
        };
        if let Some(n) = cut {
            if let Err(e) = t.truncate(n) {
                self.doom(snapshot);
                return Err(e.into());
            }
        }
        Ok(t)
    }

    pub(super) fn commit(&mut self) -> Result<()> {
        let t = self.take_for_commit()?;
        let snapshot = t.snapshot();
        // Other databases of this SQL transaction that it only read: their
        // read sets are validated with this commit (no write skew across
        // attached databases).
        let siblings = self.siblings();
        let guards: Vec<MutexGuard<'_, State>> = siblings.iter().map(|s| locked(s)).collect();
        let readers: Vec<&Transaction> = guards
            .iter()
            .filter_map(|st| st.active().filter(|r| !r.has_writes()))
            .collect();
        let result = pagestore::commit_group_checked(vec![t], &readers);
        drop(readers);
        drop(guards);
        match result {
            Ok(c) => {
                info!(database = %self.name, snapshot = snapshot.get(), version = c.version.get(), "committed");
                self.last_version = Some(c.version);
                if let Some(w) = self.hold.page1_written.take() {
                    self.hold.pager_counter = w;
                }
                *locked(&self.state) = State::Committed {
                    version: c.version,
                    versionstamp: c.versionstamp,
                    reader: None,
                };
                Ok(())
            }
            Err(e) => {
                if e.is_conflict() {
                    info!(database = %self.name, snapshot = snapshot.get(), error = %e, "commit conflicted; SQLite rolls back");
                } else {
                    warn!(database = %self.name, snapshot = snapshot.get(), error = %e, "commit failed; SQLite rolls back");
                }
                self.doom(snapshot);
                Err(e.into())
            }
        }
    }

    /// Phase one of a multi-database commit is over for this file: its
    /// transaction joins the super-journal's group, which commits at the
    /// super-journal's deletion.
    pub(super) fn prepare(&mut self) -> Result<()> {
        let Some(g) = self.joining.take() else {
            return Err(Misuse::PrepareWithoutSuperJournal.into());
        };
        let t = self.take_for_commit()?;
        let snapshot = t.snapshot();
        match g.prepare(&self.name, t, self.siblings()) {
            Some(id) => {
                *locked(&self.state) = State::Prepared {
                    snapshot,
                    group: g,
                    id,
                };
                Ok(())
            }
            None => {
                self.doom(snapshot);
                Err(Error::Doomed)
            }
        }
    }

    pub(super) fn doom(&mut self, snapshot: Version) {
        self.hold.unsure = true;
        *locked(&self.state) = State::Doomed {
            snapshot,
            reader: None,
            restore: Restore::Expected,
        };
    }

    /// A new write transaction inside the same SQLite lock hold (after a
    /// commit or a failed one, while statements kept the lock): SQLite's
    /// cache holds pages as of the end of the previous transaction, so the
    /// new one may only go ahead if nothing changed since, and its read set
    /// must include every page SQLite may serve from that cache.
    ///
    /// "Since" is by versionstamp, not version: FoundationDB gives every
    /// commit of one proxy batch the same version, so another client's
    /// commit can share this file's commit version (after it in the batch).
    /// After a failed commit the base is the snapshot, a read version:
    /// every commit at that version is already in it.
    pub(super) fn begin_chained(&mut self) -> Result<()> {
        let after = match &*locked(&self.state) {
            State::Committed {
                versionstamp: Some(vs),
                ..
            } => *vs,
            // A commit without writes: its version is its snapshot.
            State::Committed { version, .. } => Versionstamp::new(*version, u16::MAX),
            // The transaction committed here, yet SQLite rolled its cache
            // back (another store of the SQL transaction failed): that
            // cache is older than the store whatever the log says.
            State::Doomed {
                restore: Restore::Unchecked,
                snapshot,
                ..
            } => {
                return Err(Error::Store(pagestore::Error::Conflict {
                    database: self.name.clone(),
                    snapshot: *snapshot,
                    detail: "SQLite rolled back a transaction that committed in this store (another store of it failed); roll back and retry".into(),
                }))
            }
            State::Doomed { snapshot, .. } => Versionstamp::new(*snapshot, u16::MAX),
            _ => return Err(Misuse::ChainedBegin.into()),
        };
        let mut t = self.db.begin()?;
        let changed = if t.snapshot() >= after.version() {
            match self.db.changes_after(after, t.snapshot()) {
                Ok(c) => !c.is_empty(),
                // GC removed the log since `after`: nothing can say the
                // cached pages are current; re-running can (a plain retry
                // of this BEGIN never would).
                Err(pagestore::Error::SnapshotTooOld { .. }) => true,
                Err(e) => return Err(e.into()),
            }
        } else {
            false
        };
        if changed {
            return Err(Error::Store(pagestore::Error::Conflict {
                database: self.name.clone(),
                snapshot: after.version(),
                detail: "the database changed while this connection held its read lock (or its change log since then was garbage collected); roll back and retry".into(),
            }));
        }
        // Unchanged since: validating them at the new snapshot is exact.
        let mut cached = (*self.hold.carried).clone();
        cached.extend_from(&self.hold.touched);
        t.assume_read(Arc::new(cached));
        self.hold.base_count = t.page_count();
        self.hold.base_change = t.last_change();
        self.hold.page1_written = None;
        self.hold.written.clear();
        *locked(&self.state) = State::Reserved(t);
        Ok(())
    }
}
