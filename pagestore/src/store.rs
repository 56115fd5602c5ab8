//! [`PageStore`]: the entry point. Holds the KV backend, the key layout and
//! the process-wide page cache, and runs small store transactions with
//! FDB-style retries.

#![warn(clippy::too_many_lines)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tracing::debug;

use crate::cache::{CacheStats, PageCache};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::indexing::Indexing;
use crate::keys::Keyspace;
use crate::kv::{Durability, Kv, KvMetrics, KvTxn};
use crate::refresher::Refresher;
use crate::retry::{self, Backoff, Failed, Pause};

/// Options of a [`PageStore`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Key prefix of this deployment (several can share one cluster).
    pub prefix: Vec<u8>,
    /// Byte budget of the page cache.
    pub cache_bytes: u64,
    /// A commit whose page bytes stay under this is written in one store
    /// transaction, pages inline; above it pages are uploaded ahead in
    /// chunks and the commit writes only small index entries.
    pub inline_commit_bytes: usize,
    /// Size of one upload chunk (one store transaction), far below FDB's
    /// 10 MB limit; FDB recommends transactions under 1 MB.
    pub chunk_bytes: usize,
    /// Dirty page bytes a transaction keeps in memory before it starts
    /// uploading them ahead of commit.
    pub spill_bytes: usize,
    /// How often an internal store transaction is retried on retryable errors.
    pub max_retries: u32,
    /// Wall-clock source (upload markers, and later the time index).
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            prefix: b"fv".to_vec(),
            cache_bytes: 256 << 20,
            inline_commit_bytes: 900_000,
            chunk_bytes: 900_000,
            spill_bytes: 16 << 20,
            max_retries: 20,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Counters of the page store (on top of the backend's [`KvMetrics`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StoreStats {
    /// Page cache counters.
    pub cache: CacheStats,
    /// Store round trips and bytes.
    pub kv: KvMetrics,
    /// Transactions committed with writes.
    pub commits: u64,
    /// Commits refused with a page conflict.
    pub conflicts: u64,
    /// Commits that found, after an unknown result, that they had landed.
    pub recovered_unknown: u64,
    /// Store transactions (internal ones and commits) retried after a
    /// retryable error.
    pub retries: u64,
    /// What GC passes run by this process removed, added up.
    pub gc: GcTotals,
}

/// The live counters behind [`GcTotals`].
#[derive(Debug, Default)]
pub(crate) struct GcCounters {
    passes: AtomicU64,
    page_versions: AtomicU64,
    page_bytes: AtomicU64,
    metadata_keys: AtomicU64,
    transactions: AtomicU64,
}

impl GcCounters {
    /// Adds one finished pass.
    pub(crate) fn add(&self, r: &crate::GcReport) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.page_versions
            .fetch_add(r.page_versions, Ordering::Relaxed);
        self.page_bytes.fetch_add(r.page_bytes, Ordering::Relaxed);
        self.metadata_keys
            .fetch_add(r.metadata_keys, Ordering::Relaxed);
        self.transactions
            .fetch_add(r.transactions, Ordering::Relaxed);
    }

    fn totals(&self) -> GcTotals {
        GcTotals {
            passes: self.passes.load(Ordering::Relaxed),
            page_versions: self.page_versions.load(Ordering::Relaxed),
            page_bytes: self.page_bytes.load(Ordering::Relaxed),
            metadata_keys: self.metadata_keys.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
        }
    }
}

/// GC progress of one process: sums over the passes it ran (dry runs
/// excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcTotals {
    /// Passes over one database.
    pub passes: u64,
    /// Page versions removed.
    pub page_versions: u64,
    /// Page content bytes removed.
    pub page_bytes: u64,
    /// Change-log records, time-index entries, size records and tokens removed.
    pub metadata_keys: u64,
    /// Store transactions GC committed.
    pub transactions: u64,
}

/// What every handle of one store shares: the backend, the key layout, the
/// page cache, the options and the counters.
pub(crate) struct StoreCore {
    pub kv: Arc<dyn Kv>,
    pub keys: Keyspace,
    pub cache: PageCache,
    pub opts: StoreOptions,
    pub commits: AtomicU64,
    pub conflicts: AtomicU64,
    pub recovered_unknown: AtomicU64,
    pub retries: AtomicU64,
    pub gc: GcCounters,
    /// Keeps views fresh for bounded-staleness BEGINs.
    pub refresher: Arc<Refresher>,
    /// Large commits this process is indexing.
    pub indexing: Indexing,
}

/// Versioned page storage; cheap to clone and share between threads.
///
/// ```
/// use pagestore::{PageNo, PageStore, StoreOptions};
/// use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
/// # fn main() -> pagestore::Result<()> {
/// let kv = EmbeddedKv::open(EmbeddedOptions::in_memory())?;
/// let store = PageStore::new(kv, StoreOptions::default());
/// let db = store.create("orders")?;
/// let mut txn = db.begin()?;
/// txn.write_page(PageNo::FIRST, &[7u8; 4096])?;
/// txn.commit()?;
/// let mut txn = db.begin()?;
/// assert_eq!(txn.read_page(PageNo::FIRST)?.unwrap()[0], 7);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PageStore {
    pub(crate) inner: Arc<StoreCore>,
}

impl std::fmt::Debug for PageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageStore")
            .field("backend", &self.inner.kv.backend_name())
            .field("prefix", &String::from_utf8_lossy(self.inner.keys.prefix()))
            .finish()
    }
}

impl PageStore {
    /// A page store on `kv`.
    pub fn new(kv: Arc<dyn Kv>, opts: StoreOptions) -> Self {
        PageStore {
            inner: Arc::new(StoreCore {
                kv,
                keys: Keyspace::new(opts.prefix.clone()),
                cache: PageCache::new(opts.cache_bytes),
                opts,
                commits: AtomicU64::new(0),
                conflicts: AtomicU64::new(0),
                recovered_unknown: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                gc: Default::default(),
                refresher: Default::default(),
                indexing: Indexing::default(),
            }),
        }
    }

    /// The backend.
    pub fn kv(&self) -> &Arc<dyn Kv> {
        &self.inner.kv
    }

    /// How many handles share this store (its clones and the databases
    /// opened from it): 1 when the caller's is the last, so that a registry
    /// can release a store nobody uses.
    pub fn handle_count(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// The options.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// The page cache.
    pub fn cache(&self) -> &PageCache {
        &self.inner.cache
    }

    /// Counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            cache: self.inner.cache.stats(),
            kv: self.inner.kv.metrics(),
            commits: self.inner.commits.load(Ordering::Relaxed),
            conflicts: self.inner.conflicts.load(Ordering::Relaxed),
            recovered_unknown: self.inner.recovered_unknown.load(Ordering::Relaxed),
            retries: self.inner.retries.load(Ordering::Relaxed),
            gc: self.inner.gc.totals(),
        }
    }
}

impl StoreCore {
    /// Runs `f` in a store transaction, retrying retryable errors with
    /// exponential backoff like FDB's `run`. `f` must be idempotent: after
    /// `commit_unknown_result` it runs again and must detect its own work.
    pub fn run<T>(&self, what: &str, f: impl FnMut(&mut dyn KvTxn) -> Result<T>) -> Result<T> {
        self.run_at(what, Durability::Full, f)
    }

    /// [`StoreCore::run`] for writes nobody can see until a later full
    /// commit refers to them (a large commit's uploaded chunks): may be
    /// acknowledged before they are on disk. The embedded store writes
    /// commits in order, so that full commit makes them durable too; a
    /// crash before it loses only what nothing refers to. Never for writes
    /// other processes may read at once (a shared store's clients outlive
    /// its owner): those must be on disk first. FoundationDB commits are
    /// always durable.
    pub fn run_relaxed<T>(
        &self,
        what: &str,
        f: impl FnMut(&mut dyn KvTxn) -> Result<T>,
    ) -> Result<T> {
        self.run_at(what, Durability::Relaxed, f)
    }

    fn run_at<T>(
        &self,
        what: &str,
        durability: Durability,
        mut f: impl FnMut(&mut dyn KvTxn) -> Result<T>,
    ) -> Result<T> {
        let out = retry::run(
            &Backoff::store(self.opts.max_retries),
            // A failure to begin is never retried.
            |e: &Failed<Error>| matches!(e.body(), Some(Error::Kv(k)) if k.is_retryable()),
            |e, attempt| {
                self.retries.fetch_add(1, Ordering::Relaxed);
                if let Some(Error::Kv(e)) = e.body() {
                    debug!(
                        op = what,
                        code = e.code,
                        attempt,
                        "retrying store transaction"
                    );
                }
                Pause::Backoff
            },
            |_| {
                let mut txn = self.kv.begin().map_err(|e| Failed::Setup(e.into()))?;
                txn.set_durability(durability);
                f(txn.as_mut())
                    .and_then(|v| txn.commit().map(|_| v).map_err(Error::from))
                    .map_err(Failed::Body)
            },
        );
        out.map_err(Failed::into_inner)
    }
}
