//! Numbers about one database: size, history kept, retention and GC's
//! progress ([`Database::stats`]).
//!
//! Why here: they come from the catalog entry, the GC horizon and the
//! change log, whose keys and encodings are this crate's own; tools (the
//! CLI's `stats`, the shell's `.stats`) format the numbers without knowing
//! the key layout.

use std::time::Duration;

use crate::database::Database;
use crate::encoding::decode_horizon;
use crate::encoding::DbMeta;
use crate::error::{Error, Result};
use crate::ids::DbId;
use crate::kv::Version;

/// What a database holds and how much of its history is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct DbStats {
    /// The database's name.
    pub name: String,
    /// Its id (the catalog's key).
    pub id: DbId,
    /// Pages at the latest version.
    pub pages: u64,
    /// Page size (0 before the first page is written).
    pub page_size: u32,
    /// The latest store version, which the numbers are read at.
    pub version: Version,
    /// Commits kept in the change log: the readable history, back to the
    /// GC horizon.
    pub commits: u64,
    /// Page versions those commits wrote. GC also keeps, per page, the
    /// newest version at or below the horizon (at most one per page, not
    /// counted here).
    pub page_versions: u64,
    /// How long old versions stay readable.
    pub retention: Duration,
    /// Creation time, microseconds since the Unix epoch.
    pub created_micros: u64,
    /// The later of creation and now minus the retention: time travel is
    /// guaranteed back to there.
    pub oldest_readable_micros: u64,
    /// GC's horizon: versions before it were collected (0: none yet).
    pub gc_horizon: Version,
    /// For a fork: the origin's id and the version it was forked at.
    pub fork_of: Option<(DbId, Version)>,
}

impl DbStats {
    /// Size at the latest version: pages times page size.
    pub fn bytes(&self) -> u64 {
        self.pages * u64::from(self.page_size)
    }
}

impl Database {
    /// The database's statistics ([`DbStats`]). The history is counted
    /// from the change log, not by scanning page keys (a scan would read
    /// every page's bytes): one range read per ~100 KB of change log,
    /// proportional to the commits in the retention window. Fails with
    /// [`Error::Dropped`] when the database is gone.
    pub fn stats(&self) -> Result<DbStats> {
        let mut txn = self.begin()?;
        let version = txn.snapshot();
        let pages = txn.page_count();
        let page_size = txn.page_size().unwrap_or(0);
        txn.rollback();
        let meta = match self.read_now(&self.store.inner.keys.meta(self.id))? {
            Some(v) => DbMeta::decode(&v)?,
            None => return Err(Error::Dropped(self.name().to_string())),
        };
        let horizon = decode_horizon(self.read_now(&self.keys.horizon())?.as_deref())?;
        let changes = self.changes_between(horizon.before(1), version)?;
        let page_versions = changes
            .iter()
            .map(|c| (c.record.pages.len() + c.record.absent.len()) as u64)
            .sum();
        let retention = self.retention()?;
        let now = self.store.options().clock.now_micros();
        let window = retention.as_micros().min(u64::MAX as u128) as u64;
        Ok(DbStats {
            name: self.name().to_string(),
            id: self.id(),
            pages,
            page_size,
            version,
            commits: changes.len() as u64,
            page_versions,
            retention,
            created_micros: meta.created_micros,
            oldest_readable_micros: meta.created_micros.max(now.saturating_sub(window)),
            gc_horizon: horizon,
            fork_of: self.fork_origin(),
        })
    }

    /// One key, read at a fresh read version.
    fn read_now(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut t = self.store.kv().begin()?;
        Ok(t.get(key, true)?)
    }
}
