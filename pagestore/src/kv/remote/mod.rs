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
//! * A client whose server went away gets error 1510 (`io_error`) naming the
//!   socket, never a panic or a hang: every answer is awaited at most
//!   [`REQUEST_TIMEOUT`]. A commit whose request was sent but whose answer
//!   never came is reported as 1021 (`commit_unknown_result`), as FDB does,
//!   because the owner may have applied it.
//! * A client process that dies mid-transaction closes its connection; the
//!   server discards that connection's transactions. Nothing it had not
//!   committed is applied.
//! * If the owner process exits, its clients' requests fail with 1510; they
//!   do not take over the store (open the store again with [`open_shared`]:
//!   the first process to do so becomes the new owner).
//!
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

mod client;
mod protocol;
mod server;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

pub use client::{RemoteKv, REQUEST_TIMEOUT};
pub use server::RemoteServer;

use crate::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use crate::kv::{Kv, KvError, KvResult};

/// Name of the socket inside a shared store directory.
pub const SOCKET_FILE: &str = "kv.sock";

/// How long an opener keeps trying to reach the owner's server when the
/// directory is held (the owner may be starting right now).
const CONNECT_WINDOW: Duration = Duration::from_secs(2);

/// Pause between attempts within [`CONNECT_WINDOW`].
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Stores this process owns, by canonical directory: opening one again in
/// the same process returns the same handle.
static OWNED: Mutex<Vec<(PathBuf, Arc<EmbeddedKv>)>> = Mutex::new(Vec::new());

/// The embedded store this process owns for `dir` (opened with
/// [`open_shared`]), so that its owner can change faults at runtime; `None`
/// when another process owns it (this process is a client).
pub fn owned(dir: &std::path::Path) -> Option<Arc<EmbeddedKv>> {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let owned = OWNED.lock().unwrap_or_else(PoisonError::into_inner);
    owned
        .iter()
        .find(|(p, _)| *p == canonical)
        .map(|(_, kv)| kv.clone())
}

/// Opens an embedded store that several processes may use at once.
///
/// * Directory free: opens it ([`EmbeddedKv`], with `opts`' clock and
///   faults) and serves it to other processes on `<dir>/kv.sock` for the
///   rest of this process's life (a stale socket file left by a previous
///   owner is replaced).
/// * Directory already opened with `open_shared` in this process: the same
///   handle.
/// * Directory held by another live process: a [`RemoteKv`] connected to its
///   socket, retrying for up to 2 s while the owner starts. When nothing
///   answers there (the holder opened the store unshared, or hangs), error
///   1000 naming the holder's pid and the socket.
/// * `opts.dir == None`: an unshared in-memory store.
pub fn open_shared(opts: EmbeddedOptions) -> KvResult<Arc<dyn Kv>> {
    let Some(dir) = opts.dir.clone() else {
        let kv: Arc<dyn Kv> = EmbeddedKv::open(opts)?;
        return Ok(kv);
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        KvError::new(
            KvError::IO_ERROR,
            format!("cannot create store directory {}: {e}", dir.display()),
        )
    })?;
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
    let mut owned = OWNED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, kv)) = owned.iter().find(|(p, _)| *p == canonical) {
        let kv: Arc<dyn Kv> = kv.clone();
        return Ok(kv);
    }
    let socket = dir.join(SOCKET_FILE);
    let deadline = Instant::now() + CONNECT_WINDOW;
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
                owned.push((canonical, kv.clone()));
                debug!(store = %dir.display(), "shared store opened as owner");
                let kv: Arc<dyn Kv> = kv;
                return Ok(kv);
            }
            Err(e) if e.code == KvError::OPERATION_FAILED => e,
            Err(e) => return Err(e),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let handshake = left.max(Duration::from_millis(200));
        match RemoteKv::connect_with_handshake(&socket, handshake, REQUEST_TIMEOUT) {
            Ok(remote) => {
                debug!(store = %dir.display(), "shared store opened as client");
                let kv: Arc<dyn Kv> = remote;
                return Ok(kv);
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
