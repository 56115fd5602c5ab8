//! SQLite B-tree interior pages, read just far enough to name their
//! children (file format §1.6), so that read-ahead can prefetch the pages a
//! scan descends into next even when they are not in page-number order.
//!
//! Any page may be handed in: overflow, freelist, pointer-map or garbage
//! pages are refused or, when they happen to look like an interior page,
//! yield child numbers that only ever feed a prefetch (never a read SQLite
//! sees). Nothing here panics or fails on any input.

use std::sync::Arc;

/// Page-type byte of an index B-tree interior page.
const INTERIOR_INDEX: u8 = 0x02;
/// Page-type byte of a table B-tree interior page.
const INTERIOR_TABLE: u8 = 0x05;
/// Size of an interior page's B-tree header.
const HEADER: usize = 12;
/// SQLite page 1 starts with the 100-byte database header.
const FILE_HEADER: usize = 100;
/// SQLite's bound on fragmented free bytes (a larger value is corrupt).
const MAX_FRAGMENTED: u8 = 60;

/// An interior page and where its cell-pointer array lies.
#[derive(Clone)]
pub(crate) struct Interior {
    page: Arc<[u8]>,
    /// Offset of the B-tree header (100 on page 1).
    header: usize,
    /// Number of cells: the page has `cells + 1` children.
    cells: usize,
}

impl std::fmt::Debug for Interior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interior")
            .field("header", &self.header)
            .field("children", &self.len())
            .finish()
    }
}

/// True when `page` may be an interior page: one byte, for the read path
/// to skip every other page before doing anything more.
pub(crate) fn looks_interior(page: &[u8], first: bool) -> bool {
    let at = if first { FILE_HEADER } else { 0 };
    matches!(page.get(at), Some(&(INTERIOR_INDEX | INTERIOR_TABLE)))
}

impl Interior {
    /// `page` as an interior page, or None when its header says it is not
    /// one or is inconsistent. `first`: SQLite page 1 (header at 100).
    pub(crate) fn parse(page: Arc<[u8]>, first: bool) -> Option<Interior> {
        let header = if first { FILE_HEADER } else { 0 };
        if !looks_interior(&page, first) {
            return None;
        }
        let h = page.get(header..header.checked_add(HEADER)?)?;
        let cells = usize::from(u16::from_be_bytes([h[3], h[4]]));
        let content = match u16::from_be_bytes([h[5], h[6]]) {
            0 => 65_536,
            c => usize::from(c),
        };
        let pointers_end = header + HEADER + 2 * cells;
        if h[7] > MAX_FRAGMENTED || pointers_end > content || content > page.len() {
            return None;
        }
        Some(Interior {
            page,
            header,
            cells,
        })
    }

    /// Number of children (cells + the right-most pointer).
    pub(crate) fn len(&self) -> usize {
        self.cells + 1
    }

    /// SQLite page number of child `i` in key order (the right-most pointer
    /// last); None past the end or when the cell lies outside the page.
    pub(crate) fn child(&self, i: usize) -> Option<u32> {
        let at = if i < self.cells {
            let p = self.header + HEADER + 2 * i;
            let cell = usize::from(u16::from_be_bytes([
                *self.page.get(p)?,
                *self.page.get(p + 1)?,
            ]));
            if cell < self.header + HEADER + 2 * self.cells {
                return None;
            }
            cell
        } else if i == self.cells {
            self.header + 8
        } else {
            return None;
        };
        let b = self.page.get(at..at.checked_add(4)?)?;
        match u32::from_be_bytes([b[0], b[1], b[2], b[3]]) {
            0 => None,
            n => Some(n),
        }
    }

    /// Index of child page `pgno` (SQLite's numbering), if it is one.
    pub(crate) fn position(&self, pgno: u32) -> Option<usize> {
        (0..self.len()).find(|&i| self.child(i) == Some(pgno))
    }

    /// Children `from..to` (clamped to the page), in key order, skipping
    /// unreadable cells.
    pub(crate) fn children(&self, from: usize, to: usize) -> impl Iterator<Item = u32> + '_ {
        (from..to.min(self.len())).filter_map(|i| self.child(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A 512-byte interior page (table kind) with `kids` as children: the
    /// last one is the right-most pointer. `first`: laid out as page 1.
    fn page(kids: &[u32], first: bool) -> Arc<[u8]> {
        let mut p = vec![0u8; 512];
        let h = if first { 100 } else { 0 };
        let cells = kids.len() - 1;
        p[h] = INTERIOR_TABLE;
        p[h + 3..h + 5].copy_from_slice(&(cells as u16).to_be_bytes());
        // Cells from the end of the page down, 8 bytes each (4-byte child
        // and a varint key), in reverse order like SQLite's allocator.
        let mut content = 512;
        for (i, &kid) in kids[..cells].iter().enumerate() {
            content -= 8;
            p[content..content + 4].copy_from_slice(&kid.to_be_bytes());
            p[content + 4] = i as u8;
            let ptr = h + HEADER + 2 * i;
            p[ptr..ptr + 2].copy_from_slice(&(content as u16).to_be_bytes());
        }
        p[h + 5..h + 7].copy_from_slice(&(content as u16).to_be_bytes());
        p[h + 8..h + 12].copy_from_slice(&kids[cells].to_be_bytes());
        Arc::from(p)
    }

    #[test]
    fn names_children_in_key_order() {
        let kids = [9, 4, 17, 2, 30];
        for first in [false, true] {
            let t = Interior::parse(page(&kids, first), first).expect("interior");
            assert_eq!(t.len(), 5);
            assert_eq!(t.children(0, usize::MAX).collect::<Vec<_>>(), kids);
            assert_eq!(t.children(2, 4).collect::<Vec<_>>(), [17, 2]);
            assert_eq!(t.position(2), Some(3));
            assert_eq!(t.position(30), Some(4));
            assert_eq!(t.position(5), None);
            assert_eq!(t.child(5), None);
        }
    }

    #[test]
    fn index_interior_pages_and_a_lone_right_most_pointer() {
        let mut p = page(&[7, 8], false).to_vec();
        p[0] = INTERIOR_INDEX;
        let t = Interior::parse(Arc::from(p), false).expect("interior");
        assert_eq!(t.children(0, 9).collect::<Vec<_>>(), [7, 8]);
        let t = Interior::parse(page(&[3], false), false).expect("no cells");
        assert_eq!(t.children(0, 9).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn refuses_other_pages() {
        // Leaves, an empty page, page 1's header read as page 2, a page
        // too short for its header, cells overlapping the pointer array.
        for (bytes, first) in [
            (vec![0x0d; 512], false),
            (vec![0x0a; 512], false),
            (vec![0; 512], false),
            (page(&[1, 2], true).to_vec(), false),
            (vec![INTERIOR_TABLE; 8], false),
            (vec![INTERIOR_TABLE; 50], true),
        ] {
            assert!(Interior::parse(Arc::from(bytes), first).is_none());
        }
        let mut p = page(&[1, 2, 3], false).to_vec();
        p[5..7].copy_from_slice(&10u16.to_be_bytes()); // content inside the header
        assert!(Interior::parse(Arc::from(p), false).is_none());
        let mut p = page(&[1, 2, 3], false).to_vec();
        p[7] = 61; // too many fragmented bytes
        assert!(Interior::parse(Arc::from(p), false).is_none());
    }

    #[test]
    fn a_cell_pointer_out_of_the_page_names_no_child() {
        let mut p = page(&[5, 6, 7], false).to_vec();
        p[12..14].copy_from_slice(&510u16.to_be_bytes()); // 4 bytes past 510
        p[14..16].copy_from_slice(&4u16.to_be_bytes()); // into the header
        let t = Interior::parse(Arc::from(p), false).expect("interior");
        assert_eq!(t.child(0), None);
        assert_eq!(t.child(1), None);
        assert_eq!(t.children(0, 3).collect::<Vec<_>>(), [7]);
    }

    proptest! {
        /// Any bytes: parsing and walking the children never panics, and
        /// every child named comes from inside the page.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1200), first: bool, seed: u8) {
            let mut bytes = bytes;
            // Make the interior-page case common enough to be exercised.
            let at = if first { 100 } else { 0 };
            if let Some(b) = bytes.get_mut(at) {
                *b = if seed % 2 == 0 { INTERIOR_TABLE } else { INTERIOR_INDEX };
            }
            if let Some(t) = Interior::parse(Arc::from(bytes), first) {
                let n = t.children(0, usize::MAX).count();
                prop_assert!(n <= t.len());
                for i in 0..t.len() + 2 {
                    if let Some(c) = t.child(i) {
                        prop_assert!(c != 0);
                        prop_assert_eq!(t.position(c).map(|j| j <= i), Some(true));
                    }
                }
            }
        }

        /// Well-formed pages of any shape name exactly their children.
        #[test]
        fn well_formed_pages_round_trip(kids in proptest::collection::vec(1u32..u32::MAX, 1..41), first: bool) {
            let t = Interior::parse(page(&kids, first), first).expect("interior");
            prop_assert_eq!(t.children(0, usize::MAX).collect::<Vec<_>>(), kids);
        }
    }
}
