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
    #[error("unknown URI parameter(s) {names} (the fdb VFS accepts: dir, cluster, store, version, at, admin, staleness; SQLite's own: vfs, mode, cache=private, psow; it refuses cache=shared, nolock=1 and immutable=1)", names = .0.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "))]
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

    /// A database name that is not UTF-8 (the other rules are
    /// `pagestore::validate_name`'s: `pagestore::Error::InvalidName`).
    #[error("invalid database name (the name is not UTF-8)")]
    NameNotUtf8,

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
    ReadOnly(#[from] ReadOnly),

    /// `fdb_restore` inside a transaction: it commits on its own.
    #[error("fdb_restore cannot run inside a transaction (COMMIT or ROLLBACK first)")]
    RestoreInTransaction,

    /// A point in history where the database has no state.
    #[error(transparent)]
    OutOfHistory(#[from] OutOfHistory),

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

    /// An I/O request out of order for the file's state, or of a shape
    /// the VFS cannot serve (see [`Misuse`]).
    #[error(transparent)]
    Misuse(#[from] Misuse),

    /// A stored page whose length is not the database's page size.
    #[error("page {page} has {len} bytes, expected {expected}")]
    PageLength {
        /// SQLite's page number (1-based).
        page: u64,
        /// Its length in the store.
        len: usize,
        /// The page size.
        expected: u64,
    },

    /// `xOpen` creating a super-journal whose name is in use.
    #[error("super-journal {0:?} exists")]
    SuperJournalExists(String),

    /// A write or truncation of a super-journal's bytes failed.
    #[error(transparent)]
    SuperJournal(crate::memfile::MemError),

    /// A database of another store than its connection's, attached where
    /// admin operations are refused (`admin=0`, or defensive mode):
    /// `SQLITE_AUTH`.
    #[error("database {database:?} is in another store than its connection's, and attaching a database of another store is an admin operation: refused because {why}")]
    AttachRefused {
        /// The attached database.
        database: String,
        /// Why admin operations are refused in the connection.
        why: &'static str,
    },

    /// A journal or temp file failed: past its size limit or no room left
    /// for it is `SQLITE_FULL` (see `memfile`), anything else an I/O error.
    #[error(transparent)]
    Temp(#[from] crate::memfile::MemError),
}

/// What a time-travel (read-only) file refuses.
#[derive(Debug, thiserror::Error)]
pub enum ReadOnly {
    /// A page write.
    #[error("database {database:?} is open as of version {version}")]
    Write {
        /// The database.
        database: String,
        /// The version it is open at.
        version: pagestore::kv::Version,
    },
    /// A write lock.
    #[error("database {database:?} is open as of version {version}; time-travel connections cannot write")]
    Lock {
        /// The database.
        database: String,
        /// The version it is open at.
        version: pagestore::kv::Version,
    },
    /// A truncation.
    #[error("time-travel connection")]
    Truncate,
    /// `PRAGMA fdb_restore`.
    #[error("fdb_restore cannot run on a time-travel (read-only) connection; open the database normally")]
    Restore,
}

/// A point in history where a database has no state (`at=`, `fdb_restore`).
#[derive(Debug, thiserror::Error)]
pub enum OutOfHistory {
    /// A time after the store's clock.
    #[error("time {at} is in the future (now is {now})")]
    Future {
        /// The time asked for (RFC 3339).
        at: String,
        /// The store's time (RFC 3339).
        now: String,
    },
    /// A time before the database was created.
    #[error("database {database:?} did not exist at {at}")]
    BeforeCreation {
        /// The database.
        database: String,
        /// The time asked for (RFC 3339).
        at: String,
    },
}

/// I/O that SQLite sends out of order for the file's state, or of a shape
/// the VFS cannot serve. SQLite never does either; the VFS fails the call
/// rather than guess.
#[derive(Debug, thiserror::Error)]
pub enum Misuse {
    /// A read with no transaction to read from.
    #[error("no reader")]
    NoReader,
    /// A read while the transaction waits for its multi-database commit.
    #[error("read of a database waiting for its multi-database commit")]
    ReadWhilePrepared,
    /// A write without a RESERVED lock.
    #[error("write at offset {offset} without a write lock (phase {phase})")]
    WriteWithoutLock {
        /// File offset.
        offset: u64,
        /// The file's phase.
        phase: &'static str,
    },
    /// The first write of a database is not one whole page.
    #[error("first write of {len} bytes at offset {offset}: the first write to a database must be one page (a power of two in 512..=65536 bytes) at a page boundary")]
    FirstWriteNotAPage {
        /// Bytes written.
        len: usize,
        /// File offset.
        offset: u64,
    },
    /// A write past the largest page number.
    #[error("write at offset {offset} is past the largest page number")]
    PastLastPage {
        /// File offset.
        offset: u64,
    },
    /// A truncation to a non-zero size of a database without pages (no
    /// page size yet).
    #[error("truncate to {size} bytes of a database without pages")]
    TruncateWithoutPages {
        /// Bytes asked for.
        size: u64,
    },
    /// A truncation without a RESERVED lock.
    #[error("truncate without a write lock (phase {phase})")]
    TruncateWithoutLock {
        /// The file's phase.
        phase: &'static str,
    },
    /// Commit phase two while the file waits for its super-journal.
    #[error(
        "commit phase two of a multi-database transaction before its super-journal was deleted"
    )]
    PhaseTwoBeforeSuperJournal,
    /// A chained begin from a phase without a previous transaction.
    #[error("chained begin from a wrong phase")]
    ChainedBegin,
    /// A commit with no write transaction.
    #[error("commit without a transaction")]
    CommitWithoutTransaction,
    /// A prepare with no super-journal announced.
    #[error("prepare without a super-journal")]
    PrepareWithoutSuperJournal,
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
        Error::Temp(e) if e.is_full() => ffi::SQLITE_FULL,
        Error::AttachRefused { .. } => ffi::SQLITE_AUTH,
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
        // A bad name is refused wherever it is given (open, fdb_fork).
        Error::Store(P::InvalidName(_)) => ffi::SQLITE_CANTOPEN,
        Error::Store(P::NotFound(_)) if op == Op::Open => ffi::SQLITE_CANTOPEN,
        Error::UnknownParams(_)
        | Error::BadParam { .. }
        | Error::NameNotUtf8
        | Error::StoreOpen { .. } => ffi::SQLITE_CANTOPEN,
        Error::RestoreInTransaction | Error::OutOfHistory(_) if op == Op::FileControl => {
            ffi::SQLITE_ERROR
        }
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
            snapshot: pagestore::kv::Version::new(1),
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
                snapshot: pagestore::kv::Version::new(1),
                horizon: pagestore::kv::Version::new(2),
                time_travel: false,
            }),
            Error::Doomed,
            Error::Misuse(Misuse::NoReader),
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
    fn temp_files_full_or_io() {
        use crate::memfile::MemError;
        let full = Error::Temp(MemError::Full("past the limit".into()));
        assert_eq!(sqlite_code(&full, Op::Write), ffi::SQLITE_FULL);
        let io = Error::Temp(MemError::Io("disk".into()));
        assert_eq!(sqlite_code(&io, Op::Write), ffi::SQLITE_IOERR_WRITE);
        // A super-journal's write is an I/O error whatever the cause.
        let sj = Error::SuperJournal(MemError::Full("past the limit".into()));
        assert_eq!(sqlite_code(&sj, Op::Write), ffi::SQLITE_IOERR_WRITE);
        let exists = Error::SuperJournalExists("db-mj1".into());
        assert_eq!(sqlite_code(&exists, Op::Open), ffi::SQLITE_CANTOPEN);
        assert_eq!(exists.to_string(), "super-journal \"db-mj1\" exists");
    }

    #[test]
    fn readonly() {
        let e = Error::ReadOnly(ReadOnly::Truncate);
        assert_eq!(sqlite_code(&e, Op::Write), ffi::SQLITE_READONLY);
    }
}
