//! The key layout. Every key starts with the deployment prefix `P`
//! (`StoreOptions::prefix`), so independent deployments or tests share one
//! cluster without seeing each other.
//!
//! | key                                   | value                         | what it is |
//! |---------------------------------------|-------------------------------|------------|
//! | `P 01 name`                           | id (8 B, BE)                  | catalog: name → database id |
//! | `P 02 id`                             | [`DbMeta`]                    | catalog: id → name, creation, fork parent, retention |
//! | `P 04 parent child`                   | empty                         | forks of `parent` (kept while a fork reads from it) |
//! | `D = P 03 id`                         |                               | one database's subspace (id: 8 B, random) |
//! | `D 'h'`                               | page size (4 B, BE)           | set once by the first commit that writes a page |
//! | `D 'p' pgno vs`                       | [`PageValue`]                 | page `pgno` (4 B, BE) as written by the commit `vs` (10 B) |
//! | `D 'z' vs`                            | page count (8 B, BE)          | size history: written by commits that change the size |
//! | `D 'l' vs seq`                        | [`LogRecord`] part            | change log: pages changed by commit `vs`; `seq` (2 B) splits big records |
//! | `D 'k' token`                         | `vs` (10 B)                   | commit token (16 B) → the commit that carried it (idempotent retry) |
//! | `D 'b' token pgno`                    | page bytes                    | content uploaded ahead by a large transaction, invisible until referenced |
//! | `D 'u' token`                         | wall time (8 B, BE µs)        | upload in progress; cleared by the commit, swept when stale |
//! | `D 'm' vs`                            | token (16 B)                  | a large commit whose page index is still being written |
//! | `D 't' time vs`                       | empty                         | time index: committer's wall time (8 B, BE µs) → commit |
//! | `D 'g'`                               | version (8 B, BE)             | GC horizon: snapshots older than this may miss pages |
//! | `D 'q'`                               | page key                      | where an interrupted GC pass resumes |
//!
//! `vs` is FDB's 10-byte versionstamp (commit version BE, batch order BE),
//! so byte order is commit order: the page as of snapshot `V` is the last
//! key in `[D 'p' pgno, D 'p' pgno (V+1))`, one reverse range read of limit 1.
//!
//! [`DbMeta`]: crate::encoding::DbMeta
//! [`PageValue`]: crate::encoding::PageValue
//! [`LogRecord`]: crate::encoding::LogRecord

use crate::encoding::{be_u32, be_u64};
use crate::ids::{DbId, PageNo};
use crate::kv::{strinc, Version, Versionstamp, INCOMPLETE_VERSIONSTAMP};

const CATALOG_NAME: u8 = 0x01;
const CATALOG_META: u8 = 0x02;
const DATABASE: u8 = 0x03;
const CHILDREN: u8 = 0x04;

const HEADER: u8 = b'h';
const PAGE: u8 = b'p';
const SIZE: u8 = b'z';
const LOG: u8 = b'l';
const TOKEN: u8 = b'k';
const BLOB: u8 = b'b';
const UPLOAD: u8 = b'u';
const MATERIALIZE: u8 = b'm';
const TIME: u8 = b't';
const HORIZON: u8 = b'g';
const GC_CURSOR: u8 = b'q';

pub use crate::ids::Token;

/// Builds keys under a deployment prefix.
#[derive(Clone, Debug)]
pub struct Keyspace {
    prefix: Vec<u8>,
}

impl Keyspace {
    /// A keyspace under `prefix`.
    pub fn new(prefix: impl Into<Vec<u8>>) -> Self {
        Keyspace {
            prefix: prefix.into(),
        }
    }

    /// The deployment prefix.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn with(&self, tag: u8, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 1 + rest.len());
        k.extend_from_slice(&self.prefix);
        k.push(tag);
        k.extend_from_slice(rest);
        k
    }

    /// `P 01 name`.
    pub fn name(&self, name: &str) -> Vec<u8> {
        self.with(CATALOG_NAME, name.as_bytes())
    }

    /// All name keys: `[P 01, P 02)`.
    pub fn names(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(CATALOG_NAME, &[]), self.with(CATALOG_META, &[]))
    }

    /// The name inside a name key.
    pub fn name_of<'a>(&self, key: &'a [u8]) -> Option<&'a [u8]> {
        key.strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[CATALOG_NAME])
    }

    /// `P 02 id`.
    pub fn meta(&self, id: DbId) -> Vec<u8> {
        self.with(CATALOG_META, &id.to_be_bytes())
    }

    /// `P 04 parent child`: `child` is a fork of `parent`.
    pub fn child(&self, parent: DbId, child: DbId) -> Vec<u8> {
        let mut rest = parent.to_be_bytes().to_vec();
        rest.extend_from_slice(&child.to_be_bytes());
        self.with(CHILDREN, &rest)
    }

    /// All forks of `parent`.
    pub fn children(&self, parent: DbId) -> (Vec<u8>, Vec<u8>) {
        let b = self.with(CHILDREN, &parent.to_be_bytes());
        let e = strinc(&b).unwrap_or_else(|| vec![0xff]);
        (b, e)
    }

    /// The child id of a `P 04` key.
    pub fn parse_child(&self, key: &[u8]) -> Option<DbId> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[CHILDREN])?;
        be_u64(rest.get(8..16)?).map(DbId::new)
    }

    /// All catalog entries (`P 02`), for GC's scan of databases.
    pub fn metas(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(CATALOG_META, &[]), self.with(DATABASE, &[]))
    }

    /// The id of a `P 02` key.
    pub fn parse_meta(&self, key: &[u8]) -> Option<DbId> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[CATALOG_META])?;
        be_u64(rest).map(DbId::new)
    }

    /// The subspace of one database.
    pub fn db(&self, id: DbId) -> DbKeys {
        DbKeys {
            prefix: self.with(DATABASE, &id.to_be_bytes()),
        }
    }
}

/// Keys of one database (`D = P 03 id`).
#[derive(Clone, Debug)]
pub struct DbKeys {
    prefix: Vec<u8>,
}

impl DbKeys {
    fn with(&self, tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        let mut k = Vec::with_capacity(self.prefix.len() + 1 + len + 4);
        k.extend_from_slice(&self.prefix);
        k.push(tag);
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }

    /// A key with a versionstamp placeholder at its end (followed by
    /// `suffix`), in FDB's `SetVersionstampedKey` layout: the 4-byte
    /// little-endian offset of the placeholder is appended.
    fn stamped(&self, tag: u8, before: &[&[u8]], suffix: &[u8]) -> Vec<u8> {
        let mut k = self.with(tag, before);
        let offset = k.len() as u32;
        k.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
        k.extend_from_slice(suffix);
        k.extend_from_slice(&offset.to_le_bytes());
        k
    }

    /// The whole subspace: `[D, strinc(D))`.
    pub fn all(&self) -> (Vec<u8>, Vec<u8>) {
        let end = strinc(&self.prefix).unwrap_or_else(|| vec![0xff]);
        (self.prefix.clone(), end)
    }

    /// `D 'h'`.
    pub fn header(&self) -> Vec<u8> {
        self.with(HEADER, &[])
    }

    /// `D 'p' pgno`: every version of one page.
    pub fn page_prefix(&self, pgno: PageNo) -> Vec<u8> {
        self.with(PAGE, &[&pgno.get().to_be_bytes()])
    }

    /// `D 'p' pgno vs`.
    pub fn page(&self, pgno: PageNo, vs: &Versionstamp) -> Vec<u8> {
        self.with(PAGE, &[&pgno.get().to_be_bytes(), &vs.0])
    }

    /// Versions of `pgno` visible at snapshot `v`: `[D 'p' pgno, D 'p' pgno (v+1))`.
    pub fn page_at(&self, pgno: PageNo, v: Version) -> (Vec<u8>, Vec<u8>) {
        let end = Versionstamp::at_version(v.after(1));
        (self.page_prefix(pgno), self.page(pgno, &end))
    }

    /// Versions of `pgno` committed after snapshot `v`.
    pub fn page_after(&self, pgno: PageNo, v: Version) -> (Vec<u8>, Vec<u8>) {
        let begin = Versionstamp::at_version(v.after(1));
        (self.page(pgno, &begin), self.pages_end(pgno))
    }

    /// All versions of pages `first..=last`: the conflict range of a run.
    pub fn page_run(&self, first: PageNo, last: PageNo) -> (Vec<u8>, Vec<u8>) {
        (self.page_prefix(first), self.pages_end(last))
    }

    fn pages_end(&self, last: PageNo) -> Vec<u8> {
        match last.next() {
            Some(next) => self.page_prefix(next),
            None => self.with(PAGE + 1, &[]),
        }
    }

    /// `D 'p' pgno <placeholder>` for `SetVersionstampedKey`.
    pub fn page_stamped(&self, pgno: PageNo) -> Vec<u8> {
        self.stamped(PAGE, &[&pgno.get().to_be_bytes()], &[])
    }

    /// Splits a page key into (pgno, vs).
    pub fn parse_page(&self, key: &[u8]) -> Option<(PageNo, Versionstamp)> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[PAGE])?;
        if rest.len() != 14 {
            return None;
        }
        let pgno = PageNo::new(be_u32(&rest[..4])?);
        Some((pgno, Versionstamp::from_slice(&rest[4..])?))
    }

    /// `D 'z'` range up to snapshot `v`.
    pub fn size_at(&self, v: Version) -> (Vec<u8>, Vec<u8>) {
        let end = Versionstamp::at_version(v.after(1));
        (self.with(SIZE, &[]), self.with(SIZE, &[&end.0]))
    }

    /// All size records (conflict range of size changers).
    pub fn sizes(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(SIZE, &[]), self.with(SIZE + 1, &[]))
    }

    /// `D 'z' <placeholder>`.
    pub fn size_stamped(&self) -> Vec<u8> {
        self.stamped(SIZE, &[], &[])
    }

    /// Change-log records of commits in `(after, upto]`.
    pub fn log_between(&self, after: Version, upto: Version) -> (Vec<u8>, Vec<u8>) {
        let b = Versionstamp::at_version(after.after(1));
        let e = Versionstamp::at_version(upto.after(1));
        (self.with(LOG, &[&b.0]), self.with(LOG, &[&e.0]))
    }

    /// Change-log records of commits after `after` (a versionstamp; see
    /// [`crate::changelog::after_version`] for "after every commit of a
    /// version") up to version `upto`.
    pub fn log_after(&self, after: &Versionstamp, upto: Version) -> (Vec<u8>, Vec<u8>) {
        let b = self.with(LOG, &[&after.0]);
        let b = strinc(&b).unwrap_or_else(|| self.with(LOG + 1, &[]));
        let e = Versionstamp::at_version(upto.after(1));
        (b, self.with(LOG, &[&e.0]))
    }

    /// Every part of the change-log record of commit `vs`.
    pub fn log_of(&self, vs: &Versionstamp) -> (Vec<u8>, Vec<u8>) {
        let b = self.with(LOG, &[&vs.0]);
        let e = strinc(&b).unwrap_or_else(|| self.with(LOG + 1, &[]));
        (b, e)
    }

    /// `D 'l' <placeholder> seq`.
    pub fn log_stamped(&self, seq: u16) -> Vec<u8> {
        self.stamped(LOG, &[], &seq.to_be_bytes())
    }

    /// Splits a log key into (vs, seq).
    pub fn parse_log(&self, key: &[u8]) -> Option<(Versionstamp, u16)> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[LOG])?;
        if rest.len() != 12 {
            return None;
        }
        Some((
            Versionstamp::from_slice(&rest[..10])?,
            u16::from_be_bytes([rest[10], rest[11]]),
        ))
    }

    /// `D 'k' token`.
    pub fn token(&self, token: &Token) -> Vec<u8> {
        self.with(TOKEN, &[token])
    }

    /// `D 'b' token pgno`.
    pub fn blob(&self, token: &Token, pgno: PageNo) -> Vec<u8> {
        self.with(BLOB, &[token, &pgno.get().to_be_bytes()])
    }

    /// All content uploaded under `token`.
    pub fn blobs(&self, token: &Token) -> (Vec<u8>, Vec<u8>) {
        let p = self.with(BLOB, &[token]);
        let end = strinc(&p).unwrap_or_else(|| vec![0xff]);
        (p, end)
    }

    /// `D 'u' token`.
    pub fn upload(&self, token: &Token) -> Vec<u8> {
        self.with(UPLOAD, &[token])
    }

    /// All upload markers.
    pub fn uploads(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(UPLOAD, &[]), self.with(UPLOAD + 1, &[]))
    }

    /// The token of an upload-marker key.
    pub fn parse_upload(&self, key: &[u8]) -> Option<Token> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[UPLOAD])?;
        rest.try_into().ok()
    }

    /// `D 't' time <placeholder>`.
    pub fn time_stamped(&self, micros: u64) -> Vec<u8> {
        self.stamped(TIME, &[&micros.to_be_bytes()], &[])
    }

    /// Time-index entries with times in `[from, to]`.
    pub fn times(&self, from: u64, to: u64) -> (Vec<u8>, Vec<u8>) {
        let b = self.with(TIME, &[&from.to_be_bytes()]);
        let e = match to.checked_add(1) {
            Some(t) => self.with(TIME, &[&t.to_be_bytes()]),
            None => self.with(TIME + 1, &[]),
        };
        (b, e)
    }

    /// Splits a time-index key into (time, vs).
    pub fn parse_time(&self, key: &[u8]) -> Option<(u64, Versionstamp)> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[TIME])?;
        if rest.len() != 18 {
            return None;
        }
        Some((be_u64(&rest[..8])?, Versionstamp::from_slice(&rest[8..])?))
    }

    /// `D 'g'`: the GC horizon.
    pub fn horizon(&self) -> Vec<u8> {
        self.with(HORIZON, &[])
    }

    /// `D 'q'`: the GC resume cursor.
    pub fn gc_cursor(&self) -> Vec<u8> {
        self.with(GC_CURSOR, &[])
    }

    /// Every page-version key of the database.
    pub fn all_pages(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(PAGE, &[]), self.with(PAGE + 1, &[]))
    }

    /// All size records up to and including `vs`'s version.
    pub fn sizes_upto(&self, v: Version) -> (Vec<u8>, Vec<u8>) {
        self.size_at(v)
    }

    /// Splits a size key into its versionstamp.
    pub fn parse_size(&self, key: &[u8]) -> Option<Versionstamp> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[SIZE])?;
        Versionstamp::from_slice(rest)
    }

    /// Every commit token.
    pub fn tokens(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(TOKEN, &[]), self.with(TOKEN + 1, &[]))
    }

    /// Every change-log record.
    pub fn logs(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(LOG, &[]), self.with(LOG + 1, &[]))
    }

    /// Every blob of every token.
    pub fn all_blobs(&self) -> (Vec<u8>, Vec<u8>) {
        (self.with(BLOB, &[]), self.with(BLOB + 1, &[]))
    }

    /// The token of a blob key.
    pub fn parse_blob_token(&self, key: &[u8]) -> Option<Token> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[BLOB])?;
        rest.get(..16)?.try_into().ok()
    }

    /// `D 'm' <placeholder>`.
    pub fn materialize_stamped(&self) -> Vec<u8> {
        self.stamped(MATERIALIZE, &[], &[])
    }

    /// `D 'm' vs`.
    pub fn materialize(&self, vs: &Versionstamp) -> Vec<u8> {
        self.with(MATERIALIZE, &[&vs.0])
    }

    /// Pending materializations of commits up to `v`.
    pub fn materialize_upto(&self, v: Version) -> (Vec<u8>, Vec<u8>) {
        let e = Versionstamp::at_version(v.after(1));
        (self.with(MATERIALIZE, &[]), self.with(MATERIALIZE, &[&e.0]))
    }

    /// The versionstamp of a materialize-marker key.
    pub fn parse_materialize(&self, key: &[u8]) -> Option<Versionstamp> {
        let rest = key
            .strip_prefix(self.prefix.as_slice())?
            .strip_prefix(&[MATERIALIZE])?;
        Versionstamp::from_slice(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_keys_sort_by_page_then_version() {
        let d = Keyspace::new(b"t".to_vec()).db(DbId::new(7));
        let a = d.page(PageNo::new(1), &Versionstamp::new(Version::new(10), 0));
        let b = d.page(PageNo::new(1), &Versionstamp::new(Version::new(11), 0));
        let c = d.page(PageNo::new(2), &Versionstamp::new(Version::new(1), 0));
        assert!(a < b && b < c);
        let (lo, hi) = d.page_at(PageNo::new(1), Version::new(10));
        assert!(lo <= a && a < hi && b >= hi);
        let (lo, hi) = d.page_after(PageNo::new(1), Version::new(10));
        assert!(a < lo && lo <= b && b < hi && c >= hi);
        assert_eq!(
            d.parse_page(&b),
            Some((PageNo::new(1), Versionstamp::new(Version::new(11), 0)))
        );
    }

    #[test]
    fn last_page_number_has_an_end() {
        let d = Keyspace::new(b"t".to_vec()).db(DbId::new(7));
        let max = PageNo::new(u32::MAX);
        let (lo, hi) = d.page_run(max, max);
        let k = d.page(max, &Versionstamp::new(Version::new(1), 0));
        assert!(lo <= k && k < hi);
    }

    #[test]
    fn stamped_keys_carry_the_placeholder_offset() {
        let d = Keyspace::new(b"t".to_vec()).db(DbId::new(7));
        let k = d.page_stamped(PageNo::new(3));
        let off = u32::from_le_bytes(k[k.len() - 4..].try_into().unwrap()) as usize;
        assert_eq!(&k[off..off + 10], &INCOMPLETE_VERSIONSTAMP);
        assert_eq!(&k[..off], d.page_prefix(PageNo::new(3)).as_slice());
    }
}
