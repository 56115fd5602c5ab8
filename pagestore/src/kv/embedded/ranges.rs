//! Key ranges `[begin, end)`: normalisation, intersection of two sets of
//! ranges (conflict detection) and a set of cleared ranges (read-your-writes).

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

/// Sorts `ranges`, drops empty ones and merges overlapping or touching ones,
/// so that the result is disjoint and ascending.
pub(crate) fn normalize(mut ranges: Vec<KeyRange>) -> Vec<KeyRange> {
    ranges.retain(|(b, e)| b < e);
    ranges.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<KeyRange> = Vec::with_capacity(ranges.len());
    for (b, e) in ranges {
        match out.last_mut() {
            Some(last) if b <= last.1 => {
                if e > last.1 {
                    last.1 = e;
                }
            }
            _ => out.push((b, e)),
        }
    }
    out
}

/// Whether two normalised (disjoint, ascending) range lists share a key.
/// Linear in the total number of ranges.
pub(crate) fn intersects(a: &[KeyRange], b: &[KeyRange]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (ab, ae) = &a[i];
        let (bb, be) = &b[j];
        if ab < be && bb < ae {
            return true;
        }
        // Advance the range that ends first: it cannot meet anything later.
        if ae <= be {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
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
        self.ranges
            .range(..=key.to_vec())
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
mod tests {
    use super::*;

    fn r(b: &str, e: &str) -> KeyRange {
        (b.as_bytes().to_vec(), e.as_bytes().to_vec())
    }

    #[test]
    fn normalize_merges_and_drops_empty() {
        let n = normalize(vec![r("d", "f"), r("a", "c"), r("b", "d"), r("x", "x")]);
        assert_eq!(n, vec![r("a", "f")]);
        let n = normalize(vec![r("a", "b"), r("c", "d")]);
        assert_eq!(n, vec![r("a", "b"), r("c", "d")]);
    }

    #[test]
    fn intersection_is_half_open() {
        assert!(!intersects(&[r("a", "b")], &[r("b", "c")]));
        assert!(intersects(&[r("a", "b\0")], &[r("b", "c")]));
        assert!(intersects(
            &[r("a", "c"), r("x", "z")],
            &[r("m", "n"), r("y", "y\0")]
        ));
        assert!(!intersects(
            &[r("a", "c"), r("x", "z")],
            &[r("c", "x"), r("z", "zz")]
        ));
        assert!(!intersects(&[], &[r("a", "z")]));
        let k = single_key_range(b"k");
        assert!(intersects(std::slice::from_ref(&k), &[r("a", "z")]));
        assert!(!intersects(&[k], &[(b"k\0".to_vec(), b"z".to_vec())]));
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
}
