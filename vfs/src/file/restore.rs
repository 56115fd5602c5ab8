//! `fdb_restore` as a commit retried on conflicts with concurrent writers.

use pagestore::kv::Version;
use pagestore::Database;
use tracing::debug;

use crate::error::Result;

/// Attempts of a restore that conflicts with concurrent writers.
pub const RESTORE_ATTEMPTS: u32 = 10;

/// Restores `db` to `version` as a new commit (see
/// [`Database::restore_to`]); a conflict with a concurrent writer (the
/// restore is an ordinary commit) is retried up to [`RESTORE_ATTEMPTS`]
/// times with backoff. Returns the commit version.
pub fn restore_with_retries(db: &Database, version: Version) -> Result<Version> {
    use pagestore::retry::{self, Backoff, Pause};
    // 2, 4, 8 … ms up to 100 ms, half of each delay at random so that
    // colliding restores spread out.
    let policy = Backoff::store(RESTORE_ATTEMPTS - 1).with_jitter(0.5);
    let committed = retry::run(
        &policy,
        pagestore::Error::is_conflict,
        |e, retry| {
            debug!(database = %db.name(), attempt = retry, error = %e, "restore conflicted; retrying");
            Pause::Backoff
        },
        |_| db.restore_to(version),
    )?;
    Ok(committed.version)
}
