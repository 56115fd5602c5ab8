//! The server side of shared mode: serves an `Arc<dyn Kv>` on a Unix socket,
//! one thread per connection, each connection with its own transactions.
//!
//! # Who is served
//!
//! The socket file is made 0600 (it lives in the store's 0700 directory),
//! and every accepted connection's peer uid (`SO_PEERCRED`) must be this
//! process's effective uid: any other is answered with an error and closed.
//!
//! # Limits
//!
//! Frames, connections, transactions per connection, the bytes they buffer,
//! a frame's duration and a connection's silence are all bounded
//! ([`ServerLimits`]; defaults and the error each gives in `limits.rs`).
//! A limit hit by one client is an error for that client only; the server
//! and its other clients carry on.

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::limits::{ServerLimits, MAX_RANGE_ANSWER, MAX_ROW};
use super::protocol::{
    check_peer, decode, encode_capped, no_sigpipe, read_frame_within, write_frame, Call, Deadlines,
    Incoming, Op, Reply, Request, Response, WireError, WireRead, PROTOCOL_VERSION,
};
use crate::kv::{ConflictKind, Kv, KvError, KvResult, KvTxn, RangeOption, ReadRequest, Version};
use crate::sync::lock;

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
            .field("limits", &self.shared.limits)
            .finish()
    }
}

/// State shared by the accept loop, the connections and the handle.
struct ServerShared {
    stop: AtomicBool,
    next_conn: AtomicU64,
    /// Open connections (clones of their streams), to close at shutdown.
    conns: Mutex<HashMap<u64, UnixStream>>,
    limits: ServerLimits,
}

fn io_error(what: String, e: std::io::Error) -> KvError {
    KvError::new(KvError::IO_ERROR, format!("{what}: {e}"))
}

/// How long a refused connection stays open after its answer, so that the
/// client can send its request and read the answer (closing a socket with
/// unread data would reset it).
const REFUSED_GRACE: Duration = Duration::from_secs(1);

/// Refused connections kept open at most (older ones are closed first).
const MAX_REFUSED: usize = 64;

impl RemoteServer {
    /// Binds `path` (which must not exist) and serves `kv` on it from a
    /// background thread, with the default [`ServerLimits`].
    pub fn start(kv: Arc<dyn Kv>, path: impl Into<PathBuf>) -> KvResult<RemoteServer> {
        Self::start_with_limits(kv, path, ServerLimits::default())
    }

    /// [`RemoteServer::start`] with other limits.
    pub fn start_with_limits(
        kv: Arc<dyn Kv>,
        path: impl Into<PathBuf>,
        limits: ServerLimits,
    ) -> KvResult<RemoteServer> {
        let path = path.into();
        let listener = UnixListener::bind(&path).map_err(|e| {
            io_error(
                format!("cannot listen on store socket {}", path.display()),
                e,
            )
        })?;
        // Explicitly, whatever the umask (connecting needs write access).
        if let Err(e) = crate::kv::embedded::access::private_file(&path) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let shared = Arc::new(ServerShared {
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            limits,
        });
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

    /// The limits this server enforces.
    pub fn limits(&self) -> ServerLimits {
        self.shared.limits
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

/// Answers a connection that will not be served with `code` and `message`
/// (the answer to its first request) and half-closes it: the client reads
/// the error, then the end of the stream.
fn refuse(
    stream: UnixStream,
    code: i32,
    message: String,
    refused: &mut VecDeque<(Instant, UnixStream)>,
) {
    let answer: Response = Err(WireError { code, message });
    // Non-blocking: a client that does not read must not stall accepting;
    // the answer is small enough for an empty socket buffer.
    let _ = stream.set_nonblocking(true);
    if let Ok(frame) = encode_capped(&answer, usize::MAX) {
        let mut s = &stream;
        let _ = std::io::Write::write_all(&mut s, &frame);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if refused.len() >= MAX_REFUSED {
        refused.pop_front();
    }
    refused.push_back((Instant::now(), stream));
}

fn accept_loop(listener: UnixListener, kv: Arc<dyn Kv>, shared: Arc<ServerShared>, path: PathBuf) {
    let limits = shared.limits;
    let mut refused: VecDeque<(Instant, UnixStream)> = VecDeque::new();
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        while refused
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= REFUSED_GRACE)
        {
            refused.pop_front();
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
        if let Err(e) = check_peer(&stream, &path, "client") {
            warn!(socket = %path.display(), error = %e, "kv remote: connection of another user refused");
            refuse(
                stream,
                KvError::OPERATION_FAILED,
                format!("permission denied: {e}"),
                &mut refused,
            );
            continue;
        }
        let open = lock(&shared.conns).len();
        if open >= limits.max_connections {
            warn!(socket = %path.display(), open, "kv remote: connection limit reached");
            refuse(
                stream,
                KvError::PROCESS_BEHIND,
                format!(
                    "the store server at {} already serves {open} connections (its limit); \
                     retry later",
                    path.display()
                ),
                &mut refused,
            );
            continue;
        }
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.conns).insert(id, clone);
        }
        let conn_kv = kv.clone();
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kv-remote-conn-{id}"))
            .spawn(move || {
                serve_connection(conn_kv.as_ref(), stream, id, &conn_shared.limits);
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

/// A transaction of a connection.
enum Slot {
    Open(Box<dyn KvTxn>),
    /// Refused for a limit: every later call fails the same way (its
    /// buffered writes are gone; beginning it afresh would lose them).
    Failed(KvError),
}

/// What the connection does after answering.
#[derive(Debug, PartialEq, Eq)]
enum After {
    Continue,
    Close,
}

/// Serves one connection until the client closes it or breaks a limit.
fn serve_connection(kv: &dyn Kv, mut stream: UnixStream, conn: u64, limits: &ServerLimits) {
    debug!(conn, "kv remote connection opened");
    if let Err(e) = no_sigpipe(&stream) {
        debug!(conn, error = %e, "kv remote: cannot disable SIGPIPE");
    }
    if let Err(e) = stream.set_write_timeout(Some(limits.write_timeout)) {
        debug!(conn, error = %e, "kv remote: cannot set a write timeout");
    }
    let mut txns: HashMap<u64, Slot> = HashMap::new();
    let mut served = 0u64;
    loop {
        let deadlines = Deadlines {
            // A connection that never asked anything is an owner watcher.
            idle: (served > 0).then_some(limits.idle_timeout),
            frame: limits.frame_timeout,
        };
        let read = read_frame_within(&mut stream, limits.max_request_frame, Some(deadlines));
        let (response, after): (Response, After) = match read {
            Ok(Incoming::Frame(payload)) => {
                served += 1;
                match decode::<Request>(&payload) {
                    Ok(req) => {
                        let (txn, call, ops) = (req.txn, req.call.name(), req.ops.len());
                        let (r, after) = handle(kv, &mut txns, req, limits);
                        let r = r.map_err(WireError::from);
                        debug!(
                            conn,
                            txn,
                            call,
                            ops,
                            error = r.as_ref().err().map(|e| e.code),
                            open_txns = txns.len(),
                            "kv remote request"
                        );
                        (r, after)
                    }
                    Err(e) => (
                        Err(WireError {
                            code: KvError::OPERATION_FAILED,
                            message: format!("malformed request on the store socket: {e}"),
                        }),
                        After::Continue,
                    ),
                }
            }
            Ok(Incoming::Closed) => break,
            Ok(Incoming::TooLarge(len)) => {
                warn!(
                    conn,
                    len, "kv remote: request frame over the limit; connection closed"
                );
                (
                    Err(WireError {
                        code: KvError::TRANSACTION_TOO_LARGE,
                        message: format!(
                            "request frame of {len} bytes exceeds the store server's \
                             {}-byte limit; the connection is closed",
                            limits.max_request_frame
                        ),
                    }),
                    After::Close,
                )
            }
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                        "idle or stalled mid-frame past its timeout"
                    }
                    _ => "read failed",
                };
                debug!(conn, error = %e, why, "kv remote connection dropped");
                break;
            }
        };
        let frame = encode_capped(&response, limits.max_response_frame).or_else(|e| {
            encode_capped::<Response>(
                &Err(WireError {
                    code: KvError::TRANSACTION_TOO_LARGE,
                    message: format!("cannot send the answer: {e}"),
                }),
                usize::MAX,
            )
        });
        let sent = frame.and_then(|f| write_frame(&mut stream, &f));
        if let Err(e) = sent {
            debug!(conn, error = %e, "kv remote write failed");
            break;
        }
        if after == After::Close {
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
fn reported_version(txn: &mut dyn KvTxn, want: bool) -> KvResult<Option<Version>> {
    if want {
        txn.read_version().map(Some)
    } else {
        Ok(None)
    }
}

/// The most a batch of reads can answer (see `limits.rs`).
fn batch_answer_bound(requests: &[WireRead]) -> usize {
    requests
        .iter()
        .map(|r| match r {
            WireRead::Get(_) => MAX_ROW,
            WireRead::Range(r) => match usize::try_from(r.limit) {
                Ok(limit) if limit > 0 => limit.saturating_mul(MAX_ROW).min(MAX_RANGE_ANSWER),
                _ => MAX_RANGE_ANSWER,
            },
        })
        .fold(0usize, usize::saturating_add)
}

/// Answers one request; `After::Close` when the connection must end.
fn handle(
    kv: &dyn Kv,
    txns: &mut HashMap<u64, Slot>,
    req: Request,
    limits: &ServerLimits,
) -> (KvResult<Reply>, After) {
    for id in &req.discard {
        txns.remove(id);
    }
    if let Call::Hello { version } = req.call {
        return (hello(kv, version), After::Continue);
    }
    if let Some(Slot::Failed(err)) = txns.get(&req.txn) {
        let err = err.clone();
        if req.call == Call::Commit {
            txns.remove(&req.txn);
        }
        return (Err(err), After::Continue);
    }
    if !txns.contains_key(&req.txn) {
        if let Err(refused) = open_slot(kv, txns, req.txn, limits) {
            return refused;
        }
    }
    let Some(Slot::Open(txn)) = txns.get_mut(&req.txn) else {
        return (Err(vanished()), After::Continue);
    };
    for op in req.ops {
        apply(txn.as_mut(), op);
    }
    if let Err(e) = check_buffered(txns, limits) {
        txns.insert(req.txn, Slot::Failed(e.clone()));
        return (Err(e), After::Continue);
    }
    let result = match req.call {
        Call::Commit => match txns.remove(&req.txn) {
            Some(Slot::Open(txn)) => txn.commit().map(Reply::committed),
            Some(Slot::Failed(e)) => Err(e),
            None => Err(KvError::new(
                KvError::INTERNAL_ERROR,
                "commit of no transaction",
            )),
        },
        call => match txns.get_mut(&req.txn) {
            Some(Slot::Open(txn)) => answer(txn.as_mut(), call, req.want_read_version, limits),
            _ => Err(vanished()),
        },
    };
    (result, After::Continue)
}

fn vanished() -> KvError {
    KvError::new(KvError::INTERNAL_ERROR, "transaction vanished")
}

/// The answer to a client's hello: ours, or a refusal naming both
/// protocol versions.
fn hello(kv: &dyn Kv, version: u32) -> KvResult<Reply> {
    if version != PROTOCOL_VERSION {
        return Err(KvError::new(
            KvError::OPERATION_FAILED,
            format!(
                "store server speaks protocol {PROTOCOL_VERSION}, client speaks {version}: \
                 use the same build in every process"
            ),
        ));
    }
    Ok(Reply::Hello {
        version: PROTOCOL_VERSION,
        backend: kv.backend_name().to_string(),
    })
}

/// Begins transaction `id` on this connection, unless the connection holds
/// its limit of open transactions (then it is closed).
fn open_slot(
    kv: &dyn Kv,
    txns: &mut HashMap<u64, Slot>,
    id: u64,
    limits: &ServerLimits,
) -> Result<(), (KvResult<Reply>, After)> {
    let open = txns.len();
    if open >= limits.max_transactions_per_connection {
        // Closing is what keeps this transaction from being begun
        // afresh, without the writes of this request, by a later one.
        let e = KvError::new(
            KvError::CLIENT_INVALID_OPERATION,
            format!(
                "{open} transactions are open on this store connection (the server's \
                 limit); the connection is closed"
            ),
        );
        return Err((Err(e), After::Close));
    }
    match kv.begin() {
        Ok(txn) => {
            txns.insert(id, Slot::Open(txn));
            Ok(())
        }
        Err(e) => Err((Err(e), After::Continue)),
    }
}

/// Refuses when the connection's transactions buffer more than the
/// server's limit.
fn check_buffered(txns: &HashMap<u64, Slot>, limits: &ServerLimits) -> KvResult<()> {
    let buffered: usize = txns
        .values()
        .map(|s| match s {
            Slot::Open(t) => t.approximate_size(),
            Slot::Failed(_) => 0,
        })
        .fold(0, usize::saturating_add);
    if buffered > limits.max_buffered_bytes {
        return Err(KvError::new(
            KvError::TRANSACTION_TOO_LARGE,
            format!(
                "the transaction holds {buffered} bytes on the store server with this \
                 connection's others, over the server's {}-byte limit (a transaction that \
                 can commit is at most {} bytes)",
                limits.max_buffered_bytes,
                crate::kv::limits::MAX_TRANSACTION_SIZE
            ),
        ));
    }
    Ok(())
}

/// Runs one read call on an open transaction.
fn answer(txn: &mut dyn KvTxn, call: Call, want: bool, limits: &ServerLimits) -> KvResult<Reply> {
    match call {
        Call::Hello { .. } | Call::Commit => {
            Err(KvError::new(KvError::INTERNAL_ERROR, "not a read call"))
        }
        Call::ReadVersion => txn.read_version().map(Reply::Version),
        Call::Get { key, snapshot } => txn.get(&key, snapshot).and_then(|value| {
            Ok(Reply::Value {
                value,
                read_version: reported_version(txn, want)?,
            })
        }),
        Call::GetRange { range, snapshot } => txn
            .get_range(&RangeOption::from(range), snapshot)
            .and_then(|result| {
                Ok(Reply::Range {
                    result: result.into(),
                    read_version: reported_version(txn, want)?,
                })
            }),
        Call::GetBatch { requests, snapshot } => {
            let bound = batch_answer_bound(&requests);
            if bound > limits.max_response_frame {
                return Err(KvError::new(
                    KvError::TRANSACTION_TOO_LARGE,
                    format!(
                        "a batch of {} reads could answer up to {bound} bytes, over the store \
                         server's {}-byte limit on an answer: split it",
                        requests.len(),
                        limits.max_response_frame
                    ),
                ));
            }
            let requests: Vec<ReadRequest> = requests.into_iter().map(Into::into).collect();
            txn.get_batch(&requests, snapshot).and_then(|results| {
                Ok(Reply::Batch {
                    results: results.into_iter().map(Into::into).collect(),
                    read_version: reported_version(txn, want)?,
                })
            })
        }
    }
}
