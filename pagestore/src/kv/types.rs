//! Plain data types of the KV contract.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A store version: FDB's 64-bit read/commit version (about 1,000,000 per
/// second). The embedded backend uses microseconds since the Unix epoch,
/// kept strictly increasing, so the same arithmetic holds.
///
/// A newtype so that a version is never confused with a page number, a
/// count or a time; the arithmetic versions need is named below. On the
/// wire (shared mode) and in `Debug`/`Display` it is the plain number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(u64);

impl Version {
    /// Version 0: before every commit.
    pub const ZERO: Version = Version(0);
    /// The largest version.
    pub const MAX: Version = Version(u64::MAX);

    /// The version numbered `v`.
    pub const fn new(v: u64) -> Self {
        Version(v)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The version `n` versions later (saturating at [`Version::MAX`]).
    pub const fn after(self, n: u64) -> Version {
        Version(self.0.saturating_add(n))
    }

    /// The version `n` versions earlier (saturating at [`Version::ZERO`]).
    pub const fn before(self, n: u64) -> Version {
        Version(self.0.saturating_sub(n))
    }

    /// How many versions `earlier` is before this one (0 if it is not).
    pub const fn since(self, earlier: Version) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Its 8 big-endian bytes (as in keys and versionstamps).
    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The version in 8 big-endian bytes.
    pub const fn from_be_bytes(b: [u8; 8]) -> Version {
        Version(u64::from_be_bytes(b))
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Parses the plain number (as `Display` writes it).
impl std::str::FromStr for Version {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Version)
    }
}

/// FDB's 10-byte versionstamp: the 8-byte big-endian commit version followed
/// by the 2-byte big-endian batch order of the transaction within that
/// version. Byte order equals commit order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Versionstamp(pub [u8; 10]);

/// The placeholder written where a versionstamp goes before commit.
pub const INCOMPLETE_VERSIONSTAMP: [u8; 10] = [0xff; 10];

impl Versionstamp {
    /// Builds a versionstamp from a commit version and batch order.
    pub fn new(version: Version, order: u16) -> Self {
        let mut b = [0u8; 10];
        b[..8].copy_from_slice(&version.to_be_bytes());
        b[8..].copy_from_slice(&order.to_be_bytes());
        Versionstamp(b)
    }

    /// The smallest versionstamp of a commit version (order 0).
    pub fn at_version(version: Version) -> Self {
        Self::new(version, 0)
    }

    /// The commit version part.
    pub fn version(&self) -> Version {
        let mut v = [0u8; 8];
        v.copy_from_slice(&self.0[..8]);
        Version::from_be_bytes(v)
    }

    /// The batch order part.
    pub fn order(&self) -> u16 {
        u16::from_be_bytes([self.0[8], self.0[9]])
    }

    /// Parses 10 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let arr: [u8; 10] = b.try_into().ok()?;
        Some(Versionstamp(arr))
    }
}

impl fmt::Debug for Versionstamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vs({}.{})", self.version(), self.order())
    }
}

impl fmt::Display for Versionstamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.version(), self.order())
    }
}

/// A key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// A range read: keys in `[begin, end)`, at most `limit` rows (0 = no
/// limit), in reverse order when `reverse`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeOption {
    /// First key (inclusive).
    pub begin: Vec<u8>,
    /// End key (exclusive).
    pub end: Vec<u8>,
    /// Row limit; 0 means no limit.
    pub limit: usize,
    /// Newest-first.
    pub reverse: bool,
}

impl RangeOption {
    /// All keys in `[begin, end)`, ascending.
    pub fn new(begin: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        RangeOption {
            begin: begin.into(),
            end: end.into(),
            limit: 0,
            reverse: false,
        }
    }

    /// Sets the row limit.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Reads from the end.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }
}

/// Rows of a range read. When `more` is true the backend stopped early (byte
/// budget) and the caller continues after the last key returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// The rows, in the requested order.
    pub kvs: Vec<KeyValue>,
    /// More rows remain in the range (within the limit).
    pub more: bool,
}

/// One read in a [`crate::kv::KvTxn::get_batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRequest {
    /// A point read.
    Get(Vec<u8>),
    /// A range read.
    Range(RangeOption),
}

/// The answer to one [`ReadRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// The value of a point read.
    Value(Option<Vec<u8>>),
    /// The rows of a range read.
    Range(RangeResult),
}

/// FDB's atomic mutation types that fdbvfs uses or a backend must honour.
///
/// Shared mode's wire protocol carries this type as is, by variant index:
/// add new variants at the end (and bump its `PROTOCOL_VERSION` when one
/// is removed or the order changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MutationType {
    /// Little-endian integer addition.
    Add,
    /// Bitwise and.
    BitAnd,
    /// Bitwise or.
    BitOr,
    /// Bitwise xor.
    BitXor,
    /// Little-endian unsigned max.
    Max,
    /// Little-endian unsigned min.
    Min,
    /// Lexicographic max.
    ByteMax,
    /// Lexicographic min.
    ByteMin,
    /// Key with a 10-byte placeholder replaced by the commit versionstamp;
    /// the last 4 bytes of the key are the placeholder's offset (LE u32).
    SetVersionstampedKey,
    /// Value with a placeholder, same layout as the key form.
    SetVersionstampedValue,
    /// Clears the key if its value equals the parameter.
    CompareAndClear,
    /// Appends the parameter if the result fits in a value.
    AppendIfFits,
}

/// Kind of an explicit conflict range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictKind {
    /// Conflicts with writes committed after our read version.
    Read,
    /// Makes concurrent readers of the range conflict with us.
    Write,
}

/// What a successful commit returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The commit version (the read version for a read-only transaction).
    /// Commits of one FDB batch share it (the embedded backend too, with
    /// `Faults::batch_join_probability`): order commits by `versionstamp`,
    /// never by this alone.
    pub version: Version,
    /// The versionstamp that replaced placeholders (None when read-only):
    /// distinct per commit, in commit order.
    pub versionstamp: Option<Versionstamp>,
}

/// Counters of store round trips and bytes, by kind. Deterministic for a
/// given workload, so tests assert on them (never on wall-clock time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvMetrics {
    /// Read-version requests (GRV).
    pub read_versions: u64,
    /// Read round trips (a `get`, a `get_range` chunk or a `get_batch`).
    pub reads: u64,
    /// Commit round trips (transactions without writes are not counted).
    pub commits: u64,
    /// Commits that failed with 1020.
    pub conflicts: u64,
    /// Commits that ended in 1021 (injected or real).
    pub unknown_results: u64,
    /// Value bytes returned by reads.
    pub bytes_read: u64,
    /// Key and value bytes written by successful commits.
    pub bytes_written: u64,
    /// Largest committed transaction size in bytes (for limit assertions).
    pub max_commit_bytes: u64,
}

impl KvMetrics {
    /// All round trips.
    pub fn round_trips(&self) -> u64 {
        self.read_versions + self.reads + self.commits
    }

    /// The difference `self - earlier`, for measuring one operation.
    /// `max_commit_bytes` is kept as the later maximum.
    pub fn since(&self, earlier: &KvMetrics) -> KvMetrics {
        KvMetrics {
            read_versions: self.read_versions - earlier.read_versions,
            reads: self.reads - earlier.reads,
            commits: self.commits - earlier.commits,
            conflicts: self.conflicts - earlier.conflicts,
            unknown_results: self.unknown_results - earlier.unknown_results,
            bytes_read: self.bytes_read - earlier.bytes_read,
            bytes_written: self.bytes_written - earlier.bytes_written,
            max_commit_bytes: self.max_commit_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Version, Versionstamp};

    #[test]
    fn versionstamp_orders_by_version_then_batch() {
        let a = Versionstamp::new(Version::new(5), 9);
        let b = Versionstamp::new(Version::new(6), 0);
        assert!(a < b && a.0 < b.0);
        assert_eq!(b.version(), Version::new(6));
        assert_eq!(a.order(), 9);
    }
}
