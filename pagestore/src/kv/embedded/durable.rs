//! Durable storage of the latest values, on redb.
//!
//! Why redb: it is pure Rust (no C dependencies, builds with the Rust
//! toolchain alone), ACID, and crash-safe by construction: copy-on-write
//! B-trees and checksummed commit slots mean a kill -9 or power loss leaves
//! either the previous or the new commit, never a torn mix, and a commit
//! with `Durability::Immediate` is on disk when `commit()` returns. It has a
//! single writer and MVCC readers that never block on the writer, which
//! matches our model exactly: commits are serialised by the backend anyway,
//! and reads proceed from a consistent snapshot while a commit fsyncs.
//!
//! The directory and its files are private to their owner (0700 / 0600,
//! see `access`), whatever the umask.
//!
//! Layout: table `kv` holds key -> latest value, and the last committed
//! version under [`VERSION_ROW`] (in FDB's special key space, which no
//! client writes: commits refuse keys there and reads never show it),
//! written in the same redb transaction as the data, so a snapshot knows
//! which version it shows and versions keep increasing across restarts.
//! Stores written before kept the version in a table `meta` of its own (a
//! second B-tree and table root written at every commit, ~9k instructions
//! of a one-row commit); opening one copies it to the row once.
//!
//! Commits reach redb in groups ([`GroupWrite`], see `group`): the commits
//! queued behind the commit lock are written in one redb transaction, made
//! durable with one fsync. A group of relaxed commits only (SQLite's
//! `synchronous` OFF or NORMAL) is committed without the fsync (redb's
//! `Durability::None`: visible at once, on disk with the next durable
//! commit); the `flusher` makes one within [`super::flusher::FLUSH_DELAY`].
//! redb writes its commits in order, so what a crash leaves on disk is
//! always every commit up to some point: the relaxed commits after the last
//! durable one may be lost, never a commit acknowledged as durable nor
//! anything before it.

#![warn(clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::backends::InMemoryBackend;
use redb::{
    Database, DatabaseError, Durability, ReadOnlyTable, ReadableDatabase, ReadableTable,
    TableDefinition, TableHandle,
};

use super::access;
use super::atomic;
use super::conflict_ranges::KeyRange;
use super::dir_lock::DirLock;
use super::flusher::Flusher;
use super::writes::Mutation;
use crate::kv::{KvError, KvResult, Version};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
/// Where stores before the version row kept the version (read once, at
/// open, to migrate them).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VERSION_KEY: &str = "version";
/// The data table's row holding the last committed version (8 bytes,
/// big-endian).
pub(crate) const VERSION_ROW: &[u8] = b"\xff\xff/embedded/version";
/// redb's own cache of B-tree pages. Its default is 1 GiB, which a bulk
/// load fills with pages nobody reads again (the page store keeps hot pages
/// in its own cache): keep it small so memory stays near the page cache's
/// budget.
const REDB_CACHE_BYTES: usize = 64 << 20;

/// The redb file inside a store directory.
pub(crate) const DATA_FILE: &str = "data.redb";

/// The previous value of every key a commit touched.
pub(crate) type Before = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Rows of a range, in the requested order.
pub(crate) type Rows = Box<dyn Iterator<Item = KvResult<(Vec<u8>, Vec<u8>)>>>;

/// The redb database of one store.
pub(crate) struct Durable {
    db: Arc<Database>,
    /// Where the store lives, for error messages.
    location: String,
    /// Makes relaxed commits durable soon after (directory stores only).
    flusher: Option<Flusher>,
    /// Test builds: the in-memory store's disk, whose syncs can be made to
    /// fail (see `failing_disk`).
    #[cfg(test)]
    pub(crate) disk: Option<super::failing_disk::FailingDisk>,
    /// Held for the store's life; released on drop (after `db` is closed).
    _lock: Option<DirLock>,
}

impl Drop for Durable {
    fn drop(&mut self) {
        // Relaxed commits not yet on disk are made durable by a clean close.
        if let Some(f) = &self.flusher {
            f.close();
        }
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("location", &self.location)
            .finish()
    }
}

fn io(location: &str, what: &str, e: impl std::fmt::Display) -> KvError {
    KvError::new(KvError::IO_ERROR, format!("{location}: {what}: {e}"))
}

impl Durable {
    /// Opens the store in `dir` (taking its lock), or in memory; returns it
    /// with the last committed version.
    pub(crate) fn open(dir: Option<&Path>) -> KvResult<(Durable, Version)> {
        #[cfg(test)]
        let mut disk = None;
        let (db, location, lock) = match dir {
            Some(dir) => {
                // Private before anything is created in it (see `access`).
                access::prepare_dir(dir)?;
                let lock = DirLock::acquire(dir)?;
                access::private_file(lock.path())?;
                tracing::debug!(lock = %lock.path().display(), "store directory locked");
                let path: PathBuf = dir.join(DATA_FILE);
                // redb would create it with the umask's mode.
                access::create_private_file(&path)?;
                let location = format!("store {}", dir.display());
                let db = Database::builder()
                    .set_cache_size(REDB_CACHE_BYTES)
                    .create(&path)
                    .map_err(|e| match e {
                        DatabaseError::DatabaseAlreadyOpen => KvError::new(
                            KvError::OPERATION_FAILED,
                            format!(
                                "store directory {} is in use ({})",
                                dir.display(),
                                path.display()
                            ),
                        ),
                        other => io(&location, "cannot open", other),
                    })?;
                (db, location, Some(lock))
            }
            None => {
                let location = "in-memory store".to_string();
                #[cfg(test)]
                let backend = {
                    let d = super::failing_disk::FailingDisk::new(InMemoryBackend::new());
                    disk = Some(d.clone());
                    d
                };
                #[cfg(not(test))]
                let backend = InMemoryBackend::new();
                let db = Database::builder()
                    .set_cache_size(REDB_CACHE_BYTES)
                    .create_with_backend(backend)
                    .map_err(|e| io(&location, "cannot create", e))?;
                (db, location, None)
            }
        };
        let db = Arc::new(db);
        let flusher = lock
            .is_some()
            .then(|| Flusher::new(db.clone(), location.clone()));
        let durable = Durable {
            db,
            location,
            flusher,
            #[cfg(test)]
            disk,
            _lock: lock,
        };
        let version = durable.init()?;
        Ok((durable, version))
    }

    /// Creates the table if needed and reads the last committed version;
    /// a store without the version row gets it from its `meta` table (a
    /// store written before the row existed) or 0 (a new store).
    fn init(&self) -> KvResult<Version> {
        let loc = &self.location;
        let txn = self
            .db
            .begin_write()
            .map_err(|e| io(loc, "begin write", e))?;
        let version = {
            let mut data = txn.open_table(DATA).map_err(|e| io(loc, "open table", e))?;
            match read_version_row(&data, loc)? {
                Some(v) => v,
                None => {
                    let v = meta_version(&txn, loc)?;
                    write_version_row(&mut data, loc, v)?;
                    tracing::debug!(location = loc, version = v.get(), "version row written");
                    v
                }
            }
        };
        txn.commit().map_err(|e| io(loc, "commit", e))?;
        Ok(version)
    }

    /// A consistent read snapshot of the latest values.
    pub(crate) fn snapshot(&self) -> KvResult<Snapshot> {
        let loc = &self.location;
        let txn = self.db.begin_read().map_err(|e| io(loc, "begin read", e))?;
        let table = txn.open_table(DATA).map_err(|e| io(loc, "open table", e))?;
        let version = read_version_row(&table, loc)?.unwrap_or_default();
        Ok(Snapshot {
            table,
            version,
            location: self.location.clone(),
        })
    }

    /// Starts the redb write of a group of commits.
    pub(crate) fn begin_group(&self) -> KvResult<GroupWrite<'_>> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| io(&self.location, "begin write", e))?;
        Ok(GroupWrite { durable: self, txn })
    }

    /// Where the store lives, for messages.
    pub(crate) fn location(&self) -> &str {
        &self.location
    }
}

/// The redb write transaction of one group of commits: each commit's
/// mutations in commit order, then one redb commit that makes all of them
/// visible (and durable) at once. Dropped without [`GroupWrite::commit`],
/// nothing of it is written.
pub(crate) struct GroupWrite<'a> {
    durable: &'a Durable,
    txn: redb::WriteTransaction,
}

impl GroupWrite<'_> {
    /// Applies `mutations` (versionstamps already substituted) as commit
    /// `version`, after the commits applied before it in this group.
    /// Returns the previous values of the keys touched and the cleared
    /// ranges whose previous values were not kept (see [`clear_range`]),
    /// for readers at earlier versions; nothing is visible until
    /// [`GroupWrite::commit`].
    pub(crate) fn apply(
        &mut self,
        version: Version,
        mutations: &[Mutation],
        clear_budget: usize,
    ) -> KvResult<(Before, Vec<KeyRange>)> {
        let loc = self.durable.location.as_str();
        let mut before = Before::new();
        let mut lost = Vec::new();
        let mut table = self
            .txn
            .open_table(DATA)
            .map_err(|e| io(loc, "open table", e))?;
        apply_mutations(
            &mut table,
            loc,
            mutations,
            clear_budget,
            &mut before,
            &mut lost,
        )?;
        write_version_row(&mut table, loc, version)?;
        Ok((before, lost))
    }

    /// Makes every commit applied visible: on disk first (one fsync) when
    /// `durable`, else written without a sync (redb's `Durability::None`),
    /// on disk with the next durable commit or the flusher's.
    pub(crate) fn commit(self, durable: bool) -> KvResult<()> {
        let loc = self.durable.location.as_str();
        let mut txn = self.txn;
        let level = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(level)
            .map_err(|e| io(loc, "set durability", e))?;
        txn.commit().map_err(|e| io(loc, "commit", e))?;
        if let Some(f) = &self.durable.flusher {
            if durable {
                f.durable();
            } else {
                f.relaxed();
            }
        }
        Ok(())
    }
}

/// The version in the version row of `table`, if there is one.
fn read_version_row(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    loc: &str,
) -> KvResult<Option<Version>> {
    let Some(g) = table
        .get(VERSION_ROW)
        .map_err(|e| io(loc, "read version", e))?
    else {
        return Ok(None);
    };
    let bytes: [u8; 8] = g.value().try_into().map_err(|_| {
        KvError::new(
            KvError::IO_ERROR,
            format!(
                "{loc}: the version row holds {} bytes, not 8",
                g.value().len()
            ),
        )
    })?;
    Ok(Some(Version::new(u64::from_be_bytes(bytes))))
}

fn write_version_row(
    table: &mut redb::Table<&[u8], &[u8]>,
    loc: &str,
    version: Version,
) -> KvResult<()> {
    table
        .insert(VERSION_ROW, version.get().to_be_bytes().as_slice())
        .map_err(|e| io(loc, "write version", e))?;
    Ok(())
}

/// The version kept in the `meta` table of a store written before the
/// version row (0 when there is none).
fn meta_version(txn: &redb::WriteTransaction, loc: &str) -> KvResult<Version> {
    // Opening it would create it in a new store.
    let exists = txn
        .list_tables()
        .map_err(|e| io(loc, "list tables", e))?
        .any(|t| t.name() == META.name());
    if !exists {
        return Ok(Version::default());
    }
    let meta = txn.open_table(META).map_err(|e| io(loc, "open meta", e))?;
    let version = meta
        .get(VERSION_KEY)
        .map_err(|e| io(loc, "read version", e))?
        .map(|g| Version::new(g.value()))
        .unwrap_or_default();
    Ok(version)
}

/// Keys removed per batch of a range clear (and their bytes): the range
/// is read in batches this size, removed, and read on from the last key.
const CLEAR_BATCH_KEYS: usize = 1024;
const CLEAR_BATCH_BYTES: usize = 1 << 20;

/// Removes the keys of `[b, e)` in bounded batches, so that dropping a
/// database of any size takes O(1) memory. The previous values go into
/// `before` (for readers at earlier versions) only while they fit in
/// `budget` bytes; a larger range keeps none and is pushed on `lost`:
/// readers before this commit get 1007 there (see `mvcc`).
fn clear_range(
    table: &mut redb::Table<&[u8], &[u8]>,
    loc: &str,
    (b, e): (&Vec<u8>, &Vec<u8>),
    budget: usize,
    before: &mut Before,
    lost: &mut Vec<KeyRange>,
) -> KvResult<()> {
    let mut kept: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut kept_bytes = 0usize;
    let mut lossy = false;
    let mut from = b.clone();
    loop {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut batch_bytes = 0usize;
        for r in table
            .range(from.as_slice()..e.as_slice())
            .map_err(|e| io(loc, "range", e))?
        {
            let (k, v) = r.map_err(|e| io(loc, "range", e))?;
            let (k, v) = (k.value(), v.value());
            if k == VERSION_ROW {
                continue;
            }
            // An earlier mutation of this commit already recorded it.
            if !lossy && !before.contains_key(k) {
                kept_bytes += k.len() + v.len();
                if kept_bytes <= budget {
                    kept.push((k.to_vec(), v.to_vec()));
                } else {
                    lossy = true;
                    kept = Vec::new();
                }
            }
            batch_bytes += k.len();
            batch.push(k.to_vec());
            if batch.len() >= CLEAR_BATCH_KEYS || batch_bytes >= CLEAR_BATCH_BYTES {
                break;
            }
        }
        let Some(last) = batch.last() else {
            break;
        };
        from = last.clone();
        from.push(0);
        for k in &batch {
            table
                .remove(k.as_slice())
                .map_err(|e| io(loc, "clear", e))?;
        }
    }
    if lossy {
        lost.push((b.clone(), e.clone()));
    } else {
        for (k, v) in kept {
            before.entry(k).or_insert(Some(v));
        }
    }
    Ok(())
}

type Guard = redb::AccessGuard<'static, &'static [u8]>;

/// A redb read snapshot and the commit version it shows.
pub(crate) struct Snapshot {
    table: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// The last commit contained in the snapshot.
    pub(crate) version: Version,
    location: String,
}

impl Snapshot {
    /// The latest value of `key` in the snapshot.
    pub(crate) fn get(&self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        if key == VERSION_ROW {
            return Ok(None);
        }
        Ok(self
            .table
            .get(key)
            .map_err(|e| io(&self.location, "read", e))?
            .map(|g| g.value().to_vec()))
    }

    /// The last row of each of `ranges` (ascending, disjoint), in one walk
    /// (see `last_rows`).
    pub(crate) fn last_rows(
        &self,
        ranges: &[(&[u8], &[u8])],
    ) -> KvResult<Vec<Option<super::last_rows::Row>>> {
        let mut rows = super::last_rows::last_rows(&self.table, ranges)
            .map_err(|e| io(&self.location, "range", e))?;
        // The version row is no client's: the last row before it instead.
        for (row, (b, e)) in rows.iter_mut().zip(ranges) {
            if row.as_ref().is_some_and(|(k, _)| k == VERSION_ROW) {
                *row = self.range(b, e, true)?.next().transpose()?;
            }
        }
        Ok(rows)
    }

    /// Rows of `[begin, end)` in the snapshot, lazily.
    pub(crate) fn range(&self, begin: &[u8], end: &[u8], reverse: bool) -> KvResult<Rows> {
        if begin >= end {
            return Ok(Box::new(std::iter::empty()));
        }
        let loc = self.location.clone();
        let range = self
            .table
            .range(begin..end)
            .map_err(|e| io(&loc, "range", e))?;
        let map = move |r: Result<(Guard, Guard), redb::StorageError>| {
            r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec()))
                .map_err(|e| io(&loc, "range", e))
        };
        // The version row is no client's; only a range reaching into the
        // special key space can meet it.
        let hide = end > VERSION_ROW;
        let shown = move |r: &KvResult<(Vec<u8>, Vec<u8>)>| {
            !hide || r.as_ref().map_or(true, |(k, _)| k != VERSION_ROW)
        };
        if reverse {
            Ok(Box::new(range.rev().map(map).filter(shown)))
        } else {
            Ok(Box::new(range.map(map).filter(shown)))
        }
    }
}

/// Writes `mutations` into `table`, remembering in `before` the previous
/// value of every key touched (and in `lost` the cleared ranges whose
/// previous values were not kept).
fn apply_mutations(
    table: &mut redb::Table<&[u8], &[u8]>,
    loc: &str,
    mutations: &[Mutation],
    clear_budget: usize,
    before: &mut Before,
    lost: &mut Vec<KeyRange>,
) -> KvResult<()> {
    let read = |table: &redb::Table<&[u8], &[u8]>, key: &[u8]| -> KvResult<Option<Vec<u8>>> {
        Ok(table
            .get(key)
            .map_err(|e| io(loc, "read", e))?
            .map(|g| g.value().to_vec()))
    };
    for m in mutations {
        if let Mutation::Set(k, _) | Mutation::Clear(k) | Mutation::Atomic(k, _, _) = m {
            // Refused at commit (`check_mutation_sizes`); never written.
            if k == VERSION_ROW {
                continue;
            }
        }
        match m {
            Mutation::Set(k, v) => {
                // The insert returns the previous value: no separate read.
                let old = table
                    .insert(k.as_slice(), v.as_slice())
                    .map_err(|e| io(loc, "write", e))?
                    .map(|g| g.value().to_vec());
                if !before.contains_key(k) {
                    before.insert(k.clone(), old);
                }
            }
            Mutation::Clear(k) => {
                let old = table
                    .remove(k.as_slice())
                    .map_err(|e| io(loc, "clear", e))?
                    .map(|g| g.value().to_vec());
                before.entry(k.clone()).or_insert(old);
            }
            Mutation::ClearRange(b, e) => {
                clear_range(table, loc, (b, e), clear_budget, before, lost)?;
            }
            Mutation::Atomic(k, p, op) => {
                let old = read(table, k)?;
                let new = atomic::apply(*op, old.as_deref(), p);
                before.entry(k.clone()).or_insert(old);
                match new {
                    Some(v) => {
                        table
                            .insert(k.as_slice(), v.as_slice())
                            .map_err(|e| io(loc, "write", e))?;
                    }
                    None => {
                        table
                            .remove(k.as_slice())
                            .map_err(|e| io(loc, "clear", e))?;
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "version_row_tests.rs"]
mod version_row_tests;
