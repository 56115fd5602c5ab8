//! Key ranges `[begin, end)` and a set of them, as a transaction tracks
//! what it cleared (the embedded backend's write buffer and the remote
//! client's mirror of it).

use std::collections::BTreeMap;

/// A half-open key range `[begin, end)`.
pub(crate) type KeyRange = (Vec<u8>, Vec<u8>);

/// The range holding exactly `key`: `[key, key + \x00)`.
pub(crate) fn single_key_range(key: &[u8]) -> KeyRange {
    (key.to_vec(), key_after(key))
}

/// The first key after `key` in byte order (`key + \x00`).
pub(crate) fn key_after(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

/// A set of keys made of disjoint ranges (the ranges a transaction cleared).
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet {
    /// begin -> end, disjoint and non-touching.
    ranges: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl RangeSet {
    /// Adds `[begin, end)`, merging with overlapping or touching ranges.
    pub(crate) fn insert(&mut self, begin: &[u8], end: &[u8]) {
        if begin >= end {
            return;
        }
        let mut new_begin = begin.to_vec();
        let mut new_end = end.to_vec();
        // A range starting at or before `begin` that reaches it.
        if let Some((b, e)) = self.ranges.range(..=begin.to_vec()).next_back() {
            if e.as_slice() >= begin {
                new_begin = b.clone();
                if e.as_slice() > end {
                    new_end = e.clone();
                }
            }
        }
        // Ranges starting inside `[new_begin, end]` are swallowed.
        let swallowed: Vec<Vec<u8>> = self
            .ranges
            .range(new_begin.clone()..=end.to_vec())
            .map(|(b, e)| {
                if *e > new_end {
                    new_end = e.clone();
                }
                b.clone()
            })
            .collect();
        for b in swallowed {
            self.ranges.remove(&b);
        }
        self.ranges.insert(new_begin, new_end);
    }

    /// Whether `key` lies in one of the ranges.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        // Borrowed bounds: no copy of the key (asked for every row a
        // range read returns).
        self.ranges
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, e)| e.as_slice() > key)
    }

    /// The ranges, ascending.
    #[cfg(test)]
    pub(crate) fn to_vec(&self) -> Vec<KeyRange> {
        self.ranges
            .iter()
            .map(|(b, e)| (b.clone(), e.clone()))
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `[b, e)` from strings.
    pub(crate) fn r(b: &str, e: &str) -> KeyRange {
        (b.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn range_set_merges() {
        let mut s = RangeSet::default();
        s.insert(b"c", b"e");
        s.insert(b"a", b"b");
        s.insert(b"b", b"c");
        assert_eq!(s.to_vec(), vec![r("a", "e")]);
        s.insert(b"x", b"z");
        s.insert(b"d", b"y");
        assert_eq!(s.to_vec(), vec![r("a", "z")]);
        assert!(s.contains(b"a") && s.contains(b"m") && !s.contains(b"z"));
        let mut s = RangeSet::default();
        s.insert(b"b", b"d");
        s.insert(b"a", b"c");
        assert_eq!(s.to_vec(), vec![r("a", "d")]);
        assert!(!s.contains(b"d") && !s.contains(b"\x00"));
    }

    #[test]
    fn range_set_merges_and_contains() {
        let mut s = RangeSet::default();
        s.insert(b"b", b"d");
        s.insert(b"f", b"h");
        assert!(s.contains(b"b") && s.contains(b"c") && !s.contains(b"d"));
        assert!(!s.contains(b"a") && !s.contains(b"e") && s.contains(b"g"));
        s.insert(b"c", b"g");
        assert!(s.contains(b"e"));
        assert_eq!(s.to_vec(), vec![r("b", "h")]);
        s.insert(b"a", b"b");
        assert_eq!(s.to_vec(), vec![r("a", "h")]);
        assert!(s.contains(b"a") && !s.contains(b"h"));
    }
}
