//! Fault injection: spurious conflicts, unknown commit results (applied,
//! dropped, or applied *late*), commits sharing a batch version, and
//! latency per round trip, settable while the store runs.
//!
//! All probabilities default to 0: [`Faults::default()`] is an idealised
//! but FDB-conformant store. [`Faults::fdb_like`] turns on what a loaded
//! FoundationDB cluster does anyway (batch versions) without failures.
//!
//! Not test-only code: it is part of the embedded backend's public API
//! (`fdbvfs::Faults`, `StoreBuilder::faults`), because it is what
//! makes the embedded store behave like a loaded or failing FDB cluster for
//! the protocol tests, the history checker and the benchmarks (commit
//! latency of a real cluster). With the default every fault is off and it
//! costs one read of a lock per round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use rand::RngExt;

/// Faults injected by the embedded backend, settable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a commit with writes fails with a spurious 1020.
    pub conflict_probability: f64,
    /// Probability that a commit reports 1021; the commit is then applied or
    /// not, at random (50/50), before the caller hears 1021.
    pub unknown_result_probability: f64,
    /// Probability that a commit reports 1021 and is *held*: it is resolved
    /// and applied later, as a commit still in flight at a proxy lands after
    /// its client gave up (FDB with a commit timeout, `causal_write_risky`,
    /// or a lost shared-mode answer). When it lands it gets a new version
    /// and is checked like any commit at that moment: refused (silently)
    /// when a key it read was written after its read version, or when its
    /// read version left the 5 s window; a held commit not delivered
    /// within 5 s of being held is dropped. When it lands depends on
    /// `late_delivery`. Checked before `unknown_result_probability`.
    pub late_unknown_probability: f64,
    /// When held commits (`late_unknown_probability`) land.
    pub late_delivery: LateDelivery,
    /// Probability that a commit joins the previous commit's version (one
    /// FDB proxy batch: same version, next batch order in the
    /// versionstamp) when that version is still open, i.e. no read version
    /// at or above it was handed out since. 1.0 joins whenever possible.
    pub batch_join_probability: f64,
    /// Latency added to each round trip (read version, read, commit).
    pub latency: Duration,
    /// Extra latency added to commit round trips only (on top of
    /// `latency`): models a store whose commits cost more than its reads,
    /// as FDB's do (benchmarks of concurrent writers).
    pub commit_latency: Duration,
}

impl Faults {
    /// What FoundationDB does under load without any failure: commits of
    /// one batch share a version (`batch_join_probability` 0.5). No
    /// conflicts, unknown results or latency are injected.
    pub fn fdb_like() -> Faults {
        Faults {
            batch_join_probability: 0.5,
            ..Faults::default()
        }
    }
}

/// When commits held by `Faults::late_unknown_probability` land.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LateDelivery {
    /// At the start of the next commit round trip of any transaction, before
    /// that commit is resolved (so a client's retry that read the keys the
    /// held commit writes conflicts with it).
    #[default]
    NextCommit,
    /// Only when [`crate::kv::embedded::EmbeddedKv::deliver_late_commits`]
    /// is called: tests choose the exact moment.
    Manual,
    /// At a random later commit: each commit round trip lands each held
    /// commit with probability 1/2 before it is resolved, and (when it
    /// commits) each one still held with probability 1/2 after it is
    /// applied, so a held commit may also land after its client's retry
    /// committed. For randomized workloads (history checking).
    Random,
}

/// Counts of what the backend's FDB model did (not only injected faults):
/// see [`crate::kv::embedded::EmbeddedKv::model_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelCounts {
    /// Commits that joined the previous commit's version (batch order > 0).
    pub batch_joins: u64,
    /// Commits that answered 1021 and were held for a late apply.
    pub late_held: u64,
    /// Held commits applied late.
    pub late_applied: u64,
    /// Held commits refused when they landed (conflict, too old) or dropped
    /// because they were held longer than the 5 s window.
    pub late_refused: u64,
    /// Held commits not landed yet.
    pub late_pending: u64,
    /// Groups of commits written to redb (one write, and one sync unless
    /// every commit of the group was relaxed; see `group`).
    pub groups: u64,
    /// Commits acknowledged before they were on disk
    /// ([`crate::kv::Durability::Relaxed`] in a group without a full one).
    pub relaxed_commits: u64,
}

/// Lock-free counters behind [`ModelCounts`].
#[derive(Debug, Default)]
pub(crate) struct ModelCounters {
    pub(crate) batch_joins: AtomicU64,
    pub(crate) late_held: AtomicU64,
    pub(crate) late_applied: AtomicU64,
    pub(crate) late_refused: AtomicU64,
    pub(crate) groups: AtomicU64,
    pub(crate) relaxed_commits: AtomicU64,
}

impl ModelCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, late_pending: u64) -> ModelCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ModelCounts {
            batch_joins: get(&self.batch_joins),
            late_held: get(&self.late_held),
            late_applied: get(&self.late_applied),
            late_refused: get(&self.late_refused),
            late_pending,
            groups: get(&self.groups),
            relaxed_commits: get(&self.relaxed_commits),
        }
    }
}

/// What an injected `commit_unknown_result` does with the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnknownOutcome {
    /// The commit is applied, but the caller hears 1021.
    Applied,
    /// The commit is dropped, and the caller hears 1021.
    Dropped,
}

/// The current faults of one store.
#[derive(Debug, Default)]
pub(crate) struct FaultInjector {
    faults: RwLock<Faults>,
}

impl FaultInjector {
    pub(crate) fn new(faults: Faults) -> Self {
        FaultInjector {
            faults: RwLock::new(faults),
        }
    }

    pub(crate) fn get(&self) -> Faults {
        *crate::sync::read(&self.faults)
    }

    pub(crate) fn set(&self, faults: Faults) {
        *crate::sync::write(&self.faults) = faults;
    }

    /// Sleeps the injected latency of one round trip.
    pub(crate) fn round_trip_latency(&self) {
        let latency = self.get().latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
    }

    /// Sleeps the injected latency of one commit round trip: `latency`
    /// plus `commit_latency`.
    pub(crate) fn commit_round_trip_latency(&self) {
        let f = self.get();
        let latency = f.latency + f.commit_latency;
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
    }

    /// Whether this commit fails with a spurious conflict.
    pub(crate) fn spurious_conflict(&self) -> bool {
        chance(self.get().conflict_probability)
    }

    /// Whether this commit joins the previous commit's batch if it can.
    pub(crate) fn batch_join(&self) -> bool {
        chance(self.get().batch_join_probability)
    }

    /// Whether this commit reports 1021 and is held for a late apply.
    pub(crate) fn late_unknown(&self) -> bool {
        chance(self.get().late_unknown_probability)
    }

    /// When held commits land.
    pub(crate) fn late_delivery(&self) -> LateDelivery {
        self.get().late_delivery
    }

    /// Whether this commit reports an unknown result, and what happens to it.
    pub(crate) fn unknown_result(&self) -> Option<UnknownOutcome> {
        if !chance(self.get().unknown_result_probability) {
            return None;
        }
        Some(if rand::rng().random_bool(0.5) {
            UnknownOutcome::Applied
        } else {
            UnknownOutcome::Dropped
        })
    }
}

fn chance(p: f64) -> bool {
    if p.is_nan() || p <= 0.0 {
        false
    } else if p >= 1.0 {
        true
    } else {
        rand::rng().random_bool(p)
    }
}
