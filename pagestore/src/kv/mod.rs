//! The ordered, transactional key-value contract that `pagestore` runs on.
//!
//! The trait is shaped like FoundationDB's transaction API so that the same
//! pagestore code runs unchanged on the embedded backend (tests, default
//! build) and on a real FDB cluster (feature `fdb`).
//!
//! # Why synchronous
//!
//! Every caller of this trait is ultimately a SQLite VFS callback, which is a
//! plain blocking C function: an async trait would only move the `block_on`
//! from the backend into every caller. FDB's own client runs its network on a
//! dedicated thread and resolves futures there, so a blocking wait on one of
//! its futures costs nothing extra. Where FDB gains from concurrency (many
//! reads in flight at once) the trait says so explicitly with
//! [`KvTxn::get_batch`], which issues all reads of a batch together and counts
//! as one round trip.
//!
//! # Semantics every backend honours
//!
//! * A transaction reads at one read version (obtained lazily by the first
//!   read, or set with [`KvTxn::set_read_version`]) and sees its own writes.
//! * Serializable reads add read-conflict ranges; snapshot reads do not.
//! * Commit fails with `not_committed` (1020) when a read-conflict range
//!   intersects a write committed after the read version.
//! * Limits: key 10,000 B (2102), value 100,000 B (2103), transaction
//!   10,000,000 B (2101), 5 s between read version and the last read or the
//!   commit (1007). Size errors surface at commit, as in FDB's C client.

mod counters;
mod error;
mod key_range;
mod overlay;
mod size;
mod types;

pub use error::{KvError, KvResult};
pub use types::{
    CommitInfo, ConflictKind, KeyValue, KvMetrics, MutationType, RangeOption, RangeResult,
    ReadRequest, ReadResult, Version, Versionstamp, INCOMPLETE_VERSIONSTAMP,
};

#[cfg(feature = "fdb")]
pub mod fdb;

pub mod embedded;

#[cfg(unix)]
pub mod process;
#[cfg(unix)]
pub mod remote;

/// FDB's size and time limits, shared by both backends and by pagestore's
/// chunking so that nothing is ever sent that a real cluster would reject.
pub mod limits {
    /// Largest key FDB accepts (error 2102 beyond).
    pub const MAX_KEY_SIZE: usize = 10_000;
    /// Largest value FDB accepts (error 2103 beyond).
    pub const MAX_VALUE_SIZE: usize = 100_000;
    /// Largest transaction (mutations plus conflict ranges; error 2101 beyond).
    pub const MAX_TRANSACTION_SIZE: usize = 10_000_000;
    /// FDB's MVCC window: a read version older than this gives 1007.
    pub const MVCC_WINDOW_MICROS: u64 = 5_000_000;
    /// Versions advance by about this many per second on FDB.
    pub const VERSIONS_PER_SECOND: u64 = 1_000_000;
}

/// How durable a commit must be when it is acknowledged (SQLite's
/// `PRAGMA synchronous`, carried by the VFS through
/// `pagestore::Transaction::set_durability`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// On disk before it is acknowledged (`synchronous` FULL or EXTRA, the
    /// default). FoundationDB and the shared-mode client are always this.
    #[default]
    Full,
    /// May be acknowledged once visible, before it is on disk (`synchronous`
    /// OFF or NORMAL). The embedded store puts it on disk within
    /// `kv::embedded::FLUSH_DELAY` (or with the next full commit); a crash
    /// of the process or the machine before then loses it and the relaxed
    /// commits after it, never a full commit nor anything before one.
    Relaxed,
}

/// A handle on a store; cheap to share between threads.
pub trait Kv: Send + Sync + 'static {
    /// Starts a transaction. No round trip: the read version is fetched by
    /// the first read unless [`KvTxn::set_read_version`] is called.
    fn begin(&self) -> KvResult<Box<dyn KvTxn>>;

    /// Round-trip and byte counters since the store was opened.
    fn metrics(&self) -> KvMetrics;

    /// A short name for logs ("embedded", "fdb").
    fn backend_name(&self) -> &'static str;
}

/// One store transaction. Mutations are buffered until [`KvTxn::commit`].
///
/// Each method that talks to the store (read version, a read, a batch of
/// reads, commit) is one round trip and is counted in [`KvMetrics`].
pub trait KvTxn: Send {
    /// The transaction's read version; one round trip (GRV) the first time
    /// unless it was set.
    fn read_version(&mut self) -> KvResult<Version>;

    /// Reads at `version` instead of asking for a fresh read version. Reads
    /// and commit fail with 1007 when `version` is outside the MVCC window.
    fn set_read_version(&mut self, version: Version);

    /// Reads one key. `snapshot` reads add no read-conflict range.
    fn get(&mut self, key: &[u8], snapshot: bool) -> KvResult<Option<Vec<u8>>>;

    /// Reads a range. `limit == 0` means no limit; the backend may still
    /// return fewer rows with `more == true` (continue from the last key).
    fn get_range(&mut self, range: &RangeOption, snapshot: bool) -> KvResult<RangeResult>;

    /// Issues all `requests` at once and waits for all of them: one round
    /// trip. Results come back in request order.
    fn get_batch(&mut self, requests: &[ReadRequest], snapshot: bool) -> KvResult<Vec<ReadResult>>;

    /// Sets `key` to `value`.
    fn set(&mut self, key: &[u8], value: &[u8]);

    /// Clears one key.
    fn clear(&mut self, key: &[u8]);

    /// Clears `[begin, end)`.
    fn clear_range(&mut self, begin: &[u8], end: &[u8]);

    /// An atomic operation, with FDB's parameter layout (for versionstamped
    /// keys and values the last 4 bytes are the little-endian offset of the
    /// 10-byte placeholder).
    fn atomic_op(&mut self, key: &[u8], param: &[u8], op: MutationType);

    /// Adds an explicit conflict range `[begin, end)`.
    fn add_conflict_range(&mut self, begin: &[u8], end: &[u8], kind: ConflictKind);

    /// Approximate size counted against the 10 MB limit so far.
    fn approximate_size(&self) -> usize;

    /// How durable the commit must be when acknowledged (default
    /// [`Durability::Full`]). Backends that are always durable ignore it.
    fn set_durability(&mut self, _durability: Durability) {}

    /// Commits. A transaction without writes commits without a round trip.
    fn commit(self: Box<Self>) -> KvResult<CommitInfo>;
}

/// Returns the first key after every key that starts with `prefix`
/// (FDB's `strinc`), or `None` when `prefix` is all `0xff`.
pub fn strinc(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last != 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::strinc;

    #[test]
    fn strinc_skips_trailing_ff() {
        assert_eq!(strinc(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(strinc(&[1, 0xff, 0xff]), Some(vec![2]));
        assert_eq!(strinc(&[0xff]), None);
    }
}
