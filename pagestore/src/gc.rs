//! Garbage collection of old versions.
//!
//! A database keeps every version readable for its retention window. GC
//! computes the **horizon** `H`: the last version committed at or before
//! `now - retention` (from the time index). Readers may open at any version
//! `>= H`; forks pin the versions they were made at. For each page GC keeps
//! every version above `H` and, for `H` and each fork pin, the newest
//! version at or below it; the rest are unreachable and removed, with the
//! uploaded content they referenced. Change-log records, time-index entries
//! and size records below the horizon go too; commit tokens once they are
//! an hour old (a retry after `commit_unknown_result` needs them briefly).
//!
//! GC is online: it first publishes `H` (`D 'g'`), so a snapshot older than
//! `H` fails with [`Error::SnapshotTooOld`] instead of reading a page whose
//! versions were removed, then deletes in small store transactions (at
//! most [`KEYS_PER_TXN`] clears each, far below FDB's limits, each well
//! inside 5 s), recording its position (`D 'q'`) in the same transactions
//! so a crashed pass resumes where it stopped. It never blocks readers or
//! writers: it removes nothing they can reach.

use std::collections::BTreeSet;
use std::time::Duration;

use tracing::{debug, info};

use crate::database::Database;
use crate::encoding::{decode_horizon, decode_u64, DbMeta, PageValue};
use crate::error::{Error, Result};
use crate::ids::{DbId, PageNo};
use crate::keys::DbKeys;
use crate::kv::{RangeOption, Version, Versionstamp};
use crate::store::PageStore;

/// Page-version keys read per scan step.
const SCAN_ROWS: usize = 1_000;

/// Most clears in one GC transaction.
pub const KEYS_PER_TXN: usize = 1_000;

/// Commit tokens younger than this (in versions, ~µs) are kept whatever the
/// retention: a retry after an unknown commit result reads them.
const TOKEN_KEEP_VERSIONS: u64 = 3_600_000_000;

/// An upload marker not refreshed for this long belongs to a transaction
/// whose process died (live uploads refresh it with every chunk).
const ABANDONED_UPLOAD_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A page version to remove: its key, its uploaded content's key (if any)
/// and the content bytes it frees.
type Doomed = (Vec<u8>, Option<Vec<u8>>, u64);

/// What a GC pass removed (or, for a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Database name (the name it had, if dropped).
    pub database: String,
    /// Versions below this are no longer readable.
    pub horizon: Version,
    /// Versions pinned by forks.
    pub fork_pins: Vec<Version>,
    /// Page versions removed.
    pub page_versions: u64,
    /// Bytes of page content removed (inline and uploaded).
    pub page_bytes: u64,
    /// Change-log records, time-index entries, size records and commit
    /// tokens removed.
    pub metadata_keys: u64,
    /// Store transactions GC committed.
    pub transactions: u64,
    /// Only counted, nothing removed.
    pub dry_run: bool,
}

impl Database {
    /// Runs one GC pass over this database (see the module docs).
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let meta = self.store.meta(self.id)?;
        gc_one(&self.store, self.id, &meta, dry_run)
    }
}

impl PageStore {
    /// Runs GC over every database, including dropped ones that forks
    /// still read from.
    pub fn gc(&self, dry_run: bool) -> Result<Vec<GcReport>> {
        let keys = &self.inner.keys;
        let (mut b, e) = keys.metas();
        let mut out = Vec::new();
        loop {
            let chunk = self.inner.run("gc-list", |t| {
                t.get_range(&RangeOption::new(b.clone(), e.clone()).limit(500), true)
                    .map_err(Error::from)
            })?;
            for kv in &chunk.kvs {
                let id = keys
                    .parse_meta(&kv.key)
                    .ok_or_else(|| Error::corrupt("catalog key"))?;
                let meta = DbMeta::decode(&kv.value)?;
                out.push(gc_one(self, id, &meta, dry_run)?);
            }
            match chunk.kvs.last() {
                Some(last) if chunk.more || chunk.kvs.len() == 500 => {
                    b = last.key.clone();
                    b.push(0);
                }
                _ => return Ok(out),
            }
        }
    }
}

/// Keeps, of one key's versions (ascending), every one above `horizon`
/// (when given) and the newest at or below each pin (the horizon is one).
/// Returns the indexes to remove.
fn unreachable(versions: &[Version], horizon: Option<Version>, pins: &[Version]) -> Vec<usize> {
    let mut keep = vec![false; versions.len()];
    if let Some(h) = horizon {
        for (i, &v) in versions.iter().enumerate() {
            if v > h {
                keep[i] = true;
            }
        }
    }
    for &pin in pins.iter().chain(horizon.as_ref()) {
        if let Some(i) = versions.iter().rposition(|&v| v <= pin) {
            keep[i] = true;
        }
    }
    (0..versions.len()).filter(|&i| !keep[i]).collect()
}

fn gc_one(store: &PageStore, id: DbId, meta: &DbMeta, dry_run: bool) -> Result<GcReport> {
    let inner = &store.inner;
    let keys = inner.keys.db(id);
    let now = inner.opts.clock.now_micros();
    let mut report = GcReport {
        database: meta.name.clone(),
        dry_run,
        ..Default::default()
    };
    report.fork_pins = fork_pins(store, id)?;
    let latest = inner.kv.begin()?.read_version()?;
    report.horizon = if meta.dropped {
        // Nobody opens a dropped database: only its forks' pins matter.
        latest
    } else {
        let retention = meta
            .retention_micros
            .unwrap_or(crate::DEFAULT_RETENTION.as_micros() as u64);
        let db = Database::new(store.clone(), &meta.name, id, &[]);
        db.version_at(now.saturating_sub(retention))?
            .unwrap_or_default()
    };
    if report.horizon == Version::ZERO {
        return Ok(report);
    }
    // A large commit still being indexed needs its change-log record (and
    // every reader of it needs its index): finish those the horizon would
    // pass first. Nothing GC does may make a database unopenable.
    Database::new(store.clone(), &meta.name, id, &[]).finish_large_upto(report.horizon)?;
    let horizon = report.horizon;
    let pins = report.fork_pins.clone();
    if !dry_run {
        // Published first: from here on, snapshots below it fail cleanly.
        inner.run("gc-horizon", |t| {
            let old = decode_horizon(t.get(&keys.horizon(), false)?.as_deref())?;
            if horizon > old {
                t.set(&keys.horizon(), &horizon.to_be_bytes());
            }
            Ok(())
        })?;
        report.transactions += 1;
        failpoint!("gc::after_horizon");
    }
    if !dry_run {
        // Content of transactions whose process died before commit.
        let db = Database::new(store.clone(), &meta.name, id, &[]);
        db.sweep_uploads(ABANDONED_UPLOAD_AGE)?;
    }
    collect_pages(
        store,
        &keys,
        horizon,
        &pins,
        meta.dropped,
        dry_run,
        &mut report,
    )?;
    failpoint!("gc::after_pages");
    collect_metadata(store, &keys, horizon, &pins, latest, dry_run, &mut report)?;
    if !dry_run {
        inner.gc.add(&report);
    }
    info!(database = %meta.name, horizon = horizon.get(), removed = report.page_versions,
        bytes = report.page_bytes, dry_run, "gc pass");
    Ok(report)
}

/// Versions of `id` that its forks were made at.
fn fork_pins(store: &PageStore, id: DbId) -> Result<Vec<Version>> {
    let keys = &store.inner.keys;
    let (b, e) = keys.children(id);
    let kids = store.inner.run("gc-forks", |t| {
        t.get_range(&RangeOption::new(b.clone(), e.clone()), true)
            .map_err(Error::from)
    })?;
    let mut pins = BTreeSet::new();
    for kv in kids.kvs {
        let child = keys
            .parse_child(&kv.key)
            .ok_or_else(|| Error::corrupt("fork key"))?;
        if let Some((_, at)) = store.meta(child)?.parent {
            pins.insert(at);
        }
    }
    Ok(pins.into_iter().collect())
}

/// Deletes unreachable page versions and their uploaded content.
fn collect_pages(
    store: &PageStore,
    keys: &DbKeys,
    horizon: Version,
    pins: &[Version],
    dropped: bool,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<()> {
    let inner = &store.inner;
    let (all_b, all_e) = keys.all_pages();
    let cursor_key = keys.gc_cursor();
    let mut from = if dry_run {
        all_b.clone()
    } else {
        inner
            .run("gc-cursor", |t| {
                t.get(&cursor_key, false).map_err(Error::from)
            })?
            .unwrap_or_else(|| all_b.clone())
    };
    // Versions of the page being gathered: (key, version, value).
    let mut page: Vec<(Vec<u8>, Version, Vec<u8>)> = Vec::new();
    let mut current: Option<PageNo> = None;
    let mut doomed: Vec<Doomed> = Vec::new();
    loop {
        let chunk = inner.run("gc-scan", |t| {
            t.get_range(
                &RangeOption::new(from.clone(), all_e.clone()).limit(SCAN_ROWS),
                true,
            )
            .map_err(Error::from)
        })?;
        let done = !chunk.more && chunk.kvs.len() < SCAN_ROWS;
        if let Some(last) = chunk.kvs.last() {
            from = last.key.clone();
            from.push(0);
        }
        for kv in chunk.kvs {
            let (pgno, vs) = keys
                .parse_page(&kv.key)
                .ok_or_else(|| Error::corrupt("page key"))?;
            if current != Some(pgno) {
                judge(keys, &mut page, horizon, pins, dropped, &mut doomed)?;
                current = Some(pgno);
            }
            page.push((kv.key, vs.version(), kv.value));
        }
        if done {
            judge(keys, &mut page, horizon, pins, dropped, &mut doomed)?;
        }
        // Delete what is decided so far, in small transactions; the cursor
        // moves to the first key not yet judged.
        let resume = page
            .first()
            .map(|(k, _, _)| k.clone())
            .unwrap_or_else(|| from.clone());
        flush(
            store,
            keys,
            &mut doomed,
            if done { None } else { Some(resume) },
            dry_run,
            report,
        )?;
        if done {
            return Ok(());
        }
    }
}

/// Decides which versions of the gathered page are unreachable.
fn judge(
    keys: &DbKeys,
    page: &mut Vec<(Vec<u8>, Version, Vec<u8>)>,
    horizon: Version,
    pins: &[Version],
    dropped: bool,
    doomed: &mut Vec<Doomed>,
) -> Result<()> {
    let versions: Vec<Version> = page.iter().map(|(_, v, _)| *v).collect();
    // A dropped database is read only by its forks, at their pins.
    let remove = unreachable(&versions, (!dropped).then_some(horizon), pins);
    for i in remove {
        let (key, _, value) = &page[i];
        let (pgno, _) = keys
            .parse_page(key)
            .ok_or_else(|| Error::corrupt("page key"))?;
        let (blob, bytes) = match PageValue::decode(value)? {
            PageValue::Uploaded(tok) => (Some(keys.blob(&tok, pgno)), 0),
            PageValue::Inline(b) => (None, b.len() as u64),
            PageValue::Absent => (None, 0),
        };
        doomed.push((key.clone(), blob, bytes));
    }
    page.clear();
    Ok(())
}

/// Clears doomed keys in transactions of at most [`KEYS_PER_TXN`] keys.
fn flush(
    store: &PageStore,
    keys: &DbKeys,
    doomed: &mut Vec<Doomed>,
    resume: Option<Vec<u8>>,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<()> {
    let cursor_key = keys.gc_cursor();
    let batches: Vec<_> = doomed
        .chunks(KEYS_PER_TXN / 2)
        .map(|c| c.to_vec())
        .collect();
    let n = batches.len();
    for (i, batch) in batches.into_iter().enumerate() {
        report.page_versions += batch.len() as u64;
        report.page_bytes += batch.iter().map(|(_, _, b)| *b).sum::<u64>();
        if dry_run {
            continue;
        }
        let last = i + 1 == n;
        store.inner.run("gc-pages", |t| {
            for (key, blob, _) in &batch {
                t.clear(key);
                if let Some(b) = blob {
                    t.clear(b);
                }
            }
            if last {
                match &resume {
                    Some(r) => t.set(&cursor_key, r),
                    None => t.clear(&cursor_key),
                }
            }
            Ok(())
        })?;
        report.transactions += 1;
    }
    if n == 0 && !dry_run && resume.is_none() {
        store.inner.run("gc-cursor-done", |t| {
            t.clear(&cursor_key);
            Ok(())
        })?;
    }
    doomed.clear();
    debug!(removed = report.page_versions, "gc progress");
    Ok(())
}

/// Change-log records, time-index entries and size records below the
/// horizon (keeping what the pins need), and old commit tokens.
fn collect_metadata(
    store: &PageStore,
    keys: &DbKeys,
    horizon: Version,
    pins: &[Version],
    latest: Version,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<()> {
    let inner = &store.inner;
    let mut doomed: Vec<Vec<u8>> = Vec::new();

    // Change log: records at or below the horizon are never replayed (views
    // older than the horizon reload, restores target versions >= it; a
    // fork's restores read the fork's own log).
    let (lb, _) = keys.logs();
    let (_, le) = keys.log_between(Version::ZERO, horizon);
    scan_keys(store, &lb, &le, |k, _| {
        doomed.push(k.to_vec());
        Ok(())
    })?;

    // Size records: keep the newest at or below each pin, and all above.
    let (zb, ze) = keys.sizes_upto(horizon);
    let mut sizes: Vec<(Vec<u8>, Version)> = Vec::new();
    scan_keys(store, &zb, &ze, |k, _| {
        let vs = keys
            .parse_size(k)
            .ok_or_else(|| Error::corrupt("size key"))?;
        sizes.push((k.to_vec(), vs.version()));
        Ok(())
    })?;
    let versions: Vec<Version> = sizes.iter().map(|(_, v)| *v).collect();
    for i in unreachable(&versions, Some(horizon), pins) {
        doomed.push(sizes[i].0.clone());
    }

    // Time index: entries mapping to versions below the horizon, except
    // the newest of them (so times just before the window still resolve).
    let (tb, te) = keys.times(0, u64::MAX);
    let mut old_times: Vec<(Vec<u8>, Versionstamp)> = Vec::new();
    scan_keys(store, &tb, &te, |k, _| {
        let (_, vs) = keys
            .parse_time(k)
            .ok_or_else(|| Error::corrupt("time key"))?;
        if vs.version() < horizon {
            old_times.push((k.to_vec(), vs));
        }
        Ok(())
    })?;
    if let Some(newest) = old_times.iter().map(|(_, vs)| *vs).max() {
        doomed.extend(
            old_times
                .into_iter()
                .filter(|(_, vs)| *vs != newest)
                .map(|(k, _)| k),
        );
    }

    // Commit tokens, once old enough that no retry can still ask for them.
    let token_limit = horizon.min(latest.before(TOKEN_KEEP_VERSIONS));
    let (kb, ke) = keys.tokens();
    scan_keys(store, &kb, &ke, |k, v| {
        // Landed and fenced tokens alike, once old enough.
        let state = crate::encoding::TokenState::decode(v)?;
        if state.versionstamp().version() < token_limit {
            doomed.push(k.to_vec());
        }
        Ok(())
    })?;

    report.metadata_keys += doomed.len() as u64;
    if dry_run {
        return Ok(());
    }
    for chunk in doomed.chunks(KEYS_PER_TXN) {
        inner.run("gc-metadata", |t| {
            for k in chunk {
                t.clear(k);
            }
            Ok(())
        })?;
        report.transactions += 1;
    }
    Ok(())
}

/// Calls `f` on every key (and value) of `[b, e)`, reading in chunks.
fn scan_keys(
    store: &PageStore,
    b: &[u8],
    e: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let mut from = b.to_vec();
    loop {
        let chunk = store.inner.run("gc-scan", |t| {
            t.get_range(
                &RangeOption::new(from.clone(), e.to_vec()).limit(SCAN_ROWS),
                true,
            )
            .map_err(Error::from)
        })?;
        for kv in &chunk.kvs {
            f(&kv.key, &kv.value)?;
        }
        match chunk.kvs.last() {
            Some(last) if chunk.more || chunk.kvs.len() == SCAN_ROWS => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use super::unreachable;
    use crate::kv::Version;

    #[test]
    fn keeps_everything_above_the_horizon_and_the_newest_below_each_pin() {
        let ver = Version::new;
        let v = [1, 3, 5, 7, 9, 11].map(ver);
        assert_eq!(unreachable(&v, Some(ver(8)), &[]), vec![0, 1, 2]);
        assert_eq!(unreachable(&v, Some(ver(8)), &[ver(4)]), vec![0, 2]);
        assert_eq!(unreachable(&v, Some(ver(0)), &[]), Vec::<usize>::new());
        assert_eq!(unreachable(&v, Some(ver(100)), &[]), vec![0, 1, 2, 3, 4]);
        // A dropped origin: only its forks' pins.
        assert_eq!(unreachable(&v, None, &[ver(6)]), vec![0, 1, 3, 4, 5]);
    }
}
