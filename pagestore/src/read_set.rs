//! [`ReadSet`]: what a transaction read, and at which snapshot. The commit
//! validates it; nothing in it changes the store.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::ids::PageNo;
use crate::kv::Version;

/// A read version younger than this is reused for store reads instead of
/// asking for a new one (FDB's window is 5 s; keep a margin).
pub(crate) const READ_VERSION_REUSE: Duration = Duration::from_millis(4_000);

/// Where a transaction starts: its snapshot and the database's shape there.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    /// The version read.
    pub version: Version,
    /// A read version (>= `version`) usable for store reads, and when it
    /// was obtained.
    pub rv: Option<(Version, Instant)>,
    /// Page count at the snapshot.
    pub page_count: u64,
    /// Page size at the snapshot, once set.
    pub page_size: Option<u32>,
}

/// The reads of one transaction.
#[derive(Clone, Debug)]
pub(crate) struct ReadSet {
    /// The snapshot version the transaction reads.
    pub snapshot: Version,
    /// A read version (>= snapshot) usable for store reads, and when it
    /// was obtained.
    pub rv: Option<(Version, Instant)>,
    /// Pages read from the snapshot (not own writes).
    pub pages: BTreeSet<PageNo>,
    /// The page count was observed (reads past the end, `page_count()`).
    pub size_read: bool,
}

impl ReadSet {
    /// Nothing read yet at `start`.
    pub fn new(start: &Snapshot) -> Self {
        ReadSet {
            snapshot: start.version,
            rv: start.rv,
            pages: BTreeSet::new(),
            size_read: false,
        }
    }

    /// The read version when it is the snapshot itself and still young:
    /// the commit's fast path can then read at it.
    pub fn fresh(&self) -> bool {
        matches!(self.rv, Some((rv, at)) if rv == self.snapshot && at.elapsed() < READ_VERSION_REUSE)
    }
}
