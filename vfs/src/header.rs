//! SQLite's database header (the first 100 bytes of page 1): the one
//! parser of it in the workspace, and the change-counter trick
//! (DESIGN.md §4).
//!
//! Fields read here: the magic string, the page size, the file format
//! versions (WAL or rollback journal), the change counter, the in-header
//! database size, version-valid-for and the writer's version.
//!
//! SQLite keeps its page cache across transactions while the file change
//! counter (header bytes 24..28) is unchanged; pages served from that cache
//! never reach the VFS. The VFS serves its own counter, and the same value
//! in "version-valid-for" (92..96) so SQLite keeps trusting the in-header
//! database size (28..32): the counter SQLite already believes when nothing
//! changed since its cache was filled (it keeps the cache; the pages it may
//! serve from it join the transaction's read set), else a fresh one, past
//! every counter served or written before, so that it drops the cache and
//! reads each page it needs through the VFS (`file/pager_cache.rs`).
//!
//! Conversely, SQLite writes page 1 with counter+1 at every commit. A write
//! of page 1 that changes only these bytes is dropped: otherwise every
//! writer would write page 1 and all of them would conflict. We also ignore
//! bytes 96..100 (the SQLite version that last wrote the file): it is
//! informational, and honouring it would make writers of different SQLite
//! versions (a 3.40 shell next to a 3.54 Rust program) conflict on page 1.

use std::ops::Range;

/// The header's length.
pub const LEN: usize = 100;
/// The magic string every database starts with.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Page size (big-endian u16; 1 means 65536).
pub const PAGE_SIZE: Range<usize> = 16..18;
/// File format write and read versions: 1 rollback journal, 2 WAL.
pub const FORMAT_VERSIONS: Range<usize> = 18..20;
/// File change counter.
pub const CHANGE_COUNTER: Range<usize> = 24..28;
/// In-header database size in pages.
pub const DB_SIZE: Range<usize> = 28..32;
/// Version-valid-for number.
pub const VALID_FOR: Range<usize> = 92..96;
/// SQLITE_VERSION_NUMBER of the last writer.
pub const WRITER_VERSION: Range<usize> = 96..100;

/// A counter past `high`, the highest served or written so far: SQLite's
/// pager believes a counter it was served or wrote, so it cannot believe
/// this one. Past by two: SQLite writes the counter it believes plus one
/// at commit, which must not equal the next fresh counter even if that
/// write went unseen.
pub fn fresh_counter(high: u32) -> u32 {
    high.wrapping_add(2)
}

/// The later of two counters, in wrapping order (counters only move
/// forward, by small steps).
pub fn later_counter(a: u32, b: u32) -> u32 {
    if (b.wrapping_sub(a) as i32) > 0 {
        b
    } else {
        a
    }
}

/// Overlays the served counter on a buffer holding file bytes starting at
/// file offset `offset` (only bytes of the two fields inside the buffer).
pub fn patch_read(buf: &mut [u8], offset: u64, counter: u32) {
    let bytes = counter.to_be_bytes();
    for field in [CHANGE_COUNTER, VALID_FOR] {
        for (i, b) in field.clone().zip(bytes) {
            let i = i as u64;
            if i >= offset && i < offset + buf.len() as u64 {
                buf[(i - offset) as usize] = b;
            }
        }
    }
}

/// True when two versions of page 1 differ only in the counter fields
/// (24..28, 92..100): such a write is dropped.
pub fn only_counters_differ(old: &[u8], new: &[u8]) -> bool {
    old.len() == new.len() && old.len() >= LEN && same_but_counters(old, new, 0)
}

/// True when `a` and `b`, both holding file bytes from file offset
/// `offset`, are equal except in the header fields SQLite rewrites at every
/// commit (change counter, version-valid-for, writer version: 24..28 and
/// 92..100), which the VFS serves or drops on its own.
pub fn same_but_counters(a: &[u8], b: &[u8], offset: u64) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Slices between the masked fields, compared whole (memcmp): page 1 is
    // compared at every commit, byte by byte that cost ~5 instructions a
    // byte.
    let mut from = 0usize;
    for masked in [CHANGE_COUNTER, VALID_FOR.start..WRITER_VERSION.end] {
        let start = clamp(masked.start, offset, a.len());
        let end = clamp(masked.end, offset, a.len());
        if a[from..start] != b[from..start] {
            return false;
        }
        from = from.max(end);
    }
    a[from..] == b[from..]
}

/// Header offset `at` as an index into a buffer of `len` bytes holding file
/// bytes from `offset` (0 or `len` when outside it).
fn clamp(at: usize, offset: u64, len: usize) -> usize {
    (at as u64).saturating_sub(offset).min(len as u64) as usize
}

/// The change counter written in page 1.
pub fn counter_of(page1: &[u8]) -> Option<u32> {
    be32(page1, CHANGE_COUNTER)
}

/// The in-header database size, when SQLite would trust it (non-zero and
/// version-valid-for equal to the change counter).
pub fn trusted_db_size(page1: &[u8]) -> Option<u32> {
    let size = be32(page1, DB_SIZE)?;
    (size > 0 && be32(page1, CHANGE_COUNTER)? == be32(page1, VALID_FOR)?).then_some(size)
}

/// True when `header` starts with SQLite's magic string.
pub fn is_database(header: &[u8]) -> bool {
    header.starts_with(MAGIC)
}

/// True when the header puts the database in WAL mode (either format
/// version is 2).
pub fn is_wal(header: &[u8]) -> bool {
    header.get(FORMAT_VERSIONS).is_some_and(|v| v.contains(&2))
}

/// Switches a header to rollback-journal mode (both format versions 1).
pub fn set_rollback_journal(header: &mut [u8]) {
    if let Some(v) = header.get_mut(FORMAT_VERSIONS) {
        v.fill(1);
    }
}

/// SQLite's page size from the header (bytes 16..18; 1 means 65536); None
/// unless a power of two in 512..=65536.
pub fn page_size_of(page1: &[u8]) -> Option<u32> {
    let b = page1.get(PAGE_SIZE)?;
    match u16::from_be_bytes([b[0], b[1]]) {
        1 => Some(65536),
        n if n >= 512 && n.is_power_of_two() => Some(n as u32),
        _ => None,
    }
}

/// The database size in bytes according to a trusted in-header size.
pub fn trusted_db_bytes(page1: &[u8]) -> Option<u64> {
    Some(trusted_db_size(page1)? as u64 * page_size_of(page1)? as u64)
}

fn be32(b: &[u8], r: Range<usize>) -> Option<u32> {
    b.get(r)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_but_counters_masks_only_the_counters() {
        let a = vec![7u8; 200];
        let mut b = a.clone();
        b[25] = 0;
        b[93] = 0;
        b[99] = 0;
        assert!(same_but_counters(&a, &b, 0));
        b[100] = 0;
        assert!(!same_but_counters(&a, &b, 0));
        // Outside the header nothing is masked.
        let mut c = a.clone();
        c[25] = 0;
        assert!(!same_but_counters(&a, &c, 4096));
        // A buffer starting inside the header.
        assert!(!same_but_counters(&a[20..], &b[20..100], 20));
        assert!(same_but_counters(&a[20..100], &b[20..100], 20));
        // Buffers starting inside or past a masked field.
        b[100] = 7;
        assert!(same_but_counters(&a[26..], &b[26..], 26));
        assert!(same_but_counters(&a[95..], &b[95..], 95));
        let mut d = a.clone();
        d[91] = 0;
        assert!(!same_but_counters(&a[90..], &d[90..], 90));
        assert!(same_but_counters(&a[92..99], &d[92..99], 92));
        d[28] = 0;
        assert!(!same_but_counters(&a[..30], &d[..30], 0));
        assert!(same_but_counters(&a[..28], &d[..28], 0));
        // Every single-byte difference, at every offset of a short buffer.
        for off in 0..110usize {
            for i in 0..(120 - off) {
                let mut e = a[off..120].to_vec();
                e[i] ^= 1;
                let at = off + i;
                let masked = (24..28).contains(&at) || (92..100).contains(&at);
                assert_eq!(
                    same_but_counters(&a[off..120], &e, off as u64),
                    masked,
                    "{off} {i}"
                );
            }
        }
    }

    fn page1() -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[..16].copy_from_slice(b"SQLite format 3\0");
        p[28..32].copy_from_slice(&7u32.to_be_bytes());
        p
    }

    #[test]
    fn fresh_counter_differs_from_what_sqlite_believes() {
        let a = fresh_counter(5);
        let b = fresh_counter(a);
        assert_ne!(a, b);
        // SQLite writes served+1 at commit: it must not equal the next served value.
        assert_ne!(a.wrapping_add(1), b);
        // Past whatever SQLite wrote since, wrapping included.
        let high = later_counter(b, b.wrapping_add(7));
        assert_eq!(high, b.wrapping_add(7));
        assert_ne!(fresh_counter(high), b.wrapping_add(7));
        assert_eq!(later_counter(u32::MAX, 1), 1);
        assert_eq!(later_counter(1, u32::MAX), 1);
        assert_eq!(fresh_counter(u32::MAX), 1);
    }

    #[test]
    fn patch_whole_page_and_subreads() {
        let mut p = page1();
        patch_read(&mut p, 0, 0xAABBCCDD);
        assert_eq!(&p[24..28], &[0xAA, 0xBB, 0xCC, 0xDD]);
        assert_eq!(&p[92..96], &[0xAA, 0xBB, 0xCC, 0xDD]);
        assert_eq!(trusted_db_size(&p), Some(7));
        assert_eq!(trusted_db_bytes(&p), None, "no page size in this header");
        p[16..18].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(trusted_db_bytes(&p), Some(7 * 65536));
        // The pager's 16-byte read at offset 24.
        let mut b = [0u8; 16];
        patch_read(&mut b, 24, 9);
        assert_eq!(&b[..4], &9u32.to_be_bytes());
        assert_eq!(&b[4..], &[0u8; 12]);
        // A read straddling the field start.
        let mut b = [1u8; 4];
        patch_read(&mut b, 22, 0x01020304);
        assert_eq!(b, [1, 1, 1, 2]);
        // Reads of other pages are untouched.
        let mut b = [0u8; 100];
        patch_read(&mut b, 4096, 3);
        assert_eq!(b, [0u8; 100]);
    }

    #[test]
    fn counter_only_writes_are_ignorable() {
        let old = page1();
        let mut new = old.clone();
        new[24..28].copy_from_slice(&5u32.to_be_bytes());
        new[92..96].copy_from_slice(&5u32.to_be_bytes());
        new[96..100].copy_from_slice(&3_054_001u32.to_be_bytes());
        assert!(only_counters_differ(&old, &new));
        new[28] = 1; // the database size changed: a real write
        assert!(!only_counters_differ(&old, &new));
        assert!(!only_counters_differ(&old, &old[..512]));
    }

    #[test]
    fn page_size_magic_and_journal_mode() {
        let mut h = page1();
        assert!(is_database(&h));
        assert!(!is_database(&h[..10]));
        for (raw, size) in [
            (4096u16, Some(4096)),
            (1, Some(65536)),
            (1000, None),
            (256, None),
            (0, None),
        ] {
            h[16..18].copy_from_slice(&raw.to_be_bytes());
            assert_eq!(page_size_of(&h), size, "{raw}");
        }
        assert!(!is_wal(&h));
        h[18] = 2;
        assert!(is_wal(&h));
        h[18] = 1;
        h[19] = 2;
        assert!(is_wal(&h));
        set_rollback_journal(&mut h);
        assert_eq!(&h[18..20], &[1, 1]);
        assert!(!is_wal(&h[..10]));
    }

    #[test]
    fn untrusted_size() {
        let mut p = page1();
        p[24..28].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(trusted_db_size(&p), None);
        assert_eq!(counter_of(&p), Some(1));
    }
}
