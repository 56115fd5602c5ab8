//! [`PageSet`]: a set of page numbers kept as runs of consecutive pages.
//!
//! Why: the pages SQLite may serve from its own cache (`assume_read`) are
//! every page a connection touched since its cache was last dropped — all
//! of a table after a scan. A writer validates them at every commit. As a
//! set of single pages that cost a B-tree insert per page per commit (a
//! 1,500-page table: ~160 µs per one-row insert); as runs it costs one
//! entry per run, and the commit's read-conflict ranges are runs anyway.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::ids::PageNo;

/// A set of pages as disjoint, non-adjacent runs `first -> last`
/// (inclusive), with the number of pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    runs: BTreeMap<u32, u32>,
    len: u64,
}

impl PageSet {
    /// The empty set.
    pub fn new() -> Self {
        PageSet::default()
    }

    /// Number of pages in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// No page in the set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of runs (what the set's memory and a commit's conflict ranges
    /// grow with).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Whether `p` is in the set.
    pub fn contains(&self, p: PageNo) -> bool {
        let p = p.get();
        matches!(self.runs.range(..=p).next_back(), Some((_, &last)) if last >= p)
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: PageNo) {
        let p = p.get();
        self.insert_run(p, p);
    }

    /// Adds the pages `first..=last`.
    fn insert_run(&mut self, first: u32, last: u32) {
        // Already there (the common case: a page read again).
        if let Some((_, &l)) = self.runs.range(..=first).next_back() {
            if l >= last {
                return;
            }
        }
        // A run before `first` reaching `first - 1` or beyond starts the
        // merged run.
        let lo = match self.runs.range(..first).next_back() {
            Some((&f, &l)) if l.saturating_add(1) >= first => f,
            _ => first,
        };
        // Every run starting within `lo..=last + 1` is merged in.
        let mut hi = last;
        let upper = (Bound::Included(lo), Bound::Included(last.saturating_add(1)));
        while let Some((&f, &l)) = self.runs.range(upper).next() {
            self.runs.remove(&f);
            self.len -= u64::from(l - f) + 1;
            hi = hi.max(l);
        }
        self.runs.insert(lo, hi);
        self.len += u64::from(hi - lo) + 1;
    }

    /// Adds every page of `other`.
    pub fn extend_from(&mut self, other: &PageSet) {
        for (&f, &l) in &other.runs {
            self.insert_run(f, l);
        }
    }

    /// The runs in page order, as (first page, number of pages).
    pub fn runs(&self) -> impl Iterator<Item = (PageNo, u32)> + '_ {
        self.runs
            .iter()
            .map(|(&f, &l)| (PageNo::new(f), (l - f).saturating_add(1)))
    }

    /// Every page, in order.
    pub fn iter(&self) -> impl Iterator<Item = PageNo> + '_ {
        self.runs
            .iter()
            .flat_map(|(&f, &l)| (f..=l).map(PageNo::new))
    }
}

impl FromIterator<PageNo> for PageSet {
    fn from_iter<I: IntoIterator<Item = PageNo>>(iter: I) -> Self {
        let mut s = PageSet::new();
        s.extend(iter);
        s
    }
}

impl Extend<PageNo> for PageSet {
    fn extend<I: IntoIterator<Item = PageNo>>(&mut self, iter: I) {
        for p in iter {
            self.insert(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn set(pages: &[u32]) -> PageSet {
        pages.iter().map(|&p| PageNo::new(p)).collect()
    }

    #[test]
    fn adjacent_pages_form_one_run() {
        let s = set(&[3, 1, 2, 5, 4, 9]);
        let runs: Vec<(u32, u32)> = s.runs().map(|(f, n)| (f.get(), n)).collect();
        assert_eq!(runs, vec![(1, 5), (9, 1)]);
        assert_eq!(s.len(), 6);
        assert!(s.contains(PageNo::new(4)) && !s.contains(PageNo::new(6)));
    }

    #[test]
    fn the_last_page_number_does_not_overflow() {
        let mut s = set(&[u32::MAX, u32::MAX - 1]);
        s.insert(PageNo::new(u32::MAX));
        assert_eq!(s.len(), 2);
        assert_eq!(s.run_count(), 1);
    }

    proptest! {
        /// The set holds exactly the pages inserted, as maximal runs.
        #[test]
        fn same_pages_as_a_btreeset(a in prop::collection::vec(0u32..300, 0..200),
                                    b in prop::collection::vec(0u32..300, 0..200)) {
            let mut s = set(&a);
            s.extend_from(&set(&b));
            let want: BTreeSet<u32> = a.iter().chain(&b).copied().collect();
            let got: Vec<u32> = s.iter().map(PageNo::get).collect();
            prop_assert_eq!(got, want.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(s.len(), want.len() as u64);
            for p in 0..300 {
                prop_assert_eq!(s.contains(PageNo::new(p)), want.contains(&p));
            }
            // Runs are maximal: no two touch.
            let runs: Vec<(u32, u32)> = s.runs().map(|(f, n)| (f.get(), n)).collect();
            for w in runs.windows(2) {
                prop_assert!(w[0].0 + w[0].1 < w[1].0);
            }
        }
    }
}
