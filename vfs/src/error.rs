//! Errors of the VFS and the one place they become SQLite result codes.

use std::ffi::c_int;

use libsqlite3_sys as ffi;

/// Result of a VFS operation.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong in the VFS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The page store failed (includes conflicts: see [`Error::is_conflict`]).
    #[error(transparent)]
    Store(#[from] pagestore::Error),

    /// URI parameters the VFS does not know.
    #[error("unknown URI parameter(s) {names} (the fdb VFS accepts: dir, cluster, store, version, at, admin; SQLite's own: vfs, mode, cache=private, psow; it refuses cache=shared, nolock=1 and immutable=1)", names = .0.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "))]
    UnknownParams(Vec<String>),

    /// A URI parameter with a bad value.
    #[error("bad URI parameter {name}={value:?}: {why}")]
    BadParam {
        /// Parameter name.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },

    /// A database name that is empty, not UTF-8, or longer than 255 bytes.
    #[error("invalid database name: {0}")]
    BadName(String),

    /// The store could not be opened (directory unreadable, locked, …).
    #[error("cannot open store {what}: {why}")]
    StoreOpen {
        /// Which store (directory, cluster file, id).
        what: String,
        /// Why.
        why: String,
    },

    /// A write to a database opened read-only (time travel).
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// A request SQLite (or a caller) made that the VFS does not support.
    #[error("{0}")]
    Unsupported(String),

    /// The commit of this transaction already failed (a conflict or a
    /// retryable store error): SQLite must roll it back, and nothing more
    /// of it may be acknowledged.
    #[error("the commit of this transaction failed (conflict or retryable store error); roll back and retry")]
    Doomed,

    /// The database is already open in the same connection (as the main
    /// database or attached under another schema name). Two handles of one
    /// database in one transaction would commit two versions of it, one
    /// overwriting the other.
    #[error("database {0:?} is already open in this connection (as the main database or attached under another schema name); a connection may hold a database once: use the schema it is already open as")]
    AlreadyOpen(String),

    /// An I/O request the VFS cannot serve (bad offset or length).
    #[error("{0}")]
    BadIo(String),

    /// An admin operation refused for this connection (`admin=0`, or
    /// defensive mode): `SQLITE_AUTH`.
    #[error("{0}")]
    Refused(String),

    /// A journal or temp file past its size limit, or no room left for it:
    /// `SQLITE_FULL` (see `memfile`).
    #[error("{0}")]
    Full(String),
}

/// The VFS method an error happened in: SQLite wants the matching
/// extended I/O error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// xOpen.
    Open,
    /// xRead.
    Read,
    /// xWrite.
    Write,
    /// xTruncate.
    Truncate,
    /// The commit point: `SQLITE_FCNTL_SYNC` and xSync of a database, the
    /// deletion of a super-journal (a multi-database commit).
    Sync,
    /// `SQLITE_FCNTL_COMMIT_PHASETWO`: SQLite already finalized its
    /// journal, so only an I/O error makes it distrust its page cache.
    PhaseTwo,
    /// xFileSize.
    FileSize,
    /// xLock.
    Lock,
    /// xUnlock.
    Unlock,
    /// xFileControl.
    FileControl,
}

impl Error {
    /// A page conflict (or a store conflict): re-running the transaction may
    /// succeed.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Store(e) => e.is_conflict(),
            Error::Doomed => true,
            _ => false,
        }
    }
}

/// THE mapping from VFS errors to SQLite result codes.
///
/// * conflicts → `SQLITE_BUSY_SNAPSHOT`: SQLite then fails the COMMIT (or the
///   autocommit statement) and rolls the transaction back; nothing was
///   written. Applications (and `fdbvfs::retry`) re-run on any BUSY code.
/// * other retryable store errors → `SQLITE_BUSY`, except at the commit
///   point ([`Op::Sync`]), where they are `SQLITE_BUSY_SNAPSHOT` too: on
///   exactly `SQLITE_BUSY` from a COMMIT, SQLite keeps the transaction
///   open after it marked its pages clean (`sqlite3VdbeHalt`: `rc==SQLITE_BUSY
///   && p->readOnly`), and a retried COMMIT would write nothing and succeed.
///   Any other code makes it roll back (`sqlite3RollbackAll`).
/// * a commit that may have landed (1021 surfaced after pagestore's own
///   recovery) is an I/O error: re-running could apply it twice.
/// * at [`Op::PhaseTwo`] every error is an I/O error: SQLite has already
///   finalized its journal and marked its pages clean, and only an I/O
///   error (`pager_error`) makes it throw its page cache away.
/// * read-only → `SQLITE_READONLY`; bad names/parameters/stores at open →
///   `SQLITE_CANTOPEN`; corrupt store data → `SQLITE_CORRUPT`;
///   everything else → the extended `SQLITE_IOERR_*` code of the method.
pub fn sqlite_code(err: &Error, op: Op) -> c_int {
    use pagestore::Error as P;
    match err {
        _ if op == Op::PhaseTwo => io_code(op),
        Error::AlreadyOpen(_) => ffi::SQLITE_CANTOPEN,
        Error::Full(_) => ffi::SQLITE_FULL,
        Error::Refused(_) => ffi::SQLITE_AUTH,
        e if e.is_conflict() => ffi::SQLITE_BUSY_SNAPSHOT,
        Error::Store(P::Kv(k)) if k.is_maybe_committed() => io_code(op),
        // The store did not answer in time (FDB's 1031: a timeout or an
        // unreachable cluster) while reading: nothing was written, the
        // application may retry. An extended BUSY code, so SQLite's busy
        // handler does not re-wait a whole timeout per attempt.
        Error::Store(P::Kv(k))
            if k.code == pagestore::kv::KvError::TRANSACTION_TIMED_OUT
                && matches!(op, Op::Read | Op::Lock | Op::FileSize) =>
        {
            ffi::SQLITE_BUSY_TIMEOUT
        }
        Error::Store(e) if e.is_retryable() && op == Op::Sync => ffi::SQLITE_BUSY_SNAPSHOT,
        Error::Store(e) if e.is_retryable() => ffi::SQLITE_BUSY,
        Error::Store(P::ReadOnly(_)) | Error::ReadOnly(_) => ffi::SQLITE_READONLY,
        Error::Store(P::Corrupt(_)) => ffi::SQLITE_CORRUPT,
        Error::Store(P::NotFound(_) | P::InvalidName(_)) if op == Op::Open => ffi::SQLITE_CANTOPEN,
        Error::UnknownParams(_)
        | Error::BadParam { .. }
        | Error::BadName(_)
        | Error::StoreOpen { .. } => ffi::SQLITE_CANTOPEN,
        Error::Unsupported(_) if op == Op::FileControl => ffi::SQLITE_ERROR,
        _ => io_code(op),
    }
}

fn io_code(op: Op) -> c_int {
    match op {
        Op::Open => ffi::SQLITE_CANTOPEN,
        Op::Read => ffi::SQLITE_IOERR_READ,
        Op::Write => ffi::SQLITE_IOERR_WRITE,
        Op::Truncate => ffi::SQLITE_IOERR_TRUNCATE,
        Op::Sync | Op::PhaseTwo => ffi::SQLITE_IOERR_FSYNC,
        Op::FileSize => ffi::SQLITE_IOERR_FSTAT,
        Op::Lock => ffi::SQLITE_IOERR_LOCK,
        Op::Unlock => ffi::SQLITE_IOERR_UNLOCK,
        Op::FileControl => ffi::SQLITE_IOERR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_is_busy_snapshot() {
        let e = Error::Store(pagestore::Error::Conflict {
            database: "d".into(),
            snapshot: 1,
            detail: "page 3".into(),
        });
        assert_eq!(sqlite_code(&e, Op::Sync), ffi::SQLITE_BUSY_SNAPSHOT);
        assert_eq!(
            sqlite_code(&Error::Doomed, Op::Sync),
            ffi::SQLITE_BUSY_SNAPSHOT
        );
    }

    #[test]
    fn open_errors_are_cantopen() {
        let e = Error::UnknownParams(vec!["foo".into()]);
        assert_eq!(sqlite_code(&e, Op::Open), ffi::SQLITE_CANTOPEN);
        assert!(e.to_string().contains("\"foo\""));
        let e = Error::Store(pagestore::Error::NotFound("x".into()));
        assert_eq!(sqlite_code(&e, Op::Open), ffi::SQLITE_CANTOPEN);
        assert_eq!(sqlite_code(&e, Op::Read), ffi::SQLITE_IOERR_READ);
    }

    /// No store error ever reaches SQLite as plain `SQLITE_BUSY` at the
    /// commit point, and phase two fails only with I/O errors.
    #[test]
    fn commit_point_never_plain_busy() {
        use pagestore::kv::KvError;
        let errors = [
            Error::Store(pagestore::Error::Kv(KvError::new(1007, "too old"))),
            Error::Store(pagestore::Error::Kv(KvError::new(1037, "process behind"))),
            Error::Store(pagestore::Error::Kv(KvError::new(1213, "tag throttled"))),
            Error::Store(pagestore::Error::Kv(KvError::new(1021, "unknown"))),
            Error::Store(pagestore::Error::SnapshotTooOld {
                database: "d".into(),
                snapshot: 1,
                horizon: 2,
                time_travel: false,
            }),
            Error::Doomed,
            Error::BadIo("x".into()),
        ];
        for e in &errors {
            let c = sqlite_code(e, Op::Sync);
            assert_ne!(c, ffi::SQLITE_BUSY, "{e}");
            assert_ne!(c, ffi::SQLITE_OK, "{e}");
            let c = sqlite_code(e, Op::PhaseTwo);
            assert_eq!(c & 0xff, ffi::SQLITE_IOERR, "{e}");
        }
        // Retryable, not maybe-committed: the application may re-run.
        assert_eq!(sqlite_code(&errors[0], Op::Sync), ffi::SQLITE_BUSY_SNAPSHOT);
        assert_eq!(sqlite_code(&errors[4], Op::Sync), ffi::SQLITE_BUSY_SNAPSHOT);
        // Maybe committed: an I/O error, never "re-run".
        assert_eq!(sqlite_code(&errors[3], Op::Sync), ffi::SQLITE_IOERR_FSYNC);
        // Elsewhere (BEGIN, reads) retryable errors stay plain BUSY, which
        // SQLite retries through its busy handler.
        assert_eq!(sqlite_code(&errors[0], Op::Lock), ffi::SQLITE_BUSY);
    }

    #[test]
    fn read_timeouts_are_busy() {
        let e = Error::Store(pagestore::Error::Kv(pagestore::kv::KvError::new(
            pagestore::kv::KvError::TRANSACTION_TIMED_OUT,
            "no answer",
        )));
        assert_eq!(sqlite_code(&e, Op::Read), ffi::SQLITE_BUSY_TIMEOUT);
        assert_eq!(sqlite_code(&e, Op::Lock), ffi::SQLITE_BUSY_TIMEOUT);
        assert_eq!(sqlite_code(&e, Op::Sync), ffi::SQLITE_IOERR_FSYNC);
    }

    #[test]
    fn readonly() {
        let e = Error::ReadOnly("time travel".into());
        assert_eq!(sqlite_code(&e, Op::Write), ffi::SQLITE_READONLY);
    }
}
