//! Read-ahead: sequential reads fetch the pages after them in one store
//! round trip, in windows that grow while a scan goes on.

#![warn(clippy::too_many_lines)]

use pagestore::{PageNo, Transaction};

use crate::error::Result;

/// Pages fetched ahead when SQLite reads sequentially: a cold scan of N
/// pages then costs about N/32 store round trips.
pub const PREFETCH_PAGES: u32 = 32;

/// Largest read-ahead window, in bytes of pages.
pub const PREFETCH_MAX_BYTES: u32 = 4 << 20;

/// Sequential-read detection of one lock hold.
#[derive(Debug, Default)]
pub(super) struct ReadAhead {
    /// The page read last.
    last_read: Option<u32>,
    /// The end of the last read-ahead window.
    prefetched_to: u32,
    /// Current read-ahead window, in pages.
    window: u32,
}

impl ReadAhead {
    /// Before a read of page `pgno` of `count` pages: a read of page p
    /// right after p-1, or of the first page past the last read-ahead
    /// window (a scan resuming after SQLite visited an interior page
    /// elsewhere), fetches the next pages in one store round trip. The
    /// window starts at [`PREFETCH_PAGES`] and doubles while the scan goes
    /// on, up to [`PREFETCH_MAX_BYTES`] of pages, so a long scan costs ever
    /// fewer round trips per page.
    pub(super) fn before_read(&mut self, t: &mut Transaction, pgno: u32, count: u64) -> Result<()> {
        let sequential = pgno > 0 && self.last_read == Some(pgno - 1);
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
                let pages: Vec<PageNo> = (pgno..end).map(PageNo::new).collect();
                t.prefetch(&pages)?;
                self.prefetched_to = end;
            }
        }
        Ok(())
    }
}
