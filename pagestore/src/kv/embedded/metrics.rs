//! Round-trip and byte counters of one store.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::kv::KvMetrics;

/// Lock-free counters behind [`KvMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) read_versions: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) commits: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) unknown_results: AtomicU64,
    pub(crate) bytes_read: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) max_commit_bytes: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// A consistent-enough copy of the counters.
    pub(crate) fn snapshot(&self) -> KvMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        KvMetrics {
            read_versions: get(&self.read_versions),
            reads: get(&self.reads),
            commits: get(&self.commits),
            conflicts: get(&self.conflicts),
            unknown_results: get(&self.unknown_results),
            bytes_read: get(&self.bytes_read),
            bytes_written: get(&self.bytes_written),
            max_commit_bytes: get(&self.max_commit_bytes),
        }
    }

    /// Records a successful commit of `size` bytes that wrote `written` bytes.
    pub(crate) fn committed(&self, size: u64, written: u64) {
        bump(&self.bytes_written, written);
        self.max_commit_bytes.fetch_max(size, Ordering::Relaxed);
    }
}
