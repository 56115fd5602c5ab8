//! Byte encodings of the values stored under the keys of [`crate::keys`].
//! Each starts with a tag or format byte so that the layout can evolve.

use crate::error::{Error, Result};
use crate::ids::{DbId, PageNo, Token};
use crate::kv::{Version, Versionstamp, INCOMPLETE_VERSIONSTAMP};

/// The value of a page-version key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageValue {
    /// The page does not exist at this version (truncated away).
    Absent,
    /// The page's bytes, stored in the index entry itself.
    Inline(Vec<u8>),
    /// The page's bytes were uploaded ahead under this token (`D 'b' token pgno`).
    Uploaded(Token),
}

const ABSENT: u8 = 0;
const INLINE: u8 = 1;
const UPLOADED: u8 = 2;

impl PageValue {
    /// Encodes the value.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            PageValue::Absent => vec![ABSENT],
            PageValue::Inline(b) => {
                let mut v = Vec::with_capacity(b.len() + 1);
                v.push(INLINE);
                v.extend_from_slice(b);
                v
            }
            PageValue::Uploaded(t) => {
                let mut v = Vec::with_capacity(17);
                v.push(UPLOADED);
                v.extend_from_slice(t);
                v
            }
        }
    }

    /// Decodes a value.
    pub fn decode(b: &[u8]) -> Result<Self> {
        Ok(match PageRef::decode(b)? {
            PageRef::Absent => PageValue::Absent,
            PageRef::Inline(page) => PageValue::Inline(page.to_vec()),
            PageRef::Uploaded(t) => PageValue::Uploaded(t),
        })
    }
}

/// A [`PageValue`] borrowed from the stored bytes: the read path copies an
/// inline page once, straight into the cache's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRef<'a> {
    /// See [`PageValue::Absent`].
    Absent,
    /// See [`PageValue::Inline`].
    Inline(&'a [u8]),
    /// See [`PageValue::Uploaded`].
    Uploaded(Token),
}

impl<'a> PageRef<'a> {
    /// Decodes a page value without copying the page.
    pub fn decode(b: &'a [u8]) -> Result<Self> {
        match b.split_first() {
            Some((&ABSENT, [])) => Ok(PageRef::Absent),
            Some((&INLINE, rest)) => Ok(PageRef::Inline(rest)),
            Some((&UPLOADED, rest)) => rest
                .try_into()
                .map(PageRef::Uploaded)
                .map_err(|_| Error::corrupt("page value: bad token length")),
            _ => Err(Error::corrupt("page value: unknown tag")),
        }
    }
}

/// One change-log record: what a commit changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogRecord {
    /// The commit's token.
    pub token: Token,
    /// The new page count, when the commit changed it.
    pub page_count: Option<u64>,
    /// The page size, when this commit set it (the database's first pages).
    pub page_size: Option<u32>,
    /// A large commit whose page index is written after the commit
    /// (see `D 'm'` in [`crate::keys`]).
    pub large: bool,
    /// Pages written, ascending, without duplicates.
    pub pages: Vec<PageNo>,
    /// Pages removed (truncated away), ascending, disjoint from `pages`.
    pub absent: Vec<PageNo>,
}

const LOG_FORMAT: u8 = 1;
const F_COUNT: u8 = 1;
const F_PAGE_SIZE: u8 = 2;
const F_LARGE: u8 = 4;

/// Largest part of a log record stored in one value (FDB's limit is 100 kB).
pub const LOG_PART_BYTES: usize = 90_000;

impl LogRecord {
    /// Encodes the record; pages as runs of consecutive numbers.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![LOG_FORMAT, 0];
        let mut flags = 0;
        v.extend_from_slice(&self.token);
        if let Some(c) = self.page_count {
            flags |= F_COUNT;
            v.extend_from_slice(&c.to_be_bytes());
        }
        if let Some(s) = self.page_size {
            flags |= F_PAGE_SIZE;
            v.extend_from_slice(&s.to_be_bytes());
        }
        if self.large {
            flags |= F_LARGE;
        }
        v[1] = flags;
        put_pages(&mut v, &self.pages);
        put_pages(&mut v, &self.absent);
        v
    }

    /// Every page the commit changed (written or removed), ascending.
    pub fn changed(&self) -> Vec<PageNo> {
        let mut all = Vec::with_capacity(self.pages.len() + self.absent.len());
        all.extend_from_slice(&self.pages);
        all.extend_from_slice(&self.absent);
        all.sort_unstable();
        all
    }

    /// Splits the encoded record into parts that each fit in one value.
    pub fn encode_parts(&self) -> Vec<Vec<u8>> {
        self.encode()
            .chunks(LOG_PART_BYTES)
            .map(|c| c.to_vec())
            .collect()
    }

    /// Decodes only the token and flags at the start of a record's first
    /// part (enough to know whether it was a large commit).
    pub fn decode_head(b: &[u8]) -> Option<LogRecord> {
        if b.first() != Some(&LOG_FORMAT) {
            return None;
        }
        let flags = *b.get(1)?;
        Some(LogRecord {
            token: b.get(2..18)?.try_into().ok()?,
            large: flags & F_LARGE != 0,
            ..Default::default()
        })
    }

    /// Decodes a record (all its parts concatenated).
    pub fn decode(b: &[u8]) -> Result<Self> {
        let bad = || Error::corrupt("change-log record truncated");
        if b.first() != Some(&LOG_FORMAT) {
            return Err(Error::corrupt("change-log record: unknown format"));
        }
        let flags = *b.get(1).ok_or_else(bad)?;
        let mut at = 2;
        let token: Token = b
            .get(at..at + 16)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        at += 16;
        let mut rec = LogRecord {
            token,
            large: flags & F_LARGE != 0,
            ..Default::default()
        };
        if flags & F_COUNT != 0 {
            let s = b.get(at..at + 8).ok_or_else(bad)?;
            rec.page_count = Some(be_u64(s).ok_or_else(bad)?);
            at += 8;
        }
        if flags & F_PAGE_SIZE != 0 {
            let s = b.get(at..at + 4).ok_or_else(bad)?;
            rec.page_size = Some(be_u32(s).ok_or_else(bad)?);
            at += 4;
        }
        rec.pages = get_pages(b, &mut at)?;
        rec.absent = get_pages(b, &mut at)?;
        Ok(rec)
    }
}

fn put_pages(v: &mut Vec<u8>, pages: &[PageNo]) {
    let runs = runs(pages);
    put_varint(v, runs.len() as u64);
    let mut next = 0u64;
    for (first, len) in runs {
        put_varint(v, first.index() - next);
        put_varint(v, len as u64 - 1);
        next = first.index() + len as u64;
    }
}

fn get_pages(b: &[u8], at: &mut usize) -> Result<Vec<PageNo>> {
    let nruns = get_varint(b, at)?;
    let mut pages = Vec::new();
    let mut next = 0u64;
    for _ in 0..nruns {
        let first = next.saturating_add(get_varint(b, at)?);
        let len = get_varint(b, at)?.saturating_add(1);
        let end = first.saturating_add(len);
        if end > u32::MAX as u64 + 1 || end - first > (b.len() as u64).saturating_mul(1 << 20) {
            return Err(Error::corrupt("change-log record: page out of range"));
        }
        pages.extend((first..end).map(|p| PageNo::new(p as u32)));
        next = end;
    }
    Ok(pages)
}

/// Splits sorted unique page numbers into (first, length) runs.
pub fn runs(pages: &[PageNo]) -> Vec<(PageNo, u32)> {
    let mut out: Vec<(PageNo, u32)> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some((first, len)) if first.index() + *len as u64 == p.index() => *len += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

fn put_varint(v: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        v.push((x as u8) | 0x80);
        x >>= 7;
    }
    v.push(x as u8);
}

fn get_varint(b: &[u8], at: &mut usize) -> Result<u64> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b
            .get(*at)
            .ok_or_else(|| Error::corrupt("varint truncated"))?;
        *at += 1;
        x |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(x);
        }
    }
    Err(Error::corrupt("varint too long"))
}

/// 8 big-endian bytes as a u64; None for any other length.
pub(crate) fn be_u64(b: &[u8]) -> Option<u64> {
    b.try_into().ok().map(u64::from_be_bytes)
}

/// 4 big-endian bytes as a u32; None for any other length.
pub(crate) fn be_u32(b: &[u8]) -> Option<u32> {
    b.try_into().ok().map(u32::from_be_bytes)
}

/// A u64 value (page count `D 'z'`, GC horizon, upload and heartbeat
/// times).
pub(crate) fn decode_u64(b: &[u8]) -> Result<u64> {
    be_u64(b).ok_or_else(|| Error::corrupt("u64 value"))
}

/// A u32 value (page size `D 'h'`).
pub(crate) fn decode_u32(b: &[u8]) -> Result<u32> {
    be_u32(b).ok_or_else(|| Error::corrupt("u32 value"))
}

/// The GC horizon stored at `D 'g'` (0: never collected).
pub(crate) fn decode_horizon(v: Option<&[u8]>) -> Result<Version> {
    Ok(Version::new(v.map(decode_u64).transpose()?.unwrap_or(0)))
}

/// What a commit token key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenState {
    /// The commit with this token landed as this versionstamp.
    Landed(Versionstamp),
    /// A fence wrote it (at this versionstamp): the commit never lands.
    Fenced(Versionstamp),
}

/// The byte after a fence's versionstamp in a token value.
const FENCED: u8 = b'F';

impl TokenState {
    pub(crate) fn decode(v: &[u8]) -> Result<TokenState> {
        let bad = || Error::corrupt("token value");
        let vs = Versionstamp::from_slice(v.get(..10).ok_or_else(bad)?).ok_or_else(bad)?;
        match v.get(10..) {
            Some([]) => Ok(TokenState::Landed(vs)),
            Some([FENCED]) => Ok(TokenState::Fenced(vs)),
            _ => Err(bad()),
        }
    }

    /// The parameter of the `SetVersionstampedValue` a commit writes to its
    /// token key: it reads back as `Landed(the commit's versionstamp)`.
    pub(crate) fn landed_param() -> Vec<u8> {
        let mut stamp = INCOMPLETE_VERSIONSTAMP.to_vec();
        stamp.extend_from_slice(&0u32.to_le_bytes());
        stamp
    }

    /// The parameter of the `SetVersionstampedValue` a fence writes: it
    /// reads back as `Fenced(the fence's versionstamp)`.
    pub(crate) fn fenced_param() -> Vec<u8> {
        let mut param = INCOMPLETE_VERSIONSTAMP.to_vec();
        param.push(FENCED);
        param.extend_from_slice(&0u32.to_le_bytes());
        param
    }

    /// The versionstamp either way (GC ages tokens by it).
    pub(crate) fn versionstamp(&self) -> Versionstamp {
        match self {
            TokenState::Landed(vs) | TokenState::Fenced(vs) => *vs,
        }
    }
}

/// A database id as a catalog name entry (`P 01 name`) holds it: 8 bytes,
/// big-endian.
pub(crate) fn decode_db_id(v: &[u8]) -> Result<DbId> {
    be_u64(v)
        .map(DbId::new)
        .ok_or_else(|| Error::corrupt("catalog id"))
}

/// Catalog entry of one database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbMeta {
    /// The database's name (the name it had when dropped, if dropped).
    pub name: String,
    /// Wall-clock time of creation, µs since the Unix epoch.
    pub created_micros: u64,
    /// For a fork: the database it was forked from and the version of that
    /// database it starts from (copy-on-write: pages it has not written are
    /// read from the parent as of that version).
    pub parent: Option<(DbId, crate::kv::Version)>,
    /// How long old versions stay readable, in µs; `None`: the default.
    pub retention_micros: Option<u64>,
    /// Dropped, but kept because forks still read from it.
    pub dropped: bool,
}

const META_FORMAT: u8 = 2;
const M_PARENT: u8 = 1;
const M_RETENTION: u8 = 2;
const M_DROPPED: u8 = 4;

impl DbMeta {
    /// Encodes the entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![META_FORMAT, 0];
        let mut flags = 0;
        v.extend_from_slice(&self.created_micros.to_be_bytes());
        if let Some((id, version)) = self.parent {
            flags |= M_PARENT;
            v.extend_from_slice(&id.to_be_bytes());
            v.extend_from_slice(&version.to_be_bytes());
        }
        if let Some(r) = self.retention_micros {
            flags |= M_RETENTION;
            v.extend_from_slice(&r.to_be_bytes());
        }
        if self.dropped {
            flags |= M_DROPPED;
        }
        v[1] = flags;
        v.extend_from_slice(self.name.as_bytes());
        v
    }

    /// Decodes an entry.
    pub fn decode(b: &[u8]) -> Result<Self> {
        let bad = || Error::corrupt("catalog entry");
        let u64_at =
            |at: usize| -> Result<u64> { b.get(at..at + 8).and_then(be_u64).ok_or_else(bad) };
        if b.first() != Some(&META_FORMAT) {
            return Err(bad());
        }
        let flags = *b.get(1).ok_or_else(bad)?;
        let mut meta = DbMeta {
            created_micros: u64_at(2)?,
            dropped: flags & M_DROPPED != 0,
            ..Default::default()
        };
        let mut at = 10;
        if flags & M_PARENT != 0 {
            meta.parent = Some((
                DbId::new(u64_at(at)?),
                crate::kv::Version::new(u64_at(at + 8)?),
            ));
            at += 16;
        }
        if flags & M_RETENTION != 0 {
            meta.retention_micros = Some(u64_at(at)?);
            at += 8;
        }
        meta.name = String::from_utf8(b.get(at..).ok_or_else(bad)?.to_vec())
            .map_err(|_| Error::corrupt("catalog name"))?;
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn page_values_round_trip() {
        for v in [
            PageValue::Absent,
            PageValue::Inline(vec![1, 2, 3]),
            PageValue::Uploaded([9; 16]),
        ] {
            assert_eq!(PageValue::decode(&v.encode()).unwrap(), v);
        }
        assert!(PageValue::decode(&[]).is_err());
        assert!(PageValue::decode(&[2, 1]).is_err());
    }

    proptest! {
        #[test]
        fn log_records_round_trip(mut pages in proptest::collection::vec(any::<u32>(), 0..200),
                                  count in proptest::option::of(any::<u64>()),
                                  large in any::<bool>()) {
            pages.sort_unstable();
            pages.dedup();
            let absent = pages.iter().map(|p| PageNo::new(p / 2)).filter(|p| !pages.contains(&p.get())).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            let pages = pages.into_iter().map(PageNo::new).collect();
            let rec = LogRecord { token: [3; 16], page_count: count, page_size: Some(4096), large, pages, absent };
            prop_assert_eq!(LogRecord::decode(&rec.encode()).unwrap(), rec);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LogRecord::decode(&b);
            let _ = PageValue::decode(&b);
            let _ = DbMeta::decode(&b);
        }
    }

    #[test]
    fn catalog_entries_round_trip() {
        let plain = DbMeta {
            name: "orders".into(),
            created_micros: 5,
            ..Default::default()
        };
        let fork = DbMeta {
            name: "orders-test".into(),
            created_micros: 6,
            parent: Some((DbId::new(42), crate::kv::Version::new(1_000))),
            retention_micros: Some(1_000_000),
            dropped: true,
        };
        for m in [plain, fork] {
            assert_eq!(DbMeta::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn contiguous_pages_encode_small() {
        let rec = LogRecord {
            pages: (0..262_144).map(PageNo::new).collect(),
            ..Default::default()
        };
        assert!(rec.encode().len() < 64);
        let last = [PageNo::new(u32::MAX - 1), PageNo::new(u32::MAX)];
        assert_eq!(runs(&last), vec![(last[0], 2)]);
    }
}
