//! Shared mode: several processes on one embedded store.
//!
//! An embedded store directory is opened by one process at a time (see the
//! embedded backend's directory lock). [`open_shared`] lets more processes
//! use it: the first opener owns the store and serves it on `<dir>/kv.sock`
//! ([`RemoteServer`]); later openers connect to that socket and get a
//! [`RemoteKv`], which implements [`Kv`] with the same contract.
//!
//! # How the contract is kept exactly
//!
//! Transactions live on the server: each connection has a map
//! `txn id -> Box<dyn KvTxn>` of the owner's store, so MVCC at the read
//! version, read-your-writes, snapshot vs. serializable reads, conflict
//! detection, limits and versionstamps are the store's own. The client
//! buffers mutations and ships them with the next read or the commit, so a
//! write costs no round trip; a read, a batch, a read-version request and a
//! commit are one request/response each. Errors cross the wire as their
//! code and message, so a remote 1020/1021/1007/2101 is the same
//! [`crate::kv::KvError`] code and name as a local one.
//!
//! The client counts its own [`crate::kv::KvMetrics`] exactly as the
//! embedded backend counts the same calls (reads answered by the
//! transaction's own writes are free; see `client.rs`), and computes
//! `approximate_size` by the embedded backend's rule.
//!
//! # Failure behaviour
//!
//! * A [`RemoteKv`] whose server went away gets error 1510 (`io_error`)
//!   naming the socket, never a panic or a hang: every answer is awaited at
//!   most [`REQUEST_TIMEOUT`]. A commit whose request was sent but whose
//!   answer never came is reported as 1021 (`commit_unknown_result`), as FDB
//!   does, because the owner may have applied it.
//! * A client process that dies mid-transaction closes its connection; the
//!   server discards that connection's transactions. Nothing it had not
//!   committed is applied.
//!
//! # Who may connect
//!
//! A store is its owner's: the directory is 0700 and its files (the socket
//! included) 0600, and a directory owned by another uid, or writable by
//! others and not empty, is refused (`embedded/access.rs`). The server
//! checks the uid of every connection (`SO_PEERCRED`) and answers only its
//! own; a client checks that the server runs as its uid, so a socket
//! planted by someone else is never used. Root is no exception: it opens
//! root's stores only.
//!
//! # A broken or hostile client
//!
//! Every frame, connection, transaction and buffer of the server is
//! bounded, and a stalled client is dropped; each limit has a default and
//! a clear error for that client only ([`limits`]). A client whose pooled
//! connection was closed by the server's idle timeout opens a new one
//! without an error.
//!
//! # Failover: the owner exits
//!
//! [`open_shared`] gives a client process a [`SharedKv`], which survives the
//! owner. When the owner process exits (normally or killed), every client
//! tries to take the store over: the first to take the directory's lock
//! (free as soon as the owner's process is gone) opens the
//! [`EmbeddedKv`], serves it on the socket and registers it for [`owned`];
//! the others connect to it, retrying for up to 2 s. A watcher thread per
//! client notices the exit at once (it blocks reading an idle connection);
//! a request that fails on the transport also triggers the failover at the
//! next [`Kv::begin`].
//!
//! * Transactions open on the old owner fail: before commit with
//!   [`LOST_CONNECTION`] (1037 `process_behind`, retryable and nothing
//!   applied; why this code: see its documentation), a commit whose answer
//!   was lost with 1021. Retrying runs on the new backend.
//! * Versions stay strictly increasing: the new owner starts from the last
//!   committed version persisted in the directory, and versions are the
//!   clock's microseconds above it.
//! * The new owner has no MVCC history or conflict record of the old
//!   owner's last seconds, so a read version from before the failover
//!   (set with [`crate::kv::KvTxn::set_read_version`]) is refused with 1007
//!   (`transaction_too_old`, retryable), as FDB refuses read versions from
//!   before a recovery; see `shared.rs`.
//! * [`Kv::metrics`] of a [`SharedKv`] are cumulative over its backends.
//! * When no one can take over or answer within 2 s (the lock is held by a
//!   process that opened the store unshared, or hangs), `begin` fails with
//!   1000 and the next `begin` tries again.

//! # Limitations
//!
//! * Unix only (Unix domain sockets); the socket path `<dir>/kv.sock` must
//!   fit in `sun_path` (about 100 bytes). When the socket cannot be bound the
//!   owner still opens the store, unshared.
//! * Fault injection ([`crate::kv::embedded::Faults`]) and the clock are the
//!   owner's: the options of a process that connects as a client are
//!   ignored, and the owner's faults apply to every process.
//! * The owner's [`Kv::metrics`] are the embedded store's, counting the
//!   round trips of every process; a client's count only its own.
//! * A process that takes a store over opens it with its own
//!   [`EmbeddedOptions`] (clock, faults): the previous owner's runtime
//!   fault changes are not carried over. A handle that looked up [`owned`]
//!   before the takeover keeps its `None`.
//! * In-memory stores (`dir == None`) are never shared.

mod client;
#[cfg(test)]
mod fuzz_tests;
pub mod limits;
mod protocol;
mod server;
mod shared;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

pub use client::{RemoteKv, LOST_CONNECTION, REQUEST_TIMEOUT};
pub use limits::ServerLimits;
pub use server::RemoteServer;
pub use shared::SharedKv;

use crate::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use crate::kv::{Kv, KvError, KvResult};

/// Name of the socket inside a shared store directory.
pub const SOCKET_FILE: &str = "kv.sock";

/// How long an opener keeps trying to reach the owner's server when the
/// directory is held (the owner may be starting right now).
const CONNECT_WINDOW: Duration = Duration::from_secs(2);

/// How long a client whose owner exited keeps trying to take the store over
/// or to reach the process that did.
const TAKEOVER_WINDOW: Duration = Duration::from_secs(2);

/// Pause between attempts within [`CONNECT_WINDOW`].
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Stores this process owns, by canonical directory: opening one again in
/// the same process returns the same handle.
static OWNED: Mutex<Vec<(PathBuf, Arc<EmbeddedKv>)>> = Mutex::new(Vec::new());

/// The embedded store this process owns for `dir` (opened with
/// [`open_shared`]), so that its owner can change faults at runtime; `None`
/// when another process owns it (this process is a client).
pub fn owned(dir: &Path) -> Option<Arc<EmbeddedKv>> {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    lock_owned()
        .iter()
        .find(|(p, _)| *p == canonical)
        .map(|(_, kv)| kv.clone())
}

/// What [`acquire`] got: the store itself, or a client of its owner.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    /// This process owns the store (and serves it, when the socket binds).
    Owner(Arc<EmbeddedKv>),
    /// Another process owns it.
    Client(Arc<RemoteKv>),
}

impl Backend {
    pub(crate) fn kv(&self) -> &dyn Kv {
        match self {
            Backend::Owner(kv) => kv.as_ref(),
            Backend::Client(kv) => kv.as_ref(),
        }
    }
}

/// The stores this process owns, locked.
pub(crate) type Owned = MutexGuard<'static, Vec<(PathBuf, Arc<EmbeddedKv>)>>;

pub(crate) fn lock_owned() -> Owned {
    let mut owned = crate::sync::lock(&OWNED);
    // In a forked child the stores are the parent's: leak them (never
    // reuse nor drop them; see `kv::process`), so this process opens anew.
    let pid = crate::kv::process::pid();
    if OWNED_PID.swap(pid, std::sync::atomic::Ordering::AcqRel) != pid {
        owned.drain(..).for_each(crate::kv::process::leak);
    }
    owned
}

/// The process [`OWNED`] belongs to.
static OWNED_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Becomes the owner of the store in `opts.dir` (`canonical` is its
/// canonical path) or connects to its owner, trying for `window`.
///
/// Returns the backend and whether it was opened just now (`false`: the
/// store this process already owns). A new owner is registered in
/// `owned` and serves the store on `<dir>/kv.sock`; a client is opened with
/// `failover` (lost connections are retryable, [`LOST_CONNECTION`]).
pub(crate) fn acquire(
    opts: &EmbeddedOptions,
    canonical: &Path,
    owned: &mut Owned,
    window: Duration,
) -> KvResult<(Backend, bool)> {
    if let Some((_, kv)) = owned.iter().find(|(p, _)| p == canonical) {
        return Ok((Backend::Owner(kv.clone()), false));
    }
    let dir = opts.dir.clone().unwrap_or_else(|| canonical.to_path_buf());
    let socket = dir.join(SOCKET_FILE);
    let deadline = Instant::now() + window;
    loop {
        let held = match EmbeddedKv::open(opts.clone()) {
            Ok(kv) => {
                // We hold the lock, so any socket file is a dead owner's.
                match std::fs::remove_file(&socket) {
                    Ok(()) => debug!(socket = %socket.display(), "removed a stale store socket"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        debug!(socket = %socket.display(), error = %e, "cannot remove stale socket")
                    }
                }
                let served: Arc<dyn Kv> = kv.clone();
                match RemoteServer::start(served, &socket) {
                    Ok(server) => server.detach(),
                    Err(e) => warn!(
                        store = %dir.display(),
                        error = %e,
                        "store opened unshared: other processes cannot connect"
                    ),
                }
                owned.push((canonical.to_path_buf(), kv.clone()));
                debug!(store = %dir.display(), "shared store opened as owner");
                return Ok((Backend::Owner(kv), true));
            }
            Err(e) if e.code == KvError::OPERATION_FAILED => e,
            Err(e) => return Err(e),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let handshake = left.max(Duration::from_millis(200));
        match RemoteKv::connect_with_handshake(&socket, handshake, REQUEST_TIMEOUT, true) {
            Ok(remote) => {
                debug!(store = %dir.display(), "shared store opened as client");
                return Ok((Backend::Client(remote), true));
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(KvError::new(
                    KvError::OPERATION_FAILED,
                    format!(
                        "{}; and no store server answers on {} ({})",
                        held.message,
                        socket.display(),
                        e.message
                    ),
                ));
            }
            Err(_) => std::thread::sleep(RETRY_PAUSE),
        }
    }
}

/// Opens an embedded store that several processes may use at once.
///
/// * Directory free: opens it ([`EmbeddedKv`], with `opts`' clock and
///   faults) and serves it to other processes on `<dir>/kv.sock` for the
///   rest of this process's life (a stale socket file left by a previous
///   owner is replaced).
/// * Directory already owned by this process (opened with `open_shared`,
///   or taken over): the same [`EmbeddedKv`] handle.
/// * Directory held by another live process: a [`SharedKv`] connected to its
///   socket, retrying for up to 2 s while the owner starts. When nothing
///   answers there (the holder opened the store unshared, or hangs), error
///   1000 naming the holder's pid and the socket. When the owner exits, the
///   [`SharedKv`] takes the store over or connects to whoever did (see the
///   module documentation).
/// * `opts.dir == None`: an unshared in-memory store.
pub fn open_shared(opts: EmbeddedOptions) -> KvResult<Arc<dyn Kv>> {
    let Some(dir) = opts.dir.clone() else {
        let kv: Arc<dyn Kv> = EmbeddedKv::open(opts)?;
        return Ok(kv);
    };
    // Private to this user, or refused (see the module documentation).
    crate::kv::embedded::access::prepare_dir(&dir)?;
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let mut owned = lock_owned();
    let (backend, _) = acquire(&opts, &canonical, &mut owned, CONNECT_WINDOW)?;
    drop(owned);
    match backend {
        Backend::Owner(kv) => {
            let kv: Arc<dyn Kv> = kv;
            Ok(kv)
        }
        Backend::Client(remote) => {
            let kv: Arc<dyn Kv> = SharedKv::new(opts, canonical, remote);
            Ok(kv)
        }
    }
}
