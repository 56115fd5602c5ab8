//! The process lifecycle: `fork()` and exit.
//!
//! # fork()
//!
//! Hosts fork (Python's `os.fork` and `multiprocessing`, pre-fork servers).
//! A child starts with a copy of the parent's memory — every open store,
//! server, socket, redb handle and page cache — but with one thread, and
//! with the parent's file descriptors (and the locks on their open file
//! descriptions: redb's OFD locks, the directory's `flock`). Two processes
//! writing one `data.redb` through copies of one redb handle destroy it
//! ("All roots are corrupted"). So:
//!
//! * **Nothing opened by the parent is used in the child.** Handles record
//!   the pid that opened them ([`pid`]); caches of open stores (the VFS
//!   registry, the shared-mode owner list, the FDB network) forget their
//!   entries in a child and open anew: an embedded directory the parent
//!   still holds is re-opened as a client of the parent's server (its
//!   `kv.sock`). A handle used in the child anyway (a SQLite connection
//!   opened before the fork, which SQLite forbids too) fails with
//!   [`OPENED_BEFORE_FORK`] naming both pids ([`ProcessBound`]).
//! * **Inherited objects are leaked in the child, never dropped**: their
//!   `Drop` could write the parent's files, shut down sockets the parent
//!   still uses (`shutdown(2)` acts on the socket, not the descriptor), or
//!   join threads that do not exist in the child.
//! * **Inherited descriptors of store directories are closed in the child
//!   at fork time** ([`close_in_forked_children`]): a `pthread_atfork`
//!   prepare handler lists, in the parent just before the fork, every
//!   descriptor on a file inside a registered store directory (the redb
//!   file, the lock file) or on a Unix socket bound or connected to one
//!   (`kv.sock`: the server's listener and connections, a client's pool),
//!   and the child handler closes them (after checking each descriptor is
//!   still the same file: device and inode). Otherwise a child that lives on
//!   after the parent exits keeps the directory locked through the inherited
//!   lock and redb descriptors (no one, not even the child, could take the
//!   store over), and keeps the parent's server connections open (clients
//!   would not see the owner exit). The child handler does no allocation
//!   and takes no lock that another thread could hold.
//!
//! # Exit
//!
//! [`at_exit_first`] runs a hook (the FDB backend's network stop) when the
//! process exits, before the exit handlers that libraries registered after
//! the hook's own registration — which `atexit` alone cannot promise: exit
//! handlers run in reverse order of registration, and C++ libraries
//! register the destructor of a function-local static when it is first
//! used, at any time. Three registrations keep the hook in front (glibc):
//!
//! * `atexit` when the hook is added, and again whenever the caller says
//!   the library has just done what may construct new statics
//!   ([`reregister_at_exit`]);
//! * a thread-local sentinel on every thread that uses the library or
//!   loaded it ([`enlist_thread`]). Its destructor registers the hook
//!   again. glibc's `exit()` runs the calling thread's thread-local
//!   destructors before any exit handler, so when the exiting thread is
//!   enlisted (the main thread of a host that loaded the extension, a
//!   worker that calls `exit()`), the hook becomes the newest handler and
//!   runs first. A thread that simply ends re-registers too, which moves the
//!   hook after everything registered while that thread worked.
//!
//! The hook runs once, and never in a forked child of the process that
//! added it (the child inherits the registrations).

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use crate::kv::{Kv, KvError, KvMetrics, KvResult, KvTxn};

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

/// The code of the error for using, in a forked child, a store handle
/// opened by the parent: FDB's `client_invalid_operation` (never retryable).
pub const OPENED_BEFORE_FORK: i32 = KvError::CLIENT_INVALID_OPERATION;

/// The error for using `what`, opened by process `owner`, in this process
/// (a fork() child of it).
pub fn opened_before_fork(what: &str, owner: u32) -> KvError {
    KvError::new(
        OPENED_BEFORE_FORK,
        format!(
            "{what} was opened by process {owner} and is used in process {} after fork(): a \
             store handle or SQLite connection must not be carried across fork() (nothing \
             was read or written); open a new connection in this process, which connects \
             to the store anew",
            pid()
        ),
    )
}

/// Leaks `value`: for objects inherited from the parent in a forked child.
pub fn leak<T>(value: T) {
    std::mem::forget(value);
}

/// A [`Kv`] bound to the process that opened it: in a forked child,
/// [`Kv::begin`] fails with [`OPENED_BEFORE_FORK`], and dropping it leaks
/// the store instead of closing it (see the module documentation).
pub struct ProcessBound {
    inner: ManuallyDrop<Arc<dyn Kv>>,
    pid: u32,
    what: String,
}

impl ProcessBound {
    /// Wraps `kv`, opened by this process; `what` names it in errors.
    pub fn wrap(kv: Arc<dyn Kv>, what: impl Into<String>) -> Arc<dyn Kv> {
        Arc::new(ProcessBound {
            inner: ManuallyDrop::new(kv),
            pid: pid(),
            what: what.into(),
        })
    }
}

impl std::fmt::Debug for ProcessBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBound")
            .field("what", &self.what)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Kv for ProcessBound {
    fn begin(&self) -> KvResult<Box<dyn KvTxn>> {
        if self.pid != pid() {
            return Err(opened_before_fork(&self.what, self.pid));
        }
        self.inner.begin()
    }

    fn metrics(&self) -> KvMetrics {
        self.inner.metrics()
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

impl Drop for ProcessBound {
    fn drop(&mut self) {
        if self.pid == pid() {
            // SAFETY: dropped exactly once, here; never used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
        }
        // In a forked child the store stays allocated: its Drop belongs to
        // the parent.
    }
}

// ------------------------------------------------------------------ fork

/// Store directories whose descriptors a forked child closes, and the
/// descriptors the prepare handler found (read by the child handler).
struct ForkState {
    dirs: Vec<PathBuf>,
    /// (descriptor, device, inode), filled in the parent just before fork.
    marked: Vec<(i32, u64, u64)>,
}

/// A spin lock rather than a `Mutex`: the prepare handler holds it across
/// the fork, and the child handler releases it (a `MutexGuard` cannot be
/// handed over like that). Critical sections are short and rare.
static FORK_LOCK: AtomicBool = AtomicBool::new(false);

struct ForkCell(std::cell::UnsafeCell<ForkState>);
// SAFETY: only accessed while holding FORK_LOCK.
unsafe impl Sync for ForkCell {}

static FORK_STATE: ForkCell = ForkCell(std::cell::UnsafeCell::new(ForkState {
    dirs: Vec::new(),
    marked: Vec::new(),
}));

fn fork_lock() {
    while FORK_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn fork_unlock() {
    FORK_LOCK.store(false, Ordering::Release);
}

/// Runs `f` on the fork state under the lock.
fn with_fork_state<R>(f: impl FnOnce(&mut ForkState) -> R) -> R {
    fork_lock();
    // SAFETY: FORK_LOCK is held.
    let r = f(unsafe { &mut *FORK_STATE.0.get() });
    fork_unlock();
    r
}

/// Makes every forked child of this process close, at fork time, its
/// inherited descriptors on files inside `dir` and on Unix sockets bound or
/// connected to a path inside it (see the module documentation). Call it
/// for every store directory the process opens (owner or client).
pub fn close_in_forked_children(dir: &Path) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: plain `extern "C"` handlers that never unwind.
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            tracing::warn!(
                rc,
                "pthread_atfork failed: forked children keep store descriptors"
            );
        }
    });
    let mut forms = vec![dir.to_path_buf()];
    if let Ok(c) = dir.canonicalize() {
        forms.push(c);
    }
    if dir.is_relative() {
        if let Ok(cwd) = std::env::current_dir() {
            forms.push(cwd.join(dir));
        }
    }
    with_fork_state(|s| {
        for d in forms {
            if !s.dirs.contains(&d) {
                s.dirs.push(d);
            }
        }
    });
}

fn identity(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: `stat` is plain old data, for which all zero bytes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the live `st`; a closed descriptor just fails.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    Some((st.st_dev as u64, st.st_ino as u64))
}

/// The path a Unix socket descriptor is bound (`peer == false`) or
/// connected (`peer == true`) to.
fn socket_path(fd: i32, peer: bool) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: `sockaddr_un` is plain old data, for which all zero bytes is
    // valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = (&mut addr as *mut libc::sockaddr_un).cast::<libc::sockaddr>();
    // SAFETY: `p` points to the live `addr` and `len` is its exact size: the
    // kernel fills at most `len` bytes.
    let rc = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if rc != 0 || addr.sun_family != libc::AF_UNIX as libc::sa_family_t {
        return None;
    }
    let bytes: Vec<u8> = addr
        .sun_path
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    if bytes.is_empty() {
        return None;
    }
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

/// Descriptors of this process on files in `dirs` or sockets on paths in
/// them (normal context: the parent, before the fork).
fn scan(dirs: &[PathBuf], out: &mut Vec<(i32, u64, u64)>) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let inside = |p: &Path| dirs.iter().any(|d| p.starts_with(d));
    for e in entries.flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let hit = match std::fs::read_link(e.path()) {
            Ok(target) if inside(&target) => true,
            Ok(target)
                if target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:") =>
            {
                [false, true]
                    .iter()
                    .filter_map(|peer| socket_path(fd, *peer))
                    .any(|p| inside(&p))
            }
            _ => false,
        };
        if hit {
            if let Some((dev, ino)) = identity(fd) {
                out.push((fd, dev, ino));
            }
        }
    }
}

extern "C" fn prepare() {
    fork_lock();
    // Keeps the lock held across the fork: released by `parent`/`child`.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: FORK_LOCK is held.
        let s = unsafe { &mut *FORK_STATE.0.get() };
        s.marked.clear();
        if !s.dirs.is_empty() {
            let dirs = std::mem::take(&mut s.dirs);
            scan(&dirs, &mut s.marked);
            s.dirs = dirs;
        }
    });
}

extern "C" fn parent() {
    fork_unlock();
}

extern "C" fn child() {
    // Async-signal-safe only: fstat and close, over memory prepared before
    // the fork; no allocation, no lock another thread could hold.
    // SAFETY: FORK_LOCK is held (taken by `prepare` in the parent).
    let s = unsafe { &mut *FORK_STATE.0.get() };
    for &(fd, dev, ino) in s.marked.iter() {
        if identity(fd) == Some((dev, ino)) {
            // SAFETY: closes a descriptor that belongs to a leaked object of
            // the parent; nothing in the child uses it.
            unsafe { libc::close(fd) };
        }
    }
    s.marked.clear();
    fork_unlock();
}

// ------------------------------------------------------------------ exit

/// Hooks to run first at exit, and the pid that added them.
struct Hooks {
    pid: u32,
    hooks: Vec<fn()>,
}

static HOOKS: Mutex<Hooks> = Mutex::new(Hooks {
    pid: 0,
    hooks: Vec::new(),
});

/// Set when the hooks ran (they run once).
static HOOKS_RAN: AtomicBool = AtomicBool::new(false);
/// The pid of the process that added hooks (0: none), for the cheap checks.
static HOOKS_PID: AtomicU32 = AtomicU32::new(0);
/// `atexit` registrations so far: each costs a few bytes that are never
/// freed, so they stop at [`MAX_REGISTRATIONS`] (the hook still runs, from
/// the last registration).
static REGISTRATIONS: AtomicUsize = AtomicUsize::new(0);
const MAX_REGISTRATIONS: usize = 10_000;

fn hooks() -> MutexGuard<'static, Hooks> {
    crate::sync::lock(&HOOKS)
}

/// Runs `hook` once at process exit, before the exit handlers registered
/// after this call (and see the module documentation for those registered
/// later). Not in forked children.
pub fn at_exit_first(hook: fn()) {
    {
        let mut h = hooks();
        if h.pid != pid() {
            // Hooks of a parent are not this process's.
            h.hooks.clear();
            h.pid = pid();
        }
        if !h.hooks.contains(&hook) {
            h.hooks.push(hook);
        }
        HOOKS_PID.store(h.pid, Ordering::Release);
    }
    enlist_thread();
    reregister_at_exit();
}

/// Registers the exit hooks with `atexit` again, so that they run before
/// every exit handler registered until now. Cheap; a no-op when no hook was
/// added by this process.
pub fn reregister_at_exit() {
    if HOOKS_PID.load(Ordering::Acquire) != pid() || HOOKS_RAN.load(Ordering::Acquire) {
        return;
    }
    if REGISTRATIONS.fetch_add(1, Ordering::Relaxed) >= MAX_REGISTRATIONS {
        return;
    }
    // SAFETY: a plain `extern "C" fn()` that never unwinds; it stays valid
    // for the process lifetime (the extension asks SQLite never to unload
    // it).
    let rc = unsafe { atexit(run_hooks) };
    if rc != 0 {
        tracing::warn!("atexit registration failed");
    }
}

extern "C" {
    /// libc's `atexit`.
    fn atexit(callback: extern "C" fn()) -> libc::c_int;
}

extern "C" fn run_hooks() {
    if HOOKS_PID.load(Ordering::Acquire) != pid() || HOOKS_RAN.swap(true, Ordering::AcqRel) {
        return;
    }
    let list = hooks().hooks.clone();
    for hook in list {
        // A panic must not unwind through libc's exit handlers.
        let _ = std::panic::catch_unwind(hook);
    }
}

/// Whether the exit hooks ran (the process is exiting).
pub fn exiting() -> bool {
    HOOKS_RAN.load(Ordering::Acquire)
}

/// See [`enlist_thread`].
struct Sentinel;

impl Drop for Sentinel {
    fn drop(&mut self) {
        // On the thread calling exit(): before any exit handler runs, so
        // the hooks become the newest handler. On a thread that ends: the
        // hooks move after what it registered while it worked.
        reregister_at_exit();
    }
}

thread_local! {
    static SENTINEL: Sentinel = const { Sentinel };
}

/// Marks the calling thread as one that uses the library (see the module
/// documentation). Cheap after the first call on a thread.
pub fn enlist_thread() {
    SENTINEL.with(|_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_bound_refuses_another_pid() {
        let kv: Arc<dyn Kv> = crate::kv::embedded::EmbeddedKv::open(
            crate::kv::embedded::EmbeddedOptions::in_memory(),
        )
        .unwrap();
        let bound = ProcessBound::wrap(kv, "test store");
        assert!(bound.begin().is_ok());
        assert_eq!(bound.backend_name(), "embedded");
        let e = opened_before_fork("store x", 1);
        assert_eq!(e.code, OPENED_BEFORE_FORK);
        assert!(e.message.contains("fork()") && e.message.contains("process 1"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn scan_finds_files_in_a_registered_dir() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("x")).unwrap();
        let mut out = Vec::new();
        scan(&[dir.path().canonicalize().unwrap()], &mut out);
        use std::os::fd::AsRawFd;
        assert!(out.iter().any(|(fd, _, _)| *fd == f.as_raw_fd()), "{out:?}");
        let other = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        scan(&[other.path().canonicalize().unwrap()], &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
