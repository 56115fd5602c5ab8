//! The main database file, served from pagestore.
//!
//! SQLite page `N` is pagestore page `N-1`, at file offset `(N-1)*page_size`.
//! Offsets are `u64` throughout: databases past 1 GiB (the lock-byte page,
//! which SQLite never reads or writes, is simply a page that does not
//! exist) and past 4 GiB work.

use pagestore::PageNo;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use pagestore::sync::lock as locked;

use pagestore::kv::Versionstamp;
use pagestore::{Database, PageStore, Transaction};
use tracing::{debug, debug_span, info, warn};

pub(crate) mod group;

use group::{Outcome, SuperJournal};

use crate::at::At;
use crate::error::{Error, Misuse, ReadOnly, Result};
use crate::header;
use crate::lock::{self, Action, Event, Level, Restore};
use crate::pragma::Pragma;

/// Pages fetched ahead when SQLite reads sequentially: a cold scan of N
/// pages then costs about N/32 store round trips.
pub const PREFETCH_PAGES: u32 = 32;

/// Largest read-ahead window, in bytes of pages.
pub const PREFETCH_MAX_BYTES: u32 = 4 << 20;

/// The file's phase and the data of that phase (see [`lock::State`]).
pub(crate) type State = lock::State<Transaction, Arc<SuperJournal>>;

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
    db_id: u64,
    state: Weak<Mutex<State>>,
}

fn connections() -> MutexGuard<'static, HashMap<usize, Vec<ConnFile>>> {
    static C: OnceLock<Mutex<HashMap<usize, Vec<ConnFile>>>> = OnceLock::new();
    locked(C.get_or_init(Default::default))
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

fn store_key(store: &PageStore) -> usize {
    Arc::as_ptr(store.kv()) as *const () as usize
}

fn remove_file(c: &mut HashMap<usize, Vec<ConnFile>>, conn: usize, file: u64) {
    if let Some(files) = c.get_mut(&conn) {
        files.retain(|f| f.file != file && f.state.strong_count() > 0);
        if files.is_empty() {
            c.remove(&conn);
        }
    }
}

/// What SQLite may hold in its page cache during one SHARED lock hold.
#[derive(Debug, Default)]
struct Hold {
    /// The change counter served in this hold.
    served: u32,
    /// The change counter SQLite's pager believes page 1 has (what it
    /// increments at commit): `served`, or after a commit in this hold the
    /// value it wrote.
    pager_counter: u32,
    /// Page count when the current transaction began.
    base_count: u64,
    /// The change counter of the last page-1 write of this transaction.
    page1_written: Option<u32>,
    /// Pages read or written in this hold: what SQLite's cache may contain.
    touched: BTreeSet<u32>,
    /// Pages written by the current transaction (store page numbers).
    written: BTreeSet<u32>,
    /// Sequential-read detection.
    last_read: Option<u32>,
    prefetched_to: u32,
    /// Current read-ahead window, in pages.
    window: u32,
}

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

/// A main database file.
pub struct MainFile {
    name: String,
    store: PageStore,
    db: Database,
    /// Time travel: every transaction reads at this version, read-only.
    at_version: Option<u64>,
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
    salt: u32,
    epoch: u32,
    hold: Hold,
    /// Snapshot or commit version of the last finished transaction.
    last_version: Option<u64>,
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
            remove_file(&mut connections(), conn, self.file_id);
        }
        if let State::Prepared { group, .. } = &*locked(&self.state) {
            group.abort("file closed before the commit point");
        }
    }
}

/// Checks a database name (UTF-8, 1..=255 bytes).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::BadName("the name is empty".into()));
    }
    if name.len() > pagestore::MAX_NAME_BYTES {
        return Err(Error::BadName(format!(
            "{} bytes long; at most {} bytes of UTF-8",
            name.len(),
            pagestore::MAX_NAME_BYTES
        )));
    }
    Ok(())
}

impl MainFile {
    /// Opens database `name` of `store`; creates it when `create` (never
    /// for time travel). With `at`, the file is read-only as of that point
    /// (a time is resolved through the time index once, here), and a point
    /// outside the history (future, before the database existed, older
    /// than the retention window) fails the open with a message saying so.
    pub fn open(name: &str, store: PageStore, at: Option<At>, create: bool) -> Result<MainFile> {
        validate_name(name)?;
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
                info!(database = name, at = %a, version = v, "opened for time travel (read-only)");
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
            salt: rand::random::<u32>() | 1,
            epoch: 0,
            hold: Hold::default(),
            last_version: None,
        })
    }

    /// True when opened read-only (time travel).
    pub fn is_read_only(&self) -> bool {
        self.at_version.is_some()
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn begin_txn(&self) -> Result<Transaction> {
        Ok(match self.at_version {
            Some(v) => self.db.begin_at(v)?,
            None => match self.begin_with_sibling()? {
                Some(t) => t,
                None => self.db.begin()?,
            },
        })
    }

    /// The other main-database files of this file's connection in the same
    /// store (their states; empty when the connection is unknown).
    fn siblings(&self) -> Vec<Arc<Mutex<State>>> {
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

    /// A transaction at the snapshot of a sibling: another file of the same
    /// connection and store that holds a transaction (one SQL transaction
    /// over attached databases reads one snapshot). None without one.
    fn begin_with_sibling(&self) -> Result<Option<Transaction>> {
        for s in self.siblings() {
            let st = locked(&s);
            if let Some(other) = st.active() {
                let t = self.db.begin_sibling(other)?;
                debug!(database = %self.name, sibling = %other.database().name(), snapshot = t.snapshot(), "began at a sibling's snapshot");
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
        let db_id = self.db.id().get();
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
    fn settle(&mut self) {
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
                    *st = State::Doomed {
                        snapshot: c.version,
                        reader: None,
                        restore: Restore::Unchecked,
                    };
                }
            }
            Outcome::Failed => {
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
    fn abort_group(&mut self, why: &str) {
        let group = match &*locked(&self.state) {
            State::Prepared { group, .. } => group.clone(),
            _ => return,
        };
        group.abort(why);
        self.settle();
    }

    /// Runs `f` on the transaction reads go to: the active one, the lazily
    /// opened reader after a commit or a failed one, or a one-off
    /// transaction when SQLite reads without a lock (the header read at open).
    fn with_reader<R>(
        &mut self,
        f: impl FnOnce(&mut Transaction, &mut Hold) -> Result<R>,
    ) -> Result<R> {
        self.settle();
        let db = self.db.clone();
        let mut st = locked(&self.state);
        match &mut *st {
            State::Shared(t) | State::Reserved(t) => f(t, &mut self.hold),
            State::Committed {
                version: v, reader, ..
            }
            | State::Doomed {
                snapshot: v,
                reader,
                ..
            } => {
                if reader.is_none() {
                    *reader = Some(db.begin_at(*v)?);
                }
                match reader.as_mut() {
                    Some(t) => f(t, &mut self.hold),
                    None => Err(Misuse::NoReader.into()),
                }
            }
            State::Prepared { .. } => Err(Misuse::ReadWhilePrepared.into()),
            State::Idle => {
                drop(st);
                let mut t = match self.at_version {
                    Some(v) => db.begin_at(v)?,
                    None => db.begin()?,
                };
                let mut hold = Hold {
                    served: header::served_counter(self.salt, self.epoch),
                    ..Hold::default()
                };
                let out = f(&mut t, &mut hold);
                t.rollback();
                out
            }
        }
    }

    /// xRead: fills `buf` from file offset `offset`. Returns false for a
    /// short read (the rest of `buf` is zero-filled).
    pub fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool> {
        self.refuse_duplicate()?;
        self.with_reader(|t, hold| read_at(t, hold, buf, offset))
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

    /// xWrite: whole pages at page boundaries, as SQLite writes them.
    pub fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if self.is_read_only() {
            return Err(ReadOnly::Write {
                database: self.name.clone(),
                version: self.at_version.unwrap_or_default(),
            }
            .into());
        }
        self.settle();
        if self.is_prepared() {
            // Writes to a prepared file before its group's commit point:
            // SQLite is rolling back (playing its journal back).
            self.abort_group("journal playback");
        }
        let mut st = locked(&self.state);
        let t = match &mut *st {
            State::Reserved(t) => t,
            State::Doomed {
                snapshot,
                reader,
                restore,
            } => {
                // SQLite restoring pages from its journal after a failed
                // commit: nothing of this transaction reaches the store.
                // Only restoring: new content would be SQLite committing
                // a doomed transaction (it never does after the codes the
                // commit point returns; this is the last line).
                if *restore == Restore::Unchecked {
                    return Ok(());
                }
                if reader.is_none() {
                    *reader = Some(self.db.begin_at(*snapshot)?);
                }
                let Some(r) = reader.as_mut() else {
                    return Err(Misuse::NoReader.into());
                };
                let mut original = vec![0u8; buf.len()];
                let mut scratch = Hold::default();
                read_at(r, &mut scratch, &mut original, offset)?;
                if header::same_but_counters(&original, buf, offset) {
                    *restore = Restore::Seen;
                    return Ok(());
                }
                warn!(database = %self.name, offset, len = buf.len(), "new content written into a transaction whose commit failed: refused (SQLite must roll back)");
                return Err(Error::Doomed);
            }
            other => {
                let phase = other.name();
                return Err(Misuse::WriteWithoutLock { offset, phase }.into());
            }
        };
        let len = buf.len();
        if len == 0 {
            return Ok(());
        }
        // The store's page size is fixed by the first write (SQLite writes
        // whole pages). Later writes of another shape (VACUUM into a new
        // page size writes pages of the new size; a smaller page size
        // writes parts of a store page) are split into store pages, with a
        // read-modify-write for partial ones: the file is a byte stream.
        let ps = match t.page_size() {
            Some(ps) => ps as usize,
            None if len.is_power_of_two()
                && (512..=65536).contains(&len)
                && offset.is_multiple_of(len as u64) =>
            {
                len
            }
            None => return Err(Misuse::FirstWriteNotAPage { len, offset }.into()),
        };
        let end = offset
            .checked_add(len as u64)
            .filter(|e| (e - 1) / ps as u64 <= u32::MAX as u64)
            .ok_or(Misuse::PastLastPage { offset })?;
        let mut pos = offset;
        while pos < end {
            let pgno = (pos / ps as u64) as u32;
            let within = (pos % ps as u64) as usize;
            let n = (ps - within).min((end - pos) as usize);
            let src = &buf[(pos - offset) as usize..(pos - offset) as usize + n];
            let page: std::borrow::Cow<[u8]> = if n == ps {
                std::borrow::Cow::Borrowed(src)
            } else {
                let mut p = match t.read_page(PageNo::new(pgno))? {
                    Some(d) if d.len() == ps => d.to_vec(),
                    _ => vec![0u8; ps],
                };
                p[within..within + n].copy_from_slice(src);
                std::borrow::Cow::Owned(p)
            };
            if pgno == 0 {
                if within < header::CHANGE_COUNTER.end && within + n > header::CHANGE_COUNTER.start
                {
                    self.hold.page1_written = header::counter_of(&page);
                }
                if let Some(old) = t.read_page(PageNo::new(0))? {
                    if header::only_counters_differ(&old, &page) {
                        debug!(database = %self.name, "page 1 write changes only the change counter: dropped");
                        self.hold.touched.insert(0);
                        pos += n as u64;
                        continue;
                    }
                }
            }
            t.write_page(PageNo::new(pgno), &page)?;
            self.hold.touched.insert(pgno);
            self.hold.written.insert(pgno);
            pos += n as u64;
        }
        Ok(())
    }

    /// xTruncate.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        let read_only = self.is_read_only();
        self.settle();
        if self.is_prepared() {
            self.abort_group("truncate during rollback");
        }
        let mut st = locked(&self.state);
        match &mut *st {
            State::Reserved(t) => {
                let count = match t.page_size() {
                    Some(ps) => size.div_ceil(ps as u64),
                    None if size == 0 => 0,
                    None => return Err(Misuse::TruncateWithoutPages { size }.into()),
                };
                t.truncate(count)?;
                Ok(())
            }
            // After a commit the store was already cut to the in-header size
            // at commit (SQLite truncates only in commit phase two); after a
            // failed commit nothing is to be changed (the rollback cuts the
            // file back to its original size).
            State::Committed { .. } => {
                debug!(database = %self.name, size, "truncate after commit: already applied");
                Ok(())
            }
            State::Doomed {
                snapshot,
                reader,
                restore,
            } => {
                if *restore == Restore::Expected {
                    // A rollback cuts the file back to its size at the
                    // snapshot (or below, for a VACUUM'd page size).
                    if reader.is_none() {
                        *reader = Some(self.db.begin_at(*snapshot)?);
                    }
                    if let Some(r) = reader.as_mut() {
                        let bytes = r.page_count() * u64::from(r.page_size().unwrap_or(0));
                        if size <= bytes {
                            *restore = Restore::Seen;
                        }
                    }
                }
                debug!(database = %self.name, size, "truncate during the rollback of a failed commit: dropped");
                Ok(())
            }
            _ if read_only => Err(ReadOnly::Truncate.into()),
            other => Err(Misuse::TruncateWithoutLock {
                phase: other.name(),
            }
            .into()),
        }
    }

    /// xFileSize.
    pub fn size(&mut self) -> Result<u64> {
        self.with_reader(|t, _| Ok(t.page_count() * t.page_size().unwrap_or(0) as u64))
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
    fn wants_commit(&mut self) -> Result<bool> {
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
            let same = match (
                t.read_page(PageNo::new(p))?,
                base.read_page(PageNo::new(p))?,
            ) {
                (Some(mine), Some(orig)) => {
                    mine == orig || (p == 0 && header::only_counters_differ(&orig, &mine))
                }
                (None, None) => true,
                _ => false,
            };
            if !same {
                warn!(database = %self.name, page = p as u64 + 1, "pages written that are not the snapshot's, without a new change counter: committed as a commit");
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
    fn sync_now(&mut self) -> Result<()> {
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

    /// A commit of this file alone while another file of the connection
    /// (same store) also has writes: SQLite did not use a super-journal
    /// (journal_mode MEMORY or OFF, or synchronous=OFF), so the
    /// transaction is not atomic across the databases.
    fn warn_if_siblings_write(&self) {
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

    /// xCheckReservedLock: RESERVED locks are local; no other connection's
    /// journal is ever hot, so report none.
    pub fn reserved_elsewhere(&self) -> bool {
        false
    }

    /// True while prepared into a multi-database group.
    fn is_prepared(&self) -> bool {
        locked(&self.state).is_prepared()
    }

    /// Carries out one transition of the lock state machine: the pure
    /// [`lock::next`] decides, this does the store work it asks for.
    fn step(&mut self, event: Event) -> Result<()> {
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
    fn begin(&mut self) -> Result<()> {
        self.synced_at_fcntl = false;
        group::purge_thread();
        let mut t = self.begin_txn()?;
        self.epoch = self.epoch.wrapping_add(1);
        let served = header::served_counter(self.salt, self.epoch);
        self.hold = Hold {
            served,
            pager_counter: served,
            base_count: t.page_count(),
            ..Hold::default()
        };
        debug!(snapshot = t.snapshot(), served, "transaction began");
        *locked(&self.state) = State::Shared(t);
        Ok(())
    }

    /// The lock hold is over: whatever transaction `old` holds ends.
    fn end(&mut self, old: State) {
        match old {
            State::Shared(t) | State::Reserved(t) => {
                self.last_version = Some(t.snapshot());
                if t.has_writes() {
                    debug!(snapshot = t.snapshot(), "transaction rolled back");
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
        self.hold = Hold::default();
    }

    /// Takes the active transaction for a commit, cut to the in-header
    /// database size (SQLite shrinks the file only in commit phase two,
    /// after the commit: the cut makes the commit complete). On failure
    /// the file is doomed.
    fn take_for_commit(&mut self) -> Result<Transaction> {
        let old = std::mem::replace(&mut *locked(&self.state), State::Idle);
        let State::Reserved(mut t) = old else {
            *locked(&self.state) = old;
            return Err(Misuse::CommitWithoutTransaction.into());
        };
        let snapshot = t.snapshot();
        let store_ps = t.page_size().unwrap_or(0).max(1) as u64;
        let cut = match t.read_page(PageNo::new(0)) {
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

    fn commit(&mut self) -> Result<()> {
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
                info!(database = %self.name, snapshot, version = c.version, "committed");
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
                    info!(database = %self.name, snapshot, error = %e, "commit conflicted; SQLite rolls back");
                } else {
                    warn!(database = %self.name, snapshot, error = %e, "commit failed; SQLite rolls back");
                }
                self.doom(snapshot);
                Err(e.into())
            }
        }
    }

    /// Phase one of a multi-database commit is over for this file: its
    /// transaction joins the super-journal's group, which commits at the
    /// super-journal's deletion.
    fn prepare(&mut self) -> Result<()> {
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

    fn doom(&mut self, snapshot: u64) {
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
    fn begin_chained(&mut self) -> Result<()> {
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
        let touched: Vec<PageNo> = self.hold.touched.iter().copied().map(PageNo::new).collect();
        t.prefetch(&touched)?;
        for p in touched {
            t.read_page(p)?;
        }
        self.hold.base_count = t.page_count();
        self.hold.page1_written = None;
        self.hold.written.clear();
        *locked(&self.state) = State::Reserved(t);
        Ok(())
    }

    /// The snapshot of the current transaction, else the version of the
    /// last one, else the latest version (or the time-travel version).
    pub fn version(&mut self) -> Result<u64> {
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

    /// `PRAGMA fdb_restore`: restores this database to `at` as one new
    /// commit, retrying conflicts with concurrent writers a few times.
    /// Returns the commit version.
    fn restore(&mut self, at: At) -> Result<u64> {
        if self.is_read_only() {
            return Err(ReadOnly::Restore.into());
        }
        if !matches!(*locked(&self.state), State::Idle) {
            return Err(Error::RestoreInTransaction);
        }
        let v = at.resolve(&self.db)?;
        let c = restore_with_retries(&self.db, v)?;
        self.last_version = Some(c);
        Ok(c)
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
                validate_name(&dst)?;
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
            Pragma::JournalModeWal => PragmaOutcome::Refused(
                "journal_mode=WAL is not supported by the fdb VFS: WAL needs memory shared by every user of the database, and processes on different hosts share only the store. The journal mode is unchanged; commits are atomic in the store whatever the journal mode.".into(),
            ),
            Pragma::LockingModeExclusive => PragmaOutcome::Refused(
                "locking_mode=EXCLUSIVE is not supported by the fdb VFS: SQLite would keep its page cache across transactions and miss other writers' commits. The locking mode is unchanged (NORMAL).".into(),
            ),
        })
    }
}

/// Attempts of a restore that conflicts with concurrent writers.
pub const RESTORE_ATTEMPTS: u32 = 10;

/// Restores `db` to `version` as a new commit (see
/// [`Database::restore_to`]); a conflict with a concurrent writer (the
/// restore is an ordinary commit) is retried up to [`RESTORE_ATTEMPTS`]
/// times with backoff. Returns the commit version.
pub fn restore_with_retries(db: &Database, version: u64) -> Result<u64> {
    use pagestore::retry::{self, Backoff, Pause};
    // 2, 4, 8 … ms up to 100 ms, half of each delay at random so that
    // colliding restores spread out.
    let policy = Backoff::store(RESTORE_ATTEMPTS - 1).with_jitter(0.5);
    let committed = retry::run(
        &policy,
        pagestore::Error::is_conflict,
        |e, retry| {
            debug!(database = %db.name(), attempt = retry, error = %e, "restore conflicted; retrying");
            Pause::Backoff
        },
        |_| db.restore_to(version),
    )?;
    Ok(committed.version)
}

/// One line of store counters for `PRAGMA fdb_stats`.
pub fn stats_line(store: &PageStore) -> String {
    let s = store.stats();
    format!(
        "backend={} cache_hits={} cache_misses={} cache_hit_rate={:.4} cache_bytes={} cache_capacity={} round_trips={} read_versions={} reads={} commit_round_trips={} commits={} conflicts={} store_conflicts={} unknown_results={} recovered_unknown={} bytes_read={} bytes_written={}",
        store.kv().backend_name(),
        s.cache.hits,
        s.cache.misses,
        s.cache.hit_rate(),
        s.cache.bytes,
        s.cache.capacity,
        s.kv.round_trips(),
        s.kv.read_versions,
        s.kv.reads,
        s.kv.commits,
        s.commits,
        s.conflicts,
        s.kv.conflicts,
        s.kv.unknown_results,
        s.recovered_unknown,
        s.kv.bytes_read,
        s.kv.bytes_written,
    )
}

/// Reads file bytes `[offset, offset+buf.len())` from `t`, page by page.
fn read_at(t: &mut Transaction, hold: &mut Hold, buf: &mut [u8], offset: u64) -> Result<bool> {
    let Some(ps) = t.page_size().map(u64::from) else {
        buf.fill(0);
        return Ok(buf.is_empty());
    };
    let count = t.page_count();
    let mut pos = 0usize;
    let mut full = true;
    while pos < buf.len() {
        let off = offset.saturating_add(pos as u64);
        let pgno = off / ps;
        let within = (off % ps) as usize;
        let n = (ps as usize - within).min(buf.len() - pos);
        if pgno >= count || pgno > u32::MAX as u64 {
            buf[pos..].fill(0);
            full = false;
            break;
        }
        let pgno = pgno as u32;
        maybe_prefetch(t, hold, pgno, count)?;
        match t.read_page(PageNo::new(pgno))? {
            Some(d) if d.len() >= within + n => {
                buf[pos..pos + n].copy_from_slice(&d[within..within + n])
            }
            Some(d) => {
                return Err(Error::PageLength {
                    page: pgno as u64 + 1,
                    len: d.len(),
                    expected: ps,
                })
            }
            // A page below the end that was never written (the lock-byte
            // page): reads as zeros, like a hole in a sparse file.
            None => buf[pos..pos + n].fill(0),
        }
        hold.touched.insert(pgno);
        pos += n;
    }
    if offset < 100 {
        header::patch_read(buf, offset, hold.served);
    }
    Ok(full)
}

/// Read-ahead. A read of page p right after p-1, or of the first page past
/// the last read-ahead window (a scan resuming after SQLite visited an
/// interior page elsewhere), fetches the next pages in one store round
/// trip. The window starts at [`PREFETCH_PAGES`] and doubles while the scan
/// goes on, up to [`PREFETCH_MAX_BYTES`] of pages, so a long scan costs
/// ever fewer round trips per page.
fn maybe_prefetch(t: &mut Transaction, hold: &mut Hold, pgno: u32, count: u64) -> Result<()> {
    let sequential = pgno > 0 && hold.last_read == Some(pgno - 1);
    let resumes = hold.prefetched_to > 0
        && pgno >= hold.prefetched_to
        && pgno < hold.prefetched_to.saturating_add(PREFETCH_PAGES);
    hold.last_read = Some(pgno);
    if (sequential || resumes) && pgno >= hold.prefetched_to {
        let page_size = t.page_size().unwrap_or(4096).max(512);
        let max_pages = (PREFETCH_MAX_BYTES / page_size).max(PREFETCH_PAGES);
        hold.window = if resumes {
            (hold.window.max(PREFETCH_PAGES) * 2).min(max_pages)
        } else {
            PREFETCH_PAGES
        };
        let end = (pgno as u64 + hold.window as u64).min(count) as u32;
        if end > pgno {
            let pages: Vec<PageNo> = (pgno..end).map(PageNo::new).collect();
            t.prefetch(&pages)?;
            hold.prefetched_to = end;
        }
    }
    Ok(())
}
