//! The main database file, served from pagestore.
//!
//! SQLite page `N` is pagestore page `N-1`, at file offset `(N-1)*page_size`.
//! Offsets are `u64` throughout: databases past 1 GiB (the lock-byte page,
//! which SQLite never reads or writes, is simply a page that does not
//! exist) and past 4 GiB work.

use std::collections::BTreeSet;

use pagestore::{Database, Transaction};
use tracing::{debug, debug_span, info, warn};

use crate::at::At;
use crate::error::{Error, Result};
use crate::header;
use crate::lock::{self, Action, Event, Level, Phase};
use crate::pragma::Pragma;
use crate::registry::StoreHandle;

/// Pages fetched ahead when SQLite reads sequentially: a cold scan of N
/// pages then costs about N/32 store round trips.
pub const PREFETCH_PAGES: u32 = 32;

/// The store transaction of a file, by phase.
enum State {
    Idle,
    /// SHARED or RESERVED+: see `phase`.
    Active(Transaction),
    /// Committed at `version`; `reader` serves reads SQLite still makes in
    /// the same lock hold (opened lazily at `version`).
    Committed {
        version: u64,
        reader: Option<Transaction>,
    },
    /// The commit failed; SQLite is rolling back. Writes are dropped; reads
    /// come from `reader` at `snapshot`.
    Doomed {
        snapshot: u64,
        reader: Option<Transaction>,
    },
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
    /// Sequential-read detection.
    last_read: Option<u32>,
    prefetched_to: u32,
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
    store: StoreHandle,
    db: Database,
    /// Time travel: every transaction reads at this version, read-only.
    at_version: Option<u64>,
    state: State,
    phase: Phase,
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
            .field("phase", &self.phase)
            .field("level", &self.level)
            .finish()
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
    pub fn open(name: &str, store: StoreHandle, at: Option<At>, create: bool) -> Result<MainFile> {
        validate_name(name)?;
        let db = if create && at.is_none() {
            store.pages.open_or_create(name)?
        } else {
            store.pages.open(name)?
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
            id = db.id(),
            ?at_version,
            "opened main database file"
        );
        Ok(MainFile {
            name: name.to_string(),
            store,
            db,
            at_version,
            state: State::Idle,
            phase: Phase::Idle,
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
            None => self.db.begin()?,
        })
    }

    /// Runs `f` on the transaction reads go to: the active one, the lazily
    /// opened reader after a commit or a failed one, or a one-off
    /// transaction when SQLite reads without a lock (the header read at open).
    fn with_reader<R>(
        &mut self,
        f: impl FnOnce(&mut Transaction, &mut Hold) -> Result<R>,
    ) -> Result<R> {
        let db = self.db.clone();
        match &mut self.state {
            State::Active(t) => f(t, &mut self.hold),
            State::Committed { version: v, reader }
            | State::Doomed {
                snapshot: v,
                reader,
            } => {
                if reader.is_none() {
                    *reader = Some(db.begin_at(*v)?);
                }
                match reader.as_mut() {
                    Some(t) => f(t, &mut self.hold),
                    None => Err(Error::BadIo("no reader".into())),
                }
            }
            State::Idle => {
                let mut t = self.begin_txn()?;
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
        self.with_reader(|t, hold| read_at(t, hold, buf, offset))
    }

    /// xWrite: whole pages at page boundaries, as SQLite writes them.
    pub fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::ReadOnly(format!(
                "database {:?} is open as of version {}",
                self.name,
                self.at_version.unwrap_or_default()
            )));
        }
        let t = match (&mut self.state, self.phase) {
            (State::Active(t), Phase::Reserved) => t,
            (State::Doomed { .. }, _) => {
                // SQLite restoring pages from its journal after a failed
                // commit: nothing of this transaction reaches the store.
                return Ok(());
            }
            _ => {
                return Err(Error::BadIo(format!(
                    "write at offset {offset} without a write lock (phase {:?})",
                    self.phase
                )))
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
            None => {
                return Err(Error::BadIo(format!(
                    "first write of {len} bytes at offset {offset}: the first write to a database must be one page (a power of two in 512..=65536 bytes) at a page boundary"
                )))
            }
        };
        let end = offset
            .checked_add(len as u64)
            .filter(|e| (e - 1) / ps as u64 <= u32::MAX as u64)
            .ok_or_else(|| {
                Error::BadIo(format!(
                    "write at offset {offset} is past the largest page number"
                ))
            })?;
        let mut pos = offset;
        while pos < end {
            let pgno = (pos / ps as u64) as u32;
            let within = (pos % ps as u64) as usize;
            let n = (ps - within).min((end - pos) as usize);
            let src = &buf[(pos - offset) as usize..(pos - offset) as usize + n];
            let page: std::borrow::Cow<[u8]> = if n == ps {
                std::borrow::Cow::Borrowed(src)
            } else {
                let mut p = match t.read_page(pgno)? {
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
                if let Some(old) = t.read_page(0)? {
                    if header::only_counters_differ(&old, &page) {
                        debug!(database = %self.name, "page 1 write changes only the change counter: dropped");
                        self.hold.touched.insert(0);
                        pos += n as u64;
                        continue;
                    }
                }
            }
            t.write_page(pgno, &page)?;
            self.hold.touched.insert(pgno);
            pos += n as u64;
        }
        Ok(())
    }

    /// xTruncate.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        let read_only = self.is_read_only();
        match (&mut self.state, self.phase) {
            (State::Active(t), Phase::Reserved) => {
                let count = match t.page_size() {
                    Some(ps) => size.div_ceil(ps as u64),
                    None if size == 0 => 0,
                    None => {
                        return Err(Error::BadIo(format!(
                            "truncate to {size} bytes of a database without pages"
                        )))
                    }
                };
                t.truncate(count)?;
                Ok(())
            }
            // After a commit the store was already cut to the in-header size
            // at commit (SQLite truncates only in commit phase two); after a
            // failed commit nothing is to be changed.
            (State::Committed { .. } | State::Doomed { .. }, _) => {
                debug!(database = %self.name, size, "truncate after commit: already applied");
                Ok(())
            }
            _ if read_only => Err(Error::ReadOnly("time-travel connection".into())),
            _ => Err(Error::BadIo(format!(
                "truncate without a write lock (phase {:?})",
                self.phase
            ))),
        }
    }

    /// xFileSize.
    pub fn size(&mut self) -> Result<u64> {
        self.with_reader(|t, _| Ok(t.page_count() * t.page_size().unwrap_or(0) as u64))
    }

    /// Whether the pages written so far form a commit (rather than a
    /// rollback putting the original pages back).
    fn wants_commit(&mut self) -> bool {
        let State::Active(t) = &mut self.state else {
            return false;
        };
        t.has_writes()
            && (self
                .hold
                .page1_written
                .is_some_and(|c| c != self.hold.pager_counter)
                || t.page_count() != self.hold.base_count)
    }

    /// xSync: the commit point.
    pub fn sync(&mut self) -> Result<()> {
        let wants_commit = self.wants_commit();
        self.step(Event::Sync { wants_commit })
    }

    /// SQLITE_FCNTL_COMMIT_PHASETWO: the commit point when there was no
    /// sync (`synchronous=OFF`).
    pub fn commit_phase_two(&mut self) -> Result<()> {
        let wants_commit = self.wants_commit();
        self.step(Event::PhaseTwo { wants_commit })
    }

    /// xLock.
    pub fn lock(&mut self, level: Level) -> Result<()> {
        if level <= self.level {
            return Ok(());
        }
        if level >= Level::Reserved && self.is_read_only() {
            return Err(Error::ReadOnly(format!(
                "database {:?} is open as of version {}; time-travel connections cannot write",
                self.name,
                self.at_version.unwrap_or_default()
            )));
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
        let out = self.step(Event::Unlock(level));
        self.level = level;
        out
    }

    /// xCheckReservedLock: RESERVED locks are local; no other connection's
    /// journal is ever hot, so report none.
    pub fn reserved_elsewhere(&self) -> bool {
        false
    }

    /// Carries out one transition of the lock state machine.
    fn step(&mut self, event: Event) -> Result<()> {
        let (next, action) = lock::next(self.phase, event);
        let span = debug_span!("lock", database = %self.name, from = ?self.phase, to = ?next, ?event, ?action);
        let _g = span.enter();
        match action {
            Action::Nothing => {}
            Action::Begin => {
                let t = self.begin_txn()?;
                self.epoch = self.epoch.wrapping_add(1);
                let served = header::served_counter(self.salt, self.epoch);
                let mut t = t;
                self.hold = Hold {
                    served,
                    pager_counter: served,
                    base_count: t.page_count(),
                    ..Hold::default()
                };
                debug!(snapshot = t.snapshot(), served, "transaction began");
                self.state = State::Active(t);
            }
            Action::BeginChained => self.begin_chained()?,
            Action::Commit => {
                self.commit()?;
                // `commit` set the phase (Committed or, on failure, Doomed).
                return Ok(());
            }
            Action::End => {
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::Active(t) => {
                        self.last_version = Some(t.snapshot());
                        if t.has_writes() {
                            debug!(snapshot = t.snapshot(), "transaction rolled back");
                        }
                        t.rollback();
                    }
                    State::Committed { version, .. } => self.last_version = Some(version),
                    State::Doomed { snapshot, .. } => self.last_version = Some(snapshot),
                    State::Idle => {}
                }
                self.hold = Hold::default();
            }
        }
        debug!("lock state");
        self.phase = next;
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        let State::Active(mut t) = std::mem::replace(&mut self.state, State::Idle) else {
            self.phase = Phase::Idle;
            return Err(Error::BadIo("commit without a transaction".into()));
        };
        let snapshot = t.snapshot();
        // SQLite shrinks the file only in commit phase two, after the
        // commit: apply the in-header size now so the commit is complete.
        let store_ps = t.page_size().unwrap_or(0).max(1) as u64;
        let cut = match t.read_page(0) {
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
        match t.commit() {
            Ok(c) => {
                info!(database = %self.name, snapshot, version = c.version, "committed");
                self.last_version = Some(c.version);
                if let Some(w) = self.hold.page1_written.take() {
                    self.hold.pager_counter = w;
                }
                self.state = State::Committed {
                    version: c.version,
                    reader: None,
                };
                self.phase = Phase::Committed;
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

    fn doom(&mut self, snapshot: u64) {
        self.state = State::Doomed {
            snapshot,
            reader: None,
        };
        self.phase = Phase::Doomed;
    }

    /// A new write transaction inside the same SQLite lock hold (after a
    /// commit or a failed one, while statements kept the lock): SQLite's
    /// cache holds pages as of the end of the previous transaction, so the
    /// new one may only go ahead if nothing changed since, and its read set
    /// must include every page SQLite may serve from that cache.
    fn begin_chained(&mut self) -> Result<()> {
        let base = match &self.state {
            State::Committed { version, .. } => *version,
            State::Doomed { snapshot, .. } => *snapshot,
            _ => return Err(Error::BadIo("chained begin from a wrong phase".into())),
        };
        let mut t = self.db.begin()?;
        if t.snapshot() > base && !self.db.changes_between(base, t.snapshot())?.is_empty() {
            return Err(Error::Store(pagestore::Error::Conflict {
                database: self.name.clone(),
                snapshot: base,
                detail: "the database changed while this connection held its read lock; roll back and retry".into(),
            }));
        }
        let touched: Vec<u32> = self.hold.touched.iter().copied().collect();
        t.prefetch(&touched)?;
        for p in touched {
            t.read_page(p)?;
        }
        self.hold.base_count = t.page_count();
        self.hold.page1_written = None;
        self.state = State::Active(t);
        Ok(())
    }

    /// The snapshot of the current transaction, else the version of the
    /// last one, else the latest version (or the time-travel version).
    pub fn version(&mut self) -> Result<u64> {
        if let Some(v) = self.at_version {
            return Ok(v);
        }
        match &self.state {
            State::Active(t) => Ok(t.snapshot()),
            State::Committed { version, .. } => Ok(*version),
            State::Doomed { snapshot, .. } => Ok(*snapshot),
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
            return Err(Error::ReadOnly(
                "fdb_restore cannot run on a time-travel (read-only) connection; open the database normally".into(),
            ));
        }
        if !matches!(self.state, State::Idle) {
            return Err(Error::Unsupported(
                "fdb_restore cannot run inside a transaction (COMMIT or ROLLBACK first)".into(),
            ));
        }
        let v = at.resolve(&self.db)?;
        let c = restore_with_retries(&self.db, v)?;
        self.last_version = Some(c);
        Ok(c)
    }

    /// Handles a PRAGMA (SQLITE_FCNTL_PRAGMA).
    pub fn pragma(&mut self, name: &str, arg: Option<&str>) -> Result<PragmaOutcome> {
        let p = match Pragma::parse(name, arg) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(PragmaOutcome::NotOurs),
            Err(e) => return Ok(PragmaOutcome::Refused(e.0)),
        };
        Ok(match p {
            Pragma::Version => PragmaOutcome::Value(self.version()?.to_string()),
            Pragma::Stats => PragmaOutcome::Value(stats_line(&self.store)),
            Pragma::CacheSize(None) => {
                PragmaOutcome::Value(self.store.pages.cache().stats().capacity.to_string())
            }
            Pragma::CacheSize(Some(n)) => {
                self.store.pages.cache().set_capacity(n);
                PragmaOutcome::Value(n.to_string())
            }
            Pragma::Fork(dst) => {
                let v = self.version()?;
                validate_name(&dst)?;
                self.store.pages.fork(&self.name, &dst, Some(v))?;
                PragmaOutcome::Value(v.to_string())
            }
            Pragma::Restore(at) => match self.restore(at) {
                Ok(v) => PragmaOutcome::Value(v.to_string()),
                Err(Error::ReadOnly(m) | Error::Unsupported(m)) => PragmaOutcome::Refused(m),
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
    let mut attempt = 0;
    loop {
        attempt += 1;
        match db.restore_to(version) {
            Ok(c) => return Ok(c.version),
            Err(e) if e.is_conflict() && attempt < RESTORE_ATTEMPTS => {
                debug!(database = %db.name(), attempt, error = %e, "restore conflicted; retrying");
                let ms = (1u64 << attempt.min(7)).min(100) + rand::random::<u64>() % 5;
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One line of store counters for `PRAGMA fdb_stats`.
pub fn stats_line(store: &StoreHandle) -> String {
    let s = store.pages.stats();
    format!(
        "backend={} cache_hits={} cache_misses={} cache_hit_rate={:.4} cache_bytes={} cache_capacity={} round_trips={} read_versions={} reads={} commit_round_trips={} commits={} conflicts={} store_conflicts={} unknown_results={} recovered_unknown={} bytes_read={} bytes_written={}",
        store.pages.kv().backend_name(),
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
        match t.read_page(pgno)? {
            Some(d) if d.len() >= within + n => {
                buf[pos..pos + n].copy_from_slice(&d[within..within + n])
            }
            Some(d) => {
                return Err(Error::BadIo(format!(
                    "page {} has {} bytes, expected {ps}",
                    pgno as u64 + 1,
                    d.len()
                )))
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

/// Sequential reads (page p right after p-1) fetch the next
/// [`PREFETCH_PAGES`] pages in one store round trip.
fn maybe_prefetch(t: &mut Transaction, hold: &mut Hold, pgno: u32, count: u64) -> Result<()> {
    let sequential = pgno > 0 && hold.last_read == Some(pgno - 1);
    hold.last_read = Some(pgno);
    if sequential && pgno >= hold.prefetched_to {
        let end = (pgno as u64 + PREFETCH_PAGES as u64).min(count) as u32;
        if end > pgno {
            let pages: Vec<u32> = (pgno..end).collect();
            t.prefetch(&pages)?;
            hold.prefetched_to = end;
        }
    }
    Ok(())
}
