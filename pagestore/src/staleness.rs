//! [`Staleness`]: how old a read-only snapshot may be, per connection.
//!
//! Strict (the default) starts every transaction at a fresh read version:
//! every commit acknowledged before BEGIN is visible, at the cost of two
//! store round trips. A bound of, say, 10 ms lets a transaction start at
//! this process's view of the database with no round trip at all when the
//! view was confirmed to be the latest within the last 10 ms (the
//! background [`crate::refresher`] keeps it so while connections use it).
//!
//! What a bounded transaction still guarantees:
//! * it reads one consistent snapshot, never older than the bound;
//! * it never reads older than what its connection already saw or
//!   committed (the caller passes that as a floor);
//! * its writes are serializable: the commit validates its read set
//!   against everything committed after its snapshot, stale or not.
//!
//! What it gives up: a commit acknowledged (to another connection or
//! process) up to the bound before BEGIN may be missing from its reads.

use std::time::Duration;

/// Bounds above this are refused: a snapshot older than FoundationDB's
/// 5 s read-version window could no longer be read at its read version.
pub const MAX_STALENESS: Duration = Duration::from_secs(4);

/// The staleness a connection accepts for the snapshot its transactions
/// start at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Staleness {
    /// Every transaction starts at a fresh read version.
    #[default]
    Strict,
    /// A transaction may start at a snapshot confirmed to be the latest
    /// at most this long ago (never zero, never above [`MAX_STALENESS`]).
    Bounded(Duration),
}

/// A staleness bound that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadStaleness {
    /// Not `strict`, `0` or a duration such as `10ms`.
    #[error("{0:?} is not a staleness bound (give strict, 0, or a duration such as 10ms)")]
    Unparsable(String),
    /// Longer than [`MAX_STALENESS`].
    #[error("a staleness bound of {0:?} is above the {MAX_STALENESS:?} allowed (FoundationDB's read versions live 5 s)")]
    TooLong(Duration),
}

impl Staleness {
    /// `Strict` for a zero duration, else `Bounded(d)` when `d` is allowed.
    pub fn from_duration(d: Duration) -> Result<Self, BadStaleness> {
        if d.is_zero() {
            Ok(Staleness::Strict)
        } else if d > MAX_STALENESS {
            Err(BadStaleness::TooLong(d))
        } else {
            Ok(Staleness::Bounded(d))
        }
    }

    /// The bound, `None` when strict.
    pub fn bound(self) -> Option<Duration> {
        match self {
            Staleness::Strict => None,
            Staleness::Bounded(d) => Some(d),
        }
    }
}

impl std::str::FromStr for Staleness {
    type Err = BadStaleness;

    /// `strict`, `0`, or a duration: `10ms`, `500us`, `1s`, `0.25s`
    /// (a bare number is milliseconds).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        if t == "strict" || t == "off" {
            return Ok(Staleness::Strict);
        }
        let bad = || BadStaleness::Unparsable(s.to_string());
        let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.trim().parse().map_err(|_| bad())?;
        let micros_per = match unit.trim() {
            "" | "ms" => 1_000.0,
            "us" | "µs" => 1.0,
            "s" => 1_000_000.0,
            _ => return Err(bad()),
        };
        let micros = n * micros_per;
        if !micros.is_finite() || micros < 0.0 || micros > u64::MAX as f64 {
            return Err(bad());
        }
        Staleness::from_duration(Duration::from_micros(micros.round() as u64))
    }
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Staleness::Strict => f.write_str("strict"),
            Staleness::Bounded(d) if d.subsec_micros() % 1_000 == 0 => {
                write!(f, "{}ms", d.as_millis())
            }
            Staleness::Bounded(d) => write!(f, "{}us", d.as_micros()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let p = |s: &str| s.parse::<Staleness>();
        assert_eq!(p("strict"), Ok(Staleness::Strict));
        assert_eq!(p("0"), Ok(Staleness::Strict));
        assert_eq!(p("0ms"), Ok(Staleness::Strict));
        let ten = Staleness::Bounded(Duration::from_millis(10));
        assert_eq!(p("10ms"), Ok(ten));
        assert_eq!(p("10"), Ok(ten));
        assert_eq!(p(" 0.01s "), Ok(ten));
        assert_eq!(
            p("500us"),
            Ok(Staleness::Bounded(Duration::from_micros(500)))
        );
        assert_eq!(ten.to_string(), "10ms");
        assert_eq!(p("500us").unwrap().to_string(), "500us");
        assert_eq!(Staleness::Strict.to_string(), "strict");
        assert!(matches!(p("5s"), Err(BadStaleness::TooLong(_))));
        for bad in ["", "ms", "-1ms", "10 parsecs", "nan", "1e400s"] {
            assert!(
                matches!(p(bad), Err(BadStaleness::Unparsable(_))),
                "{bad:?}"
            );
        }
    }
}
