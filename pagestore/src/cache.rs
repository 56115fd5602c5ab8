//! The process-wide page cache, shared by every connection of a
//! [`crate::PageStore`]: page contents, keyed by (database, page,
//! versionstamp): immutable, so an entry never goes stale; bounded in bytes.
//! It also keeps, per database, this process's [`DbView`] (see `view.rs`).
//!
//! A warm page read is one lookup here, so the lookup is kept cheap: a
//! few shards, each a hash map under a read-write lock, evicting by CLOCK
//! with a small use counter. A hit takes a shared lock and bumps the
//! counter; it never writes shared bookkeeping (moka, used before, recorded
//! every read for its LRU and frequency sketch and hashed with SipHash: over
//! half of a warm page read). New entries start unused, so pages read once
//! (a scan) are evicted before pages read again.

#![warn(clippy::too_many_lines)]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::fast_hash::FastMap;
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

/// A page version: (database, page, versionstamp).
#[derive(Clone, Copy, PartialEq, Eq)]
struct PageKey(DbId, PageNo, Versionstamp);

impl Hash for PageKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Two words instead of the fields' five (a lookup is on every page
        // read); versions of one page differ in their first eight bytes
        // (the commit version) but for commits of one batch, which share
        // them and differ in the last two.
        let PageKey(db, p, vs) = self;
        let mut version = [0u8; 8];
        version.copy_from_slice(&vs.0[..8]);
        let order = u64::from(u16::from_be_bytes([vs.0[8], vs.0[9]]));
        state.write_u64(db.get() ^ (u64::from(p.get()) << 16) ^ (order << 48));
        state.write_u64(u64::from_be_bytes(version));
    }
}

/// Bytes counted per entry besides its content (key, slot, map entry).
const ENTRY_OVERHEAD: u64 = 64;

/// Budget per shard below which fewer shards are used (a small cache split
/// many ways would hold few pages per shard).
const MIN_SHARD_BYTES: u64 = 4 << 20;

/// Most shards: enough that connections on different threads rarely meet
/// on one lock.
const MAX_SHARDS: usize = 16;

/// How many times a page must be passed over by the clock hand, unused,
/// before it is evicted, at most.
const MAX_USES: u8 = 3;

/// One cached page version.
struct Slot {
    key: PageKey,
    data: Arc<[u8]>,
    weight: u64,
    /// Reads since the clock hand last passed (saturating at `MAX_USES`).
    uses: AtomicU8,
}

/// One shard: a map to slots, and the slots in clock order.
#[derive(Default)]
struct Clock {
    index: FastMap<PageKey, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    bytes: u64,
    budget: u64,
}

impl Clock {
    fn new(budget: u64) -> Self {
        Clock {
            budget,
            ..Clock::default()
        }
    }

    fn get(&self, key: &PageKey) -> Option<Arc<[u8]>> {
        let slot = self.slots.get(*self.index.get(key)?)?.as_ref()?;
        // Racing bumps may lose one: the counter is a hint.
        let uses = slot.uses.load(Ordering::Relaxed);
        if uses < MAX_USES {
            slot.uses.store(uses + 1, Ordering::Relaxed);
        }
        Some(slot.data.clone())
    }

    fn insert(&mut self, key: PageKey, data: Arc<[u8]>) {
        let weight = data.len() as u64 + ENTRY_OVERHEAD;
        if weight > self.budget || self.index.contains_key(&key) {
            return;
        }
        while self.bytes + weight > self.budget && self.evict_one() {}
        let slot = Some(Slot {
            key,
            data,
            weight,
            uses: AtomicU8::new(0),
        });
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.slots.len() - 1
            }
        };
        self.index.insert(key, i);
        self.bytes += weight;
    }

    /// Moves the hand to the next unused page and evicts it; false when
    /// the shard is empty. Each pass over a used page lowers its count, so
    /// this ends within `MAX_USES + 1` turns.
    fn evict_one(&mut self) -> bool {
        if self.index.is_empty() {
            return false;
        }
        loop {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            let Some(s) = &self.slots[i] else { continue };
            let uses = s.uses.load(Ordering::Relaxed);
            if uses > 0 {
                s.uses.store(uses - 1, Ordering::Relaxed);
                continue;
            }
            if let Some(s) = self.slots[i].take() {
                self.index.remove(&s.key);
                self.bytes -= s.weight;
                self.free.push(i);
            }
            return true;
        }
    }

    fn set_budget(&mut self, budget: u64) {
        self.budget = budget;
        while self.bytes > self.budget && self.evict_one() {}
    }
}

/// The page cache of one store.
pub struct PageCache {
    shards: Box<[RwLock<Clock>]>,
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

/// Shards for a budget of `capacity` bytes: a power of two up to
/// `MAX_SHARDS`, each with at least `MIN_SHARD_BYTES` when possible.
fn shard_count(capacity: u64) -> usize {
    let n = (capacity / MIN_SHARD_BYTES).clamp(1, MAX_SHARDS as u64) as usize;
    1 << n.ilog2()
}

impl PageCache {
    /// A cache holding up to `capacity` bytes of pages.
    pub fn new(capacity: u64) -> Self {
        let n = shard_count(capacity);
        let per = capacity / n as u64;
        PageCache {
            shards: (0..n).map(|_| RwLock::new(Clock::new(per))).collect(),
            capacity: AtomicU64::new(capacity),
            views: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The view of database `id`: one per database while the cache lives
    /// (a [`crate::Database`] keeps it, so its reads skip this lookup).
    pub fn view(&self, id: DbId) -> Arc<Mutex<DbView>> {
        let mut views = lock(&self.views);
        views.entry(id).or_default().clone()
    }

    /// Forgets database `id` (dropped).
    pub fn forget(&self, id: DbId) {
        if let Some(v) = lock(&self.views).remove(&id) {
            // Handles still holding it must not trust it.
            lock(&v).reset();
        }
        // Page entries of the id are unreachable now; the clock evicts them.
    }

    fn shard(&self, key: &PageKey) -> &RwLock<Clock> {
        // Page numbers spread consecutive pages over the shards; the
        // (random) database id mixes in so that the same hot page of many
        // databases does not pile onto one shard.
        let PageKey(db, p, _) = key;
        let mix = db.get() ^ u64::from(p.get());
        &self.shards[(mix as usize) & (self.shards.len() - 1)]
    }

    /// Cached content of a page version.
    pub fn get(&self, db: DbId, pgno: PageNo, vs: &Versionstamp) -> Option<Arc<[u8]>> {
        let key = PageKey(db, pgno, *vs);
        read(self.shard(&key)).get(&key)
    }

    /// Whether a page version is cached (not counted as a use: read-ahead
    /// asks this of pages that may never be read).
    pub(crate) fn contains(&self, db: DbId, pgno: PageNo, vs: &Versionstamp) -> bool {
        let key = PageKey(db, pgno, *vs);
        read(self.shard(&key)).index.contains_key(&key)
    }

    /// Caches content of a page version.
    pub fn insert(&self, db: DbId, pgno: PageNo, vs: Versionstamp, data: Arc<[u8]>) {
        let key = PageKey(db, pgno, vs);
        write(self.shard(&key)).insert(key, data);
    }

    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hits(&self, n: u64) {
        if n > 0 {
            self.hits.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn miss(&self, n: u64) {
        self.misses.fetch_add(n, Ordering::Relaxed);
    }

    /// Changes the byte budget, evicting down to it; views are kept.
    pub fn set_capacity(&self, capacity: u64) {
        let per = capacity / self.shards.len() as u64;
        for s in self.shards.iter() {
            write(s).set_budget(per);
        }
        self.capacity.store(capacity, Ordering::Relaxed);
    }

    /// Drops every cached page and forgets what every view knows
    /// (benchmarks of cold reads): the next BEGIN reloads each view.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            let mut s = write(s);
            *s = Clock::new(s.budget);
        }
        // Reset in place: databases keep their view (see `view`).
        let views: Vec<_> = lock(&self.views).values().cloned().collect();
        for v in views {
            lock(&v).reset();
        }
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.shards.iter().map(|s| read(s).bytes).sum(),
            capacity: self.capacity.load(Ordering::Relaxed),
        }
    }
}

// A panic while holding a shard leaves it consistent enough to read (the
// map and slots are updated together before any call that can panic).
fn read(s: &RwLock<Clock>) -> RwLockReadGuard<'_, Clock> {
    s.read().unwrap_or_else(|e| e.into_inner())
}

fn write(s: &RwLock<Clock>) -> RwLockWriteGuard<'_, Clock> {
    s.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Version;

    const PAGE: usize = 4096;
    const WEIGHT: u64 = PAGE as u64 + ENTRY_OVERHEAD;

    fn vs(v: u64) -> Versionstamp {
        Versionstamp::new(Version::new(v), 0)
    }

    fn page(byte: u8) -> Arc<[u8]> {
        Arc::from(vec![byte; PAGE])
    }

    fn put(c: &PageCache, p: u32) {
        c.insert(DbId::new(7), PageNo::new(p), vs(1), page(p as u8));
    }

    fn has(c: &PageCache, p: u32) -> bool {
        c.get(DbId::new(7), PageNo::new(p), &vs(1)).is_some()
    }

    #[test]
    fn hits_are_keyed_by_version() {
        let c = PageCache::new(1 << 20);
        put(&c, 3);
        let got = c.get(DbId::new(7), PageNo::new(3), &vs(1));
        assert_eq!(got.as_deref(), Some(&page(3)[..]));
        assert!(c.get(DbId::new(7), PageNo::new(3), &vs(2)).is_none());
        assert!(c.get(DbId::new(8), PageNo::new(3), &vs(1)).is_none());
        // The same version twice is counted once.
        put(&c, 3);
        assert_eq!(c.stats().bytes, WEIGHT);
    }

    #[test]
    fn stays_within_its_byte_budget() {
        for capacity in [0, 1, 10 * WEIGHT, 3 << 20, 40 << 20] {
            let c = PageCache::new(capacity);
            for p in 0..4_000 {
                put(&c, p);
                assert!(c.stats().bytes <= capacity, "capacity {capacity}");
            }
            // A budget of a few pages still caches pages, and most of the
            // budget is used.
            if capacity >= 10 * WEIGHT {
                let used = c.stats().bytes;
                assert!(
                    used > capacity.min(4_000 * WEIGHT) / 2,
                    "capacity {capacity}: {used}"
                );
            }
        }
    }

    #[test]
    fn pages_read_again_outlive_a_scan() {
        let c = PageCache::new(2 << 20); // one shard of ~500 pages
        for p in 0..100 {
            put(&c, p);
            assert!(has(&c, p));
        }
        // A scan of 4x the budget, each page read once (as `learn` does:
        // inserted, not looked up), while the hot pages stay in use.
        for p in 1_000..3_000 {
            put(&c, p);
            if p % 100 == 0 {
                for h in 0..100 {
                    assert!(has(&c, h), "hot page {h} evicted at scan page {p}");
                }
            }
        }
    }

    #[test]
    fn concurrent_readers_and_writers_get_what_was_put() {
        let c = Arc::new(PageCache::new(8 << 20)); // 2 shards
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..20_000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let p = (x % 5_000) as u32;
                        match c.get(DbId::new(7), PageNo::new(p), &vs(1)) {
                            Some(d) => assert_eq!(d[0], p as u8),
                            None => put(&c, p),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
        let s = c.stats();
        assert!(s.bytes <= s.capacity && s.bytes > s.capacity / 2, "{s:?}");
    }

    #[test]
    fn set_capacity_evicts_down_in_place() {
        let c = PageCache::new(64 << 20);
        for p in 0..1_000 {
            put(&c, p);
        }
        assert_eq!(c.stats().bytes, 1_000 * WEIGHT);
        c.set_capacity(1 << 20);
        let s = c.stats();
        assert!(s.bytes <= 1 << 20 && s.bytes > 0, "{s:?}");
        assert_eq!(s.capacity, 1 << 20);
        c.set_capacity(64 << 20);
        put(&c, 5_000);
        assert!(has(&c, 5_000));
    }

    #[test]
    fn clear_and_forget_reset_views_in_place() {
        let c = PageCache::new(1 << 20);
        let id = DbId::new(7);
        let held = c.view(id);
        lock(&held).known = Version::new(42);
        put(&c, 1);
        assert!(Arc::ptr_eq(&held, &c.view(id)));
        c.clear();
        assert!(!has(&c, 1));
        assert_eq!(c.stats().bytes, 0);
        // Whoever holds the view sees it forgotten, and it is still the
        // database's one view.
        assert_eq!(lock(&held).known, Version::ZERO);
        assert!(Arc::ptr_eq(&held, &c.view(id)));
        lock(&held).known = Version::new(43);
        c.forget(id);
        assert_eq!(lock(&held).known, Version::ZERO);
    }
}
