//! PRAGMAs the VFS answers itself (SQLite hands every PRAGMA to the main
//! database file first, as `SQLITE_FCNTL_PRAGMA`).

/// A PRAGMA the fdb VFS handles. Anything else is left to SQLite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pragma {
    /// `PRAGMA fdb_version;` — the store version of the connection's current
    /// transaction snapshot; outside a transaction, the commit version of the
    /// last write transaction (or the snapshot of the last read one); on a
    /// fresh connection, the latest version. On a time-travel connection,
    /// the version it was opened at.
    Version,
    /// `PRAGMA fdb_stats;` — one line of process-wide counters of this
    /// store: page cache hits, misses, hit rate, cached bytes; store round
    /// trips by kind (read versions, reads, commits); commits, conflicts,
    /// unknown results; bytes read and written.
    Stats,
    /// `PRAGMA fdb_cache_size;` returns the byte budget of the process-wide
    /// page cache of this store; `PRAGMA fdb_cache_size = BYTES;` sets it.
    CacheSize(Option<u64>),
    /// `PRAGMA journal_mode = WAL;` — refused with an error that says why: WAL
    /// needs shared memory between all users of the file, which hosts
    /// sharing a store do not have. The journal mode stays what it was (the
    /// journal only serves rollback; commits are atomic in the store).
    /// Other journal modes are left to SQLite.
    JournalModeWal,
    /// `PRAGMA locking_mode = EXCLUSIVE;` — refused: in exclusive mode SQLite
    /// keeps its page cache across transactions without asking the VFS,
    /// which would hide other writers' commits.
    LockingModeExclusive,
}

/// A pragma argument that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadArgument(pub String);

impl Pragma {
    /// Parses SQLite's `(name, argument)` pair; `Ok(None)` for pragmas that
    /// are SQLite's business.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Option<Pragma>, BadArgument> {
        let arg = arg.map(|a| a.trim().trim_matches(|c| c == '\'' || c == '"'));
        let p = match name.to_ascii_lowercase().as_str() {
            "fdb_version" => Pragma::Version,
            "fdb_stats" => Pragma::Stats,
            "fdb_cache_size" => match arg {
                None => Pragma::CacheSize(None),
                Some(a) => Pragma::CacheSize(Some(a.parse::<u64>().map_err(|_| {
                    BadArgument(format!(
                        "fdb_cache_size takes a byte count (an integer >= 0), not {a:?}"
                    ))
                })?)),
            },
            "journal_mode" if arg.is_some_and(|a| a.eq_ignore_ascii_case("wal")) => {
                Pragma::JournalModeWal
            }
            "locking_mode" if arg.is_some_and(|a| a.eq_ignore_ascii_case("exclusive")) => {
                Pragma::LockingModeExclusive
            }
            _ => return Ok(None),
        };
        Ok(Some(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ours() {
        assert_eq!(
            Pragma::parse("fdb_version", None),
            Ok(Some(Pragma::Version))
        );
        assert_eq!(Pragma::parse("FDB_STATS", None), Ok(Some(Pragma::Stats)));
        assert_eq!(
            Pragma::parse("fdb_cache_size", Some("1048576")),
            Ok(Some(Pragma::CacheSize(Some(1 << 20))))
        );
        assert_eq!(
            Pragma::parse("fdb_cache_size", None),
            Ok(Some(Pragma::CacheSize(None)))
        );
        assert!(Pragma::parse("fdb_cache_size", Some("lots")).is_err());
        assert!(Pragma::parse("fdb_cache_size", Some("-1")).is_err());
    }

    #[test]
    fn wal_and_exclusive_are_refused() {
        assert_eq!(
            Pragma::parse("journal_mode", Some("WAL")),
            Ok(Some(Pragma::JournalModeWal))
        );
        assert_eq!(
            Pragma::parse("journal_mode", Some("'wal'")),
            Ok(Some(Pragma::JournalModeWal))
        );
        assert_eq!(
            Pragma::parse("locking_mode", Some("exclusive")),
            Ok(Some(Pragma::LockingModeExclusive))
        );
    }

    #[test]
    fn others_are_sqlites() {
        assert_eq!(Pragma::parse("journal_mode", Some("memory")), Ok(None));
        assert_eq!(Pragma::parse("journal_mode", None), Ok(None));
        assert_eq!(Pragma::parse("locking_mode", Some("normal")), Ok(None));
        assert_eq!(Pragma::parse("page_size", Some("8192")), Ok(None));
    }
}
