//! Errors of the page store.

use crate::kv::{KvError, Version};

/// Result of a page store operation.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong in the page store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed (network, limits, I/O); carries FDB's code.
    #[error(transparent)]
    Kv(#[from] KvError),

    /// A page this transaction read was changed by a commit after its
    /// snapshot; nothing was written. Re-run the transaction.
    #[error("conflict in database {database:?}: pages read at version {snapshot} were changed by a later commit ({detail})")]
    Conflict {
        /// Database name.
        database: String,
        /// The snapshot version the transaction read at.
        snapshot: Version,
        /// Which pages or what changed, when known.
        detail: String,
    },

    /// The snapshot is older than the database's GC horizon: versions it
    /// needs may have been removed (retention window exceeded).
    #[error("snapshot {snapshot} of database {database:?} is older than the retention window (versions before {horizon} were garbage collected){}", if *.time_travel { "" } else { "; retry the transaction" })]
    SnapshotTooOld {
        /// Database name.
        database: String,
        /// The snapshot version.
        snapshot: Version,
        /// The GC horizon.
        horizon: Version,
        /// A time-travel read (retrying does not help).
        time_travel: bool,
    },

    /// No database of that name.
    #[error("no database named {0:?}")]
    NotFound(String),

    /// A database of that name exists already.
    #[error("a database named {0:?} already exists")]
    AlreadyExists(String),

    /// The database was dropped while in use.
    #[error("database {0:?} was dropped")]
    Dropped(String),

    /// A database name that is empty or longer than 255 bytes.
    #[error("invalid database name ({0})")]
    InvalidName(String),

    /// A page whose size is not a power of two in 512..=65536, or differs
    /// from the database's page size.
    #[error("invalid page size {got} (database page size {expected:?}; allowed: powers of two 512..=65536)")]
    PageSize {
        /// The database's page size, if set.
        expected: Option<u32>,
        /// The size given.
        got: usize,
    },

    /// Writes to a read-only transaction (time travel).
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// Bytes in the store that do not decode: a bug or foreign data.
    #[error("corrupt store data: {0}")]
    Corrupt(String),

    /// A test's failpoint made this step fail (test builds only).
    #[error("failpoint {0} fired")]
    Injected(String),

    /// A commit group the engine cannot commit atomically: empty, spanning
    /// several stores, or holding one database twice (a caller's bug).
    #[error("invalid commit group: {0}")]
    InvalidGroup(String),

    /// A transaction beyond what the engine can commit (not retryable).
    #[error("transaction too large: {0}")]
    TooLarge(String),

    /// A version past the latest commit (time travel, restore, fork).
    #[error("version {version} is in the future (latest is {latest})")]
    VersionInFuture {
        /// The version asked for.
        version: Version,
        /// The latest committed version.
        latest: Version,
    },

    /// A version before a fork was made: the fork has no state there.
    #[error(
        "database {database:?} is a fork made at version {origin}; it has no state at {version}"
    )]
    BeforeFork {
        /// The fork's name.
        database: String,
        /// The version of its origin it was made at.
        origin: Version,
        /// The version asked for.
        version: Version,
    },

    /// A new database drew the random id of an existing one (nothing was
    /// written; creating it again draws another).
    #[error("database id collision; try again")]
    IdCollision,

    /// The database being renamed was dropped and re-created under its
    /// name meanwhile (nothing was written).
    #[error("database {0:?} was replaced while being renamed; try again")]
    ReplacedDuringRename(String),

    /// A commit retried after an unknown result found its token fenced:
    /// the transaction did not commit.
    #[error("commit token already fenced; the transaction did not commit")]
    Fenced,
}

impl Error {
    /// A page-level conflict (or a store conflict): re-running the whole
    /// transaction may succeed.
    pub fn is_conflict(&self) -> bool {
        match self {
            Error::Conflict { .. } => true,
            Error::Kv(e) => e.is_conflict(),
            _ => false,
        }
    }

    /// Re-running the whole transaction may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Conflict { .. } => true,
            Error::SnapshotTooOld { time_travel, .. } => !time_travel,
            Error::Kv(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// The store could not say whether a commit was applied
    /// (`commit_unknown_result`): re-running could apply it twice.
    pub fn is_maybe_committed(&self) -> bool {
        matches!(self, Error::Kv(e) if e.is_maybe_committed())
    }

    /// A failed commit certainly wrote nothing, so content it uploaded
    /// ahead may be removed. Not so after an unknown result (it may still
    /// be the content of a landed commit: GC's sweep removes it later if
    /// not), nor after an injected failure (tests use those to stand for a
    /// crash, after which nothing more happens).
    pub fn definitely_not_committed(&self) -> bool {
        !self.is_maybe_committed() && !matches!(self, Error::Injected(_))
    }

    /// The database does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_) | Error::Dropped(_))
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Error::Corrupt(what.into())
    }
}
