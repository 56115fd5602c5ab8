//! `PRAGMA fdb_stats`: the store's counters on one line.

use pagestore::PageStore;

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
