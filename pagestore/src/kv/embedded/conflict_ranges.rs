//! Conflict ranges: normalisation and intersection of two sets of ranges
//! (conflict detection). The range type itself is [`crate::kv::key_range`]'s.

pub(crate) use crate::kv::key_range::{single_key_range, KeyRange};

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

/// The keys of `ranges` not in `holes` (both normalised), normalised.
pub(crate) fn subtract(ranges: &[KeyRange], holes: &[KeyRange]) -> Vec<KeyRange> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut j = 0;
    for (b, e) in ranges {
        let mut from = b.clone();
        // Holes ending at or before this range's start cannot meet it or
        // any later range.
        while j < holes.len() && holes[j].1 <= *b {
            j += 1;
        }
        let mut k = j;
        while k < holes.len() && holes[k].0 < *e {
            let (hb, he) = &holes[k];
            if *hb > from {
                out.push((from.clone(), hb.clone()));
            }
            if *he > from {
                from = he.clone();
            }
            k += 1;
        }
        if from < *e {
            out.push((from, e.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::key_range::tests::r;

    #[test]
    fn normalize_merges_and_drops_empty() {
        let n = normalize(vec![r("d", "f"), r("a", "c"), r("b", "d"), r("x", "x")]);
        assert_eq!(n, vec![r("a", "f")]);
        let n = normalize(vec![r("a", "b"), r("c", "d")]);
        assert_eq!(n, vec![r("a", "b"), r("c", "d")]);
    }

    #[test]
    fn subtract_cuts_holes() {
        assert_eq!(subtract(&[r("a", "z")], &[]), vec![r("a", "z")]);
        assert_eq!(
            subtract(&[r("a", "z")], &[r("c", "d"), r("x", "zz")]),
            vec![r("a", "c"), r("d", "x")]
        );
        assert_eq!(subtract(&[r("b", "c")], &[r("a", "z")]), vec![]);
        assert_eq!(
            subtract(&[r("a", "c"), r("e", "g")], &[r("b", "f")]),
            vec![r("a", "b"), r("f", "g")]
        );
        assert_eq!(subtract(&[r("m", "n")], &[r("a", "b")]), vec![r("m", "n")]);
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
}
