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
//! [`crate::Database::sweep_uploads`] removes the content.

#![warn(clippy::too_many_lines)]

use tracing::{debug, info};

use crate::encoding::{LogRecord, PageValue};
use crate::error::Result;
use crate::ids::{PageNo, Token};
use crate::indexing::Claim;
use crate::keys::DbKeys;
use crate::kv::Versionstamp;
use crate::store::StoreCore;
use crate::write_set::{Dirty, WriteSet};

/// Index entries written per materialization transaction. Each costs about
/// 96 B as FDB counts it (key, value and the implicit write-conflict range),
/// so a chunk stays under 1 MB.
const INDEX_ENTRIES_PER_CHUNK: usize = 8_000;

/// Uploads the transaction's in-memory pages (all of them) and marks them
/// uploaded, in chunks.
pub(crate) fn spill(inner: &StoreCore, keys: &DbKeys, txn: &mut WriteSet) -> Result<()> {
    upload_all(inner, keys, txn)
}

/// Uploads every page still held in memory.
pub(crate) fn upload_all(inner: &StoreCore, keys: &DbKeys, txn: &mut WriteSet) -> Result<()> {
    let chunk_bytes = inner.opts.chunk_bytes;
    let pending: Vec<PageNo> = txn
        .pages
        .iter()
        .filter(|(_, d)| matches!(d, Dirty::Mem(_)))
        .map(|(p, _)| *p)
        .collect();
    let mut start = 0;
    while start < pending.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < pending.len() && (end == start || bytes < chunk_bytes) {
            if let Some(Dirty::Mem(d)) = txn.pages.get(&pending[end]) {
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
        inner.run_relaxed("upload", |t| {
            t.set(&keys.upload(&token), &now.to_be_bytes());
            for p in chunk {
                if let Some(Dirty::Mem(d)) = txn.pages.get(p) {
                    t.set(&keys.blob(&token, *p), d);
                }
            }
            Ok(())
        })?;
        txn.uploaded = true;
        for p in chunk {
            if let Some(Dirty::Mem(d)) = txn.pages.insert(*p, Dirty::Uploaded) {
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
    inner: &StoreCore,
    keys: &DbKeys,
    name: &str,
    vs: Versionstamp,
    token: &Token,
    rec: &LogRecord,
) -> Result<()> {
    let uploaded = PageValue::Uploaded(*token).encode();
    let absent = PageValue::Absent.encode();
    let entries: Vec<(PageNo, &[u8])> = rec
        .pages
        .iter()
        .map(|&p| (p, uploaded.as_slice()))
        .chain(rec.absent.iter().map(|&p| (p, absent.as_slice())))
        .collect();
    // Each chunk is written only while the commit's marker is there, read
    // serializably: once anyone cleared it (the index is whole), a late
    // writer's chunk conflicts, and on retry sees it gone and stops. Index
    // entries landing after a snapshot that saw no marker would make
    // writers at that snapshot conflict on pages that did not change.
    let marker = keys.materialize(&vs);
    // Another thread of this process at it: wait for it, not alongside.
    let claim = match inner.indexing.claim(&marker) {
        Claim::Mine(g) => g,
        Claim::Done => return Ok(()),
    };
    for chunk in entries.chunks(INDEX_ENTRIES_PER_CHUNK) {
        let written = inner.run("materialize", |t| {
            if t.get(&marker, false)?.is_none() {
                return Ok(false);
            }
            for (p, v) in chunk {
                t.set(&keys.page(*p, &vs), v);
            }
            Ok(true)
        })?;
        if !written {
            debug!(database = %name, commit = %vs, "large commit already indexed by another");
            claim.succeeded();
            return Ok(());
        }
        failpoint!("materialize::after_chunk");
    }
    inner.run("materialize-done", |t| {
        t.clear(&marker);
        Ok(())
    })?;
    claim.succeeded();
    info!(database = %name, commit = %vs, pages = entries.len(), "large commit indexed");
    Ok(())
}

/// Removes content uploaded under `token` (best effort; a failure leaves it
/// to [`crate::Database::sweep_uploads`]).
pub(crate) fn discard(inner: &StoreCore, keys: &DbKeys, token: &Token) {
    let (b, e) = keys.blobs(token);
    let r = inner.run("discard-upload", |t| {
        t.clear_range(&b, &e);
        t.clear(&keys.upload(token));
        Ok(())
    });
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not remove uploaded content; a sweep will");
    }
}
