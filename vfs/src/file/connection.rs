//! The connection registry: which main-database files belong to one
//! SQLite connection (`SQLITE_FCNTL_PDB`), so that every database of one
//! SQL transaction reads at one snapshot, a database is open at most once
//! per connection, and `admin=0` holds for the whole connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use pagestore::sync::lock as locked;
use pagestore::{DbId, PageStore, Transaction};
use tracing::{debug, warn};

use super::{MainFile, State};
use crate::error::Result;

/// The main-database files of one SQLite connection (learnt from
/// `SQLITE_FCNTL_PDB`), so that every database of one SQL transaction reads
/// at one snapshot. Process-wide; entries leave at `xClose`.
struct ConnFile {
    file: u64,
    /// Opened with `admin=0`: admin operations are refused in its
    /// connection.
    admin: bool,
    store: usize,
    /// The database's id in its store (identity across handles).
    db_id: DbId,
    state: Weak<Mutex<State>>,
}

fn connections() -> MutexGuard<'static, HashMap<usize, Vec<ConnFile>>> {
    static C: OnceLock<Mutex<HashMap<usize, Vec<ConnFile>>>> = OnceLock::new();
    locked(C.get_or_init(Default::default))
}

pub(super) fn store_key(store: &PageStore) -> usize {
    Arc::as_ptr(store.kv()) as *const () as usize
}

/// The file `file` leaves connection `conn` (closed).
pub(super) fn leave(conn: usize, file: u64) {
    remove_file(&mut connections(), conn, file);
}

fn remove_file(c: &mut HashMap<usize, Vec<ConnFile>>, conn: usize, file: u64) {
    if let Some(files) = c.get_mut(&conn) {
        files.retain(|f| f.file != file && f.state.strong_count() > 0);
        if files.is_empty() {
            c.remove(&conn);
        }
    }
}

impl MainFile {
    /// The other main-database files of this file's connection in the same
    /// store (their states; empty when the connection is unknown).
    pub(super) fn siblings(&self) -> Vec<Arc<Mutex<State>>> {
        let Some(conn) = self.conn else {
            return Vec::new();
        };
        let me = store_key(&self.store);
        connections()
            .get(&conn)
            .map(|files| {
                files
                    .iter()
                    .filter(|f| f.file != self.file_id && f.store == me)
                    .filter_map(|f| f.state.upgrade())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A transaction at the snapshot of a sibling (one of `siblings`, see
    /// [`MainFile::siblings`]): another file of the same connection and
    /// store that holds a transaction (one SQL transaction over attached
    /// databases reads one snapshot). None without one.
    pub(super) fn begin_with_sibling_of(
        &self,
        siblings: &[Arc<Mutex<State>>],
    ) -> Result<Option<Transaction>> {
        for s in siblings {
            let st = locked(s);
            if let Some(other) = st.active() {
                let t = self.db.begin_sibling(other)?;
                debug!(database = %self.name, sibling = %other.database().name(), snapshot = t.snapshot().get(), "began at a sibling's snapshot");
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// SQLITE_FCNTL_PDB: the file belongs to connection `conn` (a
    /// `sqlite3*`). Time-travel files take no part (their snapshot is fixed).
    pub fn set_connection(&mut self, conn: usize) {
        if self.at_version.is_some() || self.conn == Some(conn) {
            return;
        }
        let mut c = connections();
        if let Some(old) = self.conn.take() {
            remove_file(&mut c, old, self.file_id);
        }
        let store = store_key(&self.store);
        let db_id = self.db.id();
        let open_already = c.get(&conn).is_some_and(|files| {
            files.iter().any(|f| {
                f.file != self.file_id
                    && f.store == store
                    && f.db_id == db_id
                    && f.state.strong_count() > 0
            })
        });
        if open_already {
            // SQLite learns of it at this handle's first lock (ATTACH reads
            // the schema then, and fails): SQLITE_FCNTL_PDB is only a hint.
            warn!(database = %self.name, conn = format_args!("{conn:#x}"), "database opened twice in one connection: the second handle is refused");
            self.duplicate = true;
            return;
        }
        c.entry(conn).or_default().push(ConnFile {
            file: self.file_id,
            admin: self.admin,
            store,
            db_id,
            state: Arc::downgrade(&self.state),
        });
        self.conn = Some(conn);
        debug!(database = %self.name, conn = format_args!("{conn:#x}"), "file joined its connection");
    }

    /// The `sqlite3*` this file belongs to, when SQLite said.
    pub fn connection(&self) -> Option<usize> {
        self.conn
    }

    /// `admin=` of the URI: off refuses admin operations in this file's
    /// connection.
    pub fn set_admin(&mut self, admin: bool) {
        self.admin = admin;
    }

    /// Why admin operations are refused in this file's connection, if they
    /// are: a file of the connection was opened with `admin=0`, or the
    /// host put the connection in defensive mode (`defensive`, which the
    /// caller asked SQLite) — as SQLite itself refuses its dangerous
    /// features (writable schema, `sqlite_dbpage`) to untrusted SQL then.
    pub fn admin_refused(&self, defensive: bool) -> Option<&'static str> {
        if defensive {
            return Some("the connection is in defensive mode (SQLITE_DBCONFIG_DEFENSIVE)");
        }
        if !self.admin {
            return Some("the connection was opened with admin=0");
        }
        let conn = self.conn?;
        let c = connections();
        let restricted = c
            .get(&conn)
            .is_some_and(|files| files.iter().any(|f| !f.admin && f.state.strong_count() > 0));
        restricted.then_some("the connection was opened with admin=0")
    }

    /// Right after [`MainFile::set_connection`]: in a connection where
    /// admin operations are refused, a database of another store than
    /// the connection's (an `ATTACH` naming `dir=`, `cluster=` or
    /// `store=`, or the default store) is refused at its first use.
    pub fn check_attach(&mut self, defensive: bool) {
        let Some(conn) = self.conn else {
            return;
        };
        let me = store_key(&self.store);
        let (others, same_store) = {
            let c = connections();
            let others: Vec<(usize, bool)> = c
                .get(&conn)
                .map(|files| {
                    files
                        .iter()
                        .filter(|f| f.file != self.file_id && f.state.strong_count() > 0)
                        .map(|f| (f.store, f.admin))
                        .collect()
                })
                .unwrap_or_default();
            let same = others.iter().any(|(s, _)| *s == me);
            (others, same)
        };
        // The connection's first file (its main database) is the host's
        // choice.
        if others.is_empty() || same_store {
            return;
        }
        if let Some(why) = self.admin_refused(defensive) {
            warn!(database = %self.name, "database of another store attached where admin operations are refused: refused");
            self.refused = Some(why);
        }
    }

    /// A commit of this file alone while another file of the connection
    /// (same store) also has writes: SQLite did not use a super-journal
    /// (journal_mode MEMORY or OFF, or synchronous=OFF), so the
    /// transaction is not atomic across the databases.
    pub(super) fn warn_if_siblings_write(&self) {
        let writing = self
            .siblings()
            .iter()
            .any(|s| locked(s).active().is_some_and(|t| t.has_writes()));
        if writing {
            warn!(
                database = %self.name,
                "a transaction writing several databases commits them one by one (not atomically): use journal_mode DELETE, TRUNCATE or PERSIST and synchronous NORMAL or FULL for atomic commits across databases"
            );
        }
    }
}
