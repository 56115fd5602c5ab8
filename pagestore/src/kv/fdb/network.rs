//! The FDB client network: booted once per process, shared by every store,
//! stopped by [`shutdown`] (or at process exit).
//!
//! `libfdb_c` allows `fdb_select_api_version`, `fdb_setup_network` and
//! `fdb_run_network` exactly once per process, and the network can never be
//! restarted after `fdb_stop_network`. Everything here is therefore behind
//! process-wide statics:
//!
//! * [`NETWORK`] boots the API and the network thread on first use (a
//!   `OnceLock`, so concurrent first opens race safely and a failed boot is
//!   remembered and reported to every later open instead of panicking in the
//!   crate's "only once" assertion);
//! * [`DATABASES`] keeps one `Database` handle per cluster file, so several
//!   stores (or several `FdbKv::open` calls) on the same cluster share one
//!   connection.
//!
//! We do not use `foundationdb::boot()` / `NetworkAutoStop`: `boot()` panics
//! when the API was already selected and its guard aborts the process if the
//! stop fails. Instead we drive the same building blocks
//! (`FdbApiBuilder` -> `NetworkBuilder::build` -> `NetworkRunner::run` on a
//! thread of ours -> `NetworkWait::wait` -> `NetworkStop`) and keep the stop
//! handle and the thread in a static, which is exactly what the guard holds,
//! with errors reported as [`KvError`]s and logged rather than panicking.
//!
//! # Stopping, and why a process that used FDB used to die with SIGSEGV
//!
//! FDB requires `fdb_stop_network`, and `fdb_run_network` to have returned,
//! before the process exits: libfdb_c's static objects are destroyed by its
//! exit-time destructors, and a network thread still running then uses
//! freed memory. Stopping in an `atexit` handler registered when the network
//! booted (what this module did) is not enough, and is why a host that
//! loaded the fdb-built extension, used it on several threads, joined them
//! and returned from `main` died with signal 11 at exit (issue 14):
//!
//! * exit handlers run in *reverse* order of registration;
//! * libfdb_c is C++: the destructor of a function-local static is
//!   registered (`__cxa_atexit`) when the static is first used, and most of
//!   the client's statics are first used on the network thread *after* the
//!   boot — while connecting to the cluster (`fdb_create_database`, the
//!   first GRV) and on the first reads and commits;
//! * so at `exit()` those destructors ran *before* our handler, while the
//!   network thread was still running its event loop. Right after a burst
//!   of transactions that loop is busy (it destroys the transactions and
//!   futures the worker threads dropped, answers the last replies), touches
//!   the destroyed objects, and the process dies. A process whose network
//!   thread happens to be idle in `epoll_wait` at that moment survives —
//!   the same binary opening one more connection first exited cleanly. The
//!   crate's own `boot()` guard avoids this only when it is dropped at the
//!   end of `main`, which a loadable extension cannot arrange.
//!
//! The order is now explicit ([`crate::kv::process`]):
//!
//! 1. **The stop runs before every other exit handler.** It is added with
//!    `process::at_exit_first`, re-registered with `atexit` after every
//!    store open has reached the cluster (after the client's connection
//!    statics exist), and every thread that loads the extension, opens a
//!    store or begins an FDB transaction carries a thread-local sentinel
//!    whose destructor registers it again. glibc's `exit()` runs the calling
//!    thread's thread-local destructors before any exit handler: when the
//!    exiting thread used us (a host's main thread loads the extension; a
//!    worker calling `exit()` used FDB) the stop becomes the newest handler
//!    and runs first, before any libfdb_c destructor. A worker thread that
//!    ends re-registers too, moving the stop after whatever libfdb_c
//!    registered while it worked. (Residual case: `exit()` from a thread
//!    that never touched fdbvfs, after libfdb_c registered a destructor that
//!    no later fdbvfs activity followed — none of the hosts below.)
//! 2. **In-flight calls drain, new ones fail.** Every call into libfdb_c
//!    holds a [`Gate`]. [`shutdown`] first marks the network stopped (new
//!    calls fail at once with 2025 without touching libfdb_c), then waits
//!    for the calls in flight (each bounded by the transaction timeout; at
//!    most [`DRAIN_LIMIT`]), then calls `fdb_stop_network` and joins the
//!    network thread. Threads that still hold connections are fine: idle
//!    handles are never dropped at exit (Rust does not drop statics, and
//!    other threads are not unwound), and a handle dropped after the stop
//!    leaks its transaction or database instead of calling into libfdb_c.
//! 3. **Once, and only in the process that started it.** A forked child
//!    inherits the registrations and the sentinel but not the network
//!    thread: before, its exit stopped a network it does not have and then
//!    waited forever in `pthread_join` for a thread that does not exist in
//!    it. Now the stop does nothing there (the pid is checked), and using
//!    FDB in such a child fails with 2025 naming both processes (libfdb_c
//!    cannot run its network in a forked child). A child whose parent never
//!    started the network starts its own.
//!
//! Why this holds for each host: the Rust program with rusqlite's bundled
//! SQLite and the `sqlite3` shell load the extension on the main thread
//! (enlisted by the entry point) and exit from it; Python does too (its
//! finalisation runs before C's `exit()`); `exit()` from a worker that used
//! FDB is covered by that worker's sentinel. The extension loaded twice
//! into one process (two SQLite copies, one `libfdbvfs.so`) shares these
//! statics: one network, one stop. Two different copies of this code (the
//! library linked into the host *and* the extension) each have their own
//! statics, but libfdb_c is one per process: the second copy's boot fails
//! with 2201 (`api_version_already_set`) and says so, and only the first
//! copy's network runs and is stopped. [`shutdown`] may also be called
//! explicitly at the end of `main`; after it no store can be opened and
//! `begin` fails with 2025 (`network_cannot_be_restarted`).
//!
//! A loadable-extension host (sqlite3 shell, Python, Go, Node) never unloads
//! us: the extension entry point asks SQLite to keep the library loaded
//! (`SQLITE_OK_LOAD_PERMANENTLY`) because it registers a VFS and boots this
//! network, and neither can be torn down and set up again in one process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use foundationdb::api::{FdbApiBuilder, NetworkStop};
use foundationdb::Database;

use crate::kv::process;
use crate::kv::{KvError, KvResult};
use crate::sync::lock;

/// FDB's `network_cannot_be_restarted`.
pub(super) const NETWORK_CANNOT_BE_RESTARTED: i32 = 2025;

/// FDB's `api_version_already_set`.
const API_VERSION_ALREADY_SET: i32 = 2201;

/// Longest [`shutdown`] waits for FDB calls in flight on other threads
/// (each is bounded by its transaction's timeout, 5 s by default).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(6);

/// The running network: what `NetworkAutoStop` would hold.
struct Network {
    stop: Option<NetworkStop>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

/// Booted at most once; `Err` remembers why the boot failed.
static NETWORK: OnceLock<Result<Mutex<Network>, KvError>> = OnceLock::new();

/// The process that booted (or tried to boot) the network; 0: none.
static NETWORK_PID: AtomicU32 = AtomicU32::new(0);

/// Set by [`shutdown`]: the network is gone (or going) for good.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Set when `fdb_run_network` returned without a stop (it failed): futures
/// would never resolve, so new transactions fail fast instead of hanging.
static NETWORK_FAILED: AtomicBool = AtomicBool::new(false);

/// Calls into libfdb_c in progress (see [`Gate`]).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// One database handle per cluster file (`None` = FDB's default resolution).
static DATABASES: LazyLock<Mutex<HashMap<Option<PathBuf>, Arc<Database>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Boots the API and the network thread unless already done; fails if the
/// boot failed before, the network was shut down, or it belongs to the
/// process this one was forked from.
pub(super) fn ensure_network() -> KvResult<()> {
    check_running()?;
    match NETWORK.get_or_init(boot) {
        Ok(_) => check_running(),
        Err(e) => Err(e.clone()),
    }
}

/// Fails when the network was stopped, died, or was started by the process
/// this one was forked from; cheap (atomic loads and `getpid`).
pub(super) fn check_running() -> KvResult<()> {
    let owner = NETWORK_PID.load(Ordering::Acquire);
    if owner != 0 && owner != process::pid() {
        return Err(KvError::new(
            NETWORK_CANNOT_BE_RESTARTED,
            format!(
                "the FoundationDB client network was started by process {owner}, and this \
                 process ({}) is a fork() child of it: libfdb_c cannot run its network in a \
                 forked child, nor start another; use FoundationDB in processes that did not \
                 inherit a running network (e.g. multiprocessing's \"spawn\" start method, \
                 or fork before the first FoundationDB store is opened)",
                process::pid()
            ),
        ));
    }
    if STOPPED.load(Ordering::Acquire) {
        return Err(KvError::new(
            NETWORK_CANNOT_BE_RESTARTED,
            "the FoundationDB client network was stopped (fdb::shutdown(), or the process is \
             exiting); it cannot be restarted in the same process",
        ));
    }
    if NETWORK_FAILED.load(Ordering::Acquire) {
        return Err(KvError::new(
            KvError::OPERATION_FAILED,
            "the FoundationDB client network thread has stopped (fdb_run_network failed; see the log)",
        ));
    }
    Ok(())
}

/// Held across every call into libfdb_c (issuing a request, waiting for
/// it, destroying a transaction): [`shutdown`] stops the network only when
/// none is held, and none can be taken after it began.
pub(super) struct Gate(());

impl Drop for Gate {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes a [`Gate`], or fails (without touching libfdb_c) like
/// [`check_running`].
pub(super) fn enter() -> KvResult<Gate> {
    // Counted before the check, and the check reads STOPPED after it
    // (SeqCst both sides): shutdown either sees this call in flight or
    // this call sees the stop.
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let gate = Gate(());
    check_running()?;
    Ok(gate)
}

/// An FDB object (a transaction) destroyed only while the network runs in
/// this process; otherwise leaked (after the stop, or in a forked child,
/// destroying it would call into libfdb_c with no network behind it).
pub(super) struct Guarded<T>(std::mem::ManuallyDrop<T>);

impl<T> Guarded<T> {
    pub(super) fn new(value: T) -> Self {
        Guarded(std::mem::ManuallyDrop::new(value))
    }

    /// The object, to be dropped by the caller under a [`Gate`].
    pub(super) fn into_inner(self) -> T {
        let mut me = std::mem::ManuallyDrop::new(self);
        // SAFETY: `me` is never dropped, so the value is moved out once.
        unsafe { std::mem::ManuallyDrop::take(&mut me.0) }
    }
}

impl<T> std::ops::Deref for Guarded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        if let Ok(_gate) = enter() {
            // SAFETY: dropped exactly once, here.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.0) };
        }
    }
}

fn boot() -> Result<Mutex<Network>, KvError> {
    let _span = tracing::debug_span!("fdb_boot").entered();
    NETWORK_PID.store(process::pid(), Ordering::Release);
    // `FdbApiBuilder::build` panics if the API version was already selected
    // in this process (e.g. by another library using the same crate); turn
    // that into an error instead of unwinding into a SQLite callback.
    let built = std::panic::catch_unwind(|| {
        FdbApiBuilder::default()
            .build()
            .and_then(|network| network.build())
    });
    let (runner, wait) = match built {
        Ok(Ok(parts)) => parts,
        Ok(Err(e)) if e.code() == API_VERSION_ALREADY_SET => {
            return Err(KvError::new(
                e.code(),
                "could not start the FoundationDB client: libfdb_c's API version was already \
                 selected in this process by another component (another copy of fdbvfs, e.g. \
                 the library linked into the program and the loadable extension, or another \
                 FDB client): one process runs one FDB network, owned by that component",
            ));
        }
        Ok(Err(e)) => {
            let max = foundationdb::api::get_max_api_version();
            return Err(KvError::new(
                e.code(),
                format!(
                    "could not start the FoundationDB client: {} (libfdb_c supports API \
                     versions up to {max}; this build needs 730, i.e. FoundationDB 7.3 clients)",
                    e.message()
                ),
            ));
        }
        Err(_) => {
            return Err(KvError::new(
                KvError::OPERATION_FAILED,
                "could not start the FoundationDB client: the FDB API version was already \
                 selected in this process by another component",
            ))
        }
    };
    let thread = std::thread::Builder::new()
        .name("fdb-network".into())
        .spawn(move || {
            // SAFETY: `fdb_stop_network` is called before the process exits
            // by `shutdown`, which runs first among the exit handlers (see
            // the module documentation) and may also be called explicitly.
            let result = unsafe { runner.run() };
            if let Err(e) = result {
                NETWORK_FAILED.store(true, Ordering::Release);
                tracing::error!(code = e.code(), "fdb_run_network failed: {}", e.message());
            } else if !STOPPED.load(Ordering::Acquire) {
                NETWORK_FAILED.store(true, Ordering::Release);
                tracing::error!("fdb_run_network returned without fdb::shutdown()");
            }
        })
        .map_err(|e| {
            KvError::new(
                KvError::OPERATION_FAILED,
                format!("could not spawn the FoundationDB network thread: {e}"),
            )
        })?;
    let thread_id = thread.thread().id();
    // Returns once the thread is inside `run` (FDB queues work until the
    // loop actually spins, so nothing is lost between the two).
    let stop = wait.wait();
    process::at_exit_first(shutdown_at_exit);
    tracing::debug!("FoundationDB client network started");
    Ok(Mutex::new(Network {
        stop: Some(stop),
        thread: Some(thread),
        thread_id,
    }))
}

/// Marks the calling thread as an FDB user and the moment as one after
/// which libfdb_c may have registered new exit-time destructors (see the
/// module documentation): called when a store reached its cluster.
pub(super) fn connected() {
    process::enlist_thread();
    process::reregister_at_exit();
}

/// Stops the FDB client network: new FDB calls fail from now on, calls in
/// flight on other threads finish (at most [`DRAIN_LIMIT`]), the cached
/// database handles are dropped, `fdb_stop_network` is called and the
/// network thread joined. Idempotent; a no-op if the network never started
/// in this process (in a forked child it is the parent's: left alone).
/// Afterwards no FDB store can be used or opened in this process (FDB
/// cannot restart its network), so call it only when all FDB work is done,
/// e.g. at the end of `main`. It also runs automatically at `exit()`, before
/// libfdb_c's own exit-time destructors.
pub fn shutdown() {
    let owner = NETWORK_PID.load(Ordering::Acquire);
    if owner == 0 || owner != process::pid() {
        return;
    }
    if STOPPED.swap(true, Ordering::SeqCst) {
        return;
    }
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let in_flight = IN_FLIGHT.load(Ordering::SeqCst);
        if in_flight == 0 {
            break;
        }
        if Instant::now() >= deadline {
            // Their futures never resolve after the stop: those threads
            // stay blocked until the process ends, outside libfdb_c.
            tracing::warn!(
                in_flight,
                "stopping the FoundationDB network with calls in flight"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Destroyed while the network still runs; handles held by live stores
    // are leaked when those drop (`Shared`'s Drop).
    let dbs = std::mem::take(&mut *lock(&DATABASES));
    drop(dbs);
    let Some(Ok(network)) = NETWORK.get() else {
        return;
    };
    let mut network = lock(network);
    let Some(stop) = network.stop.take() else {
        return;
    };
    match stop.stop() {
        Ok(()) => {
            if let Some(thread) = network.thread.take() {
                // Never join ourselves (exit() called from the network
                // thread, e.g. by FDB itself on a fatal error).
                if std::thread::current().id() != network.thread_id && thread.join().is_err() {
                    tracing::error!("the FoundationDB network thread panicked");
                }
            }
            tracing::debug!("FoundationDB client network stopped");
        }
        Err(e) => {
            // The loop is still running: do not join (it would block).
            tracing::error!(code = e.code(), "fdb_stop_network failed: {}", e.message());
        }
    }
}

fn shutdown_at_exit() {
    shutdown();
}

/// The shared database handle for `cluster_file` (`None` lets `libfdb_c`
/// resolve its default: `./fdb.cluster`, then the platform path).
/// `describe` names the cluster file in errors.
pub(super) fn database(cluster_file: Option<&Path>, describe: &str) -> KvResult<Arc<Database>> {
    ensure_network()?;
    let key = cluster_file.map(Path::to_path_buf);
    let mut dbs = lock(&DATABASES);
    if let Some(db) = dbs.get(&key) {
        return Ok(db.clone());
    }
    let path = match cluster_file {
        None => None,
        Some(p) => {
            // `Database::new` panics on an interior NUL; reject it (and
            // non-UTF-8 paths, which its `&str` cannot carry) up front.
            let s = p.to_str().filter(|s| !s.contains('\0')).ok_or_else(|| {
                KvError::new(
                    KvError::OPERATION_FAILED,
                    format!("cluster file path {describe} is not valid UTF-8 without NUL bytes"),
                )
            })?;
            Some(s)
        }
    };
    let gate = enter()?;
    let db = Database::new(path).map_err(|e| {
        KvError::new(
            e.code(),
            format!(
                "opening the FoundationDB database with cluster file {describe}: {}",
                e.message()
            ),
        )
    })?;
    drop(gate);
    let db = Arc::new(db);
    dbs.insert(key, db.clone());
    Ok(db)
}
