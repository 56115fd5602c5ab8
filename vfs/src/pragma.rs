//! PRAGMAs the VFS answers itself (SQLite hands every PRAGMA to the main
//! database file first, as `SQLITE_FCNTL_PRAGMA`).

use std::time::Duration;

use crate::at::At;

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
    /// `PRAGMA synchronous = LEVEL;` — recorded (0 OFF, 1 NORMAL, 2 FULL,
    /// 3 EXTRA, read as SQLite reads it: see [`synchronous_level`]) and
    /// left to SQLite too. OFF and NORMAL make this database's commits
    /// relaxed ([`pagestore::Durability::Relaxed`]: acknowledged before
    /// they are on disk); FULL, the default, and EXTRA keep them durable.
    Synchronous(u8),
    /// `PRAGMA fdb_fork = 'NEW';` — creates database `NEW` as a fork of this
    /// one as of the snapshot `PRAGMA fdb_version` reports (the current
    /// transaction's, else the last one's; on a time-travel connection the
    /// version it was opened at): copy-on-write, one small store commit
    /// whatever the size. Returns that version. The fork is writable and
    /// isolated both ways.
    Fork(String),
    /// `PRAGMA fdb_restore = '<time or version>';` — makes the current state
    /// of this database equal to its state at that point (an RFC 3339 time,
    /// or `v:N`), as one new commit; history is kept, so it can be undone by
    /// restoring to the version it returns minus one. Refused inside a
    /// transaction and on time-travel connections; a conflict with a
    /// concurrent writer is retried a few times. Returns the new version.
    Restore(At),
    /// `PRAGMA fdb_retention;` returns how long (whole seconds) old versions
    /// of this database stay readable (time travel, forks at a time,
    /// restores); `PRAGMA fdb_retention = SECONDS;` sets it (also `'7d'`,
    /// `'36h'`, `'90min'`…; 0 keeps only the latest version). GC removes
    /// what falls out of the window.
    Retention(Option<Duration>),
    /// `PRAGMA fdb_staleness;` returns this connection's staleness bound
    /// (`strict`, or e.g. `10ms`); `PRAGMA fdb_staleness = '10ms';` sets it
    /// for the connection's next transactions (`strict` or `0` for the
    /// default). Under a bound a transaction may start, with no store round
    /// trip, at a snapshot confirmed to be the latest at most that long ago
    /// and never older than what the connection already saw or committed;
    /// writes stay serializable (see `pagestore::Staleness`). Also the URI
    /// parameter `staleness=`.
    Staleness(Option<pagestore::Staleness>),
    /// `PRAGMA fdb_snapshot_age;` — how long ago (µs) the snapshot of the
    /// current transaction, or outside one of the transaction a read would
    /// start now, was confirmed to be the latest version: an upper bound on
    /// how stale its reads are. Empty on a time-travel connection.
    SnapshotAge,
}

impl Pragma {
    /// Whether it acts beyond the connection's own data (other databases,
    /// history, the whole process): refused where admin operations are
    /// (URI `admin=0`, defensive mode). Reading a setting is not.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Pragma::Fork(_)
                | Pragma::Restore(_)
                | Pragma::Retention(Some(_))
                | Pragma::CacheSize(Some(_))
        )
    }
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
            "fdb_fork" => match arg {
                Some(a) if !a.is_empty() => Pragma::Fork(a.to_string()),
                _ => {
                    return Err(BadArgument(
                        "fdb_fork takes the name of the new database: PRAGMA fdb_fork = 'name'".into(),
                    ))
                }
            },
            "fdb_restore" => match arg {
                Some(a) => Pragma::Restore(a.parse::<At>().map_err(|e| {
                    BadArgument(format!("fdb_restore: {e}"))
                })?),
                None => {
                    return Err(BadArgument(
                        "fdb_restore takes a time or a version: PRAGMA fdb_restore = '2026-11-21T10:00:00Z' (or 'v:123')".into(),
                    ))
                }
            },
            "fdb_retention" => match arg {
                None => Pragma::Retention(None),
                Some(a) => Pragma::Retention(Some(parse_duration(a).ok_or_else(|| {
                    BadArgument(format!(
                        "fdb_retention takes seconds (an integer >= 0) or a duration like '7d' or '12h', not {a:?}"
                    ))
                })?)),
            },
            "fdb_staleness" => match arg {
                None => Pragma::Staleness(None),
                Some(a) => Pragma::Staleness(Some(
                    a.parse::<pagestore::Staleness>()
                        .map_err(|e| BadArgument(format!("fdb_staleness: {e}")))?,
                )),
            },
            "fdb_snapshot_age" => Pragma::SnapshotAge,
            "journal_mode" if arg.is_some_and(|a| a.eq_ignore_ascii_case("wal")) => {
                Pragma::JournalModeWal
            }
            "locking_mode" if arg.is_some_and(|a| a.eq_ignore_ascii_case("exclusive")) => {
                Pragma::LockingModeExclusive
            }
            "synchronous" => match arg {
                Some(a) => Pragma::Synchronous(synchronous_level(a)),
                None => return Ok(None),
            },
            _ => return Ok(None),
        };
        Ok(Some(p))
    }
}

/// The level SQLite gives `PRAGMA synchronous = arg` (its
/// `getSafetyLevel`): a number N (leading digits) is level (N + 1) % 8 - 1,
/// 0 counting as OFF; `off`, `no`, `false` are OFF; `full` FULL; `extra`
/// EXTRA; anything else (`normal`, `on`, `yes`, `true`, unknown words) is
/// NORMAL. Levels above EXTRA act as FULL.
pub fn synchronous_level(arg: &str) -> u8 {
    let digits: String = arg.chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() {
        let n = digits.parse::<u64>().unwrap_or(u64::MAX) as u8;
        return (n.wrapping_add(1) & 7).max(1) - 1;
    }
    match arg.to_ascii_lowercase().as_str() {
        "off" | "no" | "false" => 0,
        "full" => 2,
        "extra" => 3,
        _ => 1,
    }
}

/// Seconds (`3600`, `0.5`) or a humantime duration (`7d`, `1h 30m`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    if let Ok(f) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(f).ok();
    }
    humantime::parse_duration(s).ok()
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
    fn synchronous_levels_are_read_as_sqlite_reads_them() {
        let level = |a: &str| match Pragma::parse("synchronous", Some(a)) {
            Ok(Some(Pragma::Synchronous(l))) => l,
            other => panic!("{a}: {other:?}"),
        };
        for (arg, want) in [
            ("OFF", 0),
            ("0", 0),
            ("no", 0),
            ("false", 0),
            ("NORMAL", 1),
            ("1", 1),
            ("on", 1),
            ("yes", 1),
            ("whatever", 1),
            ("FULL", 2),
            ("'full'", 2),
            ("2", 2),
            ("EXTRA", 3),
            ("3", 3),
            ("7", 0),
        ] {
            assert_eq!(level(arg), want, "{arg}");
        }
        assert_eq!(Pragma::parse("synchronous", None), Ok(None));
    }

    #[test]
    fn history_pragmas() {
        assert_eq!(
            Pragma::parse("fdb_fork", Some("'copy'")),
            Ok(Some(Pragma::Fork("copy".into())))
        );
        assert!(Pragma::parse("fdb_fork", None).is_err());
        assert_eq!(
            Pragma::parse("fdb_restore", Some("'v:12'")),
            Ok(Some(Pragma::Restore(At::Version(
                pagestore::kv::Version::new(12)
            ))))
        );
        assert!(Pragma::parse("fdb_restore", Some("12")).is_err());
        assert!(Pragma::parse("fdb_restore", None).is_err());
        assert_eq!(
            Pragma::parse("fdb_retention", None),
            Ok(Some(Pragma::Retention(None)))
        );
        assert_eq!(
            Pragma::parse("fdb_retention", Some("60")),
            Ok(Some(Pragma::Retention(Some(Duration::from_secs(60)))))
        );
        assert_eq!(
            Pragma::parse("fdb_retention", Some("'7d'")),
            Ok(Some(Pragma::Retention(Some(Duration::from_secs(
                7 * 86400
            )))))
        );
        assert!(Pragma::parse("fdb_retention", Some("-1")).is_err());
        assert!(Pragma::parse("fdb_retention", Some("soon")).is_err());
    }

    #[test]
    fn admin_pragmas() {
        let admin = |n: &str, a: Option<&str>| Pragma::parse(n, a).unwrap().unwrap().is_admin();
        assert!(admin("fdb_fork", Some("x")));
        assert!(admin("fdb_restore", Some("v:1")));
        assert!(admin("fdb_retention", Some("0")));
        assert!(admin("fdb_cache_size", Some("1")));
        assert!(!admin("fdb_retention", None));
        assert!(!admin("fdb_cache_size", None));
        assert!(!admin("fdb_version", None));
        assert!(!admin("fdb_stats", None));
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
