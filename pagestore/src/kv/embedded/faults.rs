//! Fault injection: spurious conflicts, unknown commit results and latency
//! per round trip, settable while the store runs.

use std::sync::RwLock;
use std::time::Duration;

use rand::RngExt;

/// Faults injected by the embedded backend, settable at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Probability that a commit with writes fails with a spurious 1020.
    pub conflict_probability: f64,
    /// Probability that a commit reports 1021; the commit is then applied or
    /// not, at random (50/50).
    pub unknown_result_probability: f64,
    /// Latency added to each round trip (read version, read, commit).
    pub latency: Duration,
    /// Extra latency added to commit round trips only (on top of
    /// `latency`): models a store whose commits cost more than its reads,
    /// as FDB's do (benchmarks of concurrent writers).
    pub commit_latency: Duration,
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
        *self
            .faults
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn set(&self, faults: Faults) {
        *self
            .faults
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = faults;
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
