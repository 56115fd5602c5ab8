//! PRAGMA execution: the PRAGMAs the main file answers (parsed by
//! [`crate::pragma`]), admin ones only where admin operations are allowed.

use pagestore::kv::Version;
use pagestore::sync::lock as locked;

use super::stats::stats_line;
use super::{MainFile, State};
use crate::at::At;
use crate::error::{Error, ReadOnly, Result};
use crate::pragma::Pragma;

/// Result of a PRAGMA handed to the file.
#[derive(Debug, PartialEq, Eq)]
pub enum PragmaOutcome {
    /// Not ours: SQLite handles it.
    NotOurs,
    /// Our answer (one row, one column).
    Value(String),
    /// Refused, with this message.
    Refused(String),
}

impl MainFile {
    /// `PRAGMA fdb_restore`: restores this database to `at` as one new
    /// commit, retrying conflicts with concurrent writers a few times.
    /// Returns the commit version.
    pub(super) fn restore(&mut self, at: At) -> Result<Version> {
        if self.is_read_only() {
            return Err(ReadOnly::Restore.into());
        }
        if !matches!(*locked(&self.state), State::Idle) {
            return Err(Error::RestoreInTransaction);
        }
        let v = at.resolve(&self.db)?;
        let c = self.db.restore_retrying(v)?.version;
        self.last_version = Some(c);
        Ok(c)
    }

    /// The age of the current transaction's snapshot, or outside one of
    /// the snapshot a transaction would start at now (see
    /// [`Pragma::SnapshotAge`]).
    fn snapshot_age(&mut self) -> Result<Option<std::time::Duration>> {
        if self.is_read_only() {
            return Ok(None);
        }
        self.settle();
        if let State::Shared(t) | State::Reserved(t) = &*locked(&self.state) {
            return Ok(t.snapshot_age());
        }
        let t = self.begin_txn()?;
        let age = t.snapshot_age();
        t.rollback();
        Ok(age)
    }

    /// Handles a PRAGMA (SQLITE_FCNTL_PRAGMA).
    ///
    /// `defensive`: the connection is in SQLite's defensive mode (admin
    /// pragmas are then refused, see [`MainFile::admin_refused`]).
    pub fn pragma(
        &mut self,
        name: &str,
        arg: Option<&str>,
        defensive: bool,
    ) -> Result<PragmaOutcome> {
        let p = match Pragma::parse(name, arg) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(PragmaOutcome::NotOurs),
            Err(e) => return Ok(PragmaOutcome::Refused(e.0)),
        };
        if p.is_admin() {
            if let Some(why) = self.admin_refused(defensive) {
                return Ok(PragmaOutcome::Refused(format!(
                    "PRAGMA {} is an admin operation, refused because {why}; run it from a trusted connection, the fdbvfs CLI or the Rust API",
                    name.to_ascii_lowercase()
                )));
            }
        }
        Ok(match p {
            Pragma::Version => PragmaOutcome::Value(self.version()?.to_string()),
            Pragma::Stats => PragmaOutcome::Value(stats_line(&self.store)),
            Pragma::CacheSize(None) => {
                PragmaOutcome::Value(self.store.cache().stats().capacity.to_string())
            }
            Pragma::CacheSize(Some(n)) => {
                self.store.cache().set_capacity(n);
                PragmaOutcome::Value(n.to_string())
            }
            Pragma::Fork(dst) => {
                let v = self.version()?;
                pagestore::validate_name(&dst)?;
                self.store.fork(&self.name, &dst, Some(v))?;
                PragmaOutcome::Value(v.to_string())
            }
            Pragma::Restore(at) => match self.restore(at) {
                Ok(v) => PragmaOutcome::Value(v.to_string()),
                Err(Error::ReadOnly(r)) => PragmaOutcome::Refused(r.to_string()),
                Err(e @ (Error::RestoreInTransaction | Error::OutOfHistory(_))) => {
                    PragmaOutcome::Refused(e.to_string())
                }
                Err(e) => return Err(e),
            },
            Pragma::Retention(None) => {
                PragmaOutcome::Value(self.db.retention()?.as_secs().to_string())
            }
            Pragma::Retention(Some(d)) => {
                if self.is_read_only() {
                    return Ok(PragmaOutcome::Refused(
                        "fdb_retention cannot be set on a time-travel (read-only) connection".into(),
                    ));
                }
                self.db.set_retention(d)?;
                PragmaOutcome::Value(d.as_secs().to_string())
            }
            Pragma::Staleness(None) => PragmaOutcome::Value(self.staleness.to_string()),
            Pragma::Staleness(Some(s)) => {
                self.staleness = s;
                PragmaOutcome::Value(s.to_string())
            }
            Pragma::SnapshotAge => PragmaOutcome::Value(
                self.snapshot_age()?
                    .map(|d| d.as_micros().to_string())
                    .unwrap_or_default(),
            ),
            Pragma::JournalModeWal => PragmaOutcome::Refused(
                "journal_mode=WAL is not supported by the fdb VFS: WAL needs memory shared by every user of the database, and processes on different hosts share only the store. The journal mode is unchanged; commits are atomic in the store whatever the journal mode.".into(),
            ),
            Pragma::LockingModeExclusive => PragmaOutcome::Refused(
                "locking_mode=EXCLUSIVE is not supported by the fdb VFS: SQLite would keep its page cache across transactions and miss other writers' commits. The locking mode is unchanged (NORMAL).".into(),
            ),
            Pragma::Synchronous(level) => {
                // SQLite applies it too (its journal syncs).
                self.synchronous = level;
                PragmaOutcome::NotOurs
            }
        })
    }

    /// How durable this database's commits must be: relaxed under
    /// `PRAGMA synchronous` OFF or NORMAL (SQLite's WAL-mode NORMAL also
    /// acknowledges before the sync), full otherwise.
    pub(super) fn durability(&self) -> pagestore::Durability {
        if self.synchronous <= 1 {
            pagestore::Durability::Relaxed
        } else {
            pagestore::Durability::Full
        }
    }
}
