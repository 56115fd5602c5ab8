//! The embedded backend: an in-process store that honours FoundationDB's
//! contract (MVCC, optimistic conflicts, limits, error codes, versionstamps)
//! and is durable on disk.
//!
//! SKELETON: the public surface below is fixed; the implementation is being
//! written (see the pagestore issue).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::kv::{Kv, KvMetrics, KvResult, KvTxn};

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
}

/// How to open an embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Directory holding the store; `None` keeps everything in memory (tests).
    pub dir: Option<PathBuf>,
    /// Time source for versions and the 5 s MVCC window.
    pub clock: Arc<dyn Clock>,
    /// Faults to inject from the start.
    pub faults: Faults,
}

impl EmbeddedOptions {
    /// A durable store in `dir`.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        EmbeddedOptions {
            dir: Some(dir.into()),
            clock: Arc::new(SystemClock),
            faults: Faults::default(),
        }
    }

    /// A store that lives in memory only.
    pub fn in_memory() -> Self {
        EmbeddedOptions {
            dir: None,
            clock: Arc::new(SystemClock),
            faults: Faults::default(),
        }
    }

    /// Uses `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Injects `faults`.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

/// The embedded store.
pub struct EmbeddedKv {
    _opts: EmbeddedOptions,
}

impl EmbeddedKv {
    /// Opens (creating if needed) a store.
    pub fn open(opts: EmbeddedOptions) -> KvResult<Arc<EmbeddedKv>> {
        Ok(Arc::new(EmbeddedKv { _opts: opts }))
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, _faults: Faults) {}

    /// The injected faults.
    pub fn faults(&self) -> Faults {
        Faults::default()
    }
}

impl Kv for EmbeddedKv {
    fn begin(&self) -> KvResult<Box<dyn KvTxn>> {
        Err(crate::kv::KvError::new(
            crate::kv::KvError::INTERNAL_ERROR,
            "embedded backend not implemented yet",
        ))
    }

    fn metrics(&self) -> KvMetrics {
        KvMetrics::default()
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}
