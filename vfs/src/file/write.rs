//! The write path: xWrite and xTruncate into the write transaction, and
//! what a doomed transaction accepts (only its rollback's restores).

#![warn(clippy::too_many_lines)]

use std::borrow::Cow;
use std::ops::Range;

use pagestore::sync::lock as locked;
use pagestore::{PageNo, Transaction};
use tracing::{debug, warn};

use super::read::read_at;
use super::{Hold, MainFile, State};
use crate::error::{Error, Misuse, ReadOnly, Result};
use crate::header;
use crate::lock::Restore;

impl MainFile {
    /// xWrite: whole pages at page boundaries, as SQLite writes them.
    pub fn write(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        if self.is_read_only() {
            return Err(ReadOnly::Write {
                database: self.name.clone(),
                version: self.at_version.unwrap_or_default(),
            }
            .into());
        }
        self.settle();
        if self.is_prepared() {
            // Writes to a prepared file before its group's commit point:
            // SQLite is rolling back (playing its journal back).
            self.abort_group("journal playback");
        }
        let mut st = locked(&self.state);
        match &mut *st {
            State::Reserved(t) => write_pages(t, &mut self.hold, &self.name, buf, offset),
            State::Doomed {
                snapshot,
                reader,
                restore,
            } => {
                if *restore == Restore::Unchecked {
                    return Ok(());
                }
                if reader.is_none() {
                    *reader = Some(self.db.begin_at(*snapshot)?);
                }
                let Some(r) = reader.as_mut() else {
                    return Err(Misuse::NoReader.into());
                };
                if restores(r, buf, offset)? {
                    *restore = Restore::Seen;
                    return Ok(());
                }
                warn!(database = %self.name, offset, len = buf.len(), "new content written into a transaction whose commit failed: refused (SQLite must roll back)");
                Err(Error::Doomed)
            }
            other => {
                let phase = other.name();
                Err(Misuse::WriteWithoutLock { offset, phase }.into())
            }
        }
    }

    /// xTruncate.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        let read_only = self.is_read_only();
        self.settle();
        if self.is_prepared() {
            self.abort_group("truncate during rollback");
        }
        let mut st = locked(&self.state);
        match &mut *st {
            State::Reserved(t) => {
                let count = match t.page_size() {
                    Some(ps) => size.div_ceil(ps as u64),
                    None if size == 0 => 0,
                    None => return Err(Misuse::TruncateWithoutPages { size }.into()),
                };
                t.truncate(count)?;
                Ok(())
            }
            // After a commit the store was already cut to the in-header size
            // at commit (SQLite truncates only in commit phase two); after a
            // failed commit nothing is to be changed (the rollback cuts the
            // file back to its original size).
            State::Committed { .. } => {
                debug!(database = %self.name, size, "truncate after commit: already applied");
                Ok(())
            }
            State::Doomed {
                snapshot,
                reader,
                restore,
            } => {
                if *restore == Restore::Expected {
                    // A rollback cuts the file back to its size at the
                    // snapshot (or below, for a VACUUM'd page size).
                    if reader.is_none() {
                        *reader = Some(self.db.begin_at(*snapshot)?);
                    }
                    if let Some(r) = reader.as_mut() {
                        let bytes = r.page_count() * u64::from(r.page_size().unwrap_or(0));
                        if size <= bytes {
                            *restore = Restore::Seen;
                        }
                    }
                }
                debug!(database = %self.name, size, "truncate during the rollback of a failed commit: dropped");
                Ok(())
            }
            _ if read_only => Err(ReadOnly::Truncate.into()),
            other => Err(Misuse::TruncateWithoutLock {
                phase: other.name(),
            }
            .into()),
        }
    }
}

/// A write after a failed commit: SQLite restoring pages from its journal
/// (true: `buf` is what the snapshot `reader` reads there, but for the
/// counters). Nothing of the transaction reaches the store; new content
/// would be SQLite committing a doomed transaction (it never does after
/// the codes the commit point returns; this is the last line).
fn restores(reader: &mut Transaction, buf: &[u8], offset: u64) -> Result<bool> {
    let mut original = vec![0u8; buf.len()];
    let mut scratch = Hold::default();
    read_at(reader, &mut scratch, &mut original, offset)?;
    Ok(header::same_but_counters(&original, buf, offset))
}

/// Writes file bytes `buf` at `offset` into `t`, page by page.
///
/// The store's page size is fixed by the first write (SQLite writes whole
/// pages). Later writes of another shape (VACUUM into a new page size
/// writes pages of the new size; a smaller page size writes parts of a
/// store page) are split into store pages, with a read-modify-write for
/// partial ones: the file is a byte stream.
fn write_pages(
    t: &mut Transaction,
    hold: &mut Hold,
    name: &str,
    buf: &[u8],
    offset: u64,
) -> Result<()> {
    let len = buf.len();
    if len == 0 {
        return Ok(());
    }
    let ps = match t.page_size() {
        Some(ps) => ps as usize,
        None if len.is_power_of_two()
            && (512..=65536).contains(&len)
            && offset.is_multiple_of(len as u64) =>
        {
            len
        }
        None => return Err(Misuse::FirstWriteNotAPage { len, offset }.into()),
    };
    let end = offset
        .checked_add(len as u64)
        .filter(|e| (e - 1) / ps as u64 <= u32::MAX as u64)
        .ok_or(Misuse::PastLastPage { offset })?;
    let mut pos = offset;
    while pos < end {
        let pgno = (pos / ps as u64) as u32;
        let within = (pos % ps as u64) as usize;
        let n = (ps - within).min((end - pos) as usize);
        let src = &buf[(pos - offset) as usize..(pos - offset) as usize + n];
        let page: Cow<[u8]> = if n == ps {
            Cow::Borrowed(src)
        } else {
            let mut p = match t.read_page(PageNo::new(pgno))? {
                Some(d) if d.len() == ps => d.to_vec(),
                _ => vec![0u8; ps],
            };
            p[within..within + n].copy_from_slice(src);
            Cow::Owned(p)
        };
        write_page(t, hold, name, PageNo::new(pgno), &page, within..within + n)?;
        pos += n as u64;
    }
    Ok(())
}

/// Writes one store page (`changed`: the bytes of it this write carries).
/// A page-1 write that changes only the change counter is dropped (see
/// [`header`]); the counter SQLite wrote is remembered either way.
fn write_page(
    t: &mut Transaction,
    hold: &mut Hold,
    name: &str,
    pgno: PageNo,
    page: &[u8],
    changed: Range<usize>,
) -> Result<()> {
    if pgno == PageNo::FIRST {
        if changed.start < header::CHANGE_COUNTER.end && changed.end > header::CHANGE_COUNTER.start
        {
            hold.page1_written = header::counter_of(page);
            if let Some(w) = hold.page1_written {
                let high = hold.written_high.map_or(w, |h| header::later_counter(h, w));
                hold.written_high = Some(high);
            }
        }
        if let Some(old) = t.read_page(PageNo::FIRST)? {
            if header::only_counters_differ(&old, page) {
                debug!(database = %name, "page 1 write changes only the change counter: dropped");
                hold.touched.insert(PageNo::FIRST);
                return Ok(());
            }
        }
    }
    t.write_page(pgno, page)?;
    hold.touched.insert(pgno);
    hold.written.insert(pgno);
    Ok(())
}
