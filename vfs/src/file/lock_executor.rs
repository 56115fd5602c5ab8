//! The lock executor: xLock and xUnlock run the pure state machine
//! ([`crate::lock::next`]) and do the store work its action asks for
//! (begin, chained begin, commit, prepare, end).

#![warn(clippy::too_many_lines)]

use pagestore::sync::lock as locked;
use pagestore::{Staleness, Transaction};
use tracing::{debug, debug_span, warn};

use super::{group, Hold, MainFile, State};
use crate::error::{Error, ReadOnly, Result};
use crate::lock::{self, Action, Event, Level};

impl MainFile {
    /// xLock.
    pub fn lock(&mut self, level: Level) -> Result<()> {
        self.refuse_duplicate()?;
        if level <= self.level {
            return Ok(());
        }
        self.settle();
        if level >= Level::Reserved && self.is_read_only() {
            return Err(ReadOnly::Lock {
                database: self.name.clone(),
                version: self.at_version.unwrap_or_default(),
            }
            .into());
        }
        self.step(Event::Lock(level))?;
        self.level = level;
        Ok(())
    }

    /// xUnlock.
    pub fn unlock(&mut self, level: Level) -> Result<()> {
        if level >= self.level {
            return Ok(());
        }
        self.settle();
        if self.is_prepared() {
            self.abort_group("unlock before the commit point");
        }
        let out = self.step(Event::Unlock(level));
        self.level = level;
        out
    }

    /// True while prepared into a multi-database group.
    pub(super) fn is_prepared(&self) -> bool {
        locked(&self.state).is_prepared()
    }

    /// Carries out one transition of the lock state machine: the pure
    /// [`lock::next`] decides, this does the store work it asks for.
    pub(super) fn step(&mut self, event: Event) -> Result<()> {
        let (from, action) = {
            let mut st = locked(&self.state);
            let old = std::mem::replace(&mut *st, State::Idle);
            let from = old.name();
            let (new, action) = lock::next(old, event);
            *st = new;
            (from, action)
        };
        let span = debug_span!("lock", database = %self.name, from, ?event, action = action.name());
        let _g = span.enter();
        match action {
            Action::Nothing => {}
            Action::Begin => self.begin()?,
            Action::BeginChained => self.begin_chained()?,
            Action::RefuseSync => {
                warn!("sync of a transaction whose commit failed, with nothing restored: a retried commit, refused (SQLite must roll back)");
                return Err(Error::Doomed);
            }
            Action::RefusePhaseTwo => {
                warn!("commit phase two of a transaction whose commit failed: refused");
                return Err(Error::Doomed);
            }
            // Both leave the state Committed/Prepared, or Doomed on failure.
            Action::Commit => self.commit()?,
            Action::Prepare => self.prepare()?,
            Action::End(old) => self.end(old),
        }
        debug!(state = ?*locked(&self.state), "lock state");
        Ok(())
    }

    /// Begins the transaction of a new SHARED lock hold.
    pub(super) fn begin(&mut self) -> Result<()> {
        self.synced_at_fcntl = false;
        group::purge_thread();
        let mut t = self.begin_txn()?;
        // Whether SQLite keeps its page cache (see `pager_cache.rs`).
        let (served, carried) = self.counter_for(&mut t);
        let kept = carried.len();
        self.hold = Hold {
            served,
            pager_counter: served,
            base_count: t.page_count(),
            base_change: t.last_change(),
            carried,
            ..Hold::default()
        };
        debug!(
            snapshot = t.snapshot().get(),
            served, kept, "transaction began"
        );
        *locked(&self.state) = State::Shared(t);
        Ok(())
    }

    /// The lock hold is over: whatever transaction `old` holds ends.
    pub(super) fn end(&mut self, old: State) {
        let cached = self.cache_state(&old);
        match old {
            State::Shared(t) | State::Reserved(t) => {
                self.last_version = Some(t.snapshot());
                if t.has_writes() {
                    debug!(snapshot = t.snapshot().get(), "transaction rolled back");
                }
                t.rollback();
            }
            State::Committed { version, .. } => self.last_version = Some(version),
            State::Doomed { snapshot, .. } => self.last_version = Some(snapshot),
            State::Prepared {
                snapshot, group, ..
            } => {
                group.abort("unlocked before the commit point");
                self.last_version = Some(snapshot);
            }
            State::Idle => {}
        }
        self.remember_pager_cache(cached);
        self.hold = Hold::default();
    }

    pub(super) fn begin_txn(&self) -> Result<Transaction> {
        if let Some(v) = self.at_version {
            return Ok(self.db.begin_at(v)?);
        }
        let siblings = self.siblings();
        if let Some(t) = self.begin_with_sibling_of(&siblings)? {
            return Ok(t);
        }
        // Attached databases begin at the snapshot of the one locked
        // first: a stale one could predate this connection's commits to the
        // others. With attached databases of this store, begin strictly.
        let staleness = match siblings.is_empty() {
            true => self.staleness,
            false => Staleness::Strict,
        };
        let floor = self.last_version.unwrap_or_default();
        Ok(self.db.begin_within(staleness, floor)?)
    }
}
