//! The commit pipeline: serialised, checks the 5 s window and read-write
//! conflicts against recent commits, injects faults, substitutes
//! versionstamps, writes redb and publishes the new version. Commits run
//! in groups (see `group`): each member goes through all of this as a
//! serial commit would, and the group shares one redb write and one fsync
//! ([`Round`]).
//!
//! Two FoundationDB behaviours an idealised store would not have are
//! modelled here (see [`super::faults::Faults`] to turn them on):
//!
//! * **Batches.** A commit may join the previous commit's version with the
//!   next batch order (see [`super::versions`]). Conflicts within a batch
//!   are resolved as FDB's resolver does: a later member whose read
//!   version precedes the batch conflicts with an earlier member's writes,
//!   because those are recorded at a version above its read version.
//! * **Late unknown results.** A held commit answers 1021 and lands later
//!   (at the next commit, or when a test delivers it): it is resolved at
//!   that moment exactly like a fresh commit of the same transaction, with
//!   a new version.

#![warn(clippy::too_many_lines)]

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use rand::RngExt;
use tracing::debug;

use super::atomic;
use super::conflict_ranges::{intersects, normalize, single_key_range, KeyRange};
use super::durable::{Before, GroupWrite};
use super::faults::{LateDelivery, ModelCounters, UnknownOutcome};
use super::writes::Mutation;
use super::StoreState;
use crate::kv::limits::{MAX_KEY_SIZE, MAX_VALUE_SIZE, MVCC_WINDOW_MICROS};
use crate::kv::{CommitInfo, Durability, KvError, KvResult, MutationType, Version, Versionstamp};
use crate::sync::{lock, read, write};

use super::conflicts::RecentWrites;

/// What a transaction sends to commit.
pub(crate) struct CommitRequest {
    /// Needed when there are read-conflict ranges.
    pub(crate) read_version: Option<Version>,
    pub(crate) reads: Vec<KeyRange>,
    /// Explicit write-conflict ranges, and the ranges FDB gives
    /// versionstamped keys (see `txn.rs`).
    pub(crate) explicit_writes: Vec<KeyRange>,
    pub(crate) mutations: Vec<Mutation>,
    pub(crate) size: usize,
    /// Whether it may be acknowledged before it is on disk.
    pub(crate) durability: Durability,
}

/// A commit that answered 1021 and has not landed yet.
pub(crate) struct Held {
    req: CommitRequest,
    /// Clock time when it was held.
    held_at: Version,
}

/// Commits held for a late apply, oldest first.
#[derive(Default)]
pub(crate) struct LateCommits {
    held: VecDeque<Held>,
}

impl LateCommits {
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

/// What delivering held commits did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LateOutcome {
    /// Held commits applied now.
    pub applied: u64,
    /// Held commits refused now (conflict, too old, or held too long).
    pub refused: u64,
}

/// FDB's `key_outside_legal_range`.
const KEY_OUTSIDE_LEGAL_RANGE: i32 = 2004;

/// FDB's special key space: no client writes there (the store keeps its
/// version row there, see `durable::VERSION_ROW`).
const SPECIAL_KEYS: &[u8] = b"\xff\xff";

/// FDB's key and value limits over buffered mutations (2102 / 2103), and
/// no write into the special key space (2004).
pub(crate) fn check_mutation_sizes(mutations: &[Mutation]) -> KvResult<()> {
    let key_err = |n: usize| {
        Err(KvError::new(
            KvError::KEY_TOO_LARGE,
            format!("key of {n} bytes (limit {MAX_KEY_SIZE})"),
        ))
    };
    let value_err = |n: usize| {
        Err(KvError::new(
            KvError::VALUE_TOO_LARGE,
            format!("value of {n} bytes (limit {MAX_VALUE_SIZE})"),
        ))
    };
    for m in mutations {
        // (A versionstamped key's placeholder is all 0xff: checked once
        // substituted, where the version row is skipped.)
        if let Mutation::Set(k, _) | Mutation::Clear(k) = m {
            special_key(k)?;
        }
        if let Mutation::Atomic(k, _, op) = m {
            if *op != MutationType::SetVersionstampedKey {
                special_key(k)?;
            }
        }
        let (key_len, value_len) = match m {
            Mutation::Set(k, v) => (k.len(), v.len()),
            Mutation::Clear(k) => (k.len(), 0),
            Mutation::ClearRange(..) => continue,
            Mutation::Atomic(k, p, MutationType::SetVersionstampedKey) => {
                (atomic::substituted_len(k), p.len())
            }
            Mutation::Atomic(k, p, MutationType::SetVersionstampedValue) => {
                (k.len(), atomic::substituted_len(p))
            }
            Mutation::Atomic(k, p, _) => (k.len(), p.len()),
        };
        if key_len > MAX_KEY_SIZE {
            return key_err(key_len);
        }
        if value_len > MAX_VALUE_SIZE {
            return value_err(value_len);
        }
    }
    Ok(())
}

fn special_key(key: &[u8]) -> KvResult<()> {
    if key.starts_with(SPECIAL_KEYS) {
        return Err(KvError::new(
            KEY_OUTSIDE_LEGAL_RANGE,
            "a write into the special key space (\\xff\\xff)",
        ));
    }
    Ok(())
}

/// Replaces versionstamp ops by the `Set`s they stand for.
fn resolve(mutations: Vec<Mutation>, stamp: &Versionstamp) -> KvResult<Vec<Mutation>> {
    mutations
        .into_iter()
        .map(|m| match m {
            Mutation::Atomic(k, p, MutationType::SetVersionstampedKey) => {
                Ok(Mutation::Set(atomic::substitute(&k, stamp)?, p))
            }
            Mutation::Atomic(k, p, MutationType::SetVersionstampedValue) => {
                Ok(Mutation::Set(k, atomic::substitute(&p, stamp)?))
            }
            other => Ok(other),
        })
        .collect()
}

/// The write-conflict ranges of (unresolved) mutations plus explicit ones.
/// A versionstamped key adds none of its own: as in FDB, its transaction
/// added the range of keys it may land on to the explicit ranges.
fn write_ranges(mutations: &[Mutation], explicit: Vec<KeyRange>) -> Vec<KeyRange> {
    let mut out = explicit;
    for m in mutations {
        match m {
            Mutation::Atomic(_, _, MutationType::SetVersionstampedKey) => {}
            Mutation::Set(k, _) | Mutation::Clear(k) | Mutation::Atomic(k, _, _) => {
                out.push(single_key_range(k))
            }
            Mutation::ClearRange(b, e) => out.push((b.clone(), e.clone())),
        }
    }
    normalize(out)
}

fn written_bytes(mutations: &[Mutation]) -> u64 {
    mutations
        .iter()
        .map(|m| match m {
            Mutation::Set(k, v) | Mutation::Atomic(k, v, _) => k.len() + v.len(),
            Mutation::Clear(k) => k.len(),
            Mutation::ClearRange(b, e) => b.len() + e.len(),
        } as u64)
        .sum()
}

fn not_committed(message: String) -> KvError {
    KvError::new(KvError::NOT_COMMITTED, message)
}

/// A commit of the group that reached redb.
struct Applied {
    version: Version,
    order: u16,
    /// Its write-conflict ranges: checked by the group's later members,
    /// recorded when the group is written.
    writes: Vec<KeyRange>,
    size: u64,
    bytes: u64,
    durability: Durability,
}

/// What a member of a group hears, once the group is written.
enum Answer {
    /// Refused before reaching redb (conflict, too old, injected fault).
    Refused(KvError),
    /// Applied; `unknown`: it hears an injected 1021 all the same.
    Applied { info: CommitInfo, unknown: bool },
}

/// One group commit in progress, under the commit lock: its members are
/// resolved one after the other exactly as serial commits would be, each
/// against the commits before it (in the window and in the group), and
/// written into one redb transaction. Dropped before
/// [`Round::finish`] succeeded, nothing of it happened: the history entries
/// of its commits are forgotten and their versions given up.
struct Round<'a> {
    store: &'a StoreState,
    recent: MutexGuard<'a, RecentWrites>,
    /// The group's redb write, begun by its first applied commit.
    write: Option<GroupWrite<'a>>,
    applied: Vec<Applied>,
    /// A redb write failed: nothing of the group may be committed.
    broken: Option<KvError>,
    /// Held commits applied late in this group (counted once written).
    late_applied: u64,
    finished: bool,
}

impl Drop for Round<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut history = write(&self.store.history);
        for a in self.applied.iter().rev() {
            history.forget(a.version);
        }
        drop(history);
        self.store.versions.finish_group(None);
        self.store
            .model
            .late_refused
            .fetch_add(self.late_applied, Ordering::Relaxed);
    }
}

/// Why the resolver refuses a commit (before any fault is injected).
enum Refusal {
    TooOld(KvError),
    Conflict {
        read_version: Version,
        with: Version,
    },
}

impl StoreState {
    /// One commit round trip: queued for the next group commit (see
    /// `group`).
    pub(crate) fn commit(&self, req: CommitRequest) -> KvResult<CommitInfo> {
        self.faults.commit_round_trip_latency();
        self.counters.commit();
        self.commit_queued(req)
    }

    /// Commits a group: each request resolved in order, every applied one
    /// written to redb in one transaction (one fsync). Returns each one's
    /// result, in order; when the write fails, none is acknowledged.
    pub(crate) fn commit_group(&self, reqs: Vec<CommitRequest>) -> Vec<KvResult<CommitInfo>> {
        let mut round = Round::start(self);
        let answers: Vec<Answer> = reqs.into_iter().map(|r| round.member(r)).collect();
        let written = round.finish();
        answers
            .into_iter()
            .map(|a| match (a, &written) {
                (Answer::Refused(e), _) => Err(e),
                (Answer::Applied { .. }, Err(e)) => Err(e.clone()),
                (Answer::Applied { unknown: true, .. }, Ok(())) => {
                    self.counters.unknown_result();
                    Err(unknown_result())
                }
                (Answer::Applied { info, .. }, Ok(())) => Ok(info),
            })
            .collect()
    }

    /// Lands every held commit now, as a group of its own, under the commit
    /// lock (tests; a history checker at quiescence).
    pub(crate) fn deliver_late_now(&self) -> LateOutcome {
        let mut round = Round::start(self);
        let now = self.now();
        let mut out = round.deliver_late(now, || true);
        if round.finish().is_err() {
            out.refused += out.applied;
            out.applied = 0;
        }
        out
    }

    /// Forgets what the 5 s window no longer needs.
    fn prune(&self, recent: &mut RecentWrites, now: Version) {
        let cutoff = now.before(MVCC_WINDOW_MICROS);
        recent.prune(cutoff);
        write(&self.history).prune(cutoff);
    }
}

impl<'a> Round<'a> {
    /// Takes the commit lock (which also guards the recent-writes history).
    fn start(store: &'a StoreState) -> Self {
        let mut recent = lock(&store.recent);
        store.prune(&mut recent, store.now());
        Round {
            store,
            recent,
            write: None,
            applied: Vec::new(),
            broken: None,
            late_applied: 0,
            finished: false,
        }
    }

    /// One member of the group, as one serial commit: late deliveries,
    /// injected faults, the resolver, the apply.
    fn member(&mut self, mut req: CommitRequest) -> Answer {
        let store = self.store;
        let now = store.now();
        // Commits in flight since an earlier 1021 may reach the resolver
        // before this one.
        let delivery = store.faults.late_delivery();
        match delivery {
            LateDelivery::NextCommit => {
                self.deliver_late(now, || true);
            }
            LateDelivery::Random => {
                self.deliver_late(now, coin);
            }
            LateDelivery::Manual => {}
        }
        req.reads = normalize(req.reads);
        if store.faults.late_unknown() {
            store.counters.unknown_result();
            ModelCounters::bump(&store.model.late_held);
            debug!(
                op = "commit",
                applied = "later",
                "injected unknown result, commit held"
            );
            lock(&store.late).held.push_back(Held { req, held_at: now });
            return Answer::Refused(unknown_result());
        }
        if let Err(e) = self.resolve(&req, now) {
            return Answer::Refused(e);
        }
        let unknown = store.faults.unknown_result();
        if unknown == Some(UnknownOutcome::Dropped) {
            store.counters.unknown_result();
            debug!(op = "commit", applied = false, "injected unknown result");
            return Answer::Refused(unknown_result());
        }
        let size = req.size;
        let info = match self.apply(now, req) {
            Ok(info) => info,
            Err(e) => return Answer::Refused(e),
        };
        if delivery == LateDelivery::Random {
            // ...or after it.
            self.deliver_late(now, coin);
        }
        let unknown = unknown == Some(UnknownOutcome::Applied);
        debug!(
            op = "commit",
            version = info.version.get(),
            versionstamp = ?info.versionstamp,
            size,
            injected_unknown = unknown,
            "kv round trip"
        );
        Answer::Applied { info, unknown }
    }

    /// The resolver's verdict on `req`: too old, a conflict with a later
    /// write of a key it read, or an injected conflict.
    fn resolve(&self, req: &CommitRequest, now: Version) -> KvResult<()> {
        let store = self.store;
        match self.resolve_read_set(req, now) {
            Ok(()) => {}
            Err(Refusal::TooOld(e)) => return Err(e),
            Err(Refusal::Conflict { read_version, with }) => {
                store.counters.conflict();
                debug!(
                    op = "commit",
                    read_version = read_version.get(),
                    conflict_with = with.get(),
                    "kv conflict"
                );
                return Err(not_committed(format!(
                    "a key read at version {read_version} was written by the commit at version {with}"
                )));
            }
        }
        if store.faults.spurious_conflict() {
            store.counters.conflict();
            debug!(op = "commit", "injected conflict");
            return Err(not_committed("injected conflict (fault injection)".into()));
        }
        Ok(())
    }

    /// FDB's resolver: a transaction with read-conflict ranges is too old
    /// when its read version left the window, and conflicts when a commit
    /// after its read version wrote a key it read: one of the window's, or
    /// one earlier in this group.
    fn resolve_read_set(&self, req: &CommitRequest, now: Version) -> Result<(), Refusal> {
        let Some(rv) = req.read_version else {
            return Ok(());
        };
        if req.reads.is_empty() {
            return Ok(());
        }
        if now.since(rv) > MVCC_WINDOW_MICROS || self.recent.is_beyond_horizon(rv) {
            return Err(Refusal::TooOld(KvError::new(
                KvError::TRANSACTION_TOO_OLD,
                format!(
                    "commit of a transaction whose read version {rv} is {:.3} s old",
                    now.since(rv) as f64 / 1e6
                ),
            )));
        }
        let with = self
            .recent
            .first_conflict(rv, &req.reads)
            .or_else(|| self.first_conflict_in_group(rv, &req.reads));
        match with {
            Some(with) => Err(Refusal::Conflict {
                read_version: rv,
                with,
            }),
            None => Ok(()),
        }
    }

    /// The first commit applied earlier in this group, after `rv`, that
    /// wrote a key of `reads` (normalised).
    fn first_conflict_in_group(&self, rv: Version, reads: &[KeyRange]) -> Option<Version> {
        self.applied
            .iter()
            .find(|a| a.version > rv && intersects(reads, &a.writes))
            .map(|a| a.version)
    }

    /// Applies a resolved commit into the group's redb write: chooses its
    /// version (possibly joining the open batch), substitutes versionstamps,
    /// writes it and records its history (visible when the group is).
    fn apply(&mut self, now: Version, req: CommitRequest) -> KvResult<CommitInfo> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let store = self.store;
        let (version, order) = store.versions.begin_commit(now, store.faults.batch_join());
        let stamp = Versionstamp::new(version, order);
        let writes = write_ranges(&req.mutations, req.explicit_writes);
        let written = resolve(req.mutations, &stamp).and_then(|m| {
            let before = self.write_member(version, &m)?;
            Ok((m, before))
        });
        let (mutations, (before, lost)) = match written {
            Ok(w) => w,
            Err(e) => {
                store.versions.give_up(version);
                return Err(e);
            }
        };
        write(&store.history).record(version, before, lost);
        let bytes = written_bytes(&mutations);
        self.applied.push(Applied {
            version,
            order,
            writes,
            size: req.size as u64,
            bytes,
            durability: req.durability,
        });
        debug!(
            op = "apply",
            version = version.get(),
            order,
            mutations = mutations.len(),
            bytes,
            group = self.applied.len(),
            "kv commit applied"
        );
        Ok(CommitInfo {
            version,
            versionstamp: Some(stamp),
        })
    }

    /// Writes one commit's mutations into the group's redb write (begun
    /// here for the first); a failure breaks the whole group.
    fn write_member(
        &mut self,
        version: Version,
        mutations: &[Mutation],
    ) -> KvResult<(Before, Vec<KeyRange>)> {
        let clear_budget = read(&self.store.history).clear_range_budget();
        let out = match &mut self.write {
            Some(w) => w.apply(version, mutations, clear_budget),
            None => self
                .store
                .durable
                .begin_group()
                .and_then(|w| self.write.insert(w).apply(version, mutations, clear_budget)),
        };
        if let Err(e) = &out {
            self.broken = Some(e.clone());
        }
        out
    }

    /// Writes the group: visible, and on disk unless every commit of it is
    /// relaxed; then publishes it. On an error nothing of it happened
    /// (see [`Round`]'s drop).
    fn finish(mut self) -> KvResult<()> {
        if let Some(e) = self.broken.take() {
            return Err(e);
        }
        let durable = self
            .applied
            .iter()
            .any(|a| a.durability == Durability::Full);
        if let Some(w) = self.write.take() {
            w.commit(durable)?;
            ModelCounters::bump(&self.store.model.groups);
            if !durable {
                self.store
                    .model
                    .relaxed_commits
                    .fetch_add(self.applied.len() as u64, Ordering::Relaxed);
            }
        }
        self.finished = true;
        let store = self.store;
        let applied = std::mem::take(&mut self.applied);
        let last = applied.last().map(|a| (a.version, a.order));
        for a in applied {
            if a.order > 0 {
                ModelCounters::bump(&store.model.batch_joins);
            }
            store.counters.committed(a.size, a.bytes);
            self.recent.record(a.version, a.writes);
        }
        store.versions.finish_group(last);
        store
            .model
            .late_applied
            .fetch_add(self.late_applied, Ordering::Relaxed);
        let (history_commits, history_bytes) = read(&store.history).stats();
        debug!(
            op = "group_commit",
            durable,
            history_commits,
            history_bytes,
            recent_commits = self.recent.len(),
            "kv group written"
        );
        Ok(())
    }

    /// Lands the held commits `pick` chooses, oldest first, each resolved
    /// now as FDB's resolver would resolve it at its new version, as
    /// members of this group.
    fn deliver_late(&mut self, now: Version, mut pick: impl FnMut() -> bool) -> LateOutcome {
        let held: Vec<Held> = {
            let mut late = lock(&self.store.late);
            let (chosen, kept): (VecDeque<Held>, VecDeque<Held>) =
                late.held.drain(..).partition(|_| pick());
            late.held = kept;
            chosen.into()
        };
        let mut out = LateOutcome::default();
        for h in held {
            match self.land(now, h) {
                Some(why) => {
                    out.refused += 1;
                    ModelCounters::bump(&self.store.model.late_refused);
                    debug!(op = "late_commit", reason = %why, "held commit refused");
                }
                None => {
                    out.applied += 1;
                    self.late_applied += 1;
                }
            }
        }
        out
    }

    /// One held commit landing now: None when applied, else why not.
    fn land(&mut self, now: Version, h: Held) -> Option<String> {
        if now.since(h.held_at) > MVCC_WINDOW_MICROS {
            return Some("held longer than the 5 s window".to_string());
        }
        match self.resolve_read_set(&h.req, now) {
            Err(Refusal::TooOld(e)) => Some(e.to_string()),
            Err(Refusal::Conflict { with, .. }) => {
                Some(format!("conflict with the commit at version {with}"))
            }
            Ok(()) => match self.apply(now, h.req) {
                Ok(info) => {
                    debug!(
                        op = "late_commit",
                        version = info.version.get(),
                        versionstamp = ?info.versionstamp,
                        "held commit applied late"
                    );
                    None
                }
                Err(e) => Some(e.to_string()),
            },
        }
    }
}

/// A fair coin (late deliveries in [`LateDelivery::Random`]).
fn coin() -> bool {
    rand::rng().random_bool(0.5)
}

fn unknown_result() -> KvError {
    KvError::new(
        KvError::COMMIT_UNKNOWN_RESULT,
        "injected commit_unknown_result (fault injection): the commit may or may not be applied",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versionstamped_ops_become_sets() {
        let mut key = b"k".to_vec();
        key.extend_from_slice(&[0xff; 10]);
        key.extend_from_slice(&1u32.to_le_bytes());
        let mut value = [0xffu8; 10].to_vec();
        value.extend_from_slice(b"tail");
        value.extend_from_slice(&0u32.to_le_bytes());
        let stamp = Versionstamp::new(Version::new(42), 0);
        let out = resolve(
            vec![
                Mutation::Atomic(key, b"v".to_vec(), MutationType::SetVersionstampedKey),
                Mutation::Atomic(b"x".to_vec(), value, MutationType::SetVersionstampedValue),
            ],
            &stamp,
        )
        .unwrap();
        let mut want_key = b"k".to_vec();
        want_key.extend_from_slice(&stamp.0);
        let mut want_value = stamp.0.to_vec();
        want_value.extend_from_slice(b"tail");
        assert_eq!(
            out,
            vec![
                Mutation::Set(want_key, b"v".to_vec()),
                Mutation::Set(b"x".to_vec(), want_value)
            ]
        );
    }

    #[test]
    fn sizes_are_checked_per_mutation() {
        let big_key = vec![0u8; MAX_KEY_SIZE + 1];
        let big_value = vec![0u8; MAX_VALUE_SIZE + 1];
        let err = check_mutation_sizes(&[Mutation::Set(big_key.clone(), vec![])]).unwrap_err();
        assert_eq!(err.code, 2102);
        let err = check_mutation_sizes(&[Mutation::Set(b"k".to_vec(), big_value)]).unwrap_err();
        assert_eq!(err.code, 2103);
        // A clear range may span any keys.
        check_mutation_sizes(&[Mutation::ClearRange(vec![], big_key)]).unwrap();
        // Nothing is written into the special key space.
        for m in [
            Mutation::Set(b"\xff\xffx".to_vec(), vec![]),
            Mutation::Clear(b"\xff\xff".to_vec()),
            Mutation::Atomic(b"\xff\xffy".to_vec(), vec![1], MutationType::Add),
        ] {
            assert_eq!(check_mutation_sizes(&[m]).unwrap_err().code, 2004);
        }
        check_mutation_sizes(&[Mutation::Set(b"\xffx".to_vec(), vec![])]).unwrap();
    }

    #[test]
    fn versionstamped_keys_add_no_write_range_of_their_own() {
        let mut key = b"k".to_vec();
        key.extend_from_slice(&[0xff; 10]);
        key.extend_from_slice(&1u32.to_le_bytes());
        let r = write_ranges(
            &[Mutation::Atomic(
                key,
                b"v".to_vec(),
                MutationType::SetVersionstampedKey,
            )],
            vec![],
        );
        assert!(r.is_empty());
    }

    #[test]
    fn write_ranges_merge() {
        let r = write_ranges(
            &[
                Mutation::Set(b"a".to_vec(), vec![]),
                Mutation::ClearRange(b"a".to_vec(), b"c".to_vec()),
            ],
            vec![(b"x".to_vec(), b"y".to_vec())],
        );
        assert_eq!(
            r,
            vec![
                (b"a".to_vec(), b"c".to_vec()),
                (b"x".to_vec(), b"y".to_vec())
            ]
        );
    }
}
