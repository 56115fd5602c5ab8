//! History: the time index, forks, point-in-time restore and retention.
//!
//! Every page version is kept (until GC), so:
//! * **time travel** is a read at an older snapshot ([`Database::begin_at`]);
//!   [`Database::version_at`] maps a wall-clock time to that snapshot;
//! * a **fork** is a new database whose pages fall back to its origin's
//!   pages as of the fork version (copy-on-write): one small commit,
//!   whatever the size;
//! * a **restore** is an ordinary commit that writes back, for the pages
//!   changed since the target version, their content at that version.

use std::collections::BTreeSet;
use std::time::Duration;

use tracing::{debug, info};

use crate::commit::Committed;
use crate::database::Database;
use crate::encoding::DbMeta;
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::kv::{RangeOption, ReadRequest, ReadResult, Version};
use crate::retry::{self, Backoff, Pause};
use crate::store::PageStore;

/// Attempts of [`Database::restore_retrying`] in all.
pub const RESTORE_ATTEMPTS: u32 = 10;

/// Default retention of old versions.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Committers' clocks may disagree by up to this much: a time lookup takes
/// the newest version among index entries in this window before the time
/// asked, so a writer whose clock runs behind cannot make the answer go
/// backwards (an entry with an earlier time but a later version still
/// counts as "at or before" every later time).
pub const CLOCK_SKEW_WINDOW: Duration = Duration::from_secs(60);

/// Index entries read from the skew window.
const SKEW_WINDOW_ROWS: usize = 512;

/// Pages read back per batch while restoring.
const RESTORE_BATCH: usize = 256;

impl Database {
    /// The last version committed at or before wall-clock time `micros`
    /// (µs since the Unix epoch); `Some(0)` for a time after the database
    /// was created but before its first commit; `None` before it existed.
    ///
    /// Monotone in `micros`: a later time never maps to an earlier version.
    pub fn version_at(&self, micros: u64) -> Result<Option<Version>> {
        let window = CLOCK_SKEW_WINDOW.as_micros() as u64;
        let (wb, we) = self.keys.times(micros.saturating_sub(window), micros);
        let (ab, ae) = self.keys.times(0, micros);
        let meta_key = self.store.inner.keys.meta(self.id);
        // The catalog entry (creation time) rides in the same batch.
        let res = self.store.inner.run("time-index", |t| {
            t.get_batch(
                &[
                    ReadRequest::Get(meta_key.clone()),
                    ReadRequest::Range(
                        RangeOption::new(wb.clone(), we.clone())
                            .limit(SKEW_WINDOW_ROWS)
                            .reverse(),
                    ),
                    ReadRequest::Range(RangeOption::new(ab.clone(), ae.clone()).limit(1).reverse()),
                ],
                true,
            )
            .map_err(Error::from)
        })?;
        let mut res = res.into_iter();
        let meta = match res.next() {
            Some(ReadResult::Value(Some(v))) => DbMeta::decode(&v)?,
            Some(ReadResult::Value(None)) => {
                return Err(Error::corrupt(format!(
                    "catalog entry of database {} missing",
                    self.id
                )))
            }
            _ => return Err(Error::corrupt("batch answer")),
        };
        if micros < meta.created_micros {
            return Ok(None);
        }
        let mut best: Option<Version> = None;
        for r in res {
            let ReadResult::Range(r) = r else {
                return Err(Error::corrupt("batch answer"));
            };
            for kv in r.kvs {
                let (_, vs) = self
                    .keys
                    .parse_time(&kv.key)
                    .ok_or_else(|| Error::corrupt("time-index key"))?;
                best = best.max(Some(vs.version()));
            }
        }
        Ok(Some(best.unwrap_or_default()))
    }

    /// [`Database::restore_to`], retrying a conflict with a concurrent
    /// writer (the restore is an ordinary commit) up to
    /// [`RESTORE_ATTEMPTS`] attempts in all, with backoff (2, 4, 8 … ms up to
    /// 100 ms, half of each delay at random so that colliding restores
    /// spread out). The one retry policy of every restore: the Rust API's
    /// and `PRAGMA fdb_restore`'s.
    pub fn restore_retrying(&self, version: Version) -> Result<Committed> {
        let policy = Backoff::store(RESTORE_ATTEMPTS - 1).with_jitter(0.5);
        retry::run(
            &policy,
            Error::is_conflict,
            |e, attempt| {
                debug!(database = %self.name(), attempt, error = %e, "restore conflicted; retrying");
                Pause::Backoff
            },
            |_| self.restore_to(version),
        )
    }

    /// Makes the current state equal to the state at `version`, as a new
    /// commit (history is kept, so a restore can itself be undone). Work is
    /// proportional to the pages changed since `version`. Concurrent writers
    /// see an ordinary commit: whichever commits second conflicts.
    pub fn restore_to(&self, version: Version) -> Result<Committed> {
        let mut txn = self.begin()?;
        if version > txn.snapshot() {
            return Err(Error::VersionInFuture {
                version,
                latest: txn.snapshot(),
            });
        }
        if let Some((_, origin)) = self.fork_origin() {
            if version < origin {
                return Err(Error::BeforeFork {
                    database: self.name.to_string(),
                    origin,
                    version,
                });
            }
        }
        let changed: BTreeSet<PageNo> = self
            .changes_between(version, txn.snapshot())?
            .into_iter()
            .flat_map(|c| c.record.changed())
            .collect();
        let mut old = self.begin_at(version)?;
        let old_count = old.page_count();
        let page_size = old.page_size().or(txn.page_size());
        let changed: Vec<PageNo> = changed.into_iter().collect();
        for chunk in changed.chunks(RESTORE_BATCH) {
            old.prefetch(chunk)?;
            txn.prefetch(chunk)?;
            for &p in chunk {
                // Reading puts the page in the read set: a concurrent
                // commit to it makes this restore conflict.
                txn.read_page(p)?;
                if p.index() >= old_count {
                    continue;
                }
                match (old.read_page(p)?, page_size) {
                    (Some(content), _) => txn.write_page(p, &content)?,
                    // A hole at that version: SQLite reads holes as zeros.
                    (None, Some(size)) => txn.write_page(p, &vec![0u8; size as usize])?,
                    (None, None) => {}
                }
            }
        }
        let count = txn.page_count();
        if count > old_count {
            txn.truncate(old_count)?;
        }
        failpoint!("restore::before_commit");
        let out = txn.commit()?;
        info!(database = %self.name, to = version.get(), pages = changed.len(), "restored");
        Ok(out)
    }

    /// How long old versions of this database stay readable.
    pub fn retention(&self) -> Result<Duration> {
        let meta = self.store.meta(self.id)?;
        Ok(meta
            .retention_micros
            .map(Duration::from_micros)
            .unwrap_or(DEFAULT_RETENTION))
    }

    /// Sets how long old versions stay readable (0: only the latest).
    pub fn set_retention(&self, retention: Duration) -> Result<()> {
        let key = self.store.inner.keys.meta(self.id);
        let micros = retention.as_micros().min(u64::MAX as u128) as u64;
        self.store.inner.run("retention", |t| {
            let v = t
                .get(&key, false)?
                .ok_or_else(|| Error::Dropped(self.name.to_string()))?;
            let mut meta = DbMeta::decode(&v)?;
            meta.retention_micros = Some(micros);
            t.set(&key, &meta.encode());
            Ok(())
        })
    }
}

impl PageStore {
    /// Creates `dst` as a fork of `src` as of `at` (default: now): a new,
    /// writable database that starts with `src`'s content at that version
    /// and shares its unchanged pages (copy-on-write). One commit,
    /// whatever the size of `src`. Writes to either never show in the other.
    pub fn fork(&self, src: &str, dst: &str, at: Option<Version>) -> Result<Database> {
        let source = self.open(src)?;
        let latest = source.latest_version()?;
        let at = at.unwrap_or(latest);
        if at > latest {
            return Err(Error::VersionInFuture {
                version: at,
                latest,
            });
        }
        if let Some((_, origin)) = source.fork_origin() {
            if at < origin {
                return Err(Error::BeforeFork {
                    database: src.to_string(),
                    origin,
                    version: at,
                });
            }
        }
        // Reading at `at` checks it is still inside the retention window.
        source.begin_at(at)?;
        let db = self.create_with(
            dst,
            DbMeta {
                name: dst.to_string(),
                created_micros: self.inner.opts.clock.now_micros(),
                parent: Some((source.id(), at)),
                ..Default::default()
            },
        )?;
        info!(source = src, fork = dst, at = at.get(), "forked database");
        Ok(db)
    }
}
