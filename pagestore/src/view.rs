//! [`DbView`]: this process's view of one database: which version of each
//! page is the latest as of the version `known` up to which the process has
//! read the change log. At BEGIN the view is advanced through the change
//! log (one read), after which a warm page read is a hash lookup with no
//! store round trip. The page cache keeps one per database.

#![warn(clippy::too_many_lines)]

use std::time::Instant;

use crate::fast_hash::FastMap;
use crate::ids::{DbId, PageNo, Token};
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
    /// When (store clock, µs) `known` was last confirmed to be the latest
    /// version: just before asking for the read version that showed it.
    /// Bounded-staleness BEGINs start at `known` while this is recent.
    pub confirmed: Option<u64>,
    /// When a bounded BEGIN last told the refresher about this database,
    /// and with which bound.
    pub wanted: Option<(Instant, std::time::Duration)>,
    /// The newest commit of this process to the database: a
    /// bounded-staleness BEGIN never starts below it (a process reads its
    /// own writes, whichever connection made them).
    pub committed: Version,
    /// The database's state at `known`, as a versionstamp: the newest
    /// change-log record applied, or after a (re)load at version `v` the
    /// bound after all of `v`. No record lies between it and `known`, so
    /// two snapshots with the same value read the same pages (nothing was
    /// committed in between): SQLite may keep its page cache. `None`
    /// before the first load.
    pub last_change: Option<Versionstamp>,
    /// Page count as of `known`.
    pub page_count: u64,
    /// Page size, once set.
    pub page_size: Option<u32>,
    /// Newest version of each page as of `known`, for pages this process
    /// has seen.
    pub latest: FastMap<PageNo, Latest>,
    /// The upload token (and its database) of the last page read whose
    /// content was uploaded by a large commit: pages near it usually come
    /// from the same commit, so their content is requested in the same
    /// round trip as their index entries.
    pub last_token: Option<(DbId, Token)>,
    /// A read version at which a batch of page reads found the database
    /// existing, and GC's horizon there: later batches at the same read
    /// version (the same answers) skip both reads.
    pub verified: Option<(Version, Version)>,
}

impl DbView {
    /// Forgets everything (too far behind the change log to catch up).
    pub fn reset(&mut self) {
        // What this process committed stays true.
        *self = DbView {
            committed: self.committed,
            ..DbView::default()
        };
    }
}
