//! The commit protocol.
//!
//! A transaction read pages at snapshot `V`. It may commit when none of
//! those pages has a version newer than `V`. Two ways to check, both exact:
//!
//! * **fast path** (snapshot younger than FDB's 5 s window): the store
//!   transaction reads at version `V` itself (`set_read_version`) and adds a
//!   read-conflict range over every version of each page read. The store's
//!   own conflict detection then refuses the commit if any of those pages was
//!   written after `V`. One round trip: the commit.
//! * **slow path** (older snapshot, or retry after an unknown result): a
//!   fresh read version `R`, a (snapshot) read of the change log over
//!   `(V, R]` to find pages changed in between, and the same conflict ranges
//!   to catch writes after `R`.
//!
//! Writes are versionstamped keys, so the commit needs no version counter
//! that every writer would conflict on. Pages written but not read add no
//! conflict range: blind writes never conflict.
//!
//! Each commit records a random token (`D 'k' token`): after
//! `commit_unknown_result` the slow path reads it to learn whether the first
//! attempt landed, and since it reads the token key serializably, a first
//! attempt that lands late makes the retry conflict instead of applying twice.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use tracing::{debug, debug_span, info};

use crate::encoding::{runs, LogRecord, PageValue};
use crate::error::{Error, Result};
use crate::keys::DbKeys;
use crate::kv::{
    ConflictKind, KvTxn, MutationType, RangeOption, Version, Versionstamp, INCOMPLETE_VERSIONSTAMP,
};
use crate::store::backoff;
use crate::txn::{Committed, Dirty, Transaction, READ_VERSION_REUSE};
use crate::{database, upload};

/// Most conflict ranges one commit carries: beyond it, nearby ranges are
/// merged (a coarser read set can only add conflicts, never miss one), which
/// keeps the commit far below FDB's 10 MB transaction limit.
const MAX_CONFLICT_RANGES: usize = 10_000;

/// Bytes an index entry costs beyond the page content (key, tag, overhead).
const ENTRY_OVERHEAD: usize = 64;

/// What a commit writes, derived from the transaction.
pub(crate) struct Plan {
    pub record: LogRecord,
    pub large: bool,
    pub read_runs: Vec<(u32, u32)>,
    pub size_conflict: bool,
    pub header: Option<u32>,
    /// The committer's wall time, for the time index.
    pub time_micros: u64,
}

impl Plan {
    fn new(txn: &Transaction) -> Plan {
        let written: Vec<u32> = txn.writes.keys().copied().collect();
        let mut absent = Vec::new();
        if let Some(t) = txn.trunc_from {
            let end = txn.base_count.min(u32::MAX as u64 + 1);
            let w: BTreeSet<u32> = written.iter().copied().collect();
            absent.extend((t..end).map(|p| p as u32).filter(|p| !w.contains(p)));
        }
        let page_count = (txn.count != txn.base_count).then_some(txn.count);
        let header = match (txn.base_page_size, txn.page_size) {
            (None, Some(s)) => Some(s),
            _ => None,
        };
        let inline_bytes: usize = txn
            .writes
            .values()
            .map(|d| match d {
                Dirty::Mem(b) => b.len() + ENTRY_OVERHEAD,
                Dirty::Uploaded => usize::MAX / 4,
            })
            .fold(0usize, |a, b| a.saturating_add(b))
            .saturating_add(absent.len() * ENTRY_OVERHEAD);
        let large = inline_bytes > txn.db.store.inner.opts.inline_commit_bytes;
        Plan {
            record: LogRecord {
                token: txn.token,
                page_count,
                page_size: header,
                large,
                pages: written,
                absent,
            },
            large,
            read_runs: coalesce(runs(&txn.reads.iter().copied().collect::<Vec<_>>())),
            size_conflict: txn.size_read || page_count.is_some(),
            header,
            time_micros: txn.db.store.inner.opts.clock.now_micros(),
        }
    }

    /// The read-conflict ranges of what the transaction read: a write to
    /// any of them after the snapshot makes the store refuse the commit.
    fn apply_reads(&self, t: &mut dyn KvTxn, keys: &DbKeys) {
        for &(first, len) in &self.read_runs {
            let (b, e) = keys.page_run(first, first + (len - 1));
            t.add_conflict_range(&b, &e, ConflictKind::Read);
        }
        if self.size_conflict {
            let (b, e) = keys.sizes();
            t.add_conflict_range(&b, &e, ConflictKind::Read);
        }
    }

    /// Every mutation and conflict range of the final commit.
    fn apply(&self, t: &mut dyn KvTxn, keys: &DbKeys, txn: &Transaction) {
        self.apply_reads(t, keys);
        if let Some(s) = self.header {
            let h = keys.header();
            let mut he = h.clone();
            he.push(0);
            t.add_conflict_range(&h, &he, ConflictKind::Read);
            t.set(&h, &s.to_be_bytes());
        }
        if self.large {
            // The page index is written after the commit (materialize);
            // write-conflict ranges make concurrent readers of these pages
            // conflict with this commit right now.
            for (first, len) in coalesce(runs(&self.record.changed())) {
                let (b, e) = keys.page_run(first, first + (len - 1));
                t.add_conflict_range(&b, &e, ConflictKind::Write);
            }
            t.atomic_op(
                &keys.materialize_stamped(),
                &txn.token,
                MutationType::SetVersionstampedKey,
            );
            t.clear(&keys.upload(&txn.token));
        } else {
            for (&p, d) in &txn.writes {
                if let Dirty::Mem(b) = d {
                    let v = PageValue::Inline(b.to_vec()).encode();
                    t.atomic_op(
                        &keys.page_stamped(p),
                        &v,
                        MutationType::SetVersionstampedKey,
                    );
                }
            }
            let absent = PageValue::Absent.encode();
            for &p in &self.record.absent {
                t.atomic_op(
                    &keys.page_stamped(p),
                    &absent,
                    MutationType::SetVersionstampedKey,
                );
            }
        }
        if let Some(c) = self.record.page_count {
            t.atomic_op(
                &keys.size_stamped(),
                &c.to_be_bytes(),
                MutationType::SetVersionstampedKey,
            );
        }
        for (seq, part) in self.record.encode_parts().iter().enumerate() {
            t.atomic_op(
                &keys.log_stamped(seq as u16),
                part,
                MutationType::SetVersionstampedKey,
            );
        }
        // Every commit maps its wall time to its version: `at=` time travel
        // and retention read this index.
        t.atomic_op(
            &keys.time_stamped(self.time_micros),
            &[],
            MutationType::SetVersionstampedKey,
        );
        let mut stamp = INCOMPLETE_VERSIONSTAMP.to_vec();
        stamp.extend_from_slice(&0u32.to_le_bytes());
        t.atomic_op(
            &keys.token(&txn.token),
            &stamp,
            MutationType::SetVersionstampedValue,
        );
    }
}

/// Merges nearby runs until at most [`MAX_CONFLICT_RANGES`] remain.
fn coalesce(mut runs: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    let mut gap: u64 = 1;
    while runs.len() > MAX_CONFLICT_RANGES {
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(runs.len());
        for (first, len) in runs {
            match merged.last_mut() {
                Some((pf, pl)) if first as u64 - (*pf as u64 + *pl as u64) <= gap => {
                    *pl = (first as u64 + len as u64 - *pf as u64) as u32;
                }
                _ => merged.push((first, len)),
            }
        }
        runs = merged;
        gap *= 2;
    }
    runs
}

/// Which path the next attempt takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Fast,
    Slow { after_unknown: bool },
}

pub(crate) fn commit(txn: &mut Transaction) -> Result<Committed> {
    commit_group(&mut [txn], &[])
}

/// Commits several transactions (of one store, possibly of different
/// databases) in one store commit: all or none, one versionstamp. A
/// conflict on any of them fails all. The read sets of `readers` (sibling
/// transactions without writes, e.g. other databases one SQL transaction
/// only read) are validated too, so the group is serializable as a whole.
pub(crate) fn commit_group(
    txns: &mut [&mut Transaction],
    readers: &[&Transaction],
) -> Result<Committed> {
    let Some(first) = txns.first() else {
        return Err(Error::Other("empty commit group".into()));
    };
    let inner = first.db.store.inner.clone();
    let snapshot = first.snapshot;
    if txns
        .iter()
        .any(|t| !std::sync::Arc::ptr_eq(&t.db.store.inner, &inner))
        || readers
            .iter()
            .any(|t| !std::sync::Arc::ptr_eq(&t.db.store.inner, &inner))
    {
        return Err(Error::Other(
            "a commit group spans several stores; only databases of one store commit atomically"
                .into(),
        ));
    }
    let names: Vec<String> = txns.iter().map(|t| t.db.name.to_string()).collect();
    let span = debug_span!("commit", databases = ?names, version = snapshot,
        reads = txns.iter().map(|t| t.reads.len()).sum::<usize>(),
        writes = txns.iter().map(|t| t.writes.len()).sum::<usize>());
    let _g = span.enter();
    let plans: Vec<Plan> = txns.iter().map(|t| Plan::new(t)).collect();
    let reader_plans: Vec<Plan> = readers.iter().map(|t| Plan::new(t)).collect();
    for (txn, plan) in txns.iter_mut().zip(&plans) {
        if plan.large {
            upload::upload_all(txn)?;
        }
    }
    // The fast path needs one read version for all: the shared snapshot.
    let fresh = txns.iter().map(|t| &**t).chain(readers.iter().copied()).all(|t| {
        t.snapshot == snapshot
            && matches!(t.rv, Some((rv, at)) if rv == t.snapshot && at.elapsed() < READ_VERSION_REUSE)
    });
    let mut path = if fresh {
        Path::Fast
    } else {
        Path::Slow {
            after_unknown: false,
        }
    };
    let mut attempt = 0u32;
    loop {
        let mut t = inner.kv.begin()?;
        let prepared = match path {
            Path::Fast => {
                t.set_read_version(snapshot);
                Ok(None)
            }
            Path::Slow { after_unknown } => {
                let mut landed = None;
                let mut out = Ok(());
                let all = txns
                    .iter()
                    .map(|t| &**t)
                    .zip(&plans)
                    .chain(readers.iter().copied().zip(&reader_plans));
                for (i, (txn, plan)) in all.enumerate() {
                    // Only a writer's token tells whether the group landed.
                    let after_unknown = after_unknown && i == 0;
                    match slow_check(t.as_mut(), txn, plan, &txn.db.keys, after_unknown) {
                        Ok(Some(vs)) => {
                            landed = Some(vs);
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            out = Err(e);
                            break;
                        }
                    }
                }
                out.map(|_| landed)
            }
        };
        let outcome = match prepared {
            Ok(Some(landed)) => {
                inner.recovered_unknown.fetch_add(1, Ordering::Relaxed);
                info!(commit = %landed, "earlier attempt had landed after an unknown result");
                Ok(landed)
            }
            Ok(None) => {
                for (txn, plan) in txns.iter().zip(&plans) {
                    plan.apply(t.as_mut(), &txn.db.keys, txn);
                }
                for (txn, plan) in readers.iter().zip(&reader_plans) {
                    plan.apply_reads(t.as_mut(), &txn.db.keys);
                }
                debug!(bytes = t.approximate_size(), "committing");
                t.commit().map_err(Error::from).and_then(|info| {
                    info.versionstamp.ok_or_else(|| {
                        Error::corrupt("commit with writes returned no versionstamp")
                    })
                })
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(vs) => {
                inner.commits.fetch_add(1, Ordering::Relaxed);
                for (txn, plan) in txns.iter_mut().zip(&plans) {
                    finish(txn, plan, vs);
                }
                return Ok(Committed {
                    version: vs.version(),
                    versionstamp: Some(vs),
                });
            }
            Err(Error::Kv(e)) if e.is_conflict() => {
                inner.conflicts.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Conflict {
                    database: names.join(", "),
                    snapshot,
                    detail: "the store refused the commit (not_committed)".into(),
                });
            }
            Err(e @ Error::Conflict { .. }) => {
                inner.conflicts.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
            Err(Error::Kv(e)) if e.is_retryable() && attempt < inner.opts.max_retries => {
                attempt += 1;
                let after_unknown = e.is_maybe_committed()
                    || matches!(
                        path,
                        Path::Slow {
                            after_unknown: true
                        }
                    );
                debug!(
                    code = e.code,
                    attempt, after_unknown, "commit retried on the slow path"
                );
                path = Path::Slow { after_unknown };
                if !e.is_too_old() {
                    backoff(attempt);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The slow path's checks, in store transaction `t`. Returns the commit
/// that already landed (after an unknown result), or None to go on.
fn slow_check(
    t: &mut dyn KvTxn,
    txn: &Transaction,
    plan: &Plan,
    keys: &DbKeys,
    after_unknown: bool,
) -> Result<Option<Versionstamp>> {
    let r = t.read_version()?;
    if after_unknown {
        if let Some(v) = t.get(&keys.token(&txn.token), false)? {
            let vs = Versionstamp::from_slice(&v).ok_or_else(|| Error::corrupt("token value"))?;
            return Ok(Some(vs));
        }
    }
    let changed = changes_since(t, keys, txn.snapshot, r)?;
    for (vs, rec) in changed {
        let hit: Vec<u32> = rec
            .changed()
            .into_iter()
            .filter(|p| txn.reads.contains(p))
            .take(8)
            .collect();
        let size_hit = plan.size_conflict && rec.page_count.is_some();
        let header_hit = plan.header.is_some() && rec.page_size.is_some();
        if !hit.is_empty() || size_hit || header_hit {
            return Err(Error::Conflict {
                database: txn.db.name.to_string(),
                snapshot: txn.snapshot,
                detail: if hit.is_empty() {
                    format!("commit {vs} changed the database size")
                } else {
                    format!("commit {vs} changed pages {hit:?}")
                },
            });
        }
    }
    Ok(None)
}

/// Change-log records in `(after, upto]`, read in `t` without conflicts.
fn changes_since(
    t: &mut dyn KvTxn,
    keys: &DbKeys,
    after: Version,
    upto: Version,
) -> Result<Vec<(Versionstamp, LogRecord)>> {
    let (mut b, e) = keys.log_between(after, upto);
    let mut rows = Vec::new();
    loop {
        let r = t.get_range(&RangeOption::new(b.clone(), e.clone()), true)?;
        if let Some(last) = r.kvs.last() {
            b = last.key.clone();
            b.push(0);
        }
        let more = r.more;
        rows.extend(r.kvs.into_iter().map(|kv| (kv.key, kv.value)));
        if !more {
            break;
        }
    }
    database::group_log(keys, rows.into_iter())
}

/// After a successful commit: cache what was written, finish a large
/// commit's page index.
fn finish(txn: &mut Transaction, plan: &Plan, vs: Versionstamp) {
    let cache = &txn.db.store.inner.cache;
    if plan.large {
        txn.uploaded = false; // owned by the commit now
        if let Err(e) = upload::materialize(&txn.db, vs, &txn.token, &plan.record) {
            // The commit stands; the next BEGIN of any process finishes it.
            tracing::warn!(error = %e, commit = %vs, "page index of a large commit left for later");
        }
        return;
    }
    for (&p, d) in &txn.writes {
        if let Dirty::Mem(b) = d {
            cache.insert(txn.db.id, p, vs, b.clone());
        }
    }
    for &p in &plan.record.absent {
        cache.insert(txn.db.id, p, vs, std::sync::Arc::from(Vec::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesce_bounds_the_number_of_ranges() {
        let pages: Vec<u32> = (0..50_000u32).map(|p| p * 3).collect();
        let r = coalesce(runs(&pages));
        assert!(r.len() <= MAX_CONFLICT_RANGES);
        // Every page is still covered.
        for p in pages {
            assert!(r
                .iter()
                .any(|&(f, l)| p >= f && (p as u64) < f as u64 + l as u64));
        }
    }
}
