//! The embedded backend: an in-process store that honours FoundationDB's
//! contract (MVCC, optimistic conflicts, limits, error codes, versionstamps)
//! and is durable on disk.
//!
//! # Design
//!
//! * [`durable`]: the latest value of every key lives in a redb database
//!   (why redb: see that module), with the last commit version next to it.
//! * [`mvcc`]: the values keys had before each commit of the last 5 s live
//!   in memory, so a transaction reads at its read version
//!   ([`view`] lays them over a redb snapshot); bounded in bytes (past the
//!   bound, old readers get 1007), and a large range clear (dropping a
//!   database) keeps none of them, so it runs in bounded memory.
//! * [`versions`]: read and commit versions are microseconds of the
//!   injected [`Clock`], strictly increasing, persisted with each commit.
//! * [`conflicts`]: the write ranges of recent commits, checked against a
//!   committing transaction's read-conflict ranges (error 1020).
//! * [`txn`] buffers writes ([`writes`]) and reads through them; [`commit`]
//!   serialises commits, substitutes versionstamps ([`atomic`]) and injects
//!   [`faults`].
//!
//! # How close to FoundationDB
//!
//! The backend models what FDB 7.3 does that changes what a client can
//! observe, so that the page store's protocol is tested against it:
//!
//! * commits of one batch sharing a version, told apart by the
//!   versionstamp's batch order ([`Faults::batch_join_probability`]);
//! * a `commit_unknown_result` whose commit lands *after* the client heard
//!   it ([`Faults::late_unknown_probability`], [`LateDelivery`],
//!   [`EmbeddedKv::deliver_late_commits`]);
//! * `transaction_too_old` at read and commit; read-your-writes with FDB's
//!   conflict ranges (reads answered by the transaction's own writes add
//!   none) and `accessed_unreadable` for versionstamped keys and values;
//!   the write-conflict range of a versionstamped key covers every key it
//!   may land on.
//!
//! What it does not model is listed by the contract tests
//! (`pagestore/tests/contract`, `pagestore/tests/kv_contract.rs`).
//! * [`dir_lock`]: one process per store directory, with a clear error
//!   naming the holder.
//! * [`access`]: the directory is its owner's alone (0700, files 0600,
//!   owner checked), whatever the umask.
//!
//! Commits are serialised by one mutex, in groups ([`group`]: the commits
//! waiting for it share one redb write and one fsync); reads never take
//! it, and redb's MVCC readers never wait for a commit's fsync.

pub(crate) mod access;
mod atomic;
mod commit;
mod conflict_ranges;
mod conflicts;
mod dir_lock;
mod durable;
#[cfg(test)]
mod failing_disk;
mod faults;
mod flusher;
mod group;
#[cfg(test)]
mod group_tests;
mod last_rows;
mod mvcc;
mod txn;
mod versions;
mod view;
mod writes;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use tracing::debug;

use crate::clock::{Clock, SystemClock};
use crate::kv::counters::Counters;
use crate::kv::{Kv, KvMetrics, KvResult, KvTxn, Version};
use crate::sync::lock;

pub use commit::LateOutcome;
pub use faults::{Faults, LateDelivery, ModelCounts};
pub use flusher::FLUSH_DELAY;
pub use mvcc::DEFAULT_HISTORY_BYTES;

use commit::LateCommits;
use conflicts::RecentWrites;
use durable::Durable;
use faults::{FaultInjector, ModelCounters};
use group::CommitQueue;
use mvcc::History;
use versions::Versions;
use view::View;

/// How to open an embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Directory holding the store; `None` keeps everything in memory (tests).
    pub dir: Option<PathBuf>,
    /// Time source for versions and the 5 s MVCC window.
    pub clock: Arc<dyn Clock>,
    /// Faults to inject from the start.
    pub faults: Faults,
    /// Byte bound of the in-memory MVCC history (default
    /// [`DEFAULT_HISTORY_BYTES`], 64 MiB). Past it the oldest history goes
    /// and reads at older read versions get 1007, as FDB's storage servers
    /// do under memory pressure; a range clear keeps the previous values of
    /// at most a quarter of it (see [`mvcc`]).
    pub history_bytes: usize,
}

impl EmbeddedOptions {
    /// A durable store in `dir`.
    pub fn dir(dir: impl Into<PathBuf>) -> Self {
        EmbeddedOptions {
            dir: Some(dir.into()),
            clock: Arc::new(SystemClock),
            faults: Faults::default(),
            history_bytes: DEFAULT_HISTORY_BYTES,
        }
    }

    /// A store that lives in memory only.
    pub fn in_memory() -> Self {
        EmbeddedOptions {
            dir: None,
            clock: Arc::new(SystemClock),
            faults: Faults::default(),
            history_bytes: DEFAULT_HISTORY_BYTES,
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

    /// Bounds the MVCC history to `bytes` (see [`EmbeddedOptions::history_bytes`]).
    pub fn with_history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }
}

/// The embedded store.
pub struct EmbeddedKv {
    store: Arc<StoreState>,
}

impl std::fmt::Debug for EmbeddedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKv")
            .field("location", &self.store.durable.location())
            .finish()
    }
}

/// State shared by a store and its transactions.
pub(crate) struct StoreState {
    durable: Durable,
    clock: Arc<dyn Clock>,
    faults: FaultInjector,
    versions: Versions,
    history: RwLock<History>,
    /// Recent commits' write ranges; its mutex also serialises commits.
    recent: Mutex<RecentWrites>,
    /// Commits waiting for the commit lock, committed in groups.
    queue: CommitQueue,
    /// Commits that answered 1021 and land later. Locked after `recent`.
    late: Mutex<LateCommits>,
    counters: Counters,
    /// What the FDB model did (batch joins, late commits).
    model: ModelCounters,
}

impl StoreState {
    /// One GRV round trip.
    fn get_read_version(&self) -> Version {
        self.faults.round_trip_latency();
        self.counters.read_version();
        let v = self.versions.read_version(self.now());
        debug!(op = "get_read_version", version = v.get(), "kv round trip");
        v
    }

    /// The clock as a version: the embedded backend's versions are
    /// microseconds since the Unix epoch.
    fn now(&self) -> Version {
        Version::new(self.clock.now_micros())
    }

    /// The store as of `read_version`.
    fn view(&self, read_version: Version) -> KvResult<View<'_>> {
        Ok(View::new(
            self.durable.snapshot()?,
            read_version,
            &self.history,
        ))
    }
}

impl EmbeddedKv {
    /// Opens (creating if needed) a store.
    ///
    /// A directory held by another open store (in this or another process)
    /// gives error 1000 naming the directory and the holder's pid and host;
    /// a directory that cannot be created or read gives 1510.
    pub fn open(opts: EmbeddedOptions) -> KvResult<Arc<EmbeddedKv>> {
        let (durable, committed) = Durable::open(opts.dir.as_deref())?;
        debug!(
            location = durable.location(),
            committed = committed.get(),
            "embedded store opened"
        );
        Ok(Arc::new(EmbeddedKv {
            store: Arc::new(StoreState {
                durable,
                clock: opts.clock,
                faults: FaultInjector::new(opts.faults),
                versions: Versions::new(committed),
                history: RwLock::new(History::new(opts.history_bytes)),
                recent: Mutex::new(RecentWrites::default()),
                queue: CommitQueue::default(),
                late: Mutex::new(LateCommits::default()),
                counters: Counters::default(),
                model: ModelCounters::default(),
            }),
        }))
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.store.faults.set(faults);
    }

    /// The injected faults.
    pub fn faults(&self) -> Faults {
        self.store.faults.get()
    }

    /// The newest committed version (no round trip; for tests and tools).
    pub fn committed_version(&self) -> Version {
        self.store.versions.committed()
    }

    /// Lands every commit held by [`Faults::late_unknown_probability`] now,
    /// oldest first, each resolved as a fresh commit at a new version
    /// (conflicts and the 5 s window checked now). Tests call this to make
    /// a late apply happen at an exact moment (with
    /// [`LateDelivery::Manual`]); a history checker calls it at quiescence.
    pub fn deliver_late_commits(&self) -> LateOutcome {
        self.store.deliver_late_now()
    }

    /// What the FDB model did since the store was opened: batch joins and
    /// late commits held, applied, refused and pending.
    pub fn model_counts(&self) -> ModelCounts {
        let pending = lock(&self.store.late).len() as u64;
        self.store.model.snapshot(pending)
    }
}

impl Kv for EmbeddedKv {
    fn begin(&self) -> KvResult<Box<dyn KvTxn>> {
        Ok(Box::new(txn::EmbeddedTxn::new(self.store.clone())))
    }

    fn metrics(&self) -> KvMetrics {
        self.store.counters.snapshot()
    }

    fn backend_name(&self) -> &'static str {
        "embedded"
    }
}
