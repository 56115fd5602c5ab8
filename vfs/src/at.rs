//! [`At`]: a point in a database's history, by store version or by
//! wall-clock time, and its text forms.
//!
//! Text forms (URI parameter `at=`, the CLI's `--at`, `PRAGMA fdb_restore`):
//!
//! * an RFC 3339 time: `2026-11-21T10:00:00Z`, `2026-11-21T10:00:00.25Z`,
//!   `2026-11-21 10:00:00Z` (space for `T`), `2026-11-21T11:00:00+01:00`
//!   (an offset); without `Z` or an offset the time is UTC;
//! * a store version: `v:123456` or `@123456` (what `PRAGMA fdb_version`
//!   reports).
//!
//! A bare number is refused (a version or seconds since the epoch? say which).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pagestore::kv::Version;
use pagestore::Database;

use crate::error::{OutOfHistory, Result};

/// A point in a database's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Exactly this store version (as `PRAGMA fdb_version` reports it).
    Version(Version),
    /// The last version committed at or before this wall-clock time.
    Time(SystemTime),
}

/// Text that is not an [`At`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadAt(pub String);

const FORMS: &str =
    "an RFC 3339 time like 2026-11-21T10:00:00Z, or a store version like v:123 or @123";

impl FromStr for At {
    type Err = BadAt;

    fn from_str(s: &str) -> std::result::Result<At, BadAt> {
        let t = s.trim();
        let version = t
            .strip_prefix("v:")
            .or_else(|| t.strip_prefix("V:"))
            .or_else(|| t.strip_prefix('@'));
        if let Some(v) = version {
            return v
                .trim()
                .parse::<Version>()
                .map(At::Version)
                .map_err(|_| BadAt(format!("{s:?} is not a version number (expected {FORMS})")));
        }
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadAt(format!(
                "{s:?} is ambiguous: write v:{t} for store version {t}, or an RFC 3339 time like 2026-11-21T10:00:00Z"
            )));
        }
        parse_time(t)
            .map(At::Time)
            .ok_or_else(|| BadAt(format!("{s:?} is not {FORMS}")))
    }
}

/// Parses an RFC 3339 time, with `Z`, an `±HH:MM` offset, or neither (UTC).
fn parse_time(t: &str) -> Option<SystemTime> {
    // humantime reads `Z`-or-nothing; an explicit offset is applied here.
    let (base, offset_secs) = split_offset(t)?;
    let at = humantime::parse_rfc3339_weak(base).ok()?;
    if offset_secs >= 0 {
        at.checked_sub(Duration::from_secs(offset_secs as u64))
    } else {
        at.checked_add(Duration::from_secs(offset_secs.unsigned_abs()))
    }
}

/// Splits a trailing `+HH:MM` / `-HH:MM` (after the time of day) off `t`:
/// (the rest, the offset in seconds east of UTC).
fn split_offset(t: &str) -> Option<(&str, i64)> {
    let b = t.as_bytes();
    if b.len() > 16 && b.len() >= 6 {
        let tail = &b[b.len() - 6..];
        let sign = match tail[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return Some((t, 0)),
        };
        if tail[3] != b':' {
            return None;
        }
        let num = |d: &[u8]| -> Option<i64> { std::str::from_utf8(d).ok()?.parse::<i64>().ok() };
        let (h, m) = (num(&tail[1..3])?, num(&tail[4..6])?);
        if h > 23 || m > 59 {
            return None;
        }
        return Some((&t[..t.len() - 6], sign * (h * 3600 + m * 60)));
    }
    Some((t, 0))
}

/// 9999-12-31T23:59:59.999999Z, after the Unix epoch.
const MAX_RFC3339: Duration = Duration::from_micros(253_402_300_799_999_999);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Version(v) => write!(f, "v:{v}"),
            // RFC 3339 covers years 1970..=9999 here; times outside are
            // shown clamped (both mean the same to a database: before it
            // existed, or in the future).
            At::Time(t) => {
                let t = (*t).clamp(UNIX_EPOCH, UNIX_EPOCH + MAX_RFC3339);
                write!(f, "{}", humantime::format_rfc3339_micros(t))
            }
        }
    }
}

impl From<SystemTime> for At {
    fn from(t: SystemTime) -> At {
        At::Time(t)
    }
}

/// Microseconds since the Unix epoch (0 before it).
pub fn micros_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// The time `micros` (since the Unix epoch) in RFC 3339.
pub fn format_micros(micros: u64) -> String {
    At::Time(UNIX_EPOCH + Duration::from_micros(micros)).to_string()
}

impl At {
    /// The store version this point names in `db`: a version as is, a
    /// time through the time index (the last version committed at or
    /// before it; for a fork, at least the version it was forked at). Fails for a time in the future (by the store's clock) or
    /// before the database was created.
    pub fn resolve(&self, db: &Database) -> Result<Version> {
        match *self {
            At::Version(v) => Ok(v),
            At::Time(t) => {
                let micros = micros_of(t);
                let now = db.store().options().clock.now_micros();
                if micros > now {
                    return Err(OutOfHistory::Future {
                        at: format_micros(micros),
                        now: format_micros(now),
                    }
                    .into());
                }
                let v = db
                    .version_at(micros)?
                    .ok_or_else(|| OutOfHistory::BeforeCreation {
                        database: db.name().to_string(),
                        at: format_micros(micros),
                    })?;
                // A fork that existed then but had not committed yet was
                // its origin's state at the fork version.
                Ok(match db.fork_origin() {
                    Some((_, origin)) => v.max(origin),
                    None => v,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> std::result::Result<At, String> {
        s.parse::<At>().map_err(|e| e.0)
    }

    fn secs(s: u64) -> At {
        At::Time(UNIX_EPOCH + Duration::from_secs(s))
    }

    #[test]
    fn versions() {
        assert_eq!(at("v:42"), Ok(At::Version(pagestore::kv::Version::new(42))));
        assert_eq!(at("@42"), Ok(At::Version(pagestore::kv::Version::new(42))));
        assert_eq!(at(" V:7 "), Ok(At::Version(pagestore::kv::Version::new(7))));
        assert!(at("v:x").is_err());
        assert!(at("@").is_err());
        let e = at("42").err().unwrap_or_default();
        assert!(e.contains("v:42"), "{e}");
    }

    #[test]
    fn times() {
        // 2026-11-21T10:00:00Z
        let t = 1_795_255_200;
        assert_eq!(at("2026-11-21T10:00:00Z"), Ok(secs(t)));
        assert_eq!(at("2026-11-21 10:00:00Z"), Ok(secs(t)));
        assert_eq!(at("2026-11-21T10:00:00"), Ok(secs(t)));
        assert_eq!(at("2026-11-21T11:30:00+01:30"), Ok(secs(t)));
        assert_eq!(at("2026-11-21T08:00:00-02:00"), Ok(secs(t)));
        assert_eq!(
            at("2026-11-21T10:00:00.5Z"),
            Ok(At::Time(
                UNIX_EPOCH + Duration::from_secs(t) + Duration::from_millis(500)
            ))
        );
        assert!(at("yesterday").is_err());
        assert!(at("2026-11-21T10:00:00+1:00").is_err());
        assert!(at("").is_err());
    }

    #[test]
    fn display_of_out_of_range_times_is_clamped_not_a_panic() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(At::Time(before).to_string(), "1970-01-01T00:00:00.000000Z");
        let after = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(At::Time(after).to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(format_micros(u64::MAX), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn display_round_trips() {
        for a in [
            At::Version(pagestore::kv::Version::new(9)),
            secs(1_795_255_200),
        ] {
            assert_eq!(at(&a.to_string()), Ok(a));
        }
        let t = At::Time(UNIX_EPOCH + Duration::from_micros(1_795_255_200_123_456));
        assert_eq!(at(&t.to_string()), Ok(t));
    }
}
