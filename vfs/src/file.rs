//! The main database file, served from pagestore: the file handle and
//! its state; each concern in its own module:
//!
//! * [`connection`]: the connection registry (files of one `sqlite3*`);
//! * [`read`], [`read_ahead`]: xRead, xFileSize, sequential read-ahead;
//! * [`write`]: xWrite, xTruncate;
//! * [`lock_executor`]: xLock/xUnlock carrying out [`crate::lock`]'s
//!   transitions;
//! * [`pager_cache`]: the change counter served at BEGIN, which decides
//!   whether SQLite keeps its own page cache;
//! * [`commit`]: the commit point, multi-database prepare, chained begin;
//!   [`group`]: the super-journal's group commit;
//! * [`pragmas`], [`stats`]: PRAGMAs the file answers.
//!
//! SQLite page `N` is pagestore page `N-1`, at file offset `(N-1)*page_size`.
//! Offsets are `u64` throughout: databases past 1 GiB (the lock-byte page,
//! which SQLite never reads or writes, is simply a page that does not
//! exist) and past 4 GiB work.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pagestore::kv::{Version, Versionstamp};
use pagestore::sync::lock as locked;
use pagestore::{Database, PageNo, PageSet, PageStore, Staleness, Transaction};
use tracing::{debug, info};

mod commit;
mod connection;
pub(crate) mod group;
mod lock_executor;
mod pager_cache;
mod pragmas;
mod read;
mod read_ahead;
mod stats;
mod write;

use group::SuperJournal;
use pager_cache::PagerCache;

pub use pragmas::PragmaOutcome;
pub use read_ahead::{PREFETCH_MAX_BYTES, PREFETCH_PAGES};
pub use stats::stats_line;

use crate::at::At;
use crate::error::{Error, Result};
use crate::lock::{self, Level};

/// The file's phase and the data of that phase (see [`lock::State`]).
pub(crate) type State = lock::State<Transaction, Arc<SuperJournal>>;

static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

/// What SQLite may hold in its page cache during one SHARED lock hold.
#[derive(Debug, Default)]
struct Hold {
    /// The change counter served in this hold: the one SQLite's pager
    /// already believes (it keeps its cache), or a fresh one (it drops it).
    served: u32,
    /// The change counter SQLite's pager believes page 1 has (what it
    /// increments at commit): `served`, or after a commit in this hold the
    /// value it wrote.
    pager_counter: u32,
    /// Page count when the current transaction began.
    base_count: u64,
    /// The change counter of the last page-1 write of this transaction.
    page1_written: Option<u32>,
    /// The latest change counter SQLite wrote into page 1 in this hold.
    written_high: Option<u32>,
    /// SQLite's cache may not be the store's state (a commit failed, or
    /// committed while SQLite rolled back): the next hold serves a fresh
    /// counter.
    unsure: bool,
    /// The store state SQLite's cache is when the current transaction
    /// began: its snapshot's `last_change` (None: unknown).
    base_change: Option<Versionstamp>,
    /// Pages SQLite may hold from earlier holds (the counter was kept): it
    /// may serve them in this hold without reading them, so they are in
    /// the transaction's read set as assumed reads.
    carried: Arc<PageSet>,
    /// Pages read or written in this hold: with `carried`, what SQLite's
    /// cache may contain.
    touched: PageSet,
    /// Pages written by the current transaction.
    written: BTreeSet<PageNo>,
    /// Read-ahead of this hold.
    ahead: read_ahead::ReadAhead,
}

/// A main database file.
pub struct MainFile {
    name: String,
    store: PageStore,
    db: Database,
    /// Time travel: every transaction reads at this version, read-only.
    at_version: Option<Version>,
    /// Shared with the connection map: a sibling file of the same
    /// connection starting a transaction reads this one's snapshot.
    state: Arc<Mutex<State>>,
    /// Unique id of this handle.
    file_id: u64,
    /// The `sqlite3*` this file belongs to (`SQLITE_FCNTL_PDB`), if known.
    conn: Option<usize>,
    /// The super-journal announced by `SQLITE_FCNTL_SYNC` for the coming
    /// `xSync` (a multi-database commit), if any.
    sync_super: Option<String>,
    /// The super-journal a `GroupSync` event prepares into.
    joining: Option<Arc<SuperJournal>>,
    /// The commit point of this sync was handled at `SQLITE_FCNTL_SYNC`:
    /// the `xSync` that follows has nothing more to do.
    synced_at_fcntl: bool,
    /// The database is already open in this handle's connection (another
    /// schema): every use of this handle fails.
    duplicate: bool,
    /// `admin=` of its URI (see [`MainFile::admin_refused`]).
    admin: bool,
    /// Why every use of this handle fails: a database of another store
    /// attached in a connection where admin operations are refused.
    refused: Option<&'static str>,
    level: Level,
    /// The highest change counter served or written (wrapping): a fresh
    /// counter is past it, so it differs from what SQLite's pager believes.
    counter_high: u32,
    /// SQLite's page cache after the last lock hold, when it may be kept.
    pager_cache: Option<PagerCache>,
    /// Let SQLite keep its page cache across transactions when nothing
    /// changed (`keep_cache=`, default on).
    keep_cache: bool,
    hold: Hold,
    /// Snapshot or commit version of the last finished transaction.
    last_version: Option<Version>,
    /// `PRAGMA synchronous` of this schema (2, FULL, by default): see
    /// [`MainFile::durability`].
    synchronous: u8,
    /// How stale a new transaction's snapshot may be (`staleness=`,
    /// `PRAGMA fdb_staleness`).
    staleness: Staleness,
}

impl std::fmt::Debug for MainFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MainFile")
            .field("name", &self.name)
            // try_lock: never blocks (or deadlocks) a debug print.
            .field("state", &self.state.try_lock().map(|s| s.name()).ok())
            .field("level", &self.level)
            .finish()
    }
}

impl Drop for MainFile {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            connection::leave(conn, self.file_id);
        }
        if let State::Prepared { group, .. } = &*locked(&self.state) {
            group.abort("file closed before the commit point");
        }
    }
}

impl MainFile {
    /// Opens database `name` of `store`; creates it when `create` (never
    /// for time travel). With `at`, the file is read-only as of that point
    /// (a time is resolved through the time index once, here), and a point
    /// outside the history (future, before the database existed, older
    /// than the retention window) fails the open with a message saying so.
    pub fn open(name: &str, store: PageStore, at: Option<At>, create: bool) -> Result<MainFile> {
        pagestore::validate_name(name)?;
        let db = if create && at.is_none() {
            store.open_or_create(name)?
        } else {
            store.open(name)?
        };
        let at_version = match at {
            None => None,
            Some(a) => {
                let v = a.resolve(&db)?;
                // Checks the version is reachable (not in the future, not
                // garbage collected) while the open can still say why.
                db.begin_at(v)?.rollback();
                info!(database = name, at = %a, version = v.get(), "opened for time travel (read-only)");
                Some(v)
            }
        };
        debug!(
            database = name,
            id = db.id().get(),
            ?at_version,
            "opened main database file"
        );
        Ok(MainFile {
            name: name.to_string(),
            store,
            db,
            at_version,
            state: Arc::new(Mutex::new(State::Idle)),
            file_id: NEXT_FILE.fetch_add(1, Ordering::Relaxed),
            conn: None,
            sync_super: None,
            joining: None,
            synced_at_fcntl: false,
            duplicate: false,
            admin: true,
            refused: None,
            level: Level::None,
            // Random: values of different handles stay apart in logs.
            counter_high: rand::random::<u32>(),
            pager_cache: None,
            keep_cache: true,
            hold: Hold::default(),
            last_version: None,
            synchronous: 2,
            staleness: Staleness::Strict,
        })
    }

    /// Sets the staleness bound of the next transactions.
    pub fn set_staleness(&mut self, s: Staleness) {
        self.staleness = s;
    }

    /// `keep_cache=`: whether SQLite may keep its page cache across
    /// transactions when nothing changed in between (see
    /// `file/pager_cache.rs`); off, every transaction starts with an empty
    /// SQLite cache and reads each page it needs through the VFS.
    pub fn set_keep_cache(&mut self, keep: bool) {
        self.keep_cache = keep;
        if !keep {
            self.pager_cache = None;
        }
    }

    /// True when opened read-only (time travel).
    pub fn is_read_only(&self) -> bool {
        self.at_version.is_some()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Fails when this handle is a second one of a database already open
    /// in its connection.
    fn refuse_duplicate(&self) -> Result<()> {
        if self.duplicate {
            return Err(Error::AlreadyOpen(self.name.clone()));
        }
        if let Some(why) = self.refused {
            return Err(Error::AttachRefused {
                database: self.name.clone(),
                why,
            });
        }
        Ok(())
    }

    /// xCheckReservedLock: RESERVED locks are local; no other connection's
    /// journal is ever hot, so report none.
    pub fn reserved_elsewhere(&self) -> bool {
        false
    }

    /// The snapshot of the current transaction, else the version of the
    /// last one, else the latest version (or the time-travel version).
    pub fn version(&mut self) -> Result<Version> {
        if let Some(v) = self.at_version {
            return Ok(v);
        }
        self.settle();
        match &*locked(&self.state) {
            State::Shared(t) | State::Reserved(t) => Ok(t.snapshot()),
            State::Committed { version, .. } => Ok(*version),
            State::Doomed { snapshot, .. } | State::Prepared { snapshot, .. } => Ok(*snapshot),
            State::Idle => match self.last_version {
                Some(v) => Ok(v),
                None => {
                    let t = self.db.begin()?;
                    let v = t.snapshot();
                    t.rollback();
                    Ok(v)
                }
            },
        }
    }
}
