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
//!   fresh read version `R`, and for each page read one probe "is there a
//!   version newer than `V`?" (cost proportional to the read set, not to
//!   the history since `V`), plus the same conflict ranges to catch writes
//!   after `R`. A read set too large for one store transaction is probed in
//!   several short ones; the commit's own transaction then reads the change
//!   log only over the time the probing took. The snapshot must not be
//!   older than GC's horizon (read in the same transaction): such a
//!   transaction fails with the retryable `SnapshotTooOld`.
//!
//! Writes are versionstamped keys, so the commit needs no version counter
//! that every writer would conflict on. Pages written but not read add no
//! conflict range: blind writes never conflict. Every commit also
//! read-conflicts on its database's catalog entry, so a concurrent drop
//! fails it.
//!
//! **Unknown results.** Each commit writes a random token (`D 'k' token`)
//! and read-conflicts on it. After `commit_unknown_result` the first attempt
//! may still land later. The retry reads the token serializably: present
//! means the first attempt landed. The retry writes the token itself, so
//! once it commits the first attempt can never land (it would conflict on
//! its own token). When the retry fails, the token is *fenced* (a store
//! transaction writes a "fenced" value there, with the same effect) before
//! anything is reported: only a fenced "definitely not committed" becomes a
//! conflict; if even the fence cannot run, the caller gets the unknown
//! result, never a conflict.

#![warn(clippy::too_many_lines)]

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{debug, debug_span, info};

use crate::changelog::{self, after_version};
use crate::database::Database;
use crate::encoding::{decode_horizon, runs, DbMeta, LogRecord, PageValue, TokenState};
use crate::error::{Error, Result};
use crate::ids::{DbId, PageNo};
use crate::keys::{DbKeys, Token};
use crate::kv::{
    ConflictKind, Durability, KvError, KvTxn, MutationType, RangeOption, ReadRequest, ReadResult,
    Version, Versionstamp,
};
use crate::read_set::ReadSet;
use crate::retry::{self, Backoff, Pause};
use crate::store::StoreCore;
use crate::upload;
use crate::write_set::{Dirty, WriteSet};

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
    /// Bytes the commit would write inline (page content and entries).
    pub inline_bytes: usize,
    pub read_runs: Vec<(PageNo, u32)>,
    pub size_conflict: bool,
    pub header: Option<u32>,
    /// The committer's wall time, for the time index.
    pub time_micros: u64,
}

impl Plan {
    fn new(txn: &Member<'_>) -> Plan {
        let written: Vec<PageNo> = txn.write.pages.keys().copied().collect();
        let mut absent = Vec::new();
        if let Some(t) = txn.write.trunc_from {
            let end = txn.write.base_count.min(u32::MAX as u64 + 1);
            let w: BTreeSet<PageNo> = written.iter().copied().collect();
            absent.extend(
                (t..end)
                    .map(|p| PageNo::new(p as u32))
                    .filter(|p| !w.contains(p)),
            );
        }
        let page_count = (txn.write.count != txn.write.base_count).then_some(txn.write.count);
        let header = match (txn.write.base_page_size, txn.write.page_size) {
            (None, Some(s)) => Some(s),
            _ => None,
        };
        let inline_bytes: usize = txn
            .write
            .pages
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
                token: txn.write.token,
                page_count,
                page_size: header,
                large,
                pages: written,
                absent,
            },
            large,
            inline_bytes,
            read_runs: coalesce(txn.read.runs()),
            size_conflict: txn.read.size_read || page_count.is_some(),
            header,
            time_micros: txn.db.store.inner.opts.clock.now_micros(),
        }
    }

    /// The read-conflict ranges of what the transaction read: a write to
    /// any of them after the snapshot makes the store refuse the commit.
    fn apply_reads(&self, t: &mut dyn KvTxn, txn: &Member<'_>) {
        let keys = &txn.db.keys;
        // A drop (or drop and re-create) of the database after the
        // snapshot changes its catalog entry: the commit must fail rather
        // than write into a keyspace nobody can reach.
        let meta = txn.db.store.inner.keys.meta(txn.db.id);
        let mut meta_end = meta.clone();
        meta_end.push(0);
        t.add_conflict_range(&meta, &meta_end, ConflictKind::Read);
        if planted!("plant::skip_read_conflicts") {
            return;
        }
        for &(first, len) in &self.read_runs {
            let (b, e) = keys.page_run(first, run_last(first, len));
            t.add_conflict_range(&b, &e, ConflictKind::Read);
        }
        if self.size_conflict {
            let (b, e) = keys.sizes();
            t.add_conflict_range(&b, &e, ConflictKind::Read);
        }
    }

    /// Every mutation and conflict range of the final commit.
    fn apply(&self, t: &mut dyn KvTxn, txn: &Member<'_>) {
        let keys = &txn.db.keys;
        self.apply_reads(t, txn);
        if let Some(s) = self.header {
            let h = keys.header();
            let mut he = h.clone();
            he.push(0);
            t.add_conflict_range(&h, &he, ConflictKind::Read);
            t.set(&h, &s.to_be_bytes());
        }
        self.apply_pages(t, txn);
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
        apply_token(t, keys, &txn.write.token);
    }

    /// The page writes: inline contents, or for a large commit the marker
    /// and write-conflict ranges (its index is written after the commit).
    fn apply_pages(&self, t: &mut dyn KvTxn, txn: &Member<'_>) {
        let keys = &txn.db.keys;
        if self.large {
            // The page index is written after the commit (materialize);
            // write-conflict ranges make concurrent readers of these pages
            // conflict with this commit right now.
            for (first, len) in coalesce(runs(&self.record.changed())) {
                let (b, e) = keys.page_run(first, run_last(first, len));
                t.add_conflict_range(&b, &e, ConflictKind::Write);
            }
            t.atomic_op(
                &keys.materialize_stamped(),
                &txn.write.token,
                MutationType::SetVersionstampedKey,
            );
            t.clear(&keys.upload(&txn.write.token));
            return;
        }
        for (&p, d) in &txn.write.pages {
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
}

/// The token: a retry after an unknown result reads it; the read-conflict
/// range on it lets a retry or a fence that writes it stop this attempt
/// from landing late.
fn apply_token(t: &mut dyn KvTxn, keys: &DbKeys, token: &Token) {
    let token = keys.token(token);
    let mut token_end = token.clone();
    token_end.push(0);
    t.add_conflict_range(&token, &token_end, ConflictKind::Read);
    t.atomic_op(
        &token,
        &TokenState::landed_param(),
        MutationType::SetVersionstampedValue,
    );
}

/// Merges nearby runs until at most [`MAX_CONFLICT_RANGES`] remain.
fn coalesce(mut runs: Vec<(PageNo, u32)>) -> Vec<(PageNo, u32)> {
    let mut gap: u64 = 1;
    while runs.len() > MAX_CONFLICT_RANGES {
        let mut merged: Vec<(PageNo, u32)> = Vec::with_capacity(runs.len());
        for (first, len) in runs {
            match merged.last_mut() {
                Some((pf, pl)) if first.index() - (pf.index() + *pl as u64) <= gap => {
                    *pl = (first.index() + len as u64 - pf.index()) as u32;
                }
                _ => merged.push((first, len)),
            }
        }
        runs = merged;
        gap *= 2;
    }
    runs
}

/// The last page of a run of `len` (>= 1) pages from `first`.
fn run_last(first: PageNo, len: u32) -> PageNo {
    PageNo::new(first.get() + (len - 1))
}

/// Which path the next attempt takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Fast,
    Slow { after_unknown: bool },
}

impl Path {
    /// An earlier attempt's result was unknown: it may still land.
    fn after_unknown(self) -> bool {
        matches!(
            self,
            Path::Slow {
                after_unknown: true
            }
        )
    }
}

/// Largest change-log record (all members of a group): well under FDB's
/// 10 MB with the rest of the final commit (conflict ranges, markers).
const MAX_RECORD_BYTES: usize = 4_000_000;

/// Page probes issued in one store transaction by the slow path (each a
/// limit-1 range read; well inside FDB's 5 s).
const PROBES_PER_TXN: usize = 5_000;

/// The result of a successful commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The commit's version; for a transaction without writes, its snapshot.
    pub version: Version,
    /// The commit's versionstamp (None without writes).
    pub versionstamp: Option<Versionstamp>,
}

/// One transaction of a commit group as the commit reads it: the database,
/// what it read and what it wrote.
#[derive(Clone, Copy)]
pub(crate) struct Member<'a> {
    pub db: &'a Database,
    pub read: &'a ReadSet,
    pub write: &'a WriteSet,
}

/// A transaction of a commit group that writes: the commit uploads its
/// pages ahead when large and hands its uploads over on success.
pub(crate) struct Writer<'a> {
    pub db: &'a Database,
    pub read: &'a ReadSet,
    pub write: &'a mut WriteSet,
}

impl Writer<'_> {
    fn member(&self) -> Member<'_> {
        Member {
            db: self.db,
            read: self.read,
            write: self.write,
        }
    }
}

/// Commits one transaction.
pub(crate) fn commit(txn: Writer<'_>) -> Result<Committed> {
    commit_group(&mut [txn], &[])
}

/// Commits several transactions (of one store, possibly of different
/// databases) in one store commit: all or none, one versionstamp. A
/// conflict on any of them fails all. The read sets of `readers` (sibling
/// transactions without writes, e.g. other databases one SQL transaction
/// only read) are validated too, so the group is serializable as a whole.
pub(crate) fn commit_group(txns: &mut [Writer<'_>], readers: &[Member<'_>]) -> Result<Committed> {
    let inner = check_group(txns, readers)?;
    let names: Vec<String> = txns.iter().map(|t| t.db.name.to_string()).collect();
    let snapshot = txns[0].read.snapshot;
    let span = debug_span!("commit", databases = ?names, version = snapshot.get(),
        reads = txns.iter().map(|t| t.read.validated_len()).sum::<usize>(),
        writes = txns.iter().map(|t| t.write.pages.len()).sum::<usize>());
    let _g = span.enter();
    let plans = plan_group(txns, &inner)?;
    let reader_plans: Vec<Plan> = readers.iter().map(Plan::new).collect();
    upload_large(txns, &plans)?;
    let (first_keys, token) = (txns[0].db.keys.clone(), txns[0].write.token);
    let members: Vec<(Member<'_>, &Plan, bool)> = txns
        .iter()
        .map(Writer::member)
        .zip(&plans)
        .map(|(t, p)| (t, p, true))
        .chain(
            readers
                .iter()
                .copied()
                .zip(&reader_plans)
                .map(|(t, p)| (t, p, false)),
        )
        .collect();
    let group = Group {
        inner: &inner,
        names: &names,
        snapshot,
        members: &members,
    };
    let (outcome, after_unknown) = group.attempts();
    let landed = group.settle(outcome, after_unknown, &first_keys, &token)?;
    drop(members);
    Ok(succeeded(&inner, txns, &plans, landed))
}

/// Refuses a group the engine cannot commit atomically: empty, spanning
/// several stores, or holding one database twice. Returns the store.
fn check_group(txns: &[Writer<'_>], readers: &[Member<'_>]) -> Result<Arc<StoreCore>> {
    let Some(first) = txns.first() else {
        return Err(Error::InvalidGroup("empty commit group".into()));
    };
    let inner = first.db.store.inner.clone();
    if txns.iter().any(|t| !Arc::ptr_eq(&t.db.store.inner, &inner))
        || readers
            .iter()
            .any(|t| !Arc::ptr_eq(&t.db.store.inner, &inner))
    {
        return Err(Error::InvalidGroup(
            "a commit group spans several stores; only databases of one store commit atomically"
                .into(),
        ));
    }
    // Two transactions of one database in one commit would write two
    // change-log records under one key and two versions of its pages (one
    // lost): the VFS refuses a database opened twice in a connection, and
    // the engine refuses such a group too.
    let mut ids: Vec<DbId> = txns.iter().map(|t| t.db.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::InvalidGroup(
            "a commit group holds two transactions of the same database".into(),
        ));
    }
    Ok(inner)
}

/// The writers' plans, with "large" decided on the group's total, and the
/// check that the change-log records fit the final commit.
fn plan_group(txns: &[Writer<'_>], inner: &StoreCore) -> Result<Vec<Plan>> {
    let mut plans: Vec<Plan> = txns.iter().map(|t| Plan::new(&t.member())).collect();
    make_group_fit(&mut plans, inner.opts.inline_commit_bytes);
    // The change-log record goes into the final commit whatever the
    // transaction's size: refuse (before uploading anything) a record that
    // would not fit one FoundationDB transaction.
    // (Only large members can have a big record: an inline one holds at
    // most `inline_commit_bytes` of pages.)
    let record_bytes: usize = plans
        .iter()
        .filter(|p| p.large)
        .map(|p| p.record.encode().len())
        .sum();
    if record_bytes > MAX_RECORD_BYTES {
        return Err(Error::TooLarge(format!(
            "the transaction changes too many scattered pages: its change-log record would be {record_bytes} bytes (at most {MAX_RECORD_BYTES}); commit it in parts"
        )));
    }
    Ok(plans)
}

/// Uploads the remaining in-memory pages of the large members.
fn upload_large(txns: &mut [Writer<'_>], plans: &[Plan]) -> Result<()> {
    for (txn, plan) in txns.iter_mut().zip(plans) {
        if plan.large {
            upload::upload_all(&txn.db.store.inner, &txn.db.keys, txn.write)?;
        }
    }
    Ok(())
}

/// The attempts of one group commit: members as (transaction, plan,
/// writes?).
struct Group<'g, 'a> {
    inner: &'g StoreCore,
    names: &'g [String],
    snapshot: Version,
    members: &'g [(Member<'a>, &'g Plan, bool)],
}

impl Group<'_, '_> {
    /// Runs attempts until one ends well, fails for good or the retries
    /// are used up. Returns the outcome and whether an earlier attempt's
    /// result was unknown.
    fn attempts(&self) -> (Result<Attempt>, bool) {
        // The fast path needs one read version for all: the shared snapshot.
        let fresh = self
            .members
            .iter()
            .all(|(t, _, _)| t.read.snapshot == self.snapshot && t.read.fresh());
        let path = Cell::new(if fresh {
            Path::Fast
        } else {
            Path::Slow {
                after_unknown: false,
            }
        });
        let outcome = retry::run(
            &Backoff::store(self.inner.opts.max_retries),
            |e: &Error| matches!(e, Error::Kv(k) if k.is_retryable() && !k.is_conflict()),
            |e, attempt| {
                self.inner.retries.fetch_add(1, Ordering::Relaxed);
                let after_unknown = path.get().after_unknown() || e.is_maybe_committed();
                debug!(error = %e, attempt, after_unknown, "commit retried on the slow path");
                path.set(Path::Slow { after_unknown });
                if matches!(e, Error::Kv(k) if k.is_too_old()) {
                    Pause::Skip
                } else {
                    Pause::Backoff
                }
            },
            |_| attempt_commit(self.inner, path.get(), self.snapshot, self.members),
        );
        (outcome, path.get().after_unknown())
    }

    /// Turns the last attempt's outcome into the commit that landed (and
    /// whether an earlier attempt, whose result was unknown, landed it) or
    /// the error to report.
    fn settle(
        &self,
        outcome: Result<Attempt>,
        after_unknown: bool,
        first_keys: &DbKeys,
        token: &Token,
    ) -> Result<(Versionstamp, bool)> {
        let e = match outcome {
            Ok(Attempt::Committed(vs)) => return Ok((vs, false)),
            Ok(Attempt::Landed(vs)) => return Ok((vs, true)),
            Err(e) if !after_unknown && !e.is_maybe_committed() => {
                return Err(if e.is_conflict() { self.conflict(e) } else { e })
            }
            Err(e) => e,
        };
        // An earlier attempt's result was unknown and it may still
        // land: only a fenced token makes "not committed" true.
        if planted!("plant::unknown_as_conflict") {
            return Err(self.conflict(e));
        }
        match fence(self.inner, first_keys, token) {
            Ok(Some(vs)) => Ok((vs, true)),
            Ok(None) => {
                debug!(error = %e, "earlier attempt fenced: definitely not committed");
                if e.is_conflict() || e.is_maybe_committed() {
                    return Err(self.conflict(e));
                }
                Err(e)
            }
            Err(fence_err) => {
                tracing::warn!(error = %e, fence = %fence_err,
                    "could not fence a commit after an unknown result; its outcome stays unknown");
                Err(Error::Kv(KvError::new(
                    KvError::COMMIT_UNKNOWN_RESULT,
                    format!("the commit may or may not have been applied ({e}; fencing it failed: {fence_err})"),
                )))
            }
        }
    }

    /// Counts a conflict and names the group in it.
    fn conflict(&self, e: Error) -> Error {
        self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
        conflict_error(self.names, self.snapshot, e)
    }
}

/// The group committed as `vs` (by this attempt, or by an earlier one whose
/// result was unknown: `recovered`): counters, cache, large commits' index.
fn succeeded(
    inner: &StoreCore,
    txns: &mut [Writer<'_>],
    plans: &[Plan],
    (vs, recovered): (Versionstamp, bool),
) -> Committed {
    if recovered {
        inner.recovered_unknown.fetch_add(1, Ordering::Relaxed);
        info!(commit = %vs, "earlier attempt had landed after an unknown result");
    }
    inner.commits.fetch_add(1, Ordering::Relaxed);
    for (txn, plan) in txns.iter_mut().zip(plans) {
        finish(txn, plan, vs);
    }
    Committed {
        version: vs.version(),
        versionstamp: Some(vs),
    }
}

/// A conflict as reported to the caller (a store-level 1020 gets the names).
fn conflict_error(names: &[String], snapshot: Version, e: Error) -> Error {
    match e {
        e @ Error::Conflict { .. } => e,
        other => Error::Conflict {
            database: names.join(", "),
            snapshot,
            detail: format!("the store refused the commit ({other})"),
        },
    }
}

/// How one attempt ended well.
enum Attempt {
    /// This attempt committed.
    Committed(Versionstamp),
    /// An earlier attempt (whose result was unknown) had landed.
    Landed(Versionstamp),
}

/// One attempt of a group commit. `members`: (transaction, plan, writes?).
fn attempt_commit(
    inner: &StoreCore,
    path: Path,
    snapshot: Version,
    members: &[(Member<'_>, &Plan, bool)],
) -> Result<Attempt> {
    let mut t = inner.kv.begin()?;
    match path {
        Path::Fast => t.set_read_version(snapshot),
        Path::Slow { after_unknown } => {
            if let Some(vs) = slow_check(inner, t.as_mut(), members, after_unknown)? {
                return Ok(Attempt::Landed(vs));
            }
        }
    }
    for (txn, plan, writes) in members {
        if *writes {
            plan.apply(t.as_mut(), txn);
        } else {
            plan.apply_reads(t.as_mut(), txn);
        }
    }
    t.set_durability(durability(members));
    debug!(bytes = t.approximate_size(), "committing");
    failpoint!("commit::before");
    let info = t.commit()?;
    failpoint!("commit::after");
    let vs = info
        .versionstamp
        .ok_or_else(|| Error::corrupt("commit with writes returned no versionstamp"))?;
    Ok(Attempt::Committed(vs))
}

/// A group's commit is full when any writing member's is.
fn durability(members: &[(Member<'_>, &Plan, bool)]) -> Durability {
    let full = members
        .iter()
        .any(|(txn, _, writes)| *writes && txn.write.durability == Durability::Full);
    if full {
        Durability::Full
    } else {
        Durability::Relaxed
    }
}

/// The slow path's checks for every member, with `t` as the commit's store
/// transaction. Returns the commit that already landed (after an unknown
/// result), or None to go on and commit in `t`.
fn slow_check(
    inner: &StoreCore,
    t: &mut dyn KvTxn,
    members: &[(Member<'_>, &Plan, bool)],
    after_unknown: bool,
) -> Result<Option<Versionstamp>> {
    let log_from = probe_ahead(inner, members)?;
    let r = t.read_version()?;
    if let Some(vs) = check_members(t, members, after_unknown)? {
        return Ok(Some(vs));
    }
    check_reads(t, members, log_from, r)?;
    Ok(None)
}

/// A read set too large for one store transaction is probed ahead in
/// short ones; the commit transaction then checks the change log from the
/// first of them on (a short span of history). Returns that first read
/// version, or None when the commit transaction probes everything itself.
fn probe_ahead(
    inner: &StoreCore,
    members: &[(Member<'_>, &Plan, bool)],
) -> Result<Option<Version>> {
    let probes: usize = members
        .iter()
        .map(|(txn, _, _)| txn.read.validated_len())
        .sum();
    if probes <= PROBES_PER_TXN {
        return Ok(None);
    }
    let mut first_rv = None;
    for (txn, _, _) in members {
        let pages: Vec<PageNo> = txn.read.all_pages();
        for chunk in pages.chunks(PROBES_PER_TXN) {
            let mut pt = inner.kv.begin()?;
            let rv = pt.read_version()?;
            first_rv.get_or_insert(rv);
            probe_pages(pt.as_mut(), txn, chunk)?;
        }
    }
    Ok(first_rv)
}

/// Reads in `t`, in one round trip, the token (after an unknown result),
/// GC's horizon and the catalog entry of each member: returns the commit
/// that already landed, or fails when a member's snapshot is too old or
/// its database was dropped.
fn check_members(
    t: &mut dyn KvTxn,
    members: &[(Member<'_>, &Plan, bool)],
    after_unknown: bool,
) -> Result<Option<Versionstamp>> {
    let mut reqs = Vec::new();
    if after_unknown {
        let (txn, _, _) = members
            .first()
            .ok_or_else(|| Error::InvalidGroup("empty commit group".into()))?;
        reqs.push(ReadRequest::Get(txn.db.keys.token(&txn.write.token)));
    }
    for (txn, _, _) in members {
        reqs.push(ReadRequest::Get(txn.db.keys.horizon()));
        reqs.push(ReadRequest::Get(txn.db.store.inner.keys.meta(txn.db.id)));
    }
    // The token is read serializably: a first attempt landing between now
    // and this commit makes this one conflict instead of applying twice.
    let mut res = t.get_batch(&reqs, false)?.into_iter();
    if after_unknown {
        match res.next() {
            Some(ReadResult::Value(Some(v))) => {
                if let TokenState::Landed(vs) = TokenState::decode(&v)? {
                    return Ok(Some(vs));
                }
                return Err(Error::Fenced);
            }
            Some(ReadResult::Value(None)) => {}
            _ => return Err(Error::corrupt("batch answer")),
        }
    }
    for (txn, _, _) in members {
        let (Some(ReadResult::Value(h)), Some(ReadResult::Value(meta))) = (res.next(), res.next())
        else {
            return Err(Error::corrupt("batch answer"));
        };
        let horizon = decode_horizon(h.as_deref())?;
        if !planted!("plant::skip_horizon_check") {
            txn.db.check_horizon(txn.read.snapshot, horizon, false)?;
        }
        match meta {
            Some(m) if !DbMeta::decode(&m)?.dropped => {}
            _ => return Err(Error::Dropped(txn.db.name.to_string())),
        }
    }
    Ok(None)
}

/// The rest of the slow path, as of `t`'s read version `r`: probes every
/// page read (or, after probing ahead, reads the change log since
/// `log_from`) and the size records.
fn check_reads(
    t: &mut dyn KvTxn,
    members: &[(Member<'_>, &Plan, bool)],
    log_from: Option<Version>,
    r: Version,
) -> Result<()> {
    match log_from {
        None => {
            for (txn, plan, _) in members {
                probe_pages(t, txn, &txn.read.all_pages())?;
                probe_size(t, txn, plan)?;
            }
        }
        Some(from) => {
            for (txn, plan, _) in members {
                probe_size(t, txn, plan)?;
                let changed =
                    changelog::read_after(t, &txn.db.name, &txn.db.keys, after_version(from), r)?;
                check_records(txn, plan, &changed)?;
            }
        }
    }
    Ok(())
}

/// Fails with a conflict when one of `pages` (read by `txn`) has a version
/// newer than the snapshot, as of `t`'s read version. GC never removes the
/// newest version of a page at or below its horizon, so the answer holds
/// even for a snapshot older than the horizon.
fn probe_pages(t: &mut dyn KvTxn, txn: &Member<'_>, pages: &[PageNo]) -> Result<()> {
    if pages.is_empty() || planted!("plant::skip_read_conflicts") {
        return Ok(());
    }
    let keys = &txn.db.keys;
    let reqs: Vec<ReadRequest> = pages
        .iter()
        .map(|&p| {
            let (b, e) = keys.page_after(p, txn.read.snapshot);
            ReadRequest::Range(RangeOption::new(b, e).limit(1))
        })
        .collect();
    let res = t.get_batch(&reqs, true)?;
    let hit: Vec<PageNo> = pages
        .iter()
        .zip(res)
        .filter(|(_, r)| matches!(r, ReadResult::Range(r) if !r.kvs.is_empty()))
        .map(|(p, _)| *p)
        .take(8)
        .collect();
    if hit.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict {
        database: txn.db.name.to_string(),
        snapshot: txn.read.snapshot,
        detail: format!("pages {hit:?} changed after the snapshot"),
    })
}

/// The size and page-size checks of the slow path: a newer size record (if
/// the size was observed or changed) or a page size set meanwhile.
fn probe_size(t: &mut dyn KvTxn, txn: &Member<'_>, plan: &Plan) -> Result<()> {
    let keys = &txn.db.keys;
    let (_, zend) = keys.sizes();
    let newer_size =
        ReadRequest::Range(RangeOption::new(keys.size_at(txn.read.snapshot).1, zend).limit(1));
    let res = t.get_batch(&[newer_size, ReadRequest::Get(keys.header())], true)?;
    let (size_changed, header_set) = match res.as_slice() {
        [ReadResult::Range(z), ReadResult::Value(h)] => (!z.kvs.is_empty(), h.is_some()),
        _ => return Err(Error::corrupt("batch answer")),
    };
    if (plan.size_conflict && size_changed) || (plan.header.is_some() && header_set) {
        return Err(Error::Conflict {
            database: txn.db.name.to_string(),
            snapshot: txn.read.snapshot,
            detail: "a later commit changed the database size or page size".into(),
        });
    }
    Ok(())
}

/// Fails with a conflict when one of `changed` touched what `txn` read.
fn check_records(
    txn: &Member<'_>,
    plan: &Plan,
    changed: &[(Versionstamp, LogRecord)],
) -> Result<()> {
    for (vs, rec) in changed {
        let hit: Vec<PageNo> = rec
            .changed()
            .into_iter()
            .filter(|&p| txn.read.contains(p))
            .take(8)
            .collect();
        let size_hit = plan.size_conflict && rec.page_count.is_some();
        let header_hit = plan.header.is_some() && rec.page_size.is_some();
        if !hit.is_empty() || size_hit || header_hit {
            return Err(Error::Conflict {
                database: txn.db.name.to_string(),
                snapshot: txn.read.snapshot,
                detail: if hit.is_empty() {
                    format!("commit {vs} changed the database size")
                } else {
                    format!("commit {vs} changed pages {hit:?}")
                },
            });
        }
    }
    Ok(())
}

/// Makes sure the commit carrying `token` can never land if it has not
/// already: reads the token key serializably and, when absent, writes a
/// fenced value there (the commit read-conflicts on its token, so it can no
/// longer commit after this). Returns the landed commit, or None when it
/// definitely did not commit. Idempotent, so retried like any store
/// transaction (also after its own unknown result).
fn fence(inner: &StoreCore, keys: &DbKeys, token: &Token) -> Result<Option<Versionstamp>> {
    let key = keys.token(token);
    let param = TokenState::fenced_param();
    inner.run("fence", |t| match t.get(&key, false)? {
        Some(v) => match TokenState::decode(&v)? {
            TokenState::Landed(vs) => Ok(Some(vs)),
            TokenState::Fenced(_) => Ok(None),
        },
        None => {
            t.atomic_op(&key, &param, MutationType::SetVersionstampedValue);
            Ok(None)
        }
    })
}

/// Decides which members of a group are large so that the inline part of
/// the whole group stays under `limit` (FDB's 10 MB is per store
/// transaction, not per database): the biggest go large first.
fn make_group_fit(plans: &mut [Plan], limit: usize) {
    let mut total: usize = plans
        .iter()
        .filter(|p| !p.large)
        .map(|p| p.inline_bytes)
        .fold(0, usize::saturating_add);
    while total > limit {
        let Some(biggest) = plans
            .iter_mut()
            .filter(|p| !p.large && p.inline_bytes > 0)
            .max_by_key(|p| p.inline_bytes)
        else {
            return;
        };
        total -= biggest.inline_bytes;
        biggest.large = true;
        biggest.record.large = true;
    }
}

/// After a successful commit: cache what was written, finish a large
/// commit's page index.
fn finish(txn: &mut Writer<'_>, plan: &Plan, vs: Versionstamp) {
    let cache = &txn.db.store.inner.cache;
    if plan.large {
        txn.write.uploaded = false; // owned by the commit now
        let (inner, keys) = (&txn.db.store.inner, &txn.db.keys);
        if let Err(e) = upload::materialize(
            inner,
            keys,
            &txn.db.name,
            vs,
            &txn.write.token,
            &plan.record,
        ) {
            // The commit stands; the next BEGIN of any process finishes it.
            tracing::warn!(error = %e, commit = %vs, "page index of a large commit left for later");
        }
        return;
    }
    for (&p, d) in &txn.write.pages {
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
        let pages: Vec<PageNo> = (0..50_000u32).map(|p| PageNo::new(p * 3)).collect();
        let r = coalesce(runs(&pages));
        assert!(r.len() <= MAX_CONFLICT_RANGES);
        // Every page is still covered.
        for p in pages {
            assert!(r
                .iter()
                .any(|&(f, l)| p >= f && p.index() < f.index() + l as u64));
        }
    }
}
