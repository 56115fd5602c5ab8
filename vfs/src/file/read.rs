//! The read path: xRead and xFileSize from the transaction reads go to,
//! page by page, with the served change counter patched into the header.

#![warn(clippy::too_many_lines)]

use pagestore::sync::lock as locked;
use pagestore::{PageNo, Transaction};

use super::{Hold, MainFile, State};
use crate::error::{Error, Misuse, Result};
use crate::header;

impl MainFile {
    /// Runs `f` on the transaction reads go to: the active one, the lazily
    /// opened reader after a commit or a failed one, or a one-off
    /// transaction when SQLite reads without a lock (the header read at open).
    pub(super) fn with_read_txn<R>(
        &mut self,
        f: impl FnOnce(&mut Transaction, &mut Hold) -> Result<R>,
    ) -> Result<R> {
        self.settle();
        let mut st = locked(&self.state);
        match &mut *st {
            State::Shared(t) | State::Reserved(t) => f(t, &mut self.hold),
            State::Committed {
                version: v, reader, ..
            }
            | State::Doomed {
                snapshot: v,
                reader,
                ..
            } => {
                if reader.is_none() {
                    *reader = Some(self.db.begin_at(*v)?);
                }
                match reader.as_mut() {
                    Some(t) => f(t, &mut self.hold),
                    None => Err(Misuse::NoReader.into()),
                }
            }
            State::Prepared { .. } => Err(Misuse::ReadWhilePrepared.into()),
            State::Idle => {
                drop(st);
                let mut t = match self.at_version {
                    Some(v) => self.db.begin_at(v)?,
                    None => self.db.begin()?,
                };
                // Never the counter SQLite believes: these reads (the
                // header at open) are outside any hold.
                let served = self.fresh_counter();
                let mut hold = Hold {
                    served,
                    pager_counter: served,
                    ..Hold::default()
                };
                let out = f(&mut t, &mut hold);
                t.rollback();
                out
            }
        }
    }

    /// xRead: fills `buf` from file offset `offset`. Returns false for a
    /// short read (the rest of `buf` is zero-filled).
    pub fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<bool> {
        self.refuse_duplicate()?;
        self.with_read_txn(|t, hold| read_at(t, hold, buf, offset))
    }

    /// xFileSize.
    pub fn size(&mut self) -> Result<u64> {
        self.with_read_txn(|t, _| Ok(t.page_count() * t.page_size().unwrap_or(0) as u64))
    }
}

/// Reads file bytes `[offset, offset+buf.len())` from `t`, page by page.
pub(super) fn read_at(
    t: &mut Transaction,
    hold: &mut Hold,
    buf: &mut [u8],
    offset: u64,
) -> Result<bool> {
    let Some(ps) = t.page_size().map(u64::from) else {
        buf.fill(0);
        return Ok(buf.is_empty());
    };
    let count = t.page_count();
    let mut pos = 0usize;
    let mut full = true;
    while pos < buf.len() {
        let off = offset.saturating_add(pos as u64);
        let pgno = off / ps;
        let within = (off % ps) as usize;
        let n = (ps as usize - within).min(buf.len() - pos);
        if pgno >= count || pgno > u32::MAX as u64 {
            buf[pos..].fill(0);
            full = false;
            break;
        }
        let pgno = PageNo::new(pgno as u32);
        hold.ahead.before_read(t, pgno.get(), count)?;
        match t.read_page(pgno)? {
            Some(d) if d.len() >= within + n => {
                buf[pos..pos + n].copy_from_slice(&d[within..within + n]);
                hold.ahead.after_read(t, pgno.get(), &d, n == d.len())?;
            }
            Some(d) => {
                return Err(Error::PageLength {
                    page: pgno.to_sqlite(),
                    len: d.len(),
                    expected: ps,
                })
            }
            // A page below the end that was never written (the lock-byte
            // page): reads as zeros, like a hole in a sparse file.
            None => buf[pos..pos + n].fill(0),
        }
        hold.touched.insert(pgno);
        pos += n;
    }
    if offset < 100 {
        // After a commit in this hold, SQLite's page 1 carries the counter
        // it wrote: a re-read must show the same.
        header::patch_read(buf, offset, hold.pager_counter);
    }
    Ok(full)
}
