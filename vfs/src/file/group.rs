//! Atomic commits across databases: SQLite's super-journal, kept in memory,
//! carries one store commit for every fdb database a transaction wrote.
//!
//! How SQLite commits a transaction that wrote several databases
//! (`vdbeCommit` in vdbeaux.c, checked against SQLite 3.54 and 3.40):
//!
//! 1. When at least two of them have a journal mode that needs it (DELETE,
//!    PERSIST, TRUNCATE; not MEMORY, OFF or WAL) and `synchronous` is not
//!    OFF, it picks a super-journal name `<main db>-mjXXXXXX9XX` (trying
//!    names until `xAccess` says one does not exist), opens it through the
//!    connection's VFS with `SQLITE_OPEN_SUPER_JOURNAL` and writes the
//!    NUL-terminated names of the child journals into it.
//! 2. Commit phase one for each database in turn: the super-journal name
//!    goes into the database's journal (not for MEMORY journals), the pages
//!    are written, then the file gets `SQLITE_FCNTL_SYNC` **with the
//!    super-journal name as argument** (`sqlite3PagerSync`) and `xSync`.
//!    Single-database commits pass NULL there.
//! 3. It closes the super-journal and **deletes it: that is the commit
//!    point**. An error from that `xDelete` is returned from `vdbeCommit`;
//!    `sqlite3VdbeHalt` then rolls every database back
//!    (`sqlite3RollbackAll`), each from its journal. Errors of phase one
//!    take the same way.
//! 4. Phase two: journals are deleted, `SQLITE_FCNTL_COMMIT_PHASETWO`,
//!    unlock; errors there are ignored.
//!
//! The VFS therefore does not commit a database at an `xSync` announced
//! with a super-journal it opened: the file *prepares* (hands its store
//! transaction to the super-journal's [`SuperJournal`] group), and the
//! deletion of the super-journal commits every prepared transaction in one
//! [`pagestore::commit_group`] call. A conflict, or any retryable store
//! error, fails that `xDelete` with `SQLITE_BUSY_SNAPSHOT` (never plain
//! `SQLITE_BUSY`, on which `sqlite3VdbeHalt` would keep the transaction
//! open with its pages marked clean) and SQLite rolls everything back. The files learn
//! the outcome from the group the next time SQLite calls them.
//!
//! Committing at the last member's `xSync` instead was rejected: the VFS
//! would have to know which listed journals belong to which of its files
//! (names repeat across connections), and members with a MEMORY journal or
//! of another VFS are listed but never prepare.
//!
//! Existence. A rollback plays a journal back only when the super-journal
//! it names exists (`pager_playback`: "If a super-journal file name is
//! specified, but the file is not present on disk, then the journal is not
//! hot and does not need to be played back"); without playback SQLite's
//! page cache would keep the rolled-back pages. So `xAccess` reports a
//! super-journal as existing from its creation until it committed. After a
//! failure, the first database rolled back may delete it
//! (`pager_delsuper`, which sees the other journals as absent: our journals
//! never exist for `xAccess`) before the others are rolled back, so a
//! failed super-journal is kept (as a tombstone that still exists) until
//! the thread that created it begins its next transaction: SQLite runs
//! the commit and the whole rollback on one thread without returning to
//! the application in between.
//!
//! Lock order: registry → group; a file's state → group. Nothing else
//! nests.
//!
//! Limits (also logged as warnings where they apply):
//! * Atomic within one store: databases of different stores written by one
//!   transaction commit one store after the other (a failure of a later
//!   store after an earlier one committed is not undone).
//! * Only fdb databases take part: a database of another VFS in the same
//!   transaction commits on its own (and if the super-journal is not ours,
//!   every fdb database commits alone).
//! * SQLite uses a super-journal only with journal_mode DELETE, TRUNCATE or
//!   PERSIST on at least two written databases and synchronous != OFF
//!   (`aMJNeeded` in vdbeCommit); otherwise each database commits alone at
//!   its own sync (`Store::open` sets DELETE, SQLite's default).
//! * Reads are validated only in the databases a transaction writes:
//!   `pagestore::commit_group` ignores transactions without writes, so a
//!   transaction that reads database A and writes only B can form a write
//!   skew with one that reads B and writes A.

#![warn(clippy::too_many_lines)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use pagestore::sync::lock;

use pagestore::Transaction;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::memfile::{MemError, MemFile};

/// What became of a prepared member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided yet (the super-journal was not deleted).
    Pending,
    /// Committed in the group's store commit (version and versionstamp).
    Committed(pagestore::Committed),
    /// Not committed (conflict, error, or SQLite rolled back).
    Failed,
}

struct Member {
    id: u64,
    database: String,
    txn: Transaction,
}

#[derive(Default)]
struct Group {
    /// Prepared, not decided yet.
    members: Vec<Member>,
    /// Decided members.
    outcomes: HashMap<u64, Outcome>,
    next_id: u64,
    /// Set once: committed (Some(true)), failed or aborted (Some(false)).
    decided: Option<bool>,
    /// File states of the members' connections: those still holding a
    /// transaction without writes at commit time are databases the SQL
    /// transaction only read; their read sets are validated with the group.
    observers: Vec<Arc<Mutex<super::State>>>,
}

/// One super-journal: its bytes (the child journal names SQLite writes and
/// `pager_delsuper` reads back) and the group of prepared transactions.
pub struct SuperJournal {
    name: String,
    content: Mutex<MemFile>,
    group: Mutex<Group>,
}

fn registry() -> MutexGuard<'static, HashMap<String, Arc<SuperJournal>>> {
    static R: OnceLock<Mutex<HashMap<String, Arc<SuperJournal>>>> = OnceLock::new();
    lock(R.get_or_init(Default::default))
}

thread_local! {
    /// Super-journals created by this thread and not removed yet.
    static CREATED: RefCell<Vec<Arc<SuperJournal>>> = const { RefCell::new(Vec::new()) };
}

/// True when `name` is a super-journal that exists (created through this
/// VFS, not committed).
pub fn exists(name: &str) -> bool {
    lookup(name).is_some_and(|s| s.decided() != Some(true))
}

/// `xOpen(SQLITE_OPEN_SUPER_JOURNAL | CREATE)`: a new super-journal, or
/// None when one of that name exists (SQLite asked `xAccess` first).
pub fn create(name: &str) -> Option<Arc<SuperJournal>> {
    let s = {
        let mut r = registry();
        if r.get(name).is_some_and(|s| s.decided() != Some(true)) {
            return None;
        }
        let s = Arc::new(SuperJournal {
            name: name.to_string(),
            content: Mutex::new(MemFile::default()),
            group: Mutex::new(Group::default()),
        });
        r.insert(name.to_string(), s.clone());
        s
    };
    CREATED.with(|c| c.borrow_mut().push(s.clone()));
    debug!(super_journal = name, "super-journal created");
    Some(s)
}

/// The super-journal of that name, if it exists.
pub fn lookup(name: &str) -> Option<Arc<SuperJournal>> {
    registry().get(name).cloned()
}

fn remove(s: &Arc<SuperJournal>) {
    let mut r = registry();
    if r.get(&s.name).is_some_and(|x| Arc::ptr_eq(x, s)) {
        r.remove(&s.name);
    }
}

/// Forgets the super-journals this thread created that are finished (a
/// transaction begins: every rollback they served is over). An undecided
/// one with prepared members cannot be left at this point; it is aborted.
pub fn purge_thread() {
    let list = CREATED.with(|c| std::mem::take(&mut *c.borrow_mut()));
    for s in list {
        if s.decided().is_none() && s.abort("a new transaction began on this thread") {
            warn!(super_journal = %s.name, "super-journal left undecided; its transactions were rolled back");
        }
        remove(&s);
    }
}

/// `xDelete` of super-journal `name` (`dir_sync` is SQLite's argument:
/// 1 from `vdbeCommit`'s commit point, 0 from error paths and from
/// `pager_delsuper` during a rollback). Commits the group unless it was
/// already decided. Returns the commit error for SQLite (it then rolls
/// every database back); the super-journal then keeps existing so the
/// journals are played back.
pub fn delete(name: &str, dir_sync: bool) -> Result<()> {
    let Some(s) = lookup(name) else {
        return Ok(());
    };
    let out = s.commit(dir_sync);
    let (decided, empty) = {
        let g = lock(&s.group);
        (g.decided, g.members.is_empty())
    };
    match (&out, decided) {
        (Ok(()), Some(true)) => remove(&s),
        // Nothing was prepared (an error path of vdbeCommit before phase
        // one): no journal names it.
        (Ok(()), None) if empty => remove(&s),
        _ => {}
    }
    out
}

impl SuperJournal {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True once every member committed.
    pub fn fully_committed(&self) -> bool {
        self.decided() == Some(true)
    }

    fn decided(&self) -> Option<bool> {
        lock(&self.group).decided
    }

    /// xRead of the super-journal's bytes.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> usize {
        lock(&self.content).read(buf, offset)
    }

    /// xWrite.
    pub fn write(&self, buf: &[u8], offset: u64) -> std::result::Result<(), MemError> {
        lock(&self.content).try_write(buf, offset)
    }

    /// xTruncate.
    pub fn truncate(&self, size: u64) -> std::result::Result<(), MemError> {
        lock(&self.content).try_truncate(size)
    }

    /// xFileSize.
    pub fn size(&self) -> u64 {
        lock(&self.content).size()
    }

    /// Hands over a member's store transaction (at its `xSync`). Returns
    /// the member's ticket, or None (the transaction rolled back) when the
    /// group was already decided: it can no longer join.
    pub(super) fn prepare(
        &self,
        database: &str,
        txn: Transaction,
        observers: Vec<Arc<Mutex<super::State>>>,
    ) -> Option<u64> {
        let mut g = lock(&self.group);
        for o in observers {
            if !g.observers.iter().any(|x| Arc::ptr_eq(x, &o)) {
                g.observers.push(o);
            }
        }
        if g.decided.is_some() {
            drop(g);
            txn.rollback();
            return None;
        }
        g.next_id += 1;
        let id = g.next_id;
        debug!(super_journal = %self.name, database, snapshot = txn.snapshot().get(), "prepared");
        g.members.push(Member {
            id,
            database: database.to_string(),
            txn,
        });
        Some(id)
    }

    /// The outcome for member `id`.
    pub fn outcome(&self, id: u64) -> Outcome {
        let g = lock(&self.group);
        g.outcomes.get(&id).cloned().unwrap_or(Outcome::Pending)
    }

    /// Rolls back every prepared member (SQLite is rolling back). Returns
    /// true when this decided the group.
    pub fn abort(&self, why: &str) -> bool {
        let mut g = lock(&self.group);
        if g.decided.is_some() {
            return false;
        }
        g.decided = Some(false);
        let members = std::mem::take(&mut g.members);
        info!(super_journal = %self.name, members = members.len(), why, "multi-database transaction rolled back");
        for m in members {
            g.outcomes.insert(m.id, Outcome::Failed);
            m.txn.rollback();
        }
        true
    }

    /// The commit point: one store commit per store for every prepared
    /// member (one in the normal case: atomicity holds within a store).
    fn commit(&self, dir_sync: bool) -> Result<()> {
        let mut g = lock(&self.group);
        match g.decided {
            Some(true) => return Ok(()),
            // Aborted before its commit point (never seen: SQLite sends no
            // rollback I/O before deleting the super-journal). Deleting it
            // in vdbeCommit must then fail the COMMIT; a deletion during
            // the rollback is fine.
            Some(false) if dir_sync => return Err(Error::Doomed),
            Some(false) => return Ok(()),
            None => {}
        }
        let members = std::mem::take(&mut g.members);
        if members.is_empty() {
            return Ok(());
        }
        if !dir_sync {
            debug!(super_journal = %self.name, "super-journal deleted without dirSync: committing (state decides, not the flag)");
        }
        let parts = by_store(members);
        if parts.len() > 1 {
            warn!(
                super_journal = %self.name,
                stores = parts.len(),
                "one transaction wrote databases of several stores: each store commits separately, so the transaction is atomic within each store only"
            );
        }
        let mut first_err = None;
        for (key, part) in parts {
            if first_err.is_some() {
                // An earlier store failed: SQLite rolls back; do not commit
                // the rest.
                for m in part {
                    g.outcomes.insert(m.id, Outcome::Failed);
                    m.txn.rollback();
                }
                continue;
            }
            if let Err(e) = self.commit_part(&mut g, key, part) {
                first_err = Some(e);
            }
        }
        g.decided = Some(first_err.is_none());
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Commits the members of one store together, validating the
    /// databases the transaction only read in that store, and records each
    /// member's outcome.
    fn commit_part(&self, g: &mut Group, key: usize, part: Vec<Member>) -> Result<()> {
        let names: Vec<String> = part.iter().map(|m| m.database.clone()).collect();
        let ids: Vec<u64> = part.iter().map(|m| m.id).collect();
        let txns: Vec<Transaction> = part.into_iter().map(|m| m.txn).collect();
        // Databases the transaction only read (same store): validated,
        // not committed. Members are `Prepared`, so they never match.
        let guards: Vec<MutexGuard<'_, super::State>> =
            g.observers.iter().map(|o| lock(o)).collect();
        let readers: Vec<&Transaction> = guards
            .iter()
            .filter_map(|st| {
                st.active()
                    .filter(|t| !t.has_writes() && store_key(t) == key)
            })
            .collect();
        let result = pagestore::commit_group_checked(txns, &readers);
        drop(readers);
        drop(guards);
        match result {
            Ok(c) => {
                info!(super_journal = %self.name, databases = ?names, version = c.version.get(), "committed together");
                for id in ids {
                    g.outcomes.insert(id, Outcome::Committed(c));
                }
                Ok(())
            }
            Err(e) => {
                if e.is_conflict() {
                    info!(super_journal = %self.name, databases = ?names, error = %e, "multi-database commit conflicted; SQLite rolls back");
                } else {
                    warn!(super_journal = %self.name, databases = ?names, error = %e, "multi-database commit failed; SQLite rolls back");
                }
                for id in ids {
                    g.outcomes.insert(id, Outcome::Failed);
                }
                Err(Error::Store(e))
            }
        }
    }
}

/// Identity of the store a transaction belongs to.
pub fn store_key(t: &Transaction) -> usize {
    Arc::as_ptr(t.database().store().kv()) as *const () as usize
}

/// Members partitioned by store (the backend's identity), in first-seen
/// order.
fn by_store(members: Vec<Member>) -> Vec<(usize, Vec<Member>)> {
    let mut parts: Vec<(usize, Vec<Member>)> = Vec::new();
    for m in members {
        let key = store_key(&m.txn);
        match parts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(m),
            None => parts.push((key, vec![m])),
        }
    }
    parts
}
