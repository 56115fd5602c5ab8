//! Typed numbers: a page's place in a database ([`PageNo`]), a
//! database's id ([`DbId`]) and a commit's token ([`Token`]), so that none
//! is mistaken for a count, a version or another.

use std::fmt;

/// A page of a database, counted from 0 (the store's numbering).
///
/// SQLite counts pages from 1: **SQLite page `N` is store page `N − 1`**,
/// and this type is the one place that says so ([`PageNo::from_sqlite`],
/// [`PageNo::to_sqlite`]). Byte offset `o` of a file with page size `s`
/// lies in store page `o / s`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNo(u32);

impl PageNo {
    /// The first page (SQLite's page 1, holding the file header).
    pub const FIRST: PageNo = PageNo(0);

    /// Store page `index` (0-based).
    pub const fn new(index: u32) -> PageNo {
        PageNo(index)
    }

    /// The store page that holds SQLite page `pgno` (1-based); None for 0,
    /// which SQLite never uses.
    pub const fn from_sqlite(pgno: u32) -> Option<PageNo> {
        match pgno.checked_sub(1) {
            Some(i) => Some(PageNo(i)),
            None => None,
        }
    }

    /// SQLite's number of this page (1-based; u64 because store page
    /// `u32::MAX` would be SQLite page 2³²).
    pub const fn to_sqlite(self) -> u64 {
        self.0 as u64 + 1
    }

    /// The 0-based index.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The 0-based index, widened for comparisons with page counts.
    pub const fn index(self) -> u64 {
        self.0 as u64
    }

    /// The page after this one; None past the last possible page.
    pub const fn next(self) -> Option<PageNo> {
        match self.0.checked_add(1) {
            Some(i) => Some(PageNo(i)),
            None => None,
        }
    }
}

impl From<u32> for PageNo {
    fn from(index: u32) -> Self {
        PageNo(index)
    }
}

impl From<PageNo> for u32 {
    fn from(p: PageNo) -> Self {
        p.0
    }
}

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A database's id: a random 64-bit number fixed at creation, the name of
/// its key subspace (`P 03 id`); the catalog maps names to ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DbId(u64);

impl DbId {
    /// The id `raw`.
    pub const fn new(raw: u64) -> DbId {
        DbId(raw)
    }

    /// The raw number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Its big-endian bytes, as keys and catalog values hold it.
    pub const fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// From big-endian bytes.
    pub const fn from_be_bytes(b: [u8; 8]) -> DbId {
        DbId(u64::from_be_bytes(b))
    }
}

impl fmt::Display for DbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A commit token: random, 16 bytes. It names a transaction's uploads
/// (`D 'b' token pgno`) and its commit (`D 'k' token`).
pub type Token = [u8; 16];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_page_n_is_store_page_n_minus_1() {
        assert_eq!(PageNo::from_sqlite(1), Some(PageNo::FIRST));
        assert_eq!(PageNo::from_sqlite(0), None);
        assert_eq!(PageNo::new(4).to_sqlite(), 5);
        assert_eq!(PageNo::new(u32::MAX).to_sqlite(), 1 << 32);
    }
}
