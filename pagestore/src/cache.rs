//! The process-wide page cache, shared by every connection of a
//! [`crate::PageStore`]: page contents, keyed by (database, page,
//! versionstamp): immutable, so an entry never goes stale; bounded in bytes
//! by moka's weigher. It also keeps, per database, this process's
//! [`DbView`] (see `view.rs`) so that dropping the cache drops both.

#![warn(clippy::too_many_lines)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use moka::sync::Cache;

use crate::ids::{DbId, PageNo};
use crate::kv::Versionstamp;
use crate::sync::lock;
use crate::view::DbView;

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
