//! The process-wide page cache, shared by every connection of a
//! [`crate::PageStore`].
//!
//! Two parts:
//! * page contents, keyed by (database, page, versionstamp): immutable, so an
//!   entry never goes stale; bounded in bytes by moka's weigher;
//! * per database, a [`DbView`]: which version of each page is the latest as
//!   of the version `known` up to which this process has read the change log.
//!   At BEGIN the view is advanced through the change log (one read), after
//!   which a warm page read is a hash lookup with no store round trip.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use moka::sync::Cache;

use crate::ids::{DbId, PageNo};
use crate::kv::{Version, Versionstamp};

/// What the view knows of one page as of `DbView::known`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latest {
    /// The page's newest version, and the database that holds it (the
    /// database itself, or for a fork an ancestor it reads from).
    At(DbId, Versionstamp),
    /// The page has never been written (or only before a drop).
    Never,
}

/// One database's view: everything learnt from the change log up to `known`.
#[derive(Debug, Default)]
pub struct DbView {
    /// Change log read up to this version (0: nothing known yet).
    pub known: Version,
    /// When `known` was obtained as a read version (for reusing it).
    pub known_at: Option<Instant>,
    /// Page count as of `known`.
    pub page_count: u64,
    /// Page size, once set.
    pub page_size: Option<u32>,
    /// Newest version of each page as of `known`, for pages this process
    /// has seen.
    pub latest: HashMap<PageNo, Latest>,
    /// The upload token (and its database) of the last page read whose
    /// content was uploaded by a large commit: pages near it usually come
    /// from the same commit, so their content is requested in the same
    /// round trip as their index entries.
    pub last_token: Option<(DbId, crate::keys::Token)>,
}

impl DbView {
    /// Forgets everything (too far behind the change log to catch up).
    pub fn reset(&mut self) {
        *self = DbView::default();
    }
}

/// Hit and miss counters of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Page reads served without a store round trip.
    pub hits: u64,
    /// Page reads that went to the store.
    pub misses: u64,
    /// Bytes of page content currently cached.
    pub bytes: u64,
    /// Byte budget.
    pub capacity: u64,
}

impl CacheStats {
    /// hits / (hits + misses), or 0.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

type PageKey = (DbId, PageNo, Versionstamp);

/// The page cache of one store.
pub struct PageCache {
    pages: RwLock<Cache<PageKey, Arc<[u8]>>>,
    capacity: AtomicU64,
    views: Mutex<HashMap<DbId, Arc<Mutex<DbView>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("stats", &self.stats())
            .finish()
    }
}

fn build(capacity: u64) -> Cache<PageKey, Arc<[u8]>> {
    Cache::builder()
        .max_capacity(capacity)
        .weigher(|_k: &PageKey, v: &Arc<[u8]>| {
            // Content plus a fixed overhead for key and bookkeeping.
            (v.len() + 64).min(u32::MAX as usize) as u32
        })
        .build()
}

impl PageCache {
    /// A cache holding up to `capacity` bytes of pages.
    pub fn new(capacity: u64) -> Self {
        PageCache {
            pages: RwLock::new(build(capacity)),
            capacity: AtomicU64::new(capacity),
            views: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The view of database `id`.
    pub fn view(&self, id: DbId) -> Arc<Mutex<DbView>> {
        let mut views = lock(&self.views);
        views.entry(id).or_default().clone()
    }

    /// Forgets database `id` (dropped).
    pub fn forget(&self, id: DbId) {
        lock(&self.views).remove(&id);
        // Page entries of the id are unreachable now; moka evicts them.
    }

    /// Cached content of a page version.
    pub fn get(&self, db: DbId, pgno: PageNo, vs: &Versionstamp) -> Option<Arc<[u8]>> {
        self.pages().get(&(db, pgno, *vs))
    }

    /// Caches content of a page version.
    pub fn insert(&self, db: DbId, pgno: PageNo, vs: Versionstamp, data: Arc<[u8]>) {
        self.pages().insert((db, pgno, vs), data);
    }

    fn pages(&self) -> Cache<PageKey, Arc<[u8]>> {
        // A moka handle is an Arc; cloning it lets `set_capacity` swap the
        // cache without blocking readers for longer than the clone.
        self.pages.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self, n: u64) {
        self.misses.fetch_add(n, Ordering::Relaxed);
    }

    /// Changes the byte budget. Cached pages are dropped (moka cannot resize
    /// in place); views are kept, so the next reads refill from the store.
    pub fn set_capacity(&self, capacity: u64) {
        *self.pages.write().unwrap_or_else(|e| e.into_inner()) = build(capacity);
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Drops every cached page and view (benchmarks of cold reads).
    pub fn clear(&self) {
        let pages = self.pages();
        pages.invalidate_all();
        pages.run_pending_tasks();
        lock(&self.views).clear();
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        let pages = self.pages();
        pages.run_pending_tasks();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: pages.weighted_size(),
            capacity: self.capacity.load(Ordering::Relaxed),
        }
    }
}

/// Locks a mutex, recovering from poisoning: the data behind our locks is
/// kept consistent at every await-free step, and a panic elsewhere must not
/// turn into a panic on a path SQLite can reach.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
