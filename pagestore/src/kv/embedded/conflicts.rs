//! Optimistic conflict detection: the write ranges of recent commits, by
//! version, checked against a committing transaction's read-conflict ranges.

use std::collections::VecDeque;

use super::conflict_ranges::{intersects, KeyRange};
use crate::kv::Version;

/// Write-conflict ranges of the commits of the last MVCC window.
#[derive(Debug, Default)]
pub(crate) struct RecentWrites {
    /// (commit version, normalised write ranges), ascending versions.
    commits: VecDeque<(Version, Vec<KeyRange>)>,
    /// Commits older than this were pruned: a read version below it cannot
    /// be checked and is too old.
    horizon: Version,
}

impl RecentWrites {
    /// Records the normalised write ranges of commit `version`.
    pub(crate) fn record(&mut self, version: Version, writes: Vec<KeyRange>) {
        if !writes.is_empty() {
            self.commits.push_back((version, writes));
        }
    }

    /// Forgets commits older than `cutoff`.
    pub(crate) fn prune(&mut self, cutoff: Version) {
        while self.commits.front().is_some_and(|(v, _)| *v < cutoff) {
            self.commits.pop_front();
        }
        self.horizon = self.horizon.max(cutoff);
    }

    /// Whether `read_version` is older than what is still remembered.
    pub(crate) fn is_beyond_horizon(&self, read_version: Version) -> bool {
        read_version < self.horizon
    }

    /// The version of the first commit after `read_version` that wrote a key
    /// of `reads` (normalised), if any. Only commits newer than the read
    /// version are visited, so the cost follows the transaction's lifetime.
    pub(crate) fn first_conflict(
        &self,
        read_version: Version,
        reads: &[KeyRange],
    ) -> Option<Version> {
        if reads.is_empty() {
            return None;
        }
        let start = self.commits.partition_point(|(v, _)| *v <= read_version);
        self.commits
            .range(start..)
            .find(|(_, writes)| intersects(reads, writes))
            .map(|(v, _)| *v)
    }

    /// Number of commits remembered.
    pub(crate) fn len(&self) -> usize {
        self.commits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ver(n: u64) -> Version {
        Version::new(n)
    }
    use crate::kv::embedded::conflict_ranges::single_key_range;

    fn r(b: &str, e: &str) -> KeyRange {
        (b.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn conflicts_only_with_later_commits() {
        let mut w = RecentWrites::default();
        w.record(ver(10), vec![single_key_range(b"k")]);
        w.record(ver(20), vec![r("m", "p")]);
        let reads = vec![single_key_range(b"k")];
        assert_eq!(w.first_conflict(ver(5), &reads), Some(ver(10)));
        assert_eq!(w.first_conflict(ver(10), &reads), None);
        assert_eq!(w.first_conflict(ver(15), &[r("a", "n")]), Some(ver(20)));
        assert_eq!(w.first_conflict(ver(15), &[r("a", "m")]), None);
        assert_eq!(w.first_conflict(ver(0), &[]), None);
    }

    #[test]
    fn pruning_moves_the_horizon() {
        let mut w = RecentWrites::default();
        w.record(ver(10), vec![single_key_range(b"k")]);
        w.record(ver(20), vec![single_key_range(b"k")]);
        w.prune(ver(15));
        assert_eq!(w.len(), 1);
        assert!(w.is_beyond_horizon(ver(14)));
        assert!(!w.is_beyond_horizon(ver(15)));
        assert_eq!(
            w.first_conflict(ver(5), &[single_key_range(b"k")]),
            Some(ver(20))
        );
    }
}
