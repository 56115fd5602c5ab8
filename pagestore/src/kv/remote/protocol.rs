//! The wire protocol of shared mode: length-prefixed postcard frames over a
//! Unix stream socket.
//!
//! Every frame is a little-endian `u32` byte count followed by that many
//! bytes of a postcard-encoded [`Request`] (client to server) or
//! [`Response`] (server to client). The exchange is strictly one request,
//! one response, in order, on a connection that one transaction holds at a
//! time.
//!
//! A request names its transaction, carries the mutations buffered since the
//! previous request ([`Op`], applied in order before the call) and one
//! [`Call`]. The server keeps the transaction itself (`txn id -> KvTxn` per
//! connection), so the store's own rules (MVCC at the read version,
//! read-your-writes, conflict ranges, limits) apply unchanged.
//!
//! # Untrusted lengths
//!
//! A length prefix is never trusted: a frame over its direction's cap
//! ([`MAX_REQUEST_FRAME`], [`MAX_RESPONSE_FRAME`]; see `limits.rs` for how
//! they are sized) is refused without reading it, and a frame's buffer
//! grows with the bytes that actually arrive, so a peer that announces
//! 256 MiB and sends nothing costs nothing. The server also bounds how long
//! a frame may take ([`read_frame_within`]).
//!
//! # Peers
//!
//! Both ends check the other's uid ([`check_peer`], `SO_PEERCRED`): the
//! server serves only its own uid, a client uses only a server of its own
//! uid (a socket planted by someone else is refused).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use crate::kv::{
    CommitInfo, ConflictKind, KeyValue, KvError, MutationType, RangeOption, RangeResult,
    ReadRequest, ReadResult, Version, Versionstamp,
};

/// Bumped whenever a frame's encoding changes.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// A mutation or transaction option buffered by the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Op {
    /// `set_read_version`.
    SetReadVersion(Version),
    /// `set`.
    Set(
        #[serde(with = "serde_bytes")] Vec<u8>,
        #[serde(with = "serde_bytes")] Vec<u8>,
    ),
    /// `clear`.
    Clear(#[serde(with = "serde_bytes")] Vec<u8>),
    /// `clear_range`.
    ClearRange(
        #[serde(with = "serde_bytes")] Vec<u8>,
        #[serde(with = "serde_bytes")] Vec<u8>,
    ),
    /// `atomic_op`.
    Atomic(
        #[serde(with = "serde_bytes")] Vec<u8>,
        #[serde(with = "serde_bytes")] Vec<u8>,
        MutationType,
    ),
    /// `add_conflict_range`; `true` for a write-conflict range.
    Conflict(
        #[serde(with = "serde_bytes")] Vec<u8>,
        #[serde(with = "serde_bytes")] Vec<u8>,
        bool,
    ),
}

impl Op {
    /// The conflict-range op for `kind`.
    pub(crate) fn conflict(begin: &[u8], end: &[u8], kind: ConflictKind) -> Op {
        Op::Conflict(begin.to_vec(), end.to_vec(), kind == ConflictKind::Write)
    }
}

/// [`RangeOption`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireRange {
    #[serde(with = "serde_bytes")]
    pub(crate) begin: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) end: Vec<u8>,
    pub(crate) limit: u64,
    pub(crate) reverse: bool,
}

impl From<&RangeOption> for WireRange {
    fn from(r: &RangeOption) -> Self {
        WireRange {
            begin: r.begin.clone(),
            end: r.end.clone(),
            limit: r.limit as u64,
            reverse: r.reverse,
        }
    }
}

impl From<WireRange> for RangeOption {
    fn from(r: WireRange) -> Self {
        RangeOption {
            begin: r.begin,
            end: r.end,
            limit: usize::try_from(r.limit).unwrap_or(usize::MAX),
            reverse: r.reverse,
        }
    }
}

/// [`ReadRequest`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireRead {
    Get(#[serde(with = "serde_bytes")] Vec<u8>),
    Range(WireRange),
}

impl From<&ReadRequest> for WireRead {
    fn from(r: &ReadRequest) -> Self {
        match r {
            ReadRequest::Get(k) => WireRead::Get(k.clone()),
            ReadRequest::Range(r) => WireRead::Range(r.into()),
        }
    }
}

impl From<WireRead> for ReadRequest {
    fn from(r: WireRead) -> Self {
        match r {
            WireRead::Get(k) => ReadRequest::Get(k),
            WireRead::Range(r) => ReadRequest::Range(r.into()),
        }
    }
}

/// One row on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireKv {
    #[serde(with = "serde_bytes")]
    pub(crate) key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub(crate) value: Vec<u8>,
}

/// [`RangeResult`] on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireRangeResult {
    pub(crate) kvs: Vec<WireKv>,
    pub(crate) more: bool,
}

impl From<RangeResult> for WireRangeResult {
    fn from(r: RangeResult) -> Self {
        WireRangeResult {
            kvs: r
                .kvs
                .into_iter()
                .map(|kv| WireKv {
                    key: kv.key,
                    value: kv.value,
                })
                .collect(),
            more: r.more,
        }
    }
}

impl From<WireRangeResult> for RangeResult {
    fn from(r: WireRangeResult) -> Self {
        RangeResult {
            kvs: r
                .kvs
                .into_iter()
                .map(|kv| KeyValue {
                    key: kv.key,
                    value: kv.value,
                })
                .collect(),
            more: r.more,
        }
    }
}

/// [`ReadResult`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireReadResult {
    Value(#[serde(with = "serde_bytes")] Option<Vec<u8>>),
    Range(WireRangeResult),
}

impl From<ReadResult> for WireReadResult {
    fn from(r: ReadResult) -> Self {
        match r {
            ReadResult::Value(v) => WireReadResult::Value(v),
            ReadResult::Range(r) => WireReadResult::Range(r.into()),
        }
    }
}

impl From<WireReadResult> for ReadResult {
    fn from(r: WireReadResult) -> Self {
        match r {
            WireReadResult::Value(v) => ReadResult::Value(v),
            WireReadResult::Range(r) => ReadResult::Range(r.into()),
        }
    }
}

/// What a request asks of its transaction after applying its ops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Call {
    /// Handshake when a connection opens (no transaction involved).
    Hello { version: u32 },
    /// `read_version`.
    ReadVersion,
    /// `get`.
    Get {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        snapshot: bool,
    },
    /// `get_range`.
    GetRange { range: WireRange, snapshot: bool },
    /// `get_batch`.
    GetBatch {
        requests: Vec<WireRead>,
        snapshot: bool,
    },
    /// `commit`; the server forgets the transaction whatever the outcome.
    Commit,
}

impl Call {
    /// A short name for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Call::Hello { .. } => "hello",
            Call::ReadVersion => "read_version",
            Call::Get { .. } => "get",
            Call::GetRange { .. } => "get_range",
            Call::GetBatch { .. } => "get_batch",
            Call::Commit => "commit",
        }
    }
}

/// One request frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    /// Transactions of this connection the client dropped: forget them first.
    pub(crate) discard: Vec<u64>,
    /// The transaction (unique per connection; begun on first sight).
    pub(crate) txn: u64,
    /// Buffered mutations and options, applied in order before `call`.
    pub(crate) ops: Vec<Op>,
    /// The call.
    pub(crate) call: Call,
    /// Return the transaction's read version after a successful read (the
    /// client asks only when the read itself established it, so asking
    /// never costs the store a round trip).
    pub(crate) want_read_version: bool,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Answer to [`Call::Hello`].
    Hello { version: u32, backend: String },
    /// Answer to [`Call::ReadVersion`].
    Version(Version),
    /// Answer to [`Call::Get`].
    Value {
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        read_version: Option<Version>,
    },
    /// Answer to [`Call::GetRange`].
    Range {
        result: WireRangeResult,
        read_version: Option<Version>,
    },
    /// Answer to [`Call::GetBatch`].
    Batch {
        results: Vec<WireReadResult>,
        read_version: Option<Version>,
    },
    /// Answer to [`Call::Commit`].
    Committed {
        version: Version,
        versionstamp: Option<[u8; 10]>,
    },
}

impl Reply {
    pub(crate) fn committed(info: CommitInfo) -> Reply {
        Reply::Committed {
            version: info.version,
            versionstamp: info.versionstamp.map(|v| v.0),
        }
    }
}

/// A [`KvError`] on the wire: the code (from which the name follows) and
/// the message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireError {
    pub(crate) code: i32,
    pub(crate) message: String,
}

impl From<KvError> for WireError {
    fn from(e: KvError) -> Self {
        WireError {
            code: e.code,
            message: e.message,
        }
    }
}

impl From<WireError> for KvError {
    fn from(e: WireError) -> Self {
        KvError::new(e.code, e.message)
    }
}

/// One response frame.
pub(crate) type Response = Result<Reply, WireError>;

/// The versionstamp of a [`Reply::Committed`].
pub(crate) fn commit_info(version: Version, versionstamp: Option<[u8; 10]>) -> CommitInfo {
    CommitInfo {
        version,
        versionstamp: versionstamp.map(Versionstamp),
    }
}

/// A message type and the cap on its frames.
pub(crate) trait Framed: Serialize {
    /// Largest payload of one frame of this type.
    const MAX: usize;
}

impl Framed for Request {
    const MAX: usize = MAX_REQUEST_FRAME;
}

impl Framed for Response {
    const MAX: usize = MAX_RESPONSE_FRAME;
}

/// A frame over its cap (the message inside the `io::Error`).
#[derive(Debug)]
struct FrameTooLarge {
    len: usize,
    max: usize,
}

impl std::fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frame of {} bytes exceeds the {}-byte limit of the store socket",
            self.len, self.max
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// The error to report when `e` is [`encode`] refusing an oversize frame:
/// nothing was sent and the connection is fine, the transaction's buffered
/// mutations are too large to ship (2101, as the commit would fail).
pub(crate) fn frame_too_large(e: &io::Error) -> Option<KvError> {
    let big = e.get_ref()?.downcast_ref::<FrameTooLarge>()?;
    Some(KvError::new(
        KvError::TRANSACTION_TOO_LARGE,
        format!(
            "the transaction's buffered mutations and request take {} bytes on the wire, \
             over the store socket's {}-byte limit (a transaction is limited to {} bytes)",
            big.len,
            big.max,
            crate::kv::limits::MAX_TRANSACTION_SIZE
        ),
    ))
}

/// Encodes `msg` into a frame (length prefix included), refusing one over
/// its type's cap.
pub(crate) fn encode<T: Framed>(msg: &T) -> io::Result<Vec<u8>> {
    encode_capped(msg, T::MAX)
}

/// [`encode`] with another cap (a server's configured limit).
pub(crate) fn encode_capped<T: Serialize>(msg: &T, max: usize) -> io::Result<Vec<u8>> {
    let buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(msg, buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("encode: {e}")))?;
    let len = buf.len() - 4;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= max)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, FrameTooLarge { len, max }))?;
    buf[..4].copy_from_slice(&prefix.to_le_bytes());
    Ok(buf)
}

/// Reads one response frame's payload (a client, with the stream's own
/// timeouts); `Ok(None)` at a clean end of stream (the peer closed the
/// connection between frames).
pub(crate) fn read_frame(stream: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    match read_frame_within(stream, MAX_RESPONSE_FRAME, None)? {
        Incoming::Frame(p) => Ok(Some(p)),
        Incoming::Closed => Ok(None),
        Incoming::TooLarge(len) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameTooLarge {
                len,
                max: MAX_RESPONSE_FRAME,
            },
        )),
    }
}

/// What [`read_frame_within`] read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A whole frame's payload.
    Frame(Vec<u8>),
    /// The peer closed the connection between frames.
    Closed,
    /// A length prefix over the cap; the payload was not read.
    TooLarge(usize),
}

/// How long a server waits for frames.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadlines {
    /// For the first byte of the next frame (`None`: as long as it takes).
    pub(crate) idle: Option<Duration>,
    /// For the rest of a frame once its first byte arrived.
    pub(crate) frame: Duration,
}

/// Reads one frame of at most `max` bytes, growing its buffer only as
/// bytes arrive. With `deadlines`, waits at most `idle` for the frame to
/// start and `frame` for the whole of it (an `io::ErrorKind::TimedOut`
/// error); without, the stream's own timeouts apply.
pub(crate) fn read_frame_within(
    stream: &mut UnixStream,
    max: usize,
    deadlines: Option<Deadlines>,
) -> io::Result<Incoming> {
    if let Some(d) = deadlines {
        stream.set_read_timeout(d.idle)?;
    }
    let mut deadline: Option<Instant> = None;
    // Before every read once the frame started: the time left.
    let mut arm = |stream: &mut UnixStream, started: bool| -> io::Result<()> {
        let Some(d) = deadlines else { return Ok(()) };
        if !started {
            return Ok(());
        }
        let end = *deadline.get_or_insert_with(|| Instant::now() + d.frame);
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("frame not complete within {} s", d.frame.as_secs_f64()),
            ));
        }
        stream.set_read_timeout(Some(left))
    };
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        arm(stream, got > 0)?;
        match stream.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(Incoming::Closed),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return Ok(Incoming::TooLarge(len));
    }
    /// Bytes added to the buffer per read at most.
    const CHUNK: usize = 64 << 10;
    let mut payload: Vec<u8> = Vec::new();
    while payload.len() < len {
        arm(stream, true)?;
        let have = payload.len();
        let want = (len - have).min(CHUNK);
        payload.resize(have + want, 0);
        match stream.read(&mut payload[have..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => payload.truncate(have + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => payload.truncate(have),
            Err(e) => return Err(e),
        }
    }
    Ok(Incoming::Frame(payload))
}

/// The uid of the process at the other end of `stream`.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: passes a pointer to a live ucred and its exact size; the
    // descriptor belongs to `stream`, which outlives the call.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// The uid of the process at the other end of `stream`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: passes pointers to live locals; the descriptor belongs to
    // `stream`, which outlives the call.
    let r = unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// Checks that the process at the other end of `stream` runs as this
/// process's effective uid; a `PermissionDenied` error saying so otherwise.
/// `socket` and `peer` ("client", "server") are for the message.
pub(crate) fn check_peer(stream: &UnixStream, socket: &Path, peer: &str) -> io::Result<()> {
    let me = crate::kv::embedded::access::euid();
    let uid = peer_uid(stream)?;
    if uid == me {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the {peer} on store socket {} runs as uid {uid}, not as this process's uid {me}: \
             a store is shared only between processes of the user who owns it",
            socket.display()
        ),
    ))
}

/// Whether an idle connection was closed by the server (or has something
/// to read, which an idle connection never has): it must not be reused.
pub(crate) fn closed_by_peer(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd, zero timeout; the descriptor belongs to
    // `stream`.
    let r = unsafe { libc::poll(&mut fd, 1, 0) };
    match r {
        0 => false,
        r if r > 0 => fd.revents != 0,
        // EINTR and the like: assume usable; a real failure shows on use.
        _ => false,
    }
}

/// Decodes a frame's payload.
pub(crate) fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> io::Result<T> {
    postcard::from_bytes(payload)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("decode: {e}")))
}

/// Writes a whole frame without ever raising SIGPIPE in this process (the
/// client may live in a program, such as the sqlite3 shell, that does not
/// ignore it): a peer that went away is an `io::Error` like any other.
pub(crate) fn write_frame(stream: &mut UnixStream, frame: &[u8]) -> io::Result<()> {
    let mut rest = frame;
    while !rest.is_empty() {
        match send_no_sigpipe(stream, rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_no_sigpipe(stream: &mut UnixStream, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buf` is a valid, initialised slice for the duration of the
    // call and the descriptor belongs to `stream`, which outlives it.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_no_sigpipe(stream: &mut UnixStream, buf: &[u8]) -> io::Result<usize> {
    // Elsewhere the socket carries SO_NOSIGPIPE (see `no_sigpipe`).
    io::Write::write(stream, buf)
}

/// Sets SO_NOSIGPIPE where that is how SIGPIPE is suppressed.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "dragonfly"
))]
pub(crate) fn no_sigpipe(stream: &UnixStream) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Nothing to do where `send` takes MSG_NOSIGNAL.
#[cfg(not(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
pub(crate) fn no_sigpipe(_stream: &UnixStream) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let req = Request {
            discard: vec![3],
            txn: 7,
            ops: vec![
                Op::Set(b"k".to_vec(), vec![0u8; 1000]),
                Op::Atomic(b"a".to_vec(), vec![1], MutationType::Add),
                Op::conflict(b"a", b"b", ConflictKind::Write),
                Op::SetReadVersion(Version::new(42)),
            ],
            call: Call::GetBatch {
                requests: vec![
                    WireRead::Get(b"x".to_vec()),
                    WireRead::Range((&RangeOption::new(b"a".to_vec(), b"z".to_vec())).into()),
                ],
                snapshot: true,
            },
            want_read_version: true,
        };
        let frame = encode(&req).unwrap();
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // Byte strings are sent as bytes, not as one varint per byte.
        assert!(frame.len() < 1100, "{}", frame.len());
        let back: Request = decode(&frame[4..]).unwrap();
        assert_eq!(back, req);
        let resp: Response = Err(KvError::new(1020, "conflict").into());
        let frame = encode(&resp).unwrap();
        let back: Response = decode(&frame[4..]).unwrap();
        let err = KvError::from(back.unwrap_err());
        assert_eq!((err.code, err.name), (1020, "not_committed"));
    }
}
