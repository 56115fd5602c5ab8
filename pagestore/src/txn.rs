//! [`Transaction`]: reads pages at a snapshot, buffers writes, commits.

#![warn(clippy::too_many_lines)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::commit::{self, Committed, Member, Writer};
use crate::database::Database;
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::kv::{Version, Versionstamp};
use crate::page_read::PageRead;
use crate::page_set::PageSet;
use crate::read_set::{ReadSet, Snapshot};
use crate::staleness::Staleness;
use crate::upload;
use crate::write_set::{Dirty, WriteSet};

impl Database {
    /// Starts a transaction at the latest committed version: one read-version
    /// round trip plus one read of the change log since this process last
    /// looked (none when another connection of the process already looked
    /// past that version). Every commit acknowledged before this call is
    /// visible (strict serializability).
    pub fn begin(&self) -> Result<Transaction> {
        Ok(Transaction::new(self.clone(), self.start()?, false))
    }

    /// Starts a transaction under a staleness bound (see [`Staleness`]):
    /// with `Staleness::Bounded(d)`, at this process's view of the database
    /// with no round trip when that view was confirmed to be the latest
    /// within `d` and is at or past `floor` (pass the connection's last
    /// snapshot or commit version so it never goes back in time); else, and
    /// with `Staleness::Strict`, like [`Database::begin`]. Writes stay
    /// serializable: the commit validates what was read against every
    /// commit after the snapshot. While bounded transactions begin, a
    /// background thread per store keeps the view fresh.
    pub fn begin_within(&self, staleness: Staleness, floor: Version) -> Result<Transaction> {
        let start = match staleness.bound() {
            Some(bound) => self.start_within(bound, floor)?,
            None => self.start()?,
        };
        Ok(Transaction::new(self.clone(), start, false))
    }

    /// Starts a transaction on this database at the same snapshot as
    /// `other` (typically on another database of the same store), so that
    /// one SQL transaction over several attached databases reads one
    /// consistent state and can commit them together with
    /// [`crate::commit_group`]. Costs no round trip when this process's view
    /// of the database is at that snapshot, else one.
    pub fn begin_sibling(&self, other: &Transaction) -> Result<Transaction> {
        Ok(Transaction::new(
            self.clone(),
            self.start_sibling(&other.read)?,
            false,
        ))
    }

    /// Starts a read-only transaction at an earlier `version` (time travel).
    /// Fails when `version` has not been reached yet, or is older than the
    /// retention window.
    pub fn begin_at(&self, version: Version) -> Result<Transaction> {
        Ok(Transaction::new(
            self.clone(),
            self.start_at(version)?,
            true,
        ))
    }
}

/// A page transaction at one snapshot.
///
/// Reads see the snapshot plus the transaction's own writes. Commit fails
/// with [`Error::Conflict`] when a page it read changed after the snapshot;
/// a transaction without writes always commits.
pub struct Transaction {
    pub(crate) db: Database,
    pub(crate) read: ReadSet,
    pub(crate) write: WriteSet,
    /// See [`Transaction::last_change`].
    last_change: Option<Versionstamp>,
    read_only: bool,
    finished: bool,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("database", &self.db.name)
            .field("snapshot", &self.read.snapshot)
            .field("reads", &self.read.pages.len())
            .field("writes", &self.write.pages.len())
            .finish()
    }
}

impl Transaction {
    pub(crate) fn new(db: Database, start: Snapshot, read_only: bool) -> Self {
        Transaction {
            db,
            read: ReadSet::new(&start),
            write: WriteSet::new(&start),
            last_change: start.last_change,
            read_only,
            finished: false,
        }
    }

    /// The database's state at the snapshot as a versionstamp: the newest
    /// commit this process's view applied, or the bound after the version
    /// it (re)loaded at. Two transactions of a process with the same value
    /// read the same pages: nothing was committed between their snapshots
    /// (by versionstamp: a commit sharing another's version, later in its
    /// batch, makes them differ). After a transaction of this process
    /// committed at versionstamp `c`, a later snapshot has `Some(c)` only if
    /// no other commit followed. `None` when unknown (time travel, a
    /// sibling snapshot behind this process's view).
    pub fn last_change(&self) -> Option<Versionstamp> {
        self.last_change
    }

    /// Records `pages` as read at the snapshot without reading them: pages
    /// a caller (SQLite's own page cache) may serve from an earlier
    /// snapshot whose content is the same, because nothing was committed
    /// since. The commit validates them (and the page count) like pages
    /// read, also when the transaction is a read-only member of a group.
    /// Cheap: the set is shared, and merged only when validated.
    pub fn assume_read(&mut self, pages: Arc<PageSet>) {
        self.read.assume(&pages);
    }

    /// The snapshot version this transaction reads.
    pub fn snapshot(&self) -> Version {
        self.read.snapshot
    }

    /// How long ago (store clock) the snapshot was last confirmed to be
    /// the latest committed version: an upper bound on how stale its reads
    /// are. `None` for time travel.
    pub fn snapshot_age(&self) -> Option<Duration> {
        let c = self.read.confirmed_at?;
        let now = self.db.store.inner.opts.clock.now_micros();
        Some(Duration::from_micros(now.saturating_sub(c)))
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// True for time-travel transactions.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The page size, once the database has pages.
    pub fn page_size(&self) -> Option<u32> {
        self.write.page_size
    }

    /// Number of pages (highest page number + 1), including own writes.
    /// Observing the size makes a later size change by another commit a
    /// conflict.
    pub fn page_count(&mut self) -> u64 {
        self.read.size_read = true;
        self.write.count
    }

    /// True when the transaction has written or truncated anything.
    pub fn has_writes(&self) -> bool {
        self.write.has_writes()
    }

    /// Pages read from the snapshot so far.
    pub fn read_set(&self) -> &BTreeSet<PageNo> {
        &self.read.pages
    }

    /// Reads page `pgno`: `None` when it does not exist (never written,
    /// past the end, or truncated away).
    pub fn read_page(&mut self, pgno: PageNo) -> Result<Option<Arc<[u8]>>> {
        match self.write.pages.get(&pgno) {
            Some(Dirty::Mem(d)) => return Ok(Some(d.clone())),
            Some(Dirty::Uploaded) => return self.read_uploaded(pgno).map(Some),
            None => {}
        }
        if pgno.index() >= self.write.count {
            self.read.size_read = true;
            return Ok(None);
        }
        if matches!(self.write.trunc_from, Some(t) if pgno.index() >= t) {
            return Ok(None);
        }
        self.read.pages.insert(pgno);
        PageRead::new(&self.db, self.read.snapshot, self.read_only).page(&mut self.read, pgno)
    }

    /// Loads pages into the cache ahead of use (one store round trip for
    /// those not cached) without adding them to the read set.
    pub fn prefetch(&mut self, pgnos: &[PageNo]) -> Result<()> {
        let want: Vec<PageNo> = pgnos
            .iter()
            .copied()
            .filter(|p| !self.write.pages.contains_key(p) && p.index() < self.write.count)
            .filter(|p| !matches!(self.write.trunc_from, Some(t) if p.index() >= t))
            .collect();
        PageRead::new(&self.db, self.read.snapshot, self.read_only).prefetch(&mut self.read, &want)
    }

    fn read_uploaded(&mut self, pgno: PageNo) -> Result<Arc<[u8]>> {
        let key = self.db.keys.blob(&self.write.token, pgno);
        if let Some(b) = self
            .read
            .store_read(&self.db.store.inner.kv, |t| t.get(&key, true))?
        {
            return Ok(Arc::from(b));
        }
        // The reused read version may predate the upload of this page (it
        // was committed by our own chunk after we took that version): read
        // again at a fresh one.
        self.read.rv = None;
        self.read
            .store_read(&self.db.store.inner.kv, |t| t.get(&key, true))?
            .map(Arc::from)
            .ok_or_else(|| Error::corrupt("own uploaded page missing"))
    }

    /// Writes page `pgno`. All pages of a database have one size: a power of
    /// two in 512..=65536, fixed by the first write.
    pub fn write_page(&mut self, pgno: PageNo, data: &[u8]) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(format!(
                "database {:?} is open at version {}",
                self.db.name, self.read.snapshot
            )));
        }
        match self.write.page_size {
            Some(s) if s as usize == data.len() => {}
            None if data.len().is_power_of_two() && (512..=65536).contains(&data.len()) => {
                self.write.page_size = Some(data.len() as u32);
            }
            expected => {
                return Err(Error::PageSize {
                    expected,
                    got: data.len(),
                })
            }
        }
        if let Some(Dirty::Mem(old)) = self
            .write
            .pages
            .insert(pgno, Dirty::Mem(Arc::from(data.to_vec())))
        {
            self.write.mem_bytes -= old.len();
        }
        self.write.mem_bytes += data.len();
        if pgno.index() >= self.write.count {
            self.write.count = pgno.index() + 1;
        }
        if self.write.mem_bytes > self.db.store.inner.opts.spill_bytes {
            upload::spill(&self.db.store.inner, &self.db.keys, &mut self.write)?;
        }
        Ok(())
    }

    /// How durable the commit must be when it is acknowledged: the VFS
    /// passes SQLite's `PRAGMA synchronous` (OFF and NORMAL relaxed). The
    /// default is full; see [`crate::Durability`] for what a crash may lose
    /// otherwise. A commit group is full when any member is.
    pub fn set_durability(&mut self, durability: crate::Durability) {
        self.write.durability = durability;
    }

    /// Drops pages at and past `count`.
    pub fn truncate(&mut self, count: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(format!(
                "database {:?} is open at version {}",
                self.db.name, self.read.snapshot
            )));
        }
        if count < self.write.count {
            // count < self.write.count <= 2^32 here, so it is a page number.
            let cut: Vec<PageNo> = self
                .write
                .pages
                .range(PageNo::new(count.min(u32::MAX as u64) as u32)..)
                .map(|(p, _)| *p)
                .collect();
            for p in cut {
                if let Some(Dirty::Mem(d)) = self.write.pages.remove(&p) {
                    self.write.mem_bytes -= d.len();
                }
            }
            self.write.trunc_from = Some(self.write.trunc_from.map_or(count, |t| t.min(count)));
        }
        self.write.count = count;
        Ok(())
    }

    /// Commits. See [`Error::Conflict`] for what makes it fail.
    pub fn commit(mut self) -> Result<Committed> {
        self.finished = true;
        if !self.has_writes() {
            return Ok(Committed {
                version: self.read.snapshot,
                versionstamp: None,
            });
        }
        if self.read_only {
            return Err(Error::ReadOnly(
                "time-travel transactions cannot commit writes".into(),
            ));
        }
        let out = commit::commit(Writer {
            db: &self.db,
            read: &self.read,
            write: &mut self.write,
        });
        if matches!(&out, Err(e) if e.definitely_not_committed()) && self.write.uploaded {
            self.discard_uploads();
        }
        if let Ok(c) = &out {
            self.db.note_commit(c.version);
        }
        out
    }

    /// The transaction as a commit group member that only has its read
    /// set validated.
    fn member(&self) -> Member<'_> {
        Member {
            db: &self.db,
            read: &self.read,
            write: &self.write,
        }
    }

    /// Abandons the transaction (also done on drop).
    pub fn rollback(mut self) {
        self.abandon();
    }

    fn abandon(&mut self) {
        if !self.finished {
            self.finished = true;
            if self.write.uploaded {
                self.discard_uploads();
            }
        }
    }

    /// Removes what this transaction uploaded ahead (best effort).
    fn discard_uploads(&self) {
        upload::discard(&self.db.store.inner, &self.db.keys, &self.write.token);
    }
}

/// Commits transactions of several databases of one store in one store
/// commit: all of them or none, under one versionstamp. A conflict on any
/// fails the whole group with [`Error::Conflict`]. Transactions without
/// writes take no part (they need no commit).
///
/// ```
/// # use pagestore::{PageNo, PageStore, StoreOptions, commit_group};
/// # use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
/// # fn main() -> pagestore::Result<()> {
/// # let store = PageStore::new(EmbeddedKv::open(EmbeddedOptions::in_memory())?, StoreOptions::default());
/// let (a, b) = (store.create("a")?, store.create("b")?);
/// let mut ta = a.begin()?;
/// let mut tb = b.begin_sibling(&ta)?; // same snapshot
/// ta.write_page(PageNo::FIRST, &[1u8; 512])?;
/// tb.write_page(PageNo::FIRST, &[2u8; 512])?;
/// let c = commit_group(vec![ta, tb])?;
/// assert!(c.versionstamp.is_some());
/// # Ok(()) }
/// ```
pub fn commit_group(txns: Vec<Transaction>) -> Result<Committed> {
    commit_group_checked(txns, &[])
}

/// [`commit_group`], also validating the read sets of `readers`: sibling
/// transactions of the same SQL transaction that only read (they stay
/// open and usable). Without this, a transaction that reads database A and
/// writes B could form a write skew with one that reads B and writes A.
pub fn commit_group_checked(txns: Vec<Transaction>, readers: &[&Transaction]) -> Result<Committed> {
    let mut txns: Vec<Transaction> = txns;
    for t in txns.iter_mut() {
        t.finished = true;
        if t.read_only && t.has_writes() {
            return Err(Error::ReadOnly(
                "time-travel transactions cannot commit writes".into(),
            ));
        }
    }
    let snapshot = txns.first().map(|t| t.read.snapshot).unwrap_or_default();
    let (writers, idle): (Vec<&mut Transaction>, Vec<&mut Transaction>) =
        txns.iter_mut().partition(|t| t.has_writes());
    if writers.is_empty() {
        return Ok(Committed {
            version: snapshot,
            versionstamp: None,
        });
    }
    // Members without writes are readers too.
    let all_readers: Vec<Member<'_>> = readers
        .iter()
        .map(|t| t.member())
        .chain(idle.iter().map(|t| t.member()))
        .collect();
    let mut group: Vec<Writer<'_>> = writers
        .into_iter()
        .map(|t| Writer {
            db: &t.db,
            read: &t.read,
            write: &mut t.write,
        })
        .collect();
    let out = commit::commit_group(&mut group, &all_readers);
    if matches!(&out, Err(e) if e.definitely_not_committed()) {
        for t in group.iter().filter(|t| t.write.uploaded) {
            upload::discard(&t.db.store.inner, &t.db.keys, &t.write.token);
        }
    }
    if let Ok(c) = &out {
        for t in &group {
            t.db.note_commit(c.version);
        }
    }
    out
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.abandon();
    }
}
