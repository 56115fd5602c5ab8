//! The commit pipeline: serialised, checks the 5 s window and read-write
//! conflicts against recent commits, injects faults, substitutes
//! versionstamps, writes redb durably and publishes the new version.
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

use rand::RngExt;
use tracing::debug;

use super::atomic;
use super::conflict_ranges::{normalize, single_key_range, KeyRange};
use super::faults::{LateDelivery, ModelCounters, UnknownOutcome};
use super::writes::Mutation;
use super::StoreState;
use crate::kv::limits::{MAX_KEY_SIZE, MAX_VALUE_SIZE, MVCC_WINDOW_MICROS};
use crate::kv::{CommitInfo, KvError, KvResult, MutationType, Version, Versionstamp};
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

/// FDB's key and value limits over buffered mutations (2102 / 2103).
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

/// The commit version chosen and not yet published: dropped before
/// [`InFlight::published`], it forgets the commit's history entries and
/// gives the version up.
struct InFlight<'a> {
    store: &'a StoreState,
    version: Version,
    recorded: bool,
    published: bool,
}

impl InFlight<'_> {
    fn published(mut self) {
        self.store.versions.finish_commit(self.version, true);
        self.published = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        if self.recorded {
            write(&self.store.history).forget(self.version);
        }
        self.store.versions.finish_commit(self.version, false);
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
    /// One commit round trip.
    pub(crate) fn commit(&self, mut req: CommitRequest) -> KvResult<CommitInfo> {
        self.faults.commit_round_trip_latency();
        self.counters.commit();
        // Serialises commits; also guards the recent-writes history.
        let mut recent = lock(&self.recent);
        let now = self.now();
        self.prune(&mut recent, now);
        // Commits in flight since an earlier 1021 may reach the resolver
        // before this one.
        let delivery = self.faults.late_delivery();
        match delivery {
            LateDelivery::NextCommit => {
                self.deliver_late(&mut recent, now, || true);
            }
            LateDelivery::Random => {
                self.deliver_late(&mut recent, now, coin);
            }
            LateDelivery::Manual => {}
        }
        req.reads = normalize(req.reads);
        if self.faults.late_unknown() {
            self.counters.unknown_result();
            ModelCounters::bump(&self.model.late_held);
            debug!(
                op = "commit",
                applied = "later",
                "injected unknown result, commit held"
            );
            lock(&self.late).held.push_back(Held { req, held_at: now });
            return Err(unknown_result());
        }
        self.resolve(&recent, &req, now)?;
        let unknown = self.faults.unknown_result();
        if unknown == Some(UnknownOutcome::Dropped) {
            self.counters.unknown_result();
            debug!(op = "commit", applied = false, "injected unknown result");
            return Err(unknown_result());
        }
        let size = req.size;
        let info = self.apply(&mut recent, now, req)?;
        if delivery == LateDelivery::Random {
            // ...or after it.
            self.deliver_late(&mut recent, now, coin);
        }
        drop(recent);
        debug!(
            op = "commit",
            version = info.version.get(),
            versionstamp = ?info.versionstamp,
            size,
            "kv round trip"
        );
        if unknown == Some(UnknownOutcome::Applied) {
            self.counters.unknown_result();
            debug!(
                op = "commit",
                version = info.version.get(),
                applied = true,
                "injected unknown result"
            );
            return Err(unknown_result());
        }
        Ok(info)
    }

    /// The resolver's verdict on `req`: too old, a conflict with a later
    /// write of a key it read, or an injected conflict.
    fn resolve(&self, recent: &RecentWrites, req: &CommitRequest, now: Version) -> KvResult<()> {
        match self.resolve_read_set(recent, req, now) {
            Ok(()) => {}
            Err(Refusal::TooOld(e)) => return Err(e),
            Err(Refusal::Conflict { read_version, with }) => {
                self.counters.conflict();
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
        if self.faults.spurious_conflict() {
            self.counters.conflict();
            debug!(op = "commit", "injected conflict");
            return Err(not_committed("injected conflict (fault injection)".into()));
        }
        Ok(())
    }

    /// Forgets what the 5 s window no longer needs.
    fn prune(&self, recent: &mut RecentWrites, now: Version) {
        let cutoff = now.before(MVCC_WINDOW_MICROS);
        recent.prune(cutoff);
        write(&self.history).prune(cutoff);
    }

    /// FDB's resolver: a transaction with read-conflict ranges is too old
    /// when its read version left the window, and conflicts when a commit
    /// after its read version wrote a key it read.
    fn resolve_read_set(
        &self,
        recent: &RecentWrites,
        req: &CommitRequest,
        now: Version,
    ) -> Result<(), Refusal> {
        let Some(rv) = req.read_version else {
            return Ok(());
        };
        if req.reads.is_empty() {
            return Ok(());
        }
        if now.since(rv) > MVCC_WINDOW_MICROS || recent.is_beyond_horizon(rv) {
            return Err(Refusal::TooOld(KvError::new(
                KvError::TRANSACTION_TOO_OLD,
                format!(
                    "commit of a transaction whose read version {rv} is {:.3} s old",
                    now.since(rv) as f64 / 1e6
                ),
            )));
        }
        match recent.first_conflict(rv, &req.reads) {
            Some(with) => Err(Refusal::Conflict {
                read_version: rv,
                with,
            }),
            None => Ok(()),
        }
    }

    /// Applies a resolved commit: chooses its version (possibly joining the
    /// open batch), substitutes versionstamps, writes redb and publishes.
    fn apply(
        &self,
        recent: &mut RecentWrites,
        now: Version,
        req: CommitRequest,
    ) -> KvResult<CommitInfo> {
        let join = self.faults.batch_join();
        let (version, order) = self.versions.begin_commit(now, join);
        // Gives the version up if anything below fails or panics, so that
        // read versions waiting for it never hang.
        let mut in_flight = InFlight {
            store: self,
            version,
            recorded: false,
            published: false,
        };
        let stamp = Versionstamp::new(version, order);
        let writes = write_ranges(&req.mutations, req.explicit_writes);
        let mutations = resolve(req.mutations, &stamp)?;
        let clear_budget = read(&self.history).clear_range_budget();
        self.durable
            .commit(version, &mutations, clear_budget, |before, lost| {
                write(&self.history).record(version, before, lost);
                in_flight.recorded = true;
            })?;
        recent.record(version, writes);
        in_flight.published();
        if order > 0 {
            ModelCounters::bump(&self.model.batch_joins);
        }
        let bytes = written_bytes(&mutations);
        self.counters.committed(req.size as u64, bytes);
        let (history_commits, history_bytes) = write(&self.history).stats();
        debug!(
            op = "apply",
            version = version.get(),
            order,
            mutations = mutations.len(),
            bytes,
            history_commits,
            history_bytes,
            recent_commits = recent.len(),
            "kv commit applied"
        );
        Ok(CommitInfo {
            version,
            versionstamp: Some(stamp),
        })
    }

    /// Lands the held commits `pick` chooses, oldest first, each resolved
    /// now as FDB's resolver would resolve it at its new version. Callers
    /// hold the commit lock (`recent`).
    pub(crate) fn deliver_late(
        &self,
        recent: &mut RecentWrites,
        now: Version,
        mut pick: impl FnMut() -> bool,
    ) -> LateOutcome {
        let held: Vec<Held> = {
            let mut late = lock(&self.late);
            let (chosen, kept): (VecDeque<Held>, VecDeque<Held>) =
                late.held.drain(..).partition(|_| pick());
            late.held = kept;
            chosen.into()
        };
        let mut out = LateOutcome::default();
        for h in held {
            let refused = if now.since(h.held_at) > MVCC_WINDOW_MICROS {
                Some("held longer than the 5 s window".to_string())
            } else {
                match self.resolve_read_set(recent, &h.req, now) {
                    Err(Refusal::TooOld(e)) => Some(e.to_string()),
                    Err(Refusal::Conflict { with, .. }) => {
                        Some(format!("conflict with the commit at version {with}"))
                    }
                    Ok(()) => match self.apply(recent, now, h.req) {
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
            };
            match refused {
                Some(why) => {
                    out.refused += 1;
                    ModelCounters::bump(&self.model.late_refused);
                    debug!(op = "late_commit", reason = %why, "held commit refused");
                }
                None => {
                    out.applied += 1;
                    ModelCounters::bump(&self.model.late_applied);
                }
            }
        }
        out
    }

    /// [`StoreState::deliver_late`] under the commit lock, for tests.
    pub(crate) fn deliver_late_now(&self) -> LateOutcome {
        let mut recent = lock(&self.recent);
        let now = self.now();
        self.prune(&mut recent, now);
        self.deliver_late(&mut recent, now, || true)
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
