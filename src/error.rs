//! Errors of the `fdbvfs` API.

/// Result of an `fdbvfs` call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQLite reported an error (includes `SQLITE_BUSY` after the retry
    /// limit; see [`crate::is_busy`]).
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),

    /// Opening a database failed; `message` says why (the VFS's own words,
    /// which SQLite reduces to "unable to open database file").
    #[error("cannot open database {name:?}: {message}")]
    Open {
        /// The database name.
        name: String,
        /// Why.
        message: String,
        /// SQLite's error.
        #[source]
        source: Option<rusqlite::Error>,
    },

    /// The page store failed.
    #[error(transparent)]
    Store(#[from] pagestore::Error),

    /// The VFS failed (bad store directory, parameters, …).
    #[error(transparent)]
    Vfs(#[from] vfs::Error),

    /// A transaction was retried `attempts` times and kept failing with
    /// `SQLITE_BUSY`.
    #[error("gave up after {attempts} attempts: {last}")]
    RetryLimit {
        /// Attempts made.
        attempts: u32,
        /// The last BUSY error.
        #[source]
        last: rusqlite::Error,
    },

    /// Invalid configuration.
    #[error("{0}")]
    Config(String),
}
