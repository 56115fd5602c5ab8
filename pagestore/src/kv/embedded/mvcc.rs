//! The recent MVCC history: the value each key had *before* every commit of
//! the last 5 s window, kept in memory next to redb, which holds only the
//! latest values.
//!
//! A read at read version `rv` from a redb snapshot that stores version `S`
//! sees, for each key, the value before the first commit in `(rv, S]` that
//! wrote it (when there is one), else the snapshot's value. Entries of a
//! commit are inserted *before* its redb transaction becomes visible, and
//! entries newer than a reader's snapshot are ignored, so a reader never
//! misses a commit between its read version and its snapshot nor sees one
//! its snapshot does not contain.
//!
//! # Bounded in bytes
//!
//! The history holds at most its `limit` in bytes (default
//! [`DEFAULT_HISTORY_BYTES`], `EmbeddedOptions::history_bytes`). Past it the
//! oldest commits' entries go, and a read at a read version older than the
//! newest commit dropped fails with `transaction_too_old` (1007): exactly
//! what FoundationDB does when its storage servers cannot keep the whole
//! 5 s window in memory (they answer 1007 for versions they no longer
//! hold). A range clear larger than its share of the budget keeps no
//! previous values at all: its range is recorded as *lost* for readers
//! before that commit, who get 1007 when they read there (everyone else,
//! and every later reader, is unaffected). That is what makes dropping a
//! database O(1) in memory.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};

use super::conflict_ranges::KeyRange;
use crate::kv::Version;

/// Default byte bound of the MVCC history (keys and previous values).
pub const DEFAULT_HISTORY_BYTES: usize = 64 << 20;

/// What a history entry costs besides its key and value (map node, deque
/// slot, version), so that many tiny entries count too.
const ENTRY_OVERHEAD: usize = 64;

/// A key and its value at a read version (`None`: absent then).
pub(crate) type Override = (Vec<u8>, Option<Vec<u8>>);

/// (commit version, value before that commit) of one key, ascending.
type Entries = VecDeque<(Version, Option<Vec<u8>>)>;

/// One recorded commit.
#[derive(Debug)]
struct Commit {
    version: Version,
    /// Tells batch members (same version) apart.
    seq: u64,
    keys: Vec<Vec<u8>>,
}

/// A range cleared by commit `version` whose previous values were not kept.
#[derive(Debug)]
struct Lost {
    version: Version,
    seq: u64,
    range: KeyRange,
}

/// A read the history cannot answer: the values it needs were dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TooOld {
    /// The commit whose previous values the read would need.
    pub(crate) dropped: Version,
}

/// The previous values of keys, by commit version.
#[derive(Debug)]
pub(crate) struct History {
    /// key -> (commit version, value before that commit), ascending versions.
    keys: BTreeMap<Vec<u8>, Entries>,
    /// The keys each commit wrote, ascending versions, for pruning.
    commits: VecDeque<Commit>,
    /// Range clears that kept no previous values, ascending versions.
    lost: VecDeque<Lost>,
    /// Bytes held (keys, previous values, overhead).
    bytes: usize,
    /// The byte bound.
    limit: usize,
    /// The newest commit whose entries were dropped for the bound: reads
    /// at older read versions fail.
    horizon: Version,
    next_seq: u64,
}

impl Default for History {
    fn default() -> Self {
        History::new(DEFAULT_HISTORY_BYTES)
    }
}

fn entry_bytes(key_len: usize, old: &Option<Vec<u8>>) -> usize {
    key_len + old.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
}

impl History {
    /// An empty history bounded to `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        History {
            keys: BTreeMap::new(),
            commits: VecDeque::new(),
            lost: VecDeque::new(),
            bytes: 0,
            limit,
            horizon: Version::ZERO,
            next_seq: 0,
        }
    }

    /// How many bytes of previous values one range clear may keep (a
    /// quarter of the bound): a larger clear records its range as lost.
    pub(crate) fn clear_range_budget(&self) -> usize {
        self.limit / 4
    }

    /// Records the values `before` had just before commit `version`, and
    /// the ranges it cleared without keeping their previous values.
    /// Versions must be recorded in ascending order.
    pub(crate) fn record(
        &mut self,
        version: Version,
        before: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        lost: Vec<KeyRange>,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut written = Vec::with_capacity(before.len());
        for (key, old) in before {
            // Useless: readers before this commit fail in a lost range.
            if lost.iter().any(|(b, e)| b <= &key && &key < e) {
                continue;
            }
            self.bytes += entry_bytes(key.len(), &old);
            self.keys
                .entry(key.clone())
                .or_default()
                .push_back((version, old));
            written.push(key);
        }
        for range in lost {
            self.bytes += range.0.len() + range.1.len() + ENTRY_OVERHEAD;
            self.lost.push_back(Lost {
                version,
                seq,
                range,
            });
        }
        self.commits.push_back(Commit {
            version,
            seq,
            keys: written,
        });
        self.enforce_limit();
    }

    /// Drops the oldest commits until the bound holds.
    fn enforce_limit(&mut self) {
        while self.bytes > self.limit {
            let Some(c) = self.commits.pop_front() else {
                break;
            };
            self.horizon = self.horizon.max(c.version);
            for key in c.keys {
                self.drop_entries(key, |v| v <= c.version);
            }
            // Lost ranges at or below the horizon are covered by it.
            while self.lost.front().is_some_and(|l| l.version <= c.version) {
                if let Some(l) = self.lost.pop_front() {
                    self.free_lost(&l);
                }
            }
            tracing::debug!(
                horizon = self.horizon.get(),
                bytes = self.bytes,
                limit = self.limit,
                "MVCC history over its byte bound: oldest commit dropped"
            );
        }
    }

    fn free_lost(&mut self, l: &Lost) {
        let n = l.range.0.len() + l.range.1.len() + ENTRY_OVERHEAD;
        self.bytes = self.bytes.saturating_sub(n);
    }

    /// Removes the entries of the last recorded commit, at `version` (a
    /// commit that did not happen). Only that commit's: others of its batch
    /// share the version.
    pub(crate) fn forget(&mut self, version: Version) {
        if self.commits.back().is_none_or(|c| c.version != version) {
            return;
        }
        let Some(c) = self.commits.pop_back() else {
            return;
        };
        while self.lost.back().is_some_and(|l| l.seq == c.seq) {
            if let Some(l) = self.lost.pop_back() {
                self.free_lost(&l);
            }
        }
        for key in c.keys {
            let Some(entries) = self.keys.get_mut(&key) else {
                continue;
            };
            if entries.back().is_some_and(|(v, _)| *v == version) {
                if let Some((_, old)) = entries.pop_back() {
                    self.bytes = self.bytes.saturating_sub(entry_bytes(key.len(), &old));
                }
            }
            if entries.is_empty() {
                self.keys.remove(&key);
            }
        }
    }

    /// Drops every entry of commits older than `cutoff`.
    pub(crate) fn prune(&mut self, cutoff: Version) {
        while self.commits.front().is_some_and(|c| c.version < cutoff) {
            if let Some(c) = self.commits.pop_front() {
                for key in c.keys {
                    self.drop_entries(key, |v| v < cutoff);
                }
            }
        }
        while self.lost.front().is_some_and(|l| l.version < cutoff) {
            if let Some(l) = self.lost.pop_front() {
                self.free_lost(&l);
            }
        }
    }

    /// (Takes the key by value: one search of the map, not two, at every
    /// commit's prune.)
    fn drop_entries(&mut self, key: Vec<u8>, doomed: impl Fn(Version) -> bool) {
        let Entry::Occupied(mut e) = self.keys.entry(key) else {
            return;
        };
        let mut freed = 0;
        let key_len = e.key().len();
        e.get_mut().retain(|(v, old)| {
            let drop = doomed(*v);
            if drop {
                freed += entry_bytes(key_len, old);
            }
            !drop
        });
        self.bytes = self.bytes.saturating_sub(freed);
        if e.get().is_empty() {
            e.remove();
        }
    }

    /// Fails when a read at `read_version` through a snapshot at
    /// `snapshot_version` needs entries that were dropped: those of a
    /// commit at or below the horizon, or of a lost range meeting
    /// `[begin, end)`.
    fn check(
        &self,
        begin: &[u8],
        end: &[u8],
        read_version: Version,
        snapshot_version: Version,
    ) -> Result<(), TooOld> {
        if read_version >= snapshot_version {
            return Ok(());
        }
        if read_version < self.horizon {
            return Err(TooOld {
                dropped: self.horizon,
            });
        }
        let hit = self.lost.iter().find(|l| {
            l.version > read_version
                && l.version <= snapshot_version
                && l.range.0.as_slice() < end
                && begin < l.range.1.as_slice()
        });
        match hit {
            Some(l) => Err(TooOld { dropped: l.version }),
            None => Ok(()),
        }
    }

    /// The value of `key` at `read_version` when a commit in
    /// `(read_version, snapshot_version]` changed it; `None` when the
    /// snapshot's value is the right one.
    pub(crate) fn value_at(
        &self,
        key: &[u8],
        read_version: Version,
        snapshot_version: Version,
    ) -> Result<Option<Option<Vec<u8>>>, TooOld> {
        let mut end = key.to_vec();
        end.push(0);
        self.check(key, &end, read_version, snapshot_version)?;
        Ok(self
            .keys
            .get(key)
            .and_then(|e| first_between(e, read_version, snapshot_version)))
    }

    /// [`History::value_at`] for every key of `[begin, end)` that has one,
    /// ascending.
    pub(crate) fn overrides(
        &self,
        begin: &[u8],
        end: &[u8],
        read_version: Version,
        snapshot_version: Version,
    ) -> Result<Vec<Override>, TooOld> {
        if begin >= end || read_version >= snapshot_version {
            return Ok(Vec::new());
        }
        self.check(begin, end, read_version, snapshot_version)?;
        Ok(self
            .keys
            .range::<[u8], _>((
                std::ops::Bound::Included(begin),
                std::ops::Bound::Excluded(end),
            ))
            .filter_map(|(k, e)| {
                first_between(e, read_version, snapshot_version).map(|v| (k.clone(), v))
            })
            .collect())
    }

    /// Number of commits and bytes held.
    pub(crate) fn stats(&self) -> (usize, usize) {
        (self.commits.len(), self.bytes)
    }
}

fn first_between(
    entries: &Entries,
    read_version: Version,
    snapshot_version: Version,
) -> Option<Option<Vec<u8>>> {
    let idx = entries.partition_point(|(v, _)| *v <= read_version);
    match entries.get(idx) {
        Some((v, old)) if *v <= snapshot_version => Some(old.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(n: u64) -> Version {
        Version::new(n)
    }

    fn before(pairs: &[(&str, Option<&str>)]) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn s(v: &str) -> Option<Vec<u8>> {
        Some(v.as_bytes().to_vec())
    }

    #[test]
    fn reads_value_before_first_later_commit() {
        let mut h = History::default();
        // k: absent until 10, "a" until 20, "b" after (latest in redb).
        h.record(ver(10), before(&[("k", None)]), vec![]);
        h.record(ver(20), before(&[("k", Some("a"))]), vec![]);
        assert_eq!(h.value_at(b"k", ver(5), ver(20)).unwrap(), Some(None));
        assert_eq!(h.value_at(b"k", ver(10), ver(20)).unwrap(), Some(s("a")));
        assert_eq!(h.value_at(b"k", ver(15), ver(20)).unwrap(), Some(s("a")));
        assert_eq!(h.value_at(b"k", ver(20), ver(20)).unwrap(), None);
        // A snapshot at 10 does not contain commit 20: its entry is ignored.
        assert_eq!(h.value_at(b"k", ver(10), ver(10)).unwrap(), None);
        assert_eq!(h.value_at(b"other", ver(5), ver(20)).unwrap(), None);
    }

    #[test]
    fn overrides_cover_range() {
        let mut h = History::default();
        h.record(
            ver(10),
            before(&[("a", None), ("b", Some("old")), ("z", None)]),
            vec![],
        );
        let o = h.overrides(b"a", b"c", ver(5), ver(10)).unwrap();
        assert_eq!(o, vec![(b"a".to_vec(), None), (b"b".to_vec(), s("old"))]);
        assert!(h
            .overrides(b"a", b"c", ver(10), ver(10))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn pruning_drops_old_commits_only() {
        let mut h = History::default();
        h.record(ver(10), before(&[("k", None), ("j", Some("x"))]), vec![]);
        h.record(ver(20), before(&[("k", Some("a"))]), vec![]);
        h.prune(ver(15));
        assert_eq!(h.stats().0, 1);
        assert_eq!(h.value_at(b"j", ver(5), ver(20)).unwrap(), None);
        // The entry of commit 20 survives.
        assert_eq!(h.value_at(b"k", ver(15), ver(20)).unwrap(), Some(s("a")));
        h.prune(ver(21));
        assert_eq!(h.stats(), (0, 0));
        assert!(h.keys.is_empty());
    }

    #[test]
    fn batch_members_share_a_version() {
        let mut h = History::default();
        // Two commits of one batch at version 10: k written by both.
        h.record(ver(10), before(&[("k", None), ("a", Some("a0"))]), vec![]);
        h.record(
            ver(10),
            before(&[("k", Some("first")), ("b", None)]),
            vec![],
        );
        // Before the batch: the value before its first commit.
        assert_eq!(h.value_at(b"k", ver(5), ver(10)).unwrap(), Some(None));
        assert_eq!(h.value_at(b"a", ver(5), ver(10)).unwrap(), Some(s("a0")));
        assert_eq!(h.value_at(b"b", ver(5), ver(10)).unwrap(), Some(None));
        assert_eq!(h.value_at(b"k", ver(10), ver(10)).unwrap(), None);
        // Forgetting the second leaves the first whole.
        h.forget(ver(10));
        assert_eq!(h.stats().0, 1);
        assert_eq!(h.value_at(b"k", ver(5), ver(10)).unwrap(), Some(None));
        assert_eq!(h.value_at(b"a", ver(5), ver(10)).unwrap(), Some(s("a0")));
        assert_eq!(h.value_at(b"b", ver(5), ver(10)).unwrap(), None);
    }

    #[test]
    fn forget_removes_one_commit() {
        let mut h = History::default();
        h.record(ver(10), before(&[("k", None)]), vec![]);
        h.record(ver(20), before(&[("k", Some("a"))]), vec![]);
        h.forget(ver(20));
        assert_eq!(h.value_at(b"k", ver(10), ver(30)).unwrap(), None);
        assert_eq!(h.value_at(b"k", ver(5), ver(30)).unwrap(), Some(None));
        assert_eq!(h.stats().0, 1);
    }

    #[test]
    fn over_the_byte_bound_the_oldest_commits_go_and_old_reads_fail() {
        let mut h = History::new(3 * (1 + 100 + ENTRY_OVERHEAD));
        let v100 = "x".repeat(100);
        h.record(ver(10), before(&[("a", Some(&v100))]), vec![]);
        h.record(ver(20), before(&[("b", Some(&v100))]), vec![]);
        h.record(ver(30), before(&[("c", Some(&v100))]), vec![]);
        assert_eq!(h.value_at(b"a", ver(5), ver(30)).unwrap(), Some(s(&v100)));
        h.record(ver(40), before(&[("d", Some(&v100))]), vec![]);
        assert_eq!(h.stats().0, 3);
        // Commit 10's entries are gone: a reader before it must not see
        // the latest value of "a" as if it were its own.
        assert_eq!(
            h.value_at(b"a", ver(5), ver(40)),
            Err(TooOld { dropped: ver(10) })
        );
        assert_eq!(
            h.value_at(b"z", ver(9), ver(40)),
            Err(TooOld { dropped: ver(10) })
        );
        assert!(h.overrides(b"a", b"z", ver(5), ver(40)).is_err());
        // Readers at or after it are served.
        assert_eq!(h.value_at(b"b", ver(10), ver(40)).unwrap(), Some(s(&v100)));
        // A reader whose snapshot is its read version needs nothing.
        assert_eq!(h.value_at(b"a", ver(5), ver(5)).unwrap(), None);
    }

    #[test]
    fn lost_ranges_fail_old_readers_there_only() {
        let mut h = History::default();
        h.record(
            ver(10),
            before(&[("d/1", Some("x")), ("e", Some("y"))]),
            vec![(b"d/".to_vec(), b"d0".to_vec())],
        );
        assert_eq!(
            h.value_at(b"d/5", ver(5), ver(10)),
            Err(TooOld { dropped: ver(10) })
        );
        assert!(h.overrides(b"c", b"d/0", ver(5), ver(10)).is_err());
        // Outside the range, and at or after the clear, reads are served.
        assert_eq!(h.value_at(b"e", ver(5), ver(10)).unwrap(), Some(s("y")));
        assert_eq!(h.overrides(b"d0", b"z", ver(5), ver(10)).unwrap().len(), 1);
        assert_eq!(h.value_at(b"d/5", ver(10), ver(20)).unwrap(), None);
        // The entry inside the lost range was not kept.
        assert_eq!(h.stats().1, 1 + 1 + ENTRY_OVERHEAD + 2 + 2 + ENTRY_OVERHEAD);
        // A forgotten commit takes its lost range with it; pruning too.
        h.record(ver(20), before(&[]), vec![(b"q".to_vec(), b"r".to_vec())]);
        h.forget(ver(20));
        assert_eq!(h.value_at(b"q", ver(15), ver(20)).unwrap(), None);
        h.prune(ver(11));
        assert_eq!(h.stats(), (0, 0));
        assert_eq!(h.value_at(b"d/5", ver(5), ver(10)).unwrap(), None);
    }
}
