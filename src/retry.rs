//! Re-running transactions on `SQLITE_BUSY`, like FoundationDB's `run`.

use std::time::Duration;

use pagestore::retry::{self, Backoff, Pause};
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use tracing::debug;

use crate::error::{Error, Result};

/// How [`retry_with`] retries.
#[derive(Clone)]
pub struct RetryOptions {
    /// Attempts in all (the first run included).
    pub max_attempts: u32,
    /// Backoff after the first failure; doubles each time.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// How `BEGIN` starts the transaction. `Deferred` (the default) takes
    /// the snapshot at the first read, which is what optimistic
    /// concurrency wants; `Immediate` changes nothing across processes
    /// (write locks are local) but is allowed.
    pub behavior: TransactionBehavior,
}

impl std::fmt::Debug for RetryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryOptions")
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(200),
            behavior: TransactionBehavior::Deferred,
        }
    }
}

/// True for any `SQLITE_BUSY` code (plain or extended): the transaction
/// may be re-run. `SQLITE_BUSY_SNAPSHOT` is a commit conflict (rolled back,
/// nothing written); `SQLITE_BUSY_TIMEOUT` is a read the store did not
/// answer in time (FoundationDB's 1031: a timeout or an unreachable
/// cluster; nothing written). A commit whose outcome is unknown is an I/O
/// error instead, never BUSY: re-running it blindly could apply it twice.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::DatabaseBusy)
}

/// Runs `f` inside `BEGIN … COMMIT` and re-runs it when a statement or the
/// commit fails with `SQLITE_BUSY` (a conflict with another writer), with
/// exponential backoff and jitter, up to 100 attempts. `f` may run several
/// times: keep side effects outside the database idempotent.
///
/// ```
/// # fn main() -> Result<(), fdbvfs::Error> {
/// let store = fdbvfs::Store::in_memory()?;
/// let mut conn = store.open("bank")?;
/// conn.execute_batch("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INT);
///                     INSERT INTO acct VALUES (1, 100), (2, 0);")?;
/// fdbvfs::retry(&mut conn, |tx| {
///     tx.execute("UPDATE acct SET bal = bal - 10 WHERE id = 1", [])?;
///     tx.execute("UPDATE acct SET bal = bal + 10 WHERE id = 2", [])?;
///     Ok(())
/// })?;
/// # Ok(()) }
/// ```
pub fn retry<T>(
    conn: &mut Connection,
    f: impl FnMut(&Transaction) -> rusqlite::Result<T>,
) -> Result<T> {
    retry_with(conn, &RetryOptions::default(), f)
}

/// [`retry`] with explicit options.
pub fn retry_with<T>(
    conn: &mut Connection,
    opts: &RetryOptions,
    mut f: impl FnMut(&Transaction) -> rusqlite::Result<T>,
) -> Result<T> {
    // Half of each delay drawn at random, so that colliding writers spread
    // out (waits between half the backoff and all of it).
    let policy = Backoff::new(
        opts.initial_backoff,
        opts.max_backoff,
        opts.max_attempts.max(1) - 1,
    )
    .with_jitter(0.5);
    let mut attempts = 0u32;
    let out = retry::run(
        &policy,
        is_busy,
        |e, retry| {
            debug!(attempt = retry, error = %e, "transaction busy; retrying");
            Pause::Backoff
        },
        |_| {
            attempts += 1;
            let tx = conn.transaction_with_behavior(opts.behavior)?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        },
    );
    match out {
        Ok(v) => Ok(v),
        // BUSY is retried: still BUSY here means the attempts ran out.
        Err(e) if is_busy(&e) => Err(Error::RetryLimit { attempts, last: e }),
        Err(e) => Err(Error::Sqlite(e)),
    }
}
