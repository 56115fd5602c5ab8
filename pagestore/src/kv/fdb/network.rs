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
//! # Stopping
//!
//! FDB requires `fdb_stop_network` before the process exits (otherwise the
//! network thread may still run while `libfdb_c`'s static destructors do).
//! [`shutdown`] does it explicitly; it is also registered with `atexit` when
//! the network boots, so a normal `exit()` (end of `main`, the test
//! harness, a SQLite shell's `.quit`) stops it cleanly without cooperation
//! from the host. After a shutdown no store can be opened and `begin` fails
//! with 2025 (`network_cannot_be_restarted`); transactions still in flight
//! at that moment never complete, so call it only when FDB work is done.
//!
//! A loadable-extension host (sqlite3 shell, Python, Go, Node) never unloads
//! us: the extension entry point asks SQLite to keep the library loaded
//! (`SQLITE_OK_LOAD_PERMANENTLY`) because it registers a VFS and boots this
//! network, and neither can be torn down and set up again in one process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, ThreadId};

use foundationdb::api::{FdbApiBuilder, NetworkStop};
use foundationdb::Database;

use crate::kv::{KvError, KvResult};

/// FDB's `network_cannot_be_restarted`.
pub(super) const NETWORK_CANNOT_BE_RESTARTED: i32 = 2025;

/// The running network: what `NetworkAutoStop` would hold.
struct Network {
    stop: Option<NetworkStop>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

/// Booted at most once; `Err` remembers why the boot failed.
static NETWORK: OnceLock<Result<Mutex<Network>, KvError>> = OnceLock::new();

/// Set by [`shutdown`]: the network is gone for good.
static STOPPED: AtomicBool = AtomicBool::new(false);

/// Set when `fdb_run_network` returned without a stop (it failed): futures
/// would never resolve, so new transactions fail fast instead of hanging.
static NETWORK_FAILED: AtomicBool = AtomicBool::new(false);

/// One database handle per cluster file (`None` = FDB's default resolution).
static DATABASES: LazyLock<Mutex<HashMap<Option<PathBuf>, Arc<Database>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Locks a mutex, recovering it if a panicking thread poisoned it (the
/// guarded data stays consistent: every critical section is a single
/// insert/take).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Boots the API and the network thread unless already done; fails if the
/// boot failed before or the network was shut down.
pub(super) fn ensure_network() -> KvResult<()> {
    check_running()?;
    match NETWORK.get_or_init(boot) {
        Ok(_) => check_running(),
        Err(e) => Err(e.clone()),
    }
}

/// Fails when the network was stopped or died; cheap (two atomic loads).
pub(super) fn check_running() -> KvResult<()> {
    if STOPPED.load(Ordering::Acquire) {
        return Err(KvError::new(
            NETWORK_CANNOT_BE_RESTARTED,
            "the FoundationDB client network was stopped by fdb::shutdown(); \
             it cannot be restarted in the same process",
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

fn boot() -> Result<Mutex<Network>, KvError> {
    let _span = tracing::debug_span!("fdb_boot").entered();
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
            // by `shutdown`, which is registered with `atexit` below and may
            // also be called explicitly.
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
    register_atexit();
    tracing::debug!("FoundationDB client network started");
    Ok(Mutex::new(Network {
        stop: Some(stop),
        thread: Some(thread),
        thread_id,
    }))
}

/// Stops the FDB client network: drops the cached database handles, calls
/// `fdb_stop_network` and joins the network thread. Idempotent; a no-op if
/// the network never started. Afterwards no FDB store can be used or opened
/// in this process (FDB cannot restart its network), so call it only when
/// all FDB work is done, e.g. at the end of `main`. It also runs
/// automatically at `exit()`.
pub fn shutdown() {
    STOPPED.store(true, Ordering::Release);
    // Handles still held by live `FdbKv`s are destroyed when those drop;
    // after the stop that only frees client memory.
    lock(&DATABASES).clear();
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

extern "C" {
    /// libc's `atexit` (glibc/musl/macOS); always linked with std.
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn shutdown_at_exit() {
    // A panic must not unwind through libc's exit handlers.
    let _ = std::panic::catch_unwind(shutdown);
}

fn register_atexit() {
    // SAFETY: registers a plain `extern "C" fn()` that never unwinds; it
    // stays valid for the process lifetime (this library is never unloaded,
    // see the module docs).
    let rc = unsafe { atexit(shutdown_at_exit) };
    if rc != 0 {
        tracing::warn!("atexit registration failed; call fdb::shutdown() before exiting");
    }
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
    let db = Database::new(path).map_err(|e| {
        KvError::new(
            e.code(),
            format!(
                "opening the FoundationDB database with cluster file {describe}: {}",
                e.message()
            ),
        )
    })?;
    let db = Arc::new(db);
    dbs.insert(key, db.clone());
    Ok(db)
}
