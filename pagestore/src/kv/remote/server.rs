//! The server side of shared mode: serves an `Arc<dyn Kv>` on a Unix socket,
//! one thread per connection, each connection with its own transactions.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::debug;

use super::protocol::{
    decode, encode, no_sigpipe, read_frame, write_frame, Call, Op, Reply, Request, Response,
    WireError, PROTOCOL_VERSION,
};
use crate::kv::{ConflictKind, Kv, KvError, KvResult, KvTxn, RangeOption, ReadRequest};

/// Serves a store on a Unix domain socket until shut down or dropped.
///
/// Each connection gets a thread and its own map of open transactions,
/// which are discarded when the connection closes (a client process that
/// dies mid-transaction leaves nothing behind).
pub struct RemoteServer {
    path: PathBuf,
    shared: Arc<ServerShared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RemoteServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteServer")
            .field("path", &self.path)
            .finish()
    }
}

/// State shared by the accept loop, the connections and the handle.
#[derive(Default)]
struct ServerShared {
    stop: AtomicBool,
    next_conn: AtomicU64,
    /// Open connections (clones of their streams), to close at shutdown.
    conns: Mutex<HashMap<u64, UnixStream>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn io_error(what: String, e: std::io::Error) -> KvError {
    KvError::new(KvError::IO_ERROR, format!("{what}: {e}"))
}

impl RemoteServer {
    /// Binds `path` (which must not exist) and serves `kv` on it from a
    /// background thread.
    pub fn start(kv: Arc<dyn Kv>, path: impl Into<PathBuf>) -> KvResult<RemoteServer> {
        let path = path.into();
        let listener = UnixListener::bind(&path).map_err(|e| {
            io_error(
                format!("cannot listen on store socket {}", path.display()),
                e,
            )
        })?;
        let shared = Arc::new(ServerShared::default());
        let loop_shared = shared.clone();
        let loop_path = path.clone();
        let accept = std::thread::Builder::new()
            .name("kv-remote-accept".into())
            .spawn(move || accept_loop(listener, kv, loop_shared, loop_path))
            .map_err(|e| io_error("cannot start the store server thread".into(), e))?;
        debug!(socket = %path.display(), "kv remote server listening");
        Ok(RemoteServer {
            path,
            shared,
            accept: Some(accept),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections currently open.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Stops accepting, closes every connection (their clients get errors;
    /// their open transactions are discarded) and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Keeps serving for the rest of the process's life.
    pub(crate) fn detach(mut self) {
        self.accept = None;
        std::mem::forget(self);
    }

    fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, which then sees `stop`.
        let _ = UnixStream::connect(&self.path);
        let _ = accept.join();
        for (_, stream) in lock(&self.shared.conns).drain() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
        debug!(socket = %self.path.display(), "kv remote server stopped");
    }
}

impl Drop for RemoteServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: UnixListener, kv: Arc<dyn Kv>, shared: Arc<ServerShared>, path: PathBuf) {
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!(socket = %path.display(), error = %e, "kv remote accept failed");
                // Out of descriptors and the like: do not spin.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.conns).insert(id, clone);
        }
        let conn_kv = kv.clone();
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kv-remote-conn-{id}"))
            .spawn(move || {
                serve_connection(conn_kv.as_ref(), stream, id);
                lock(&conn_shared.conns).remove(&id);
            });
        if let Err(e) = spawned {
            debug!(conn = id, error = %e, "kv remote: cannot start a connection thread");
            if let Some(stream) = lock(&shared.conns).remove(&id) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// Serves one connection until the client closes it.
fn serve_connection(kv: &dyn Kv, mut stream: UnixStream, conn: u64) {
    debug!(conn, "kv remote connection opened");
    if let Err(e) = no_sigpipe(&stream) {
        debug!(conn, error = %e, "kv remote: cannot disable SIGPIPE");
    }
    let mut txns: HashMap<u64, Box<dyn KvTxn>> = HashMap::new();
    loop {
        let payload = match read_frame(&mut stream) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(e) => {
                debug!(conn, error = %e, "kv remote read failed");
                break;
            }
        };
        let response: Response = match decode::<Request>(&payload) {
            Ok(req) => {
                let (txn, call, ops) = (req.txn, req.call.name(), req.ops.len());
                let r = handle(kv, &mut txns, req).map_err(WireError::from);
                debug!(
                    conn,
                    txn,
                    call,
                    ops,
                    error = r.as_ref().err().map(|e| e.code),
                    open_txns = txns.len(),
                    "kv remote request"
                );
                r
            }
            Err(e) => Err(WireError {
                code: KvError::OPERATION_FAILED,
                message: format!("malformed request on the store socket: {e}"),
            }),
        };
        let frame = encode(&response).or_else(|e| {
            encode::<Response>(&Err(WireError {
                code: KvError::INTERNAL_ERROR,
                message: format!("cannot encode the answer: {e}"),
            }))
        });
        let sent = frame.and_then(|f| write_frame(&mut stream, &f));
        if let Err(e) = sent {
            debug!(conn, error = %e, "kv remote write failed");
            break;
        }
    }
    debug!(conn, discarded = txns.len(), "kv remote connection closed");
}

fn apply(txn: &mut dyn KvTxn, op: Op) {
    match op {
        Op::SetReadVersion(v) => txn.set_read_version(v),
        Op::Set(k, v) => txn.set(&k, &v),
        Op::Clear(k) => txn.clear(&k),
        Op::ClearRange(b, e) => txn.clear_range(&b, &e),
        Op::Atomic(k, p, m) => txn.atomic_op(&k, &p, m),
        Op::Conflict(b, e, write) => txn.add_conflict_range(
            &b,
            &e,
            if write {
                ConflictKind::Write
            } else {
                ConflictKind::Read
            },
        ),
    }
}

/// The read version to report after a read, when the client asked.
fn reported_version(txn: &mut dyn KvTxn, want: bool) -> KvResult<Option<u64>> {
    if want {
        txn.read_version().map(Some)
    } else {
        Ok(None)
    }
}

fn handle(kv: &dyn Kv, txns: &mut HashMap<u64, Box<dyn KvTxn>>, req: Request) -> KvResult<Reply> {
    for id in &req.discard {
        txns.remove(id);
    }
    if let Call::Hello { version } = req.call {
        if version != PROTOCOL_VERSION {
            return Err(KvError::new(
                KvError::OPERATION_FAILED,
                format!(
                    "store server speaks protocol {PROTOCOL_VERSION}, client speaks {version}: \
                     use the same build in every process"
                ),
            ));
        }
        return Ok(Reply::Hello {
            version: PROTOCOL_VERSION,
            backend: kv.backend_name().to_string(),
        });
    }
    let txn = match txns.entry(req.txn) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(kv.begin()?),
    };
    for op in req.ops {
        apply(txn.as_mut(), op);
    }
    let want = req.want_read_version;
    match req.call {
        Call::Hello { .. } => Err(KvError::new(KvError::INTERNAL_ERROR, "unreachable hello")),
        Call::ReadVersion => txn.read_version().map(Reply::Version),
        Call::Get { key, snapshot } => {
            let value = txn.get(&key, snapshot)?;
            Ok(Reply::Value {
                value,
                read_version: reported_version(txn.as_mut(), want)?,
            })
        }
        Call::GetRange { range, snapshot } => {
            let result = txn.get_range(&RangeOption::from(range), snapshot)?;
            Ok(Reply::Range {
                result: result.into(),
                read_version: reported_version(txn.as_mut(), want)?,
            })
        }
        Call::GetBatch { requests, snapshot } => {
            let requests: Vec<ReadRequest> = requests.into_iter().map(Into::into).collect();
            let results = txn.get_batch(&requests, snapshot)?;
            Ok(Reply::Batch {
                results: results.into_iter().map(Into::into).collect(),
                read_version: reported_version(txn.as_mut(), want)?,
            })
        }
        Call::Commit => match txns.remove(&req.txn) {
            Some(txn) => txn.commit().map(Reply::committed),
            None => Err(KvError::new(
                KvError::INTERNAL_ERROR,
                "commit of no transaction",
            )),
        },
    }
}
