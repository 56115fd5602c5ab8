//! [`SharedKv`]: a client of a shared store directory that survives its
//! owner.
//!
//! It holds the current backend (a [`RemoteKv`] connected to the owner, or,
//! after a takeover, the [`EmbeddedKv`] this process now owns) and the
//! options to open the store with. When the owner goes away it runs
//! [`acquire`] again: the first survivor to take the directory's lock
//! becomes the owner and serves the socket; the others connect to it.
//!
//! Two things start a failover:
//!
//! * a watcher thread holds an idle connection to the owner and blocks
//!   reading it; the owner's exit (normal, crash or SIGKILL: the kernel
//!   closes its sockets) ends the read, and the watcher fails over at once,
//!   usually before the application notices anything;
//! * a request that fails on the transport marks the client lost, and the
//!   next [`Kv::begin`] fails over first (this also covers an owner that
//!   stopped answering without exiting: a timeout).
//!
//! Failovers are serialised; one that finds the backend already replaced
//! does nothing. A transaction that was open on the old backend keeps
//! failing ([`super::LOST_CONNECTION`], retryable, or 1021 for a commit
//! whose answer was lost); a new one uses the new backend.
//!
//! # fork()
//!
//! A forked child never uses a handle opened by its parent: `begin` fails
//! with `kv::process::OPENED_BEFORE_FORK`, and dropping it leaks instead of
//! shutting down the watcher's socket, which the parent still reads. The
//! child opens the directory again (it becomes a client of the owner, or
//! the owner itself when the parent was a client and the owner is gone).
//!
//! # Read versions from before a failover
//!
//! A new owner knows the store's data and last committed version, not the
//! writes of the old owner's last seconds: its MVCC history and its record
//! of recent writes (conflict detection) start empty. A transaction set to
//! read at a version below the new owner's start would read newer data and
//! miss conflicts, so after a failover [`SharedKv`] refuses such read
//! versions with 1007 (`transaction_too_old`, retryable), as FDB does for
//! read versions from before a recovery: the caller retries with a fresh
//! one (pagestore's commit takes its slow path, which reads the change log
//! since the snapshot).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use tracing::{debug, info, warn};

use super::{acquire, lock_owned, Backend, RemoteKv, TAKEOVER_WINDOW};
use crate::kv::embedded::EmbeddedOptions;
use crate::kv::process;
use crate::kv::{
    CommitInfo, ConflictKind, Kv, KvError, KvMetrics, KvResult, KvTxn, MutationType, RangeOption,
    RangeResult, ReadRequest, ReadResult, Version,
};
use crate::sync::{lock, read, write};

/// A store directory shared with other processes, which keeps working when
/// the process that owns the directory exits (see the module
/// documentation of [`super`]).
///
/// [`super::open_shared`] returns one when another process owns the
/// directory. [`Kv::backend_name`] is the current backend's: "remote" while
/// a client, "embedded" after this process took the store over.
pub struct SharedKv {
    state: Arc<FailoverState>,
}

/// What a handle and its watcher thread share: the current backend (and
/// the ones before it), and what taking the store over needs.
struct FailoverState {
    /// What to open the store with when taking it over.
    opts: EmbeddedOptions,
    canonical: PathBuf,
    slot: RwLock<Slot>,
    /// Serialises failovers.
    failover: Mutex<()>,
    /// Backends used before the current one, for cumulative metrics.
    retired: Mutex<Vec<Counted>>,
    /// A clone of the current watcher's connection, to wake it.
    watch: Mutex<Option<UnixStream>>,
    /// The handle was dropped: watchers stop.
    stop: AtomicBool,
    /// The process that opened the handle (see `kv::process`).
    pid: u32,
}

/// A backend and its counters when it became this handle's.
#[derive(Clone, Debug)]
struct Counted {
    backend: Backend,
    start: KvMetrics,
}

impl Counted {
    /// What this backend counted for this handle.
    fn metrics(&self) -> KvMetrics {
        self.backend.kv().metrics().since(&self.start)
    }
}

struct Slot {
    current: Counted,
    /// Failovers so far.
    generation: u64,
    /// Read versions below this one are refused (1007): the current
    /// backend cannot serve them exactly (0 before any failover).
    floor: Version,
}

fn add(a: KvMetrics, b: KvMetrics) -> KvMetrics {
    KvMetrics {
        read_versions: a.read_versions + b.read_versions,
        reads: a.reads + b.reads,
        commits: a.commits + b.commits,
        conflicts: a.conflicts + b.conflicts,
        unknown_results: a.unknown_results + b.unknown_results,
        bytes_read: a.bytes_read + b.bytes_read,
        bytes_written: a.bytes_written + b.bytes_written,
        max_commit_bytes: a.max_commit_bytes.max(b.max_commit_bytes),
    }
}

impl SharedKv {
    /// A handle on the store in `opts.dir` (canonically `canonical`) whose
    /// owner `remote` is connected to.
    pub(crate) fn new(
        opts: EmbeddedOptions,
        canonical: PathBuf,
        remote: Arc<RemoteKv>,
    ) -> Arc<SharedKv> {
        let state = Arc::new(FailoverState {
            opts,
            canonical,
            slot: RwLock::new(Slot {
                current: Counted {
                    backend: Backend::Client(remote.clone()),
                    start: KvMetrics::default(),
                },
                generation: 0,
                floor: Version::ZERO,
            }),
            failover: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            watch: Mutex::new(None),
            stop: AtomicBool::new(false),
            pid: process::pid(),
        });
        process::close_in_forked_children(&state.canonical);
        state.watch_owner(remote, 0);
        Arc::new(SharedKv { state })
    }

    /// Whether this process owns the store now (it took it over).
    pub fn is_owner(&self) -> bool {
        matches!(self.state.current().0, Backend::Owner(_))
    }

    /// How many times this handle switched backends (took the store over or
    /// reconnected to a new owner).
    pub fn failovers(&self) -> u64 {
        self.state.current().1
    }
}

impl std::fmt::Debug for SharedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (backend, generation) = self.state.current();
        f.debug_struct("SharedKv")
            .field("dir", &self.state.canonical)
            .field("backend", &backend)
            .field("failovers", &generation)
            .finish()
    }
}

impl Drop for SharedKv {
    fn drop(&mut self) {
        if self.state.pid != process::pid() {
            // A forked child: the watcher socket is the parent's, and
            // shutting it down would end the parent's watcher too.
            process::leak(self.state.clone());
            return;
        }
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(s) = lock(&self.state.watch).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl FailoverState {
    fn current(&self) -> (Backend, u64) {
        let slot = read(&self.slot);
        (slot.current.backend.clone(), slot.generation)
    }

    /// Replaces the backend of generation `seen` (lost) with a new owner or
    /// a client of whoever took the store over. Does nothing (returns the
    /// current backend) when another failover already replaced it.
    fn fail_over(self: &Arc<Self>, seen: u64) -> KvResult<Backend> {
        let _serial = lock(&self.failover);
        let (current, generation) = self.current();
        if generation != seen {
            return Ok(current);
        }
        if let Backend::Client(old) = &current {
            old.mark_lost();
        }
        let mut owned = lock_owned();
        let acquired = acquire(&self.opts, &self.canonical, &mut owned, TAKEOVER_WINDOW);
        drop(owned);
        let (next, fresh) = acquired.map_err(|e| {
            KvError::new(
                e.code,
                format!(
                    "the owner of store {} went away, and this process could neither \
                     take the store over nor reach a new owner: {}",
                    self.canonical.display(),
                    e.message
                ),
            )
        })?;
        let floor = self.floor_of(&next).map_err(|e| {
            KvError::new(
                e.code,
                format!(
                    "the owner of store {} went away, and the new one did not answer: {}",
                    self.canonical.display(),
                    e.message
                ),
            )
        })?;
        // A new client's only round trip so far is the floor's read version,
        // which is this handle's business, not the application's.
        let start = if fresh && matches!(next, Backend::Owner(_)) {
            KvMetrics::default()
        } else {
            next.kv().metrics()
        };
        let generation = {
            let mut retired = lock(&self.retired);
            let mut slot = write(&self.slot);
            let old = std::mem::replace(
                &mut slot.current,
                Counted {
                    backend: next.clone(),
                    start,
                },
            );
            retired.push(old);
            slot.generation += 1;
            slot.floor = floor;
            slot.generation
        };
        // The previous watcher (if it is not the caller) has nothing left
        // to watch.
        if let Some(s) = lock(&self.watch).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        match &next {
            Backend::Owner(_) => info!(
                store = %self.canonical.display(),
                failovers = generation,
                "the store's owner went away: this process took the store over"
            ),
            Backend::Client(remote) => {
                info!(
                    store = %self.canonical.display(),
                    failovers = generation,
                    "the store's owner went away: connected to the new owner"
                );
                self.watch_owner(remote.clone(), generation);
            }
        }
        Ok(next)
    }

    /// The lowest read version `next` serves exactly: at least the last
    /// version committed before it took over (see the module documentation).
    fn floor_of(&self, next: &Backend) -> KvResult<Version> {
        match next {
            // At or above the version the store was opened at.
            Backend::Owner(kv) => Ok(kv.committed_version()),
            // A fresh read version of the new owner: at or above the
            // version it opened the store at.
            Backend::Client(remote) => remote.begin()?.read_version(),
        }
    }

    /// Starts a thread that fails over as soon as the owner behind
    /// `remote` (the backend of `generation`) closes the connection.
    fn watch_owner(self: &Arc<Self>, remote: Arc<RemoteKv>, generation: u64) {
        let stream = UnixStream::connect(remote.socket_path()).ok();
        if let Some(clone) = stream.as_ref().and_then(|s| s.try_clone().ok()) {
            let mut watch = lock(&self.watch);
            if self.stop.load(Ordering::SeqCst) {
                // Dropped meanwhile: the thread below returns at once.
                let _ = clone.shutdown(std::net::Shutdown::Both);
            } else {
                *watch = Some(clone);
            }
        }
        let weak: Weak<FailoverState> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("kv-shared-watch".into())
            .spawn(move || {
                if let Some(mut s) = stream {
                    // The server never writes first: the read ends when the
                    // owner's process closes the socket (or we do).
                    let mut buf = [0u8; 64];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                }
                let Some(state) = weak.upgrade() else { return };
                if state.stop.load(Ordering::SeqCst) || state.current().1 != generation {
                    return;
                }
                debug!(socket = %remote.socket_path().display(), "the store's owner closed the connection");
                remote.mark_lost();
                if let Err(e) = state.fail_over(generation) {
                    // The next transaction tries again.
                    warn!(error = %e, "store failover failed");
                }
            });
        if let Err(e) = spawned {
            debug!(error = %e, "cannot start the store owner watcher; failover on first error only");
        }
    }
}

impl Kv for SharedKv {
    fn begin(&self) -> KvResult<Box<dyn KvTxn>> {
        if self.state.pid != process::pid() {
            let what = format!("store {}", self.state.canonical.display());
            return Err(process::opened_before_fork(&what, self.state.pid));
        }
        let (backend, generation) = self.state.current();
        if let Backend::Client(remote) = &backend {
            if remote.is_lost() {
                self.state.fail_over(generation)?;
            }
        }
        let (backend, floor) = {
            let slot = read(&self.state.slot);
            (slot.current.backend.clone(), slot.floor)
        };
        let txn = backend.kv().begin()?;
        if floor == Version::ZERO {
            return Ok(txn);
        }
        Ok(Box::new(FloorTxn {
            txn,
            floor,
            stale: None,
        }))
    }

    /// Cumulative over every backend this handle used: a client's own
    /// round trips, then, after a takeover, the owned store's (which count
    /// every process's).
    fn metrics(&self) -> KvMetrics {
        let retired = lock(&self.state.retired);
        let slot = read(&self.state.slot);
        retired
            .iter()
            .map(Counted::metrics)
            .fold(slot.current.metrics(), add)
    }

    fn backend_name(&self) -> &'static str {
        self.state.current().0.kv().backend_name()
    }
}

/// A transaction after a failover: refuses read versions below `floor`
/// with 1007 (see the module documentation).
struct FloorTxn {
    txn: Box<dyn KvTxn>,
    floor: Version,
    /// A read version below the floor was set.
    stale: Option<Version>,
}

impl FloorTxn {
    fn check(&self) -> KvResult<()> {
        match self.stale {
            Some(v) => Err(KvError::new(
                KvError::TRANSACTION_TOO_OLD,
                format!(
                    "read version {v} is from before the store changed owner (the new \
                     owner serves versions from {}): retry with a fresh read version",
                    self.floor
                ),
            )),
            None => Ok(()),
        }
    }
}

impl KvTxn for FloorTxn {
    fn read_version(&mut self) -> KvResult<Version> {
        self.check()?;
        self.txn.read_version()
    }

    fn set_read_version(&mut self, version: Version) {
        if version < self.floor {
            self.stale = Some(version);
        } else {
            self.stale = None;
            self.txn.set_read_version(version);
        }
    }

    fn get(&mut self, key: &[u8], snapshot: bool) -> KvResult<Option<Vec<u8>>> {
        self.check()?;
        self.txn.get(key, snapshot)
    }

    fn get_range(&mut self, range: &RangeOption, snapshot: bool) -> KvResult<RangeResult> {
        self.check()?;
        self.txn.get_range(range, snapshot)
    }

    fn get_batch(&mut self, requests: &[ReadRequest], snapshot: bool) -> KvResult<Vec<ReadResult>> {
        self.check()?;
        self.txn.get_batch(requests, snapshot)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.txn.set(key, value);
    }

    fn clear(&mut self, key: &[u8]) {
        self.txn.clear(key);
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        self.txn.clear_range(begin, end);
    }

    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: MutationType) {
        self.txn.atomic_op(key, param, op);
    }

    fn add_conflict_range(&mut self, begin: &[u8], end: &[u8], kind: ConflictKind) {
        self.txn.add_conflict_range(begin, end, kind);
    }

    fn approximate_size(&self) -> usize {
        self.txn.approximate_size()
    }

    fn commit(self: Box<Self>) -> KvResult<CommitInfo> {
        self.check()?;
        self.txn.commit()
    }
}
