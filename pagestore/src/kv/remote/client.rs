//! The client side of shared mode: [`RemoteKv`], a [`Kv`] whose
//! transactions live on a [`super::RemoteServer`].
//!
//! A transaction holds one pooled connection from its first request to its
//! end. Mutations are buffered and shipped with the next read or the commit
//! (so writes cost no extra round trip); each read, batch, read-version
//! request and commit is one request/response.
//!
//! The client keeps its own [`KvMetrics`] and counts exactly what the
//! embedded backend counts for the same calls: it mirrors which reads the
//! transaction's own writes answer (no round trip) and which reach the
//! store, and it computes [`KvTxn::approximate_size`] by the embedded
//! backend's rule.

#![warn(clippy::too_many_lines)]

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::debug;

use super::protocol::{
    commit_info, decode, encode, no_sigpipe, read_frame, write_frame, Call, Op, Reply, Request,
    Response, WireRange, WireRead, PROTOCOL_VERSION,
};
use crate::kv::counters::Counters;
use crate::kv::limits::MAX_TRANSACTION_SIZE;
use crate::kv::overlay::{KeyOverlay, Seen};
use crate::kv::process;
use crate::kv::size::{
    check_batch_keys, check_read_key, clear_range_size, covered_range, mutation_size, point_size,
    range_size, value_bytes,
};
use crate::kv::Kv;
use crate::kv::{
    CommitInfo, ConflictKind, KvError, KvMetrics, KvResult, KvTxn, MutationType, RangeOption,
    RangeResult, ReadRequest, ReadResult, Version,
};
use crate::sync::lock;

/// How long a client waits for one answer before giving up with 1510.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections kept for reuse.
const MAX_IDLE_CONNECTIONS: usize = 64;

/// The code of a transaction that lost its connection to the store server
/// before commit, when the client fails over ([`super::open_shared`]):
/// `process_behind` (1037).
///
/// The server discards a connection's transactions when it closes, so
/// nothing of the transaction was applied and running it again from the
/// start is safe: the error must be in FDB's `retryable_not_committed`
/// class, like a conflict, and not 1510 (`io_error`), which no retry loop
/// retries. Of that class:
///
/// * 1020 (`not_committed`) means a read-write conflict; callers count and
///   report conflicts (SQLite's `BUSY_SNAPSHOT`), which this is not.
/// * 1007 (`transaction_too_old`) blames the read version's age; pagestore
///   retries it at once, without backoff, because a fresh read version
///   fixes it. A takeover may still be under way: a backoff is wanted.
/// * 1037 (`process_behind`) says "a server process cannot serve this
///   transaction right now; retry": FDB's `on_error` retries it with
///   exponential backoff, and no caller gives it another meaning.
///
/// A commit whose request was sent but whose answer was lost stays 1021
/// (`commit_unknown_result`): the owner may have applied it before exiting.
pub const LOST_CONNECTION: i32 = KvError::PROCESS_BEHIND;

/// A store served by another process (or thread) over a Unix socket.
pub struct RemoteKv {
    client: Arc<Client>,
}

impl std::fmt::Debug for RemoteKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKv")
            .field("socket", &self.client.path)
            .field("server_backend", &self.client.server_backend)
            .finish()
    }
}

struct Client {
    path: PathBuf,
    timeout: Duration,
    server_backend: String,
    pool: Mutex<Vec<Conn>>,
    next_txn: AtomicU64,
    counters: Counters,
    /// Opened by [`super::open_shared`], which fails over to a new owner:
    /// a lost connection is then reported as retryable (see
    /// [`LOST_CONNECTION`]) instead of 1510.
    failover: bool,
    /// A request failed on the transport (or the owner was seen to exit):
    /// this client's server is presumed gone.
    lost: AtomicBool,
    /// The process that connected: a forked child never uses (or closes)
    /// the parent's connections (see `kv::process`).
    pid: u32,
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.pid != process::pid() {
            // The parent's sockets: the child closed its copies at fork.
            process::leak(std::mem::take(&mut *lock(&self.pool)));
        }
    }
}

/// One connection to the server.
struct Conn {
    stream: UnixStream,
    /// Transactions dropped while holding this connection, to be forgotten
    /// by the server with the next request.
    discards: Vec<u64>,
}

/// How an exchange with the server failed.
enum Failure {
    /// The store answered with an error.
    Store(KvError),
    /// The connection failed; `sent` when the whole request went out (the
    /// server may have acted on it).
    Transport { sent: bool, error: KvError },
}

impl Failure {
    fn into_error(self) -> KvError {
        match self {
            Failure::Store(e) | Failure::Transport { error: e, .. } => e,
        }
    }
}

fn transport_error(path: &Path, timeout: Duration, e: &io::Error) -> KvError {
    let message = match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "no answer from the store server at {} within {} s",
            path.display(),
            timeout.as_secs()
        ),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => format!(
            "the store server at {} is not running ({e}); the process that owned \
             the store directory has exited",
            path.display()
        ),
        // Another user's store, or a server of another uid (`check_peer`).
        io::ErrorKind::PermissionDenied => format!(
            "refused to use the store server at {} ({e})",
            path.display()
        ),
        _ => format!(
            "lost the connection to the store server at {} ({e}); the process that \
             owns the store directory may have exited",
            path.display()
        ),
    };
    KvError::new(KvError::IO_ERROR, message)
}

impl Conn {
    fn open(path: &Path, timeout: Duration) -> io::Result<Conn> {
        let stream = UnixStream::connect(path)?;
        // Only a server of this uid: a planted socket is refused.
        super::protocol::check_peer(&stream, path, "server")?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        no_sigpipe(&stream)?;
        Ok(Conn {
            stream,
            discards: Vec::new(),
        })
    }

    /// Sends `req` and waits for the answer.
    fn exchange(&mut self, req: &Request) -> Result<Response, (bool, io::Error)> {
        let frame = encode(req).map_err(|e| (false, e))?;
        write_frame(&mut self.stream, &frame).map_err(|e| (false, e))?;
        let payload = match read_frame(&mut self.stream) {
            Ok(Some(p)) => p,
            Ok(None) => return Err((true, io::ErrorKind::UnexpectedEof.into())),
            Err(e) => return Err((true, e)),
        };
        decode::<Response>(&payload).map_err(|e| (true, e))
    }
}

impl Client {
    fn connect(&self) -> KvResult<Conn> {
        Conn::open(&self.path, self.timeout).map_err(|e| self.lost_error(&e))
    }

    fn take_conn(&self) -> KvResult<Conn> {
        loop {
            let idle = lock(&self.pool).pop();
            match idle {
                // Closed by the server's idle timeout: open another.
                Some(c) if super::protocol::closed_by_peer(&c.stream) => {}
                Some(c) => return Ok(c),
                None => return self.connect(),
            }
        }
    }

    fn give_back(&self, conn: Conn) {
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        let mut pool = lock(&self.pool);
        if pool.len() < MAX_IDLE_CONNECTIONS {
            pool.push(conn);
        }
    }

    /// Marks the server gone and closes the idle connections.
    fn mark_lost(&self) {
        self.lost.store(true, Ordering::SeqCst);
        lock(&self.pool).clear();
    }

    /// The error for a failed exchange or connect; marks the server gone.
    fn lost_error(&self, e: &io::Error) -> KvError {
        self.mark_lost();
        let error = transport_error(&self.path, self.timeout, e);
        if !self.failover {
            return error;
        }
        KvError::new(
            LOST_CONNECTION,
            format!(
                "{}; nothing of the transaction was applied: retry it (this process \
                 reconnects to the store's new owner or takes the store over)",
                error.message
            ),
        )
    }
}

impl RemoteKv {
    /// Connects to the store server listening on `socket` (checking that it
    /// answers and speaks this protocol).
    pub fn connect(socket: impl AsRef<Path>) -> KvResult<Arc<RemoteKv>> {
        Self::connect_with_timeout(socket.as_ref(), REQUEST_TIMEOUT)
    }

    /// [`RemoteKv::connect`] with another per-request timeout.
    pub fn connect_with_timeout(socket: &Path, timeout: Duration) -> KvResult<Arc<RemoteKv>> {
        Self::connect_with_handshake(socket, timeout, timeout, false)
    }

    /// Connects, waiting at most `handshake` for the server's greeting.
    /// `failover`: lost connections are reported as retryable
    /// ([`LOST_CONNECTION`]), for a caller that then reconnects.
    pub(crate) fn connect_with_handshake(
        socket: &Path,
        handshake: Duration,
        timeout: Duration,
        failover: bool,
    ) -> KvResult<Arc<RemoteKv>> {
        let path = socket.to_path_buf();
        let mut conn =
            Conn::open(&path, handshake).map_err(|e| transport_error(&path, handshake, &e))?;
        let hello = Request {
            discard: Vec::new(),
            txn: 0,
            ops: Vec::new(),
            call: Call::Hello {
                version: PROTOCOL_VERSION,
            },
            want_read_version: false,
        };
        let backend = match conn.exchange(&hello) {
            Ok(Ok(Reply::Hello { backend, .. })) => backend,
            Ok(Ok(other)) => {
                return Err(KvError::new(
                    KvError::OPERATION_FAILED,
                    format!(
                        "{} is not a store socket (answered {other:?})",
                        path.display()
                    ),
                ))
            }
            Ok(Err(e)) => return Err(e.into()),
            Err((_, e)) => return Err(transport_error(&path, handshake, &e)),
        };
        let timeouts = conn
            .stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| conn.stream.set_write_timeout(Some(timeout)));
        if let Err(e) = timeouts {
            return Err(transport_error(&path, timeout, &e));
        }
        debug!(socket = %path.display(), backend = %backend, "kv remote connected");
        Ok(Arc::new(RemoteKv {
            client: Arc::new(Client {
                path,
                timeout,
                server_backend: backend,
                pool: Mutex::new(vec![conn]),
                next_txn: AtomicU64::new(1),
                counters: Counters::default(),
                failover,
                lost: AtomicBool::new(false),
                pid: process::pid(),
            }),
        }))
    }

    /// The socket this client talks to.
    pub fn socket_path(&self) -> &Path {
        &self.client.path
    }

    /// The backend name of the store behind the server ("embedded", ...).
    pub fn server_backend(&self) -> &str {
        &self.client.server_backend
    }

    /// Whether a request failed on the transport (the server is presumed
    /// gone; a timeout counts too).
    pub fn is_lost(&self) -> bool {
        self.client.lost.load(Ordering::SeqCst)
    }

    /// Presumes the server gone (its process was seen to exit) and closes
    /// the idle connections; transactions already open keep theirs.
    pub(crate) fn mark_lost(&self) {
        self.client.mark_lost();
    }
}

impl Kv for RemoteKv {
    fn begin(&self) -> KvResult<Box<dyn KvTxn>> {
        if self.client.pid != process::pid() {
            let what = format!(
                "the connection to the store server at {}",
                self.client.path.display()
            );
            return Err(process::opened_before_fork(&what, self.client.pid));
        }
        let id = self.client.next_txn.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(RemoteTxn::new(self.client.clone(), id)))
    }

    fn metrics(&self) -> KvMetrics {
        self.client.counters.snapshot()
    }

    fn backend_name(&self) -> &'static str {
        "remote"
    }
}

/// What the transaction's own writes say about a key, mirrored from the
/// embedded backend's write buffer (without computing atomic results).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Local {
    /// Set or cleared: the value is known here.
    Value(Option<Vec<u8>>),
    /// Known to the transaction without the store (an atomic op on a known
    /// value), but computed by the server: ask it, no round trip counted.
    Derived,
    /// Atomic ops over the store's value: a read reaches the store.
    Ops,
    /// Written with a versionstamped value: the server reports 1036.
    Unreadable,
}

/// Where a point read is answered.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Here, from the transaction's writes.
    Here(Option<Vec<u8>>),
    /// By the server's copy of the transaction, without reaching the store.
    Server,
    /// By the store: one round trip and a read-conflict range.
    Store,
}

/// The client's mirror of the transaction's writes.
#[derive(Debug, Default)]
struct Overlay(KeyOverlay<Local>);

impl Overlay {
    fn answer(&self, key: &[u8]) -> Answer {
        match self.0.get(key) {
            Seen::Written(Local::Value(v)) => Answer::Here(v.clone()),
            Seen::Written(Local::Derived | Local::Unreadable) => Answer::Server,
            Seen::Written(Local::Ops) => Answer::Store,
            Seen::Cleared => Answer::Here(None),
            Seen::Untouched => Answer::Store,
        }
    }

    fn atomic_op(&mut self, key: &[u8], op: MutationType) {
        match op {
            MutationType::SetVersionstampedKey => {}
            MutationType::SetVersionstampedValue => {
                self.0.insert(key, Local::Unreadable);
            }
            _ => {
                let next = match self.0.take(key) {
                    Seen::Written(Local::Value(_) | Local::Derived) | Seen::Cleared => {
                        Local::Derived
                    }
                    Seen::Written(Local::Ops) | Seen::Untouched => Local::Ops,
                    Seen::Written(Local::Unreadable) => Local::Unreadable,
                };
                self.0.insert(key, next);
            }
        }
    }
}

/// The conflict bytes of the range a range read covered.
fn covered_size(opt: &RangeOption, r: &RangeResult) -> usize {
    let (begin, end) = covered_range(opt, r);
    range_size(&begin, &end)
}

fn unexpected(reply: &Reply) -> KvError {
    KvError::new(
        KvError::INTERNAL_ERROR,
        format!("unexpected answer from the store server: {reply:?}"),
    )
}

/// A transaction of a [`RemoteKv`].
struct RemoteTxn {
    client: Arc<Client>,
    id: u64,
    conn: Option<Conn>,
    /// The server has begun this transaction (on `conn`).
    on_server: bool,
    /// Set after a lost connection: the server's copy is gone.
    dead: Option<KvError>,
    /// Mutations and options not yet shipped.
    ops: Vec<Op>,
    read_version: Option<Version>,
    /// The read version was fetched or validated by a read.
    read_version_ok: bool,
    /// The server fetched a read version whose value this side missed.
    read_version_unknown: bool,
    overlay: Overlay,
    has_mutations: bool,
    has_write_conflicts: bool,
    has_read_conflicts: bool,
    size: usize,
    written: u64,
}

/// Whether a read that failed with `code` got as far as counting a round
/// trip in the embedded backend (read-version checks come first).
fn read_counted(code: i32, had_version: bool) -> bool {
    !(had_version && matches!(code, KvError::TRANSACTION_TOO_OLD | KvError::FUTURE_VERSION))
}

impl RemoteTxn {
    fn new(client: Arc<Client>, id: u64) -> Self {
        RemoteTxn {
            client,
            id,
            conn: None,
            on_server: false,
            dead: None,
            ops: Vec::new(),
            read_version: None,
            read_version_ok: false,
            read_version_unknown: false,
            overlay: Overlay::default(),
            has_mutations: false,
            has_write_conflicts: false,
            has_read_conflicts: false,
            size: 0,
            written: 0,
        }
    }

    fn counters(&self) -> &Counters {
        &self.client.counters
    }

    /// One request/response for this transaction.
    fn exchange(&mut self, call: Call, want_read_version: bool) -> Result<Reply, Failure> {
        if let Some(e) = &self.dead {
            return Err(Failure::Transport {
                sent: false,
                error: e.clone(),
            });
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self
                .client
                .take_conn()
                .map_err(|error| Failure::Transport { sent: false, error })?,
        };
        let name = call.name();
        let req = Request {
            discard: std::mem::take(&mut conn.discards),
            txn: self.id,
            ops: std::mem::take(&mut self.ops),
            call,
            want_read_version,
        };
        let ops = req.ops.len();
        let result = conn.exchange(&req);
        debug!(
            txn = self.id,
            call = name,
            ops,
            ok = matches!(result, Ok(Ok(_))),
            "kv remote request"
        );
        match result {
            Ok(response) => {
                self.on_server = true;
                self.conn = Some(conn);
                response.map_err(|e| Failure::Store(e.into()))
            }
            Err((sent, e)) => {
                if let Some(error) = super::protocol::frame_too_large(&e) {
                    // Not sent, the server is fine: the ops are too big.
                    self.dead = Some(error.clone());
                    return Err(Failure::Transport { sent, error });
                }
                let error = self.client.lost_error(&e);
                if self.on_server || sent {
                    self.dead = Some(error.clone());
                }
                Err(Failure::Transport { sent, error })
            }
        }
    }

    /// Counts a read round trip's read version (GRV if none yet).
    fn count_read_version(&mut self) {
        if self.read_version.is_none() && !self.read_version_unknown {
            self.client.counters.read_version();
            self.read_version_unknown = true;
        }
    }

    /// Accounting after a read that reached the store.
    fn read_done(&mut self, rv: Option<Version>, value_bytes: usize) {
        self.count_read_version();
        if let Some(v) = rv {
            self.read_version = Some(v);
            self.read_version_unknown = false;
        }
        self.read_version_ok = true;
        self.counters().read();
        self.counters().bytes_read(value_bytes as u64);
    }

    /// Accounting after a read that was meant to reach the store but failed.
    fn read_failed(&mut self, failure: Failure) -> KvError {
        match failure {
            Failure::Store(e) => {
                let had = self.read_version.is_some();
                if !had {
                    self.count_read_version();
                }
                if read_counted(e.code, had) {
                    self.read_version_ok = true;
                    self.counters().read();
                }
                e
            }
            Failure::Transport { error, .. } => error,
        }
    }

    fn add_read_conflict(&mut self, bytes: usize) {
        self.size += bytes;
        self.has_read_conflicts = true;
    }

    fn count_write(&mut self, key: &[u8], param_len: usize) {
        self.size += mutation_size(key, param_len);
        self.has_mutations = true;
    }

    /// A read-only commit: nothing to send, nothing can conflict (FDB).
    fn commit_read_only(&mut self) -> KvResult<CommitInfo> {
        if self.size > MAX_TRANSACTION_SIZE {
            return Err(KvError::new(
                KvError::TRANSACTION_TOO_LARGE,
                format!(
                    "transaction is {} bytes (limit {MAX_TRANSACTION_SIZE})",
                    self.size
                ),
            ));
        }
        let version = self.read_only_version()?;
        Ok(CommitInfo {
            version,
            versionstamp: None,
        })
    }

    /// The read version to return for a read-only commit.
    fn read_only_version(&mut self) -> KvResult<Version> {
        match self.read_version {
            Some(v) => Ok(v),
            None if !self.read_version_unknown => Ok(Version::ZERO),
            None => match self.exchange(Call::ReadVersion, false) {
                Ok(Reply::Version(v)) => Ok(v),
                Ok(other) => Err(unexpected(&other)),
                Err(f) => Err(f.into_error()),
            },
        }
    }
}

impl KvTxn for RemoteTxn {
    fn read_version(&mut self) -> KvResult<Version> {
        if let Some(v) = self.read_version {
            return Ok(v);
        }
        let counted = !self.read_version_unknown;
        match self.exchange(Call::ReadVersion, false) {
            Ok(Reply::Version(v)) => {
                if counted {
                    self.counters().read_version();
                }
                self.read_version = Some(v);
                self.read_version_ok = true;
                self.read_version_unknown = false;
                Ok(v)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(f) => Err(f.into_error()),
        }
    }

    fn set_read_version(&mut self, version: Version) {
        self.read_version = Some(version);
        self.read_version_ok = false;
        self.read_version_unknown = false;
        self.ops.push(Op::SetReadVersion(version));
    }

    fn get(&mut self, key: &[u8], snapshot: bool) -> KvResult<Option<Vec<u8>>> {
        check_read_key(key)?;
        let call = Call::Get {
            key: key.to_vec(),
            snapshot,
        };
        match self.overlay.answer(key) {
            Answer::Here(v) => Ok(v),
            Answer::Server => match self.exchange(call, false) {
                Ok(Reply::Value { value, .. }) => Ok(value),
                Ok(other) => Err(unexpected(&other)),
                Err(f) => Err(f.into_error()),
            },
            Answer::Store => {
                let want = self.read_version.is_none();
                match self.exchange(call, want) {
                    Ok(Reply::Value {
                        value,
                        read_version,
                    }) => {
                        self.read_done(read_version, value.as_ref().map_or(0, Vec::len));
                        if !snapshot {
                            self.add_read_conflict(point_size(key));
                        }
                        Ok(value)
                    }
                    Ok(other) => Err(unexpected(&other)),
                    Err(f) => Err(self.read_failed(f)),
                }
            }
        }
    }

    fn get_range(&mut self, range: &RangeOption, snapshot: bool) -> KvResult<RangeResult> {
        if range.begin >= range.end {
            return Ok(RangeResult::default());
        }
        let want = self.read_version.is_none();
        let call = Call::GetRange {
            range: WireRange::from(range),
            snapshot,
        };
        match self.exchange(call, want) {
            Ok(Reply::Range {
                result,
                read_version,
            }) => {
                let result = RangeResult::from(result);
                self.read_done(read_version, value_bytes(&result));
                if !snapshot {
                    self.add_read_conflict(covered_size(range, &result));
                }
                Ok(result)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(f) => Err(self.read_failed(f)),
        }
    }

    fn get_batch(&mut self, requests: &[ReadRequest], snapshot: bool) -> KvResult<Vec<ReadResult>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        check_batch_keys(requests)?;
        let want = self.read_version.is_none();
        let call = Call::GetBatch {
            requests: requests.iter().map(WireRead::from).collect(),
            snapshot,
        };
        let results = match self.exchange(call, want) {
            Ok(Reply::Batch {
                results,
                read_version,
            }) => {
                let results: Vec<ReadResult> = results.into_iter().map(Into::into).collect();
                if results.len() != requests.len() {
                    return Err(KvError::new(
                        KvError::INTERNAL_ERROR,
                        format!(
                            "store server answered {} reads of a batch of {}",
                            results.len(),
                            requests.len()
                        ),
                    ));
                }
                let bytes = results
                    .iter()
                    .map(|r| match r {
                        ReadResult::Value(v) => v.as_ref().map_or(0, Vec::len),
                        ReadResult::Range(r) => value_bytes(r),
                    })
                    .sum();
                self.read_done(read_version, bytes);
                results
            }
            Ok(other) => return Err(unexpected(&other)),
            Err(f) => return Err(self.read_failed(f)),
        };
        if !snapshot {
            for (req, res) in requests.iter().zip(&results) {
                match (req, res) {
                    (ReadRequest::Get(key), _) if self.overlay.answer(key) == Answer::Store => {
                        self.add_read_conflict(point_size(key));
                    }
                    (ReadRequest::Range(opt), ReadResult::Range(r)) if opt.begin < opt.end => {
                        self.add_read_conflict(covered_size(opt, r));
                    }
                    _ => {}
                }
            }
        }
        Ok(results)
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        self.count_write(key, value.len());
        self.written += (key.len() + value.len()) as u64;
        self.overlay
            .0
            .insert(key, Local::Value(Some(value.to_vec())));
        self.ops.push(Op::Set(key.to_vec(), value.to_vec()));
    }

    fn clear(&mut self, key: &[u8]) {
        self.count_write(key, 0);
        self.written += key.len() as u64;
        self.overlay.0.insert(key, Local::Value(None));
        self.ops.push(Op::Clear(key.to_vec()));
    }

    fn clear_range(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        self.size += clear_range_size(begin, end);
        self.has_mutations = true;
        self.written += (begin.len() + end.len()) as u64;
        self.overlay.0.clear_range(begin, end);
        self.ops.push(Op::ClearRange(begin.to_vec(), end.to_vec()));
    }

    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: MutationType) {
        self.count_write(key, param.len());
        self.written += match op {
            MutationType::SetVersionstampedKey => key.len().saturating_sub(4) + param.len(),
            MutationType::SetVersionstampedValue => key.len() + param.len().saturating_sub(4),
            _ => key.len() + param.len(),
        } as u64;
        self.overlay.atomic_op(key, op);
        self.ops.push(Op::Atomic(key.to_vec(), param.to_vec(), op));
    }

    fn add_conflict_range(&mut self, begin: &[u8], end: &[u8], kind: ConflictKind) {
        if begin >= end {
            return;
        }
        match kind {
            ConflictKind::Read => self.add_read_conflict(range_size(begin, end)),
            ConflictKind::Write => {
                self.size += range_size(begin, end);
                self.has_write_conflicts = true;
            }
        }
        self.ops.push(Op::conflict(begin, end, kind));
    }

    fn approximate_size(&self) -> usize {
        self.size
    }

    fn commit(mut self: Box<Self>) -> KvResult<CommitInfo> {
        if !self.has_mutations && !self.has_write_conflicts {
            return self.commit_read_only();
        }
        let grv =
            self.read_version.is_none() && !self.read_version_unknown && self.has_read_conflicts;
        let unvalidated = self.read_version.is_some() && !self.read_version_ok;
        let result = self.exchange(Call::Commit, false);
        // The server forgot the transaction whatever happened.
        self.on_server = false;
        let counters = &self.client.counters;
        match result {
            Ok(Reply::Committed {
                version,
                versionstamp,
            }) => {
                if grv {
                    counters.read_version();
                }
                counters.commit();
                counters.committed(self.size as u64, self.written);
                Ok(commit_info(version, versionstamp))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(Failure::Store(e)) => {
                let before_round_trip = e.is_size_limit()
                    || e.code == KvError::CLIENT_INVALID_OPERATION
                    || (unvalidated
                        && self.has_read_conflicts
                        && matches!(
                            e.code,
                            KvError::TRANSACTION_TOO_OLD | KvError::FUTURE_VERSION
                        ));
                if !before_round_trip {
                    if grv {
                        counters.read_version();
                    }
                    counters.commit();
                    if e.is_conflict() {
                        counters.conflict();
                    }
                    if e.code == KvError::COMMIT_UNKNOWN_RESULT {
                        counters.unknown_result();
                    }
                }
                Err(e)
            }
            Err(Failure::Transport { sent: false, error }) => Err(error),
            Err(Failure::Transport { sent: true, error }) => {
                // The server may have committed before the connection went:
                // exactly FDB's commit_unknown_result.
                counters.commit();
                counters.unknown_result();
                Err(KvError::new(
                    KvError::COMMIT_UNKNOWN_RESULT,
                    format!(
                        "the commit may or may not have been applied: {}",
                        error.message
                    ),
                ))
            }
        }
    }
}

impl Drop for RemoteTxn {
    fn drop(&mut self) {
        if self.client.pid != process::pid() {
            // Inherited across fork(): the connection is the parent's.
            process::leak(self.conn.take());
            return;
        }
        if let Some(mut conn) = self.conn.take() {
            if self.on_server {
                conn.discards.push(self.id);
            }
            self.client.give_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A server that greets, then handles one more request by `then`.
    fn fake_server(then: fn(UnixStream)) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            read_frame(&mut s).unwrap().unwrap();
            let hello: Response = Ok(Reply::Hello {
                version: PROTOCOL_VERSION,
                backend: "fake".into(),
            });
            write_frame(&mut s, &encode(&hello).unwrap()).unwrap();
            read_frame(&mut s).unwrap().unwrap();
            then(s);
        });
        (dir, path)
    }

    #[test]
    fn commit_without_an_answer_is_unknown_result() {
        let (_dir, path) = fake_server(drop);
        let kv = RemoteKv::connect(&path).unwrap();
        assert_eq!(kv.server_backend(), "fake");
        let mut t = kv.begin().unwrap();
        t.set(b"k", b"v");
        let err = t.commit().unwrap_err();
        assert_eq!(err.code, KvError::COMMIT_UNKNOWN_RESULT, "{err}");
        assert!(err.message.contains("fake.sock"), "{err}");
        assert_eq!(kv.metrics().unknown_results, 1);
    }

    #[test]
    fn silent_server_times_out() {
        let (_dir, path) = fake_server(|s| {
            std::thread::sleep(Duration::from_secs(5));
            drop(s);
        });
        let kv = RemoteKv::connect_with_timeout(&path, Duration::from_millis(200)).unwrap();
        let mut t = kv.begin().unwrap();
        let err = t.get(b"k", false).unwrap_err();
        assert_eq!(err.code, KvError::IO_ERROR, "{err}");
        assert!(err.message.contains("no answer"), "{err}");
        // The transaction is dead from now on, without waiting again.
        let err = t.get(b"k", false).unwrap_err();
        assert_eq!(err.code, KvError::IO_ERROR, "{err}");
    }

    #[test]
    fn overlay_mirrors_the_write_buffer() {
        let mut o = Overlay::default();
        o.0.insert(b"a", Local::Value(Some(b"1".to_vec())));
        o.0.clear_range(b"a", b"c");
        assert_eq!(o.answer(b"a"), Answer::Here(None));
        assert_eq!(o.answer(b"b"), Answer::Here(None));
        assert_eq!(o.answer(b"c"), Answer::Store);
        o.atomic_op(b"b", MutationType::Add);
        assert_eq!(o.answer(b"b"), Answer::Server);
        o.atomic_op(b"x", MutationType::Add);
        assert_eq!(o.answer(b"x"), Answer::Store);
        o.atomic_op(b"v", MutationType::SetVersionstampedValue);
        assert_eq!(o.answer(b"v"), Answer::Server);
        o.atomic_op(b"k", MutationType::SetVersionstampedKey);
        assert_eq!(o.answer(b"k"), Answer::Store);
    }
}
