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

use std::collections::{BTreeMap, VecDeque};

use crate::kv::Version;

/// (commit version, value before that commit) of one key, ascending.
type Entries = VecDeque<(Version, Option<Vec<u8>>)>;

/// The previous values of keys, by commit version.
#[derive(Debug, Default)]
pub(crate) struct History {
    /// key -> (commit version, value before that commit), ascending versions.
    keys: BTreeMap<Vec<u8>, Entries>,
    /// The keys each commit wrote, ascending versions, for pruning.
    commits: VecDeque<(Version, Vec<Vec<u8>>)>,
    /// Bytes held (keys and previous values), for tracing.
    bytes: usize,
}

impl History {
    /// Records the values `before` had just before commit `version`.
    /// Versions must be recorded in ascending order.
    pub(crate) fn record(&mut self, version: Version, before: BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let mut written = Vec::with_capacity(before.len());
        for (key, old) in before {
            self.bytes += key.len() + old.as_ref().map_or(0, Vec::len);
            self.keys
                .entry(key.clone())
                .or_default()
                .push_back((version, old));
            written.push(key);
        }
        self.commits.push_back((version, written));
    }

    /// Removes the entries of the last recorded commit, at `version` (a
    /// commit that did not happen). Only that commit's: others of its batch
    /// share the version.
    pub(crate) fn forget(&mut self, version: Version) {
        if self.commits.back().is_none_or(|(v, _)| *v != version) {
            return;
        }
        let Some((_, keys)) = self.commits.pop_back() else {
            return;
        };
        for key in keys {
            let Some(entries) = self.keys.get_mut(&key) else {
                continue;
            };
            if entries.back().is_some_and(|(v, _)| *v == version) {
                if let Some((_, old)) = entries.pop_back() {
                    let freed = key.len() + old.as_ref().map_or(0, Vec::len);
                    self.bytes = self.bytes.saturating_sub(freed);
                }
            }
            if entries.is_empty() {
                self.keys.remove(&key);
            }
        }
    }

    /// Drops every entry of commits older than `cutoff`.
    pub(crate) fn prune(&mut self, cutoff: Version) {
        while self.commits.front().is_some_and(|(v, _)| *v < cutoff) {
            if let Some((_, keys)) = self.commits.pop_front() {
                for key in keys {
                    self.drop_entries(&key, |v| v < cutoff);
                }
            }
        }
    }

    fn drop_entries(&mut self, key: &[u8], doomed: impl Fn(Version) -> bool) {
        let Some(entries) = self.keys.get_mut(key) else {
            return;
        };
        let mut freed = 0;
        entries.retain(|(v, old)| {
            let drop = doomed(*v);
            if drop {
                freed += key.len() + old.as_ref().map_or(0, Vec::len);
            }
            !drop
        });
        self.bytes = self.bytes.saturating_sub(freed);
        if entries.is_empty() {
            self.keys.remove(key);
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
    ) -> Option<Option<Vec<u8>>> {
        self.keys
            .get(key)
            .and_then(|e| first_between(e, read_version, snapshot_version))
    }

    /// [`History::value_at`] for every key of `[begin, end)` that has one,
    /// ascending.
    pub(crate) fn overrides(
        &self,
        begin: &[u8],
        end: &[u8],
        read_version: Version,
        snapshot_version: Version,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        if begin >= end || read_version >= snapshot_version {
            return Vec::new();
        }
        self.keys
            .range::<[u8], _>((
                std::ops::Bound::Included(begin),
                std::ops::Bound::Excluded(end),
            ))
            .filter_map(|(k, e)| {
                first_between(e, read_version, snapshot_version).map(|v| (k.clone(), v))
            })
            .collect()
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
        h.record(10, before(&[("k", None)]));
        h.record(20, before(&[("k", Some("a"))]));
        assert_eq!(h.value_at(b"k", 5, 20), Some(None));
        assert_eq!(h.value_at(b"k", 10, 20), Some(s("a")));
        assert_eq!(h.value_at(b"k", 15, 20), Some(s("a")));
        assert_eq!(h.value_at(b"k", 20, 20), None);
        // A snapshot at 10 does not contain commit 20: its entry is ignored.
        assert_eq!(h.value_at(b"k", 10, 10), None);
        assert_eq!(h.value_at(b"other", 5, 20), None);
    }

    #[test]
    fn overrides_cover_range() {
        let mut h = History::default();
        h.record(10, before(&[("a", None), ("b", Some("old")), ("z", None)]));
        let o = h.overrides(b"a", b"c", 5, 10);
        assert_eq!(o, vec![(b"a".to_vec(), None), (b"b".to_vec(), s("old"))]);
        assert!(h.overrides(b"a", b"c", 10, 10).is_empty());
    }

    #[test]
    fn pruning_drops_old_commits_only() {
        let mut h = History::default();
        h.record(10, before(&[("k", None), ("j", Some("x"))]));
        h.record(20, before(&[("k", Some("a"))]));
        h.prune(15);
        assert_eq!(h.stats().0, 1);
        assert_eq!(h.value_at(b"j", 5, 20), None);
        // The entry of commit 20 survives.
        assert_eq!(h.value_at(b"k", 15, 20), Some(s("a")));
        h.prune(21);
        assert_eq!(h.stats(), (0, 0));
        assert!(h.keys.is_empty());
    }

    #[test]
    fn batch_members_share_a_version() {
        let mut h = History::default();
        // Two commits of one batch at version 10: k written by both.
        h.record(10, before(&[("k", None), ("a", Some("a0"))]));
        h.record(10, before(&[("k", Some("first")), ("b", None)]));
        // Before the batch: the value before its first commit.
        assert_eq!(h.value_at(b"k", 5, 10), Some(None));
        assert_eq!(h.value_at(b"a", 5, 10), Some(s("a0")));
        assert_eq!(h.value_at(b"b", 5, 10), Some(None));
        assert_eq!(h.value_at(b"k", 10, 10), None);
        // Forgetting the second leaves the first whole.
        h.forget(10);
        assert_eq!(h.stats().0, 1);
        assert_eq!(h.value_at(b"k", 5, 10), Some(None));
        assert_eq!(h.value_at(b"a", 5, 10), Some(s("a0")));
        assert_eq!(h.value_at(b"b", 5, 10), None);
    }

    #[test]
    fn forget_removes_one_commit() {
        let mut h = History::default();
        h.record(10, before(&[("k", None)]));
        h.record(20, before(&[("k", Some("a"))]));
        h.forget(20);
        assert_eq!(h.value_at(b"k", 10, 30), None);
        assert_eq!(h.value_at(b"k", 5, 30), Some(None));
        assert_eq!(h.stats().0, 1);
    }
}
