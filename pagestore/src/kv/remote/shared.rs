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

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};

use tracing::{debug, info, warn};

use super::{acquire, lock_owned, Backend, RemoteKv, TAKEOVER_WINDOW};
use crate::kv::embedded::EmbeddedOptions;
use crate::kv::{Kv, KvError, KvMetrics, KvResult, KvTxn};

/// A store directory shared with other processes, which keeps working when
/// the process that owns the directory exits (see the module
/// documentation of [`super`]).
///
/// [`super::open_shared`] returns one when another process owns the
/// directory. [`Kv::backend_name`] is the current backend's: "remote" while
/// a client, "embedded" after this process took the store over.
pub struct SharedKv {
    inner: Arc<Inner>,
}

struct Inner {
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
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
        let inner = Arc::new(Inner {
            opts,
            canonical,
            slot: RwLock::new(Slot {
                current: Counted {
                    backend: Backend::Client(remote.clone()),
                    start: KvMetrics::default(),
                },
                generation: 0,
            }),
            failover: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            watch: Mutex::new(None),
            stop: AtomicBool::new(false),
        });
        inner.watch_owner(remote, 0);
        Arc::new(SharedKv { inner })
    }

    /// Whether this process owns the store now (it took it over).
    pub fn is_owner(&self) -> bool {
        matches!(self.inner.current().0, Backend::Owner(_))
    }

    /// How many times this handle switched backends (took the store over or
    /// reconnected to a new owner).
    pub fn failovers(&self) -> u64 {
        self.inner.current().1
    }
}

impl std::fmt::Debug for SharedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (backend, generation) = self.inner.current();
        f.debug_struct("SharedKv")
            .field("dir", &self.inner.canonical)
            .field("backend", &backend)
            .field("failovers", &generation)
            .finish()
    }
}

impl Drop for SharedKv {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(s) = lock(&self.inner.watch).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Inner {
    fn current(&self) -> (Backend, u64) {
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
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
        let start = if fresh {
            KvMetrics::default()
        } else {
            next.kv().metrics()
        };
        let generation = {
            let mut retired = lock(&self.retired);
            let mut slot = self.slot.write().unwrap_or_else(PoisonError::into_inner);
            let old = std::mem::replace(
                &mut slot.current,
                Counted {
                    backend: next.clone(),
                    start,
                },
            );
            retired.push(old);
            slot.generation += 1;
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
        let weak: Weak<Inner> = Arc::downgrade(self);
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
                let Some(inner) = weak.upgrade() else { return };
                if inner.stop.load(Ordering::SeqCst) || inner.current().1 != generation {
                    return;
                }
                debug!(socket = %remote.socket_path().display(), "the store's owner closed the connection");
                remote.mark_lost();
                if let Err(e) = inner.fail_over(generation) {
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
        let (backend, generation) = self.inner.current();
        let backend = match &backend {
            Backend::Client(remote) if remote.is_lost() => self.inner.fail_over(generation)?,
            _ => backend,
        };
        backend.kv().begin()
    }

    /// Cumulative over every backend this handle used: a client's own
    /// round trips, then, after a takeover, the owned store's (which count
    /// every process's).
    fn metrics(&self) -> KvMetrics {
        let retired = lock(&self.inner.retired);
        let slot = self
            .inner
            .slot
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        retired
            .iter()
            .map(Counted::metrics)
            .fold(slot.current.metrics(), add)
    }

    fn backend_name(&self) -> &'static str {
        self.inner.current().0.kv().backend_name()
    }
}
