//! Round-trip and byte counters of one store handle, shared by every
//! backend so that [`KvMetrics`] means the same everywhere.
//!
//! Each method records one event; which calls count as which event is the
//! backend's business (see [`KvMetrics`] for the meaning of each field).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::kv::KvMetrics;

/// Lock-free counters behind [`KvMetrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    read_versions: AtomicU64,
    reads: AtomicU64,
    commits: AtomicU64,
    conflicts: AtomicU64,
    unknown_results: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    max_commit_bytes: AtomicU64,
}

/// Adds `n` to a counter.
fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    /// One read-version round trip (GRV).
    pub(crate) fn read_version(&self) {
        bump(&self.read_versions, 1);
    }

    /// One read round trip (its bytes are counted by [`Counters::bytes_read`]).
    pub(crate) fn read(&self) {
        bump(&self.reads, 1);
    }

    /// `n` value bytes returned by reads.
    pub(crate) fn bytes_read(&self, n: u64) {
        bump(&self.bytes_read, n);
    }

    /// One commit round trip, whatever its outcome.
    pub(crate) fn commit(&self) {
        bump(&self.commits, 1);
    }

    /// A commit that failed with `not_committed` (1020).
    pub(crate) fn conflict(&self) {
        bump(&self.conflicts, 1);
    }

    /// A commit that ended in `commit_unknown_result` (1021).
    pub(crate) fn unknown_result(&self) {
        bump(&self.unknown_results, 1);
    }

    /// A successful commit of a `size`-byte transaction that wrote
    /// `written` key and value bytes.
    pub(crate) fn committed(&self, size: u64, written: u64) {
        bump(&self.bytes_written, written);
        self.max_commit_bytes.fetch_max(size, Ordering::Relaxed);
    }

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
}

#[cfg(test)]
mod tests {
    use super::Counters;

    #[test]
    fn events_land_in_their_fields() {
        let c = Counters::default();
        c.read_version();
        c.read();
        c.read();
        c.bytes_read(7);
        c.commit();
        c.conflict();
        c.unknown_result();
        c.committed(10, 4);
        c.committed(3, 2);
        let m = c.snapshot();
        assert_eq!(
            (m.read_versions, m.reads, m.commits, m.conflicts),
            (1, 2, 1, 1)
        );
        assert_eq!(
            (m.unknown_results, m.bytes_read, m.bytes_written),
            (1, 7, 6)
        );
        assert_eq!(m.max_commit_bytes, 10);
    }
}
