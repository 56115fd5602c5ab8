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

use std::io::{self, Read};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::kv::{
    CommitInfo, ConflictKind, KeyValue, KvError, MutationType, RangeOption, RangeResult,
    ReadRequest, ReadResult, Version, Versionstamp,
};

/// Bumped whenever a frame's encoding changes.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Largest frame accepted (a 10 MB transaction with its keys twice, and
/// room to spare; a bigger one is a corrupt or hostile length prefix).
pub(crate) const MAX_FRAME: usize = 256 << 20;

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

/// Encodes `msg` into a frame (length prefix included).
pub(crate) fn encode<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    let mut buf = postcard::to_extend(msg, std::mem::take(&mut buf))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("encode: {e}")))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    let prefix = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
    buf[..4].copy_from_slice(&prefix.to_le_bytes());
    Ok(buf)
}

/// Reads one frame's payload; `Ok(None)` at a clean end of stream (the
/// peer closed the connection between frames).
pub(crate) fn read_frame(stream: &mut UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match stream.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok(Some(payload))
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
                Op::SetReadVersion(42),
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
