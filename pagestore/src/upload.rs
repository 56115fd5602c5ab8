//! Transactions larger than one store transaction.
//!
//! Page content is uploaded ahead under the transaction's random token
//! (`D 'b' token pgno`), in chunks of `StoreOptions::chunk_bytes`, each its
//! own small store transaction. Nothing references it until the final
//! commit, which writes only the change-log record and a `D 'm'` marker.
//! Right after, the page index entries (`D 'p' pgno vs → Uploaded(token)`)
//! are written in chunks ("materialized") and the marker cleared; a reader
//! whose snapshot includes the commit finishes that first if the committer
//! died half way. Concurrent writers see the commit as a conflict at once,
//! because the final commit carries write-conflict ranges over its pages.
//!
//! Content of a transaction that never commits is removed by the
//! transaction itself on rollback or error; if its process died, the
//! `D 'u' token` marker (refreshed with every chunk) goes stale and
//! [`Database::sweep_uploads`] removes the content.

use std::time::Duration;

use tracing::{debug, info};

use crate::database::Database;
use crate::encoding::{decode_u64, LogRecord, PageValue};
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::keys::Token;
use crate::kv::{RangeOption, Versionstamp};
use crate::txn::{Dirty, Transaction};

/// Index entries written per materialization transaction. Each costs about
/// 96 B as FDB counts it (key, value and the implicit write-conflict range),
/// so a chunk stays under 1 MB.
const INDEX_ENTRIES_PER_CHUNK: usize = 8_000;

/// Uploads the transaction's in-memory pages (all of them) and marks them
/// uploaded, in chunks.
pub(crate) fn spill(txn: &mut Transaction) -> Result<()> {
    upload_all(txn)
}

/// Uploads every page still held in memory.
pub(crate) fn upload_all(txn: &mut Transaction) -> Result<()> {
    let inner = txn.db.store.inner.clone();
    let keys = txn.db.keys.clone();
    let chunk_bytes = inner.opts.chunk_bytes;
    let pending: Vec<PageNo> = txn
        .writes
        .iter()
        .filter(|(_, d)| matches!(d, Dirty::Mem(_)))
        .map(|(p, _)| *p)
        .collect();
    let mut start = 0;
    while start < pending.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < pending.len() && (end == start || bytes < chunk_bytes) {
            if let Some(Dirty::Mem(d)) = txn.writes.get(&pending[end]) {
                if bytes + d.len() > chunk_bytes && end > start {
                    break;
                }
                bytes += d.len() + 32;
            }
            end += 1;
        }
        let chunk = &pending[start..end];
        let now = inner.opts.clock.now_micros();
        let token = txn.token;
        inner.run("upload", |t| {
            t.set(&keys.upload(&token), &now.to_be_bytes());
            for p in chunk {
                if let Some(Dirty::Mem(d)) = txn.writes.get(p) {
                    t.set(&keys.blob(&token, *p), d);
                }
            }
            Ok(())
        })?;
        txn.uploaded = true;
        for p in chunk {
            if let Some(Dirty::Mem(d)) = txn.writes.insert(*p, Dirty::Uploaded) {
                txn.mem_bytes -= d.len();
            }
        }
        debug!(
            pages = chunk.len(),
            bytes, "uploaded a chunk ahead of commit"
        );
        failpoint!("upload::after_chunk");
        start = end;
    }
    Ok(())
}

/// Writes the page index of large commit `vs` and clears its marker.
/// Idempotent: the same keys get the same values.
pub(crate) fn materialize(
    db: &Database,
    vs: Versionstamp,
    token: &Token,
    rec: &LogRecord,
) -> Result<()> {
    let inner = &db.store.inner;
    let keys = &db.keys;
    let uploaded = PageValue::Uploaded(*token).encode();
    let absent = PageValue::Absent.encode();
    let entries: Vec<(PageNo, &[u8])> = rec
        .pages
        .iter()
        .map(|&p| (p, uploaded.as_slice()))
        .chain(rec.absent.iter().map(|&p| (p, absent.as_slice())))
        .collect();
    for chunk in entries.chunks(INDEX_ENTRIES_PER_CHUNK) {
        inner.run("materialize", |t| {
            for (p, v) in chunk {
                t.set(&keys.page(*p, &vs), v);
            }
            Ok(())
        })?;
        failpoint!("materialize::after_chunk");
    }
    inner.run("materialize-done", |t| {
        t.clear(&keys.materialize(&vs));
        Ok(())
    })?;
    info!(database = %db.name, commit = %vs, pages = entries.len(), "large commit indexed");
    Ok(())
}

/// Removes content uploaded under `token` (best effort; a failure leaves it
/// to [`Database::sweep_uploads`]).
pub(crate) fn discard(db: &Database, token: &Token) {
    let keys = &db.keys;
    let (b, e) = keys.blobs(token);
    let r = db.store.inner.run("discard-upload", |t| {
        t.clear_range(&b, &e);
        t.clear(&keys.upload(token));
        Ok(())
    });
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not remove uploaded content; a sweep will");
    }
}

impl Database {
    /// Removes content uploaded by transactions that never committed and
    /// whose marker has not been refreshed for `max_age` (their process
    /// died). Returns how many uploads were removed.
    pub fn sweep_uploads(&self, max_age: Duration) -> Result<usize> {
        let inner = &self.store.inner;
        let keys = &self.keys;
        let now = inner.opts.clock.now_micros();
        let (b, e) = keys.uploads();
        let markers = inner.run("sweep-list", |t| {
            t.get_range(&RangeOption::new(b.clone(), e.clone()).limit(10_000), true)
                .map_err(Error::from)
        })?;
        let mut removed = 0;
        for kv in markers.kvs {
            let token = keys
                .parse_upload(&kv.key)
                .ok_or_else(|| Error::corrupt("upload marker key"))?;
            let at = decode_u64(&kv.value)?;
            if now.saturating_sub(at) < max_age.as_micros() as u64 {
                continue;
            }
            let (bb, be) = keys.blobs(&token);
            let marker = kv.key.clone();
            let stamp = kv.value.clone();
            let done = inner.run("sweep", |t| {
                // Re-check inside the transaction: a live upload may have
                // refreshed its marker, or committed (marker cleared).
                if t.get(&marker, false)?.as_deref() != Some(stamp.as_slice()) {
                    return Ok(false);
                }
                t.clear_range(&bb, &be);
                t.clear(&marker);
                Ok(true)
            })?;
            removed += done as usize;
        }
        Ok(removed)
    }
}
