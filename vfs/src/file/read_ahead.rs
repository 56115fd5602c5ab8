//! Read-ahead: a scan's next pages arrive in one store round trip per
//! batch instead of one per page. Two ways to know the next pages:
//!
//! * page-number runs: sequential reads fetch the pages after them, in
//!   windows that grow while a scan goes on;
//! * the B-tree's shape: interior pages name their children
//!   ([`crate::btree`]), so once SQLite moves from one child of an interior
//!   page to the next (a scan, not a lookup), the following children are
//!   fetched [`PREFETCH_PAGES`] at a time, wherever they lie in the file;
//!   when such a scan steps into the next interior page, that page's first
//!   (backwards: last) children come with its first child's read. An index
//!   filled in random key order, or a table whose pages interleave with
//!   another's, is then scanned cold in about depth + pages/32 round trips.
//!
//! When both want pages for one read, they are fetched in one round trip,
//! so a table in page-number order keeps the growing window; a read the
//! shape's batch already fetched leaves the window alone.
//!
//! On a warm cache none of this costs a page lookup: interior pages are only
//! remembered (a reference count), and a scan is only armed after a read
//! that went to the store.

#![warn(clippy::too_many_lines)]

use std::sync::Arc;

use pagestore::{PageNo, Transaction};

use crate::btree::{self, Interior};
use crate::error::Result;

/// Pages fetched ahead when SQLite reads sequentially: a cold scan of N
/// pages then costs about N/32 store round trips.
pub const PREFETCH_PAGES: u32 = 32;

/// Largest read-ahead window, in bytes of pages.
pub const PREFETCH_MAX_BYTES: u32 = 4 << 20;

/// Interior pages remembered per hold: a path from a root, plus a few.
const REMEMBERED: usize = 8;

/// Read-ahead of one lock hold.
#[derive(Debug, Default)]
pub(super) struct ReadAhead {
    /// The page read last.
    last_read: Option<u32>,
    /// The end of the last read-ahead window.
    prefetched_to: u32,
    /// Current read-ahead window, in pages.
    window: u32,
    /// Read-ahead by the B-tree's shape.
    shape: Shape,
}

impl ReadAhead {
    /// Before a read of page `pgno` of `count` pages: prefetches what a
    /// scan reaching `pgno` reads next (see [`Shape::before_read`] and
    /// [`ReadAhead::sequential`]).
    pub(super) fn before_read(&mut self, t: &mut Transaction, pgno: u32, count: u64) -> Result<()> {
        let step = self.shape.before_read(pgno, count);
        // A step of a scan whose batch holds this page already: the
        // page-number window has nothing to add.
        let covered = matches!(&step, Some(batch) if batch.is_empty());
        let mut pages = step.unwrap_or_default();
        if covered {
            self.last_read = Some(pgno);
        } else {
            // Both ways may want pages for this read: one round trip for
            // all (a table in page-number order keeps the growing window).
            self.sequential(t, pgno, count, &mut pages);
        }
        if !pages.is_empty() {
            pages.sort_unstable();
            pages.dedup();
            t.prefetch(&pages)?;
        }
        self.shape.mark(t);
        Ok(())
    }

    /// After page `pgno` was read (`whole`: the read covered the page, not
    /// only a header): learns its children if it is an interior page.
    pub(super) fn after_read(
        &mut self,
        t: &mut Transaction,
        pgno: u32,
        page: &Arc<[u8]>,
        whole: bool,
    ) -> Result<()> {
        if whole {
            self.shape.after_read(t, pgno, page)?;
        }
        Ok(())
    }

    /// A read of page p right after p-1, or of the first page past the last
    /// read-ahead window (a scan resuming after SQLite visited an interior
    /// page elsewhere), fetches the next pages in one store round trip. The
    /// window starts at [`PREFETCH_PAGES`] and doubles while the scan goes
    /// on, up to [`PREFETCH_MAX_BYTES`] of pages, so a long scan costs ever
    /// fewer round trips per page.
    fn sequential(&mut self, t: &Transaction, pgno: u32, count: u64, pages: &mut Vec<PageNo>) {
        // Page 1 (store page 0) is read at every transaction's start, so a
        // read of page 2 after it is no sign of a scan (a point lookup in a
        // table rooted at page 2 would fetch 32 pages for 2).
        let sequential = pgno > 1 && self.last_read == Some(pgno - 1);
        let resumes = self.prefetched_to > 0
            && pgno >= self.prefetched_to
            && pgno < self.prefetched_to.saturating_add(PREFETCH_PAGES);
        self.last_read = Some(pgno);
        if (sequential || resumes) && pgno >= self.prefetched_to {
            let page_size = t.page_size().unwrap_or(4096).max(512);
            let max_pages = (PREFETCH_MAX_BYTES / page_size).max(PREFETCH_PAGES);
            self.window = if resumes {
                (self.window.max(PREFETCH_PAGES) * 2).min(max_pages)
            } else {
                PREFETCH_PAGES
            };
            let end = (pgno as u64 + self.window as u64).min(count) as u32;
            if end > pgno {
                pages.extend((pgno..end).map(PageNo::new));
                self.prefetched_to = end;
            }
        }
    }
}

/// Which way a scan walks an interior page's children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Forward,
    Backward,
}

/// An interior page read in this hold, and the scan through it, if any.
#[derive(Debug)]
struct Parent {
    /// Store page number of the interior page.
    pgno: u32,
    page: Interior,
    /// Child index a forward scan reads next.
    forward: Option<usize>,
    /// Child index a backward scan reads next.
    backward: Option<usize>,
    /// Child indexes already prefetched (or read).
    fetched: (usize, usize),
    /// When last used (for replacing the least recently used).
    used: u64,
}

impl Parent {
    /// `child` was just read from the store without being expected: the
    /// next read of its neighbour (either way) is a scan.
    fn arm(&mut self, child: usize) {
        self.forward = Some(child + 1).filter(|&n| n < self.page.len());
        self.backward = child.checked_sub(1);
        self.fetched = (child, child + 1);
    }

    /// If SQLite is about to read child page `sqlite_pgno` as the next
    /// step of a scan: its index and the scan's direction.
    fn step(&self, sqlite_pgno: u32) -> Option<(usize, Dir)> {
        let hit = |i: Option<usize>| i.filter(|&i| self.page.child(i) == Some(sqlite_pgno));
        hit(self.forward)
            .map(|i| (i, Dir::Forward))
            .or_else(|| hit(self.backward).map(|i| (i, Dir::Backward)))
    }

    /// Moves the scan to child `i` going `dir`; returns the child indexes
    /// to prefetch (from `i` on, one batch) unless already fetched.
    fn advance(&mut self, i: usize, dir: Dir) -> Option<(usize, usize)> {
        let batch = PREFETCH_PAGES as usize;
        let covered = self.fetched.0 <= i && i < self.fetched.1;
        let range = match dir {
            Dir::Forward => {
                self.forward = Some(i + 1).filter(|&n| n < self.page.len());
                self.backward = None;
                (i, i + batch)
            }
            Dir::Backward => {
                self.forward = None;
                self.backward = i.checked_sub(1);
                ((i + 1).saturating_sub(batch), i + 1)
            }
        };
        if covered {
            return None;
        }
        self.fetched = range;
        Some(range)
    }

    /// A scan going `dir` just stepped into this page: it reads the
    /// children from the first (or last) on, and the read of that one
    /// fetches the first batch.
    fn enter(&mut self, dir: Dir) {
        self.forward = (dir == Dir::Forward).then_some(0);
        self.backward = (dir == Dir::Backward).then(|| self.page.len() - 1);
        self.fetched = (0, 0);
    }
}

/// Read-ahead by the B-tree's shape: the interior pages read in this hold.
#[derive(Debug, Default)]
struct Shape {
    parents: [Option<Parent>; REMEMBERED],
    /// Clock for `Parent::used`.
    tick: u64,
    /// The store's read counter before the current read (when any parent
    /// is remembered): a change means the page came from the store.
    reads_before: Option<u64>,
    /// The page being read is the next step of a scan going this way.
    stepped: Option<Dir>,
}

impl Shape {
    /// Before a read of store page `pgno`: if it is the next child of a
    /// scan, the pages to fetch with it: it and the children after it (one
    /// batch), or none when they were fetched already. None when the read
    /// is no such step.
    fn before_read(&mut self, pgno: u32, count: u64) -> Option<Vec<PageNo>> {
        self.stepped = None;
        self.tick += 1;
        let sqlite_pgno = pgno.saturating_add(1);
        let tick = self.tick;
        let (p, i, dir) = self
            .parents
            .iter_mut()
            .flatten()
            .find_map(|p| p.step(sqlite_pgno).map(|(i, d)| (p, i, d)))?;
        p.used = tick;
        self.stepped = Some(dir);
        Some(match p.advance(i, dir) {
            Some(range) => children(&p.page, range, count),
            None => Vec::new(),
        })
    }

    /// Notes the store's read counter, once interior pages are known (the
    /// read that follows may be a cold child of one of them).
    fn mark(&mut self, t: &Transaction) {
        self.reads_before = self.parents[0].is_some().then(|| store_reads(t));
    }

    /// After store page `pgno` was read: a cold read of a child arms a scan
    /// through its parent; an interior page is remembered, and one stepped
    /// into by a scan expects its first (or last) child next.
    fn after_read(&mut self, t: &mut Transaction, pgno: u32, page: &Arc<[u8]>) -> Result<()> {
        let cold = self.reads_before.is_some_and(|r| r != store_reads(t));
        if cold && self.stepped.is_none() {
            self.arm(pgno.saturating_add(1));
        }
        let first = pgno == 0;
        if !btree::looks_interior(page, first) {
            return Ok(());
        }
        let Some(interior) = Interior::parse(page.clone(), first) else {
            return Ok(());
        };
        let stepped = self.stepped;
        if let (Some(dir), Some(p)) = (stepped, self.remember(pgno, interior)) {
            p.enter(dir);
        }
        Ok(())
    }

    /// Arms the scan of the most recently used parent naming `sqlite_pgno`.
    fn arm(&mut self, sqlite_pgno: u32) {
        let tick = self.tick;
        let mut parents: Vec<&mut Parent> = self.parents.iter_mut().flatten().collect();
        parents.sort_by_key(|p| std::cmp::Reverse(p.used));
        for p in parents {
            if let Some(i) = p.page.position(sqlite_pgno) {
                p.arm(i);
                p.used = tick;
                return;
            }
        }
    }

    /// Remembers interior page `pgno` (in its old slot, an empty one, or
    /// the least recently used one's; the slots fill from the first).
    fn remember(&mut self, pgno: u32, page: Interior) -> Option<&mut Parent> {
        let at = self
            .parents
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.pgno == pgno))
            .or_else(|| self.parents.iter().position(Option::is_none))
            .or_else(|| {
                (0..REMEMBERED).min_by_key(|&i| self.parents[i].as_ref().map_or(0, |p| p.used))
            })?;
        let parent = Parent {
            pgno,
            page,
            forward: None,
            backward: None,
            fetched: (0, 0),
            used: self.tick,
        };
        let slot = self.parents.get_mut(at)?;
        *slot = Some(parent);
        slot.as_mut()
    }
}

/// Store reads so far (all connections of the store): a cheap sign that a
/// page read went to the store. Another thread's reads can make a cached
/// read look cold; that only costs a look at the parent's children.
fn store_reads(t: &Transaction) -> u64 {
    t.database().store().kv().metrics().reads
}

/// Children `range` of `page` that exist below `count` pages.
fn children(page: &Interior, range: (usize, usize), count: u64) -> Vec<PageNo> {
    page.children(range.0, range.1)
        .filter_map(PageNo::from_sqlite)
        .filter(|p| p.index() < count)
        .collect()
}
