//! [`ReadSet`]: what a transaction read, and at which snapshot. The commit
//! validates it; nothing in it changes the store.

#![warn(clippy::too_many_lines)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::encoding::runs;
use crate::error::Result;
use crate::ids::PageNo;
use crate::kv::{Kv, KvError, KvResult, KvTxn, Version, Versionstamp};
use crate::page_set::PageSet;
use crate::retry::{self, Backoff, Failed, Pause};

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
    /// When (store clock, µs) the snapshot was last confirmed to be the
    /// latest version (`None` for time travel).
    pub confirmed_at: Option<u64>,
    /// The database's state at the snapshot (`DbView::last_change`), when
    /// this process's view was there; `None` when unknown.
    pub last_change: Option<Versionstamp>,
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
    /// When (store clock, µs) the snapshot was last confirmed to be the
    /// latest version (`None` for time travel).
    pub confirmed_at: Option<u64>,
    /// Pages read from the snapshot (not own writes).
    pub pages: BTreeSet<PageNo>,
    /// The page count was observed (reads past the end, `page_count()`).
    pub size_read: bool,
    /// Pages recorded as read without reading them
    /// (`Transaction::assume_read`), validated like `pages`.
    pub assumed: Option<Arc<PageSet>>,
}

impl ReadSet {
    /// Nothing read yet at `start`.
    pub fn new(start: &Snapshot) -> Self {
        ReadSet {
            snapshot: start.version,
            rv: start.rv,
            confirmed_at: start.confirmed_at,
            pages: BTreeSet::new(),
            size_read: false,
            assumed: None,
        }
    }

    /// Adds `pages` to the assumed reads; the page count counts as read.
    pub fn assume(&mut self, pages: &Arc<PageSet>) {
        match &mut self.assumed {
            Some(a) => Arc::make_mut(a).extend_from(pages),
            None => self.assumed = Some(pages.clone()),
        }
        self.size_read = true;
    }

    /// Number of pages to validate (read or assumed; a page in both counts
    /// twice).
    pub fn validated_len(&self) -> usize {
        let assumed = self.assumed.as_ref().map_or(0, |a| a.len());
        self.pages
            .len()
            .saturating_add(usize::try_from(assumed).unwrap_or(usize::MAX))
    }

    /// Whether `p` is read or assumed.
    pub fn contains(&self, p: PageNo) -> bool {
        self.pages.contains(&p) || self.assumed.as_ref().is_some_and(|a| a.contains(p))
    }

    /// The pages to validate as runs (first, length), in page order.
    pub fn runs(&self) -> Vec<(PageNo, u32)> {
        match self.with_assumed() {
            None => runs(&self.pages.iter().copied().collect::<Vec<_>>()),
            Some(all) => all.runs().collect(),
        }
    }

    /// Every page to validate, in order (the slow path probes each).
    pub fn all_pages(&self) -> Vec<PageNo> {
        match self.with_assumed() {
            None => self.pages.iter().copied().collect(),
            Some(all) => all.iter().collect(),
        }
    }

    /// The pages read and assumed, when some are assumed.
    fn with_assumed(&self) -> Option<PageSet> {
        self.assumed.as_ref().map(|a| {
            let mut all = (**a).clone();
            all.extend(self.pages.iter().copied());
            all
        })
    }

    /// The read version when it is the snapshot itself and still young:
    /// the commit's fast path can then read at it.
    pub fn fresh(&self) -> bool {
        matches!(self.rv, Some((rv, at)) if rv == self.snapshot && at.elapsed() < READ_VERSION_REUSE)
    }

    /// Runs a read in a store transaction at a read version >= the
    /// snapshot: a recent one is reused (no round trip); an old one (FDB's
    /// 5 s window) is replaced by a fresh read version. Page keys carry
    /// their versions, so any read version >= the snapshot gives the same
    /// answer: this is what lets a transaction outlive the window.
    pub fn store_read<T>(
        &mut self,
        kv: &Arc<dyn Kv>,
        mut f: impl FnMut(&mut dyn KvTxn) -> KvResult<T>,
    ) -> Result<T> {
        let rv = &mut self.rv;
        let out = retry::run(
            &Backoff::immediate(2),
            // Only the read itself is retried, not beginning or taking
            // a read version.
            |e: &Failed<KvError>| e.body().is_some_and(|e| e.is_retryable_not_committed()),
            |e, _| {
                if let Some(e) = e.body() {
                    debug!(code = e.code, "read retried with a fresh read version");
                }
                Pause::Skip
            },
            |attempt| {
                if attempt > 0 {
                    *rv = None;
                }
                let mut t = kv.begin().map_err(Failed::Setup)?;
                match *rv {
                    Some((v, at)) if at.elapsed() < READ_VERSION_REUSE => t.set_read_version(v),
                    _ => {
                        let v = t.read_version().map_err(Failed::Setup)?;
                        *rv = Some((v, Instant::now()));
                    }
                }
                f(t.as_mut()).map_err(Failed::Body)
            },
        );
        out.map_err(|e| e.into_inner().into())
    }
}
