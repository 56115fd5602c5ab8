//! The limits of shared mode's socket server, in one place.
//!
//! A store's server runs inside whatever process opened the store first (a
//! web server, a Python worker, the `sqlite3` shell), so a broken or hostile
//! client must not be able to exhaust its memory, threads or descriptors.
//! Only processes of the store owner's uid can connect at all (see
//! `server.rs`); these limits keep one of them from knocking the server
//! over. Each has a default here; a server started with
//! [`super::RemoteServer::start_with_limits`] takes others
//! ([`ServerLimits`]). Hitting one is an error for that client only:
//!
//! | limit | default | when hit |
//! |---|---|---|
//! | [`MAX_REQUEST_FRAME`] | 21 MiB | 2101 `transaction_too_large`; the client checks before sending, a server that reads such a length prefix answers it and closes the connection |
//! | [`MAX_RESPONSE_FRAME`] | 256 MiB | a read batch that could answer more is refused (2101) before it runs |
//! | [`MAX_CONNECTIONS`] | 1024 | the new connection is answered 1037 `process_behind` (retryable) and closed |
//! | [`MAX_TRANSACTIONS_PER_CONNECTION`] | 64 | 2000 `client_invalid_operation`; the connection is closed |
//! | [`MAX_BUFFERED_BYTES`] | 20 MB | 2101 for that transaction, which fails from then on |
//! | [`FRAME_TIMEOUT`] | 10 s | a frame not complete this long after its first byte: connection dropped |
//! | [`IDLE_TIMEOUT`] | 10 min | a connection silent this long after a request: closed (clients reconnect transparently) |
//! | [`WRITE_TIMEOUT`] | 30 s | an answer the client does not read: connection dropped |
//!
//! A connection that never sent a request is exempt from [`IDLE_TIMEOUT`]:
//! it is a client watching for the owner's exit (it learns of it when the
//! connection closes), and it counts against [`MAX_CONNECTIONS`].

use std::time::Duration;

use crate::kv::limits::{MAX_KEY_SIZE, MAX_TRANSACTION_SIZE, MAX_VALUE_SIZE};

/// Largest request frame (client to server) accepted.
///
/// A request carries the mutations buffered since the transaction's
/// previous request, so the largest legitimate one is the commit of a full
/// transaction: [`MAX_TRANSACTION_SIZE`] (10 MB) of mutations and conflict
/// ranges as FDB counts them. On the wire (postcard) an op costs its bytes
/// plus at most 7: a tag, varint lengths (2 bytes for a key of at most
/// 10 KB, 3 for a value of at most 100 KB) and a mutation type or flag.
/// FDB counts a set, clear or atomic op's key three times (the mutation and
/// its write-conflict range), so for keys of 3 bytes or more those ops cost
/// less on the wire than they count; only explicit conflict ranges and
/// tiny keys cost more, by at most 7 bytes each. Twice the transaction
/// limit plus 1 MiB therefore holds any transaction that can commit, with
/// over a million such small ops to spare. A transaction whose buffered
/// ops would not fit could not commit anyway: the client fails it with
/// 2101 before sending.
pub const MAX_REQUEST_FRAME: usize = 2 * MAX_TRANSACTION_SIZE + (1 << 20);

/// Largest response frame (server to client). Answers are bounded by the
/// reads asked for (the store stops a range read after about 1 MiB, a
/// value is at most 100 KB): the server refuses a batch whose answer could
/// exceed this before running it, and a client never allocates more for
/// an answer, whatever its length prefix says.
pub const MAX_RESPONSE_FRAME: usize = 256 << 20;

/// Connections (one thread each) a server serves at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Transactions open at once on one connection. A client runs one
/// transaction per connection at a time (plus, until its next request,
/// the ones it dropped), so more is a broken client.
pub const MAX_TRANSACTIONS_PER_CONNECTION: usize = 64;

/// Bytes (by FDB's transaction-size rule, which tracks the server's
/// buffers) the open transactions of one connection may hold. A transaction
/// over [`MAX_TRANSACTION_SIZE`] cannot commit: refusing it at twice that
/// changes no outcome and bounds what it makes the server keep.
pub const MAX_BUFFERED_BYTES: usize = 2 * MAX_TRANSACTION_SIZE;

/// How long the rest of a frame may take once its first byte arrived (a
/// client stopped mid-frame is dropped after this).
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection that has sent a request may stay silent before the
/// server closes it (its open transactions, long past FDB's 5 s window,
/// are discarded). Clients check a pooled connection before reusing it and
/// open a new one when the server closed it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How long the server waits for a client to take an answer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a range read answers, key and value bytes (the embedded store
/// stops a range after about 1 MiB and the row that crossed it; see
/// `embedded::txn::RANGE_BYTE_BUDGET`), for bounding a batch's answer.
pub(crate) const MAX_RANGE_ANSWER: usize = (1 << 20) + MAX_KEY_SIZE + MAX_VALUE_SIZE;

/// The most one row answers.
pub(crate) const MAX_ROW: usize = MAX_KEY_SIZE + MAX_VALUE_SIZE;

/// The limits of one server (defaults: the constants of this module).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// [`MAX_REQUEST_FRAME`].
    pub max_request_frame: usize,
    /// [`MAX_RESPONSE_FRAME`].
    pub max_response_frame: usize,
    /// [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// [`MAX_TRANSACTIONS_PER_CONNECTION`].
    pub max_transactions_per_connection: usize,
    /// [`MAX_BUFFERED_BYTES`].
    pub max_buffered_bytes: usize,
    /// [`FRAME_TIMEOUT`].
    pub frame_timeout: Duration,
    /// [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// [`WRITE_TIMEOUT`].
    pub write_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_request_frame: MAX_REQUEST_FRAME,
            max_response_frame: MAX_RESPONSE_FRAME,
            max_connections: MAX_CONNECTIONS,
            max_transactions_per_connection: MAX_TRANSACTIONS_PER_CONNECTION,
            max_buffered_bytes: MAX_BUFFERED_BYTES,
            frame_timeout: FRAME_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}
