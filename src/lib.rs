//! fdbvfs: SQLite on FoundationDB.
//!
//! Every page of a database is a versioned key in a store (FoundationDB, or
//! the embedded store that honours the same contract); many processes open
//! the same database *by name* and write it concurrently with optimistic,
//! page-level serializable transactions.
//!
//! Three ways in:
//! * Rust: [`Store`] and [`Store::open`] give a [`rusqlite::Connection`];
//!   [`retry`] re-runs a transaction on `SQLITE_BUSY` like FoundationDB's `run`.
//! * Any SQLite host: `cargo build --release` yields
//!   `target/release/libfdbvfs.so`; `.load ./target/release/libfdbvfs` then
//!   `.open file:orders?vfs=fdb&dir=/var/lib/fdbvfs`.
//! * Benchmarks (`cargo bench`).
//!
//! ```
//! # fn main() -> Result<(), fdbvfs::Error> {
//! let store = fdbvfs::Store::in_memory()?;
//! let mut conn = store.open("orders")?;
//! conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
//! let n: i64 = fdbvfs::retry(&mut conn, |tx| {
//!     tx.execute("INSERT INTO t VALUES (2)", [])?;
//!     tx.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
//! })?;
//! assert_eq!(n, 2);
//! # Ok(()) }
//! ```

pub mod backend;
mod error;
mod extension;
pub mod metrics;
mod retry;
mod store;

pub use backend::register_linked;
pub use error::{Error, Result};
pub use extension::sqlite3_fdbvfs_init;
pub use metrics::Metrics;
pub use pagestore::kv::embedded::{Faults, LateDelivery};
pub use pagestore::kv::Version;
pub use pagestore::{GcReport, Staleness};
pub use retry::{is_busy, retry, retry_with, RetryOptions};
pub use store::{open, Store, StoreBuilder};
pub use vfs::At;

/// The name of the SQLite VFS (`?vfs=fdb`).
pub const VFS_NAME: &str = vfs::VFS_NAME;
