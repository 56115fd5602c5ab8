//! Memory bounds of the embedded backend (issue 11, part 3): dropping a
//! large database (one `clear_range`) takes O(1) memory, and the MVCC
//! history has a byte bound past which old readers get 1007.
//!
//! The RSS measurement runs in a child process (this test binary re-run on
//! one test) so that other tests' allocations do not show in its figures.

#[path = "common/child.rs"]
mod child;

use child::{field, in_child, peak_rss, status_kib};
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::{Kv, KvError, RangeOption};

const CHILD_ENV: &str = "PAGESTORE_MEMORY_BOUNDS_CHILD";

/// Size of the dropped database.
const DB_BYTES: usize = 1 << 30;
const VALUE_BYTES: usize = 8 << 10;
/// Keys per loading commit (8 MiB, under FDB's 10 MB transaction limit).
const KEYS_PER_COMMIT: usize = 1000;

fn key(i: usize) -> Vec<u8> {
    let mut k = b"db/".to_vec();
    k.extend_from_slice(&(i as u64).to_be_bytes());
    k
}

/// Loads the database, reopens the store, then drops the database while a
/// thread samples VmRSS; prints the figures.
fn child_drop() {
    let dir = tempfile::tempdir().unwrap();
    let keys = DB_BYTES / VALUE_BYTES;
    {
        let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap();
        let mut value = vec![0u8; VALUE_BYTES];
        for start in (0..keys).step_by(KEYS_PER_COMMIT) {
            let mut t = kv.begin().unwrap();
            for i in start..(start + KEYS_PER_COMMIT).min(keys) {
                value[..8].copy_from_slice(&(i as u64).to_le_bytes());
                t.set(&key(i), &value);
            }
            t.commit().unwrap();
        }
    }
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap();
    // A few reads so the store is warm, as after normal use.
    let mut t = kv.begin().unwrap();
    t.get(&key(0), false).unwrap().unwrap();
    // An old reader: its read version precedes the drop.
    let mut old = kv.begin().unwrap();
    old.read_version().unwrap();
    drop(t);

    let (hwm_reset, baseline, mut peak) = peak_rss(|| {
        // Peak RSS from here on, where the kernel supports resetting it.
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let mut t = kv.begin().unwrap();
        t.clear_range(b"db/", b"db0");
        t.commit().unwrap();
        hwm_reset
    });
    if hwm_reset {
        peak = peak.max(status_kib("VmHWM:"));
    }

    // Later readers see nothing; the old reader sees the rows or gets
    // transaction_too_old, never a partial or empty range.
    let mut t = kv.begin().unwrap();
    let r = t
        .get_range(&RangeOption::new(b"db/".to_vec(), b"db0".to_vec()), false)
        .unwrap();
    assert!(r.kvs.is_empty(), "a read after the drop still sees rows");
    match old.get(&key(7), false) {
        Ok(v) => assert!(v.is_some(), "a read before the drop lost its row"),
        Err(e) => assert_eq!(e.code, KvError::TRANSACTION_TOO_OLD, "{e}"),
    }
    println!(
        "RESULT db_mib={} baseline_kib={baseline} peak_kib={peak} above_baseline_kib={} hwm_reset={hwm_reset}",
        DB_BYTES >> 20,
        peak.saturating_sub(baseline)
    );
}

/// Acceptance (issue 11): dropping a 1 GB database on the embedded backend
/// peaks below 100 MB RSS above the baseline.
#[test]
fn dropping_a_1gb_database_stays_under_100mb_above_baseline() {
    const T: &str = "dropping_a_1gb_database_stays_under_100mb_above_baseline";
    let Some(line) = in_child(T, CHILD_ENV, &[], child_drop) else {
        return;
    };
    eprintln!("{line}");
    let above = field(&line, "above_baseline_kib");
    assert!(
        above < 100 * 1000,
        "dropping a 1 GiB database took {above} KiB above the baseline: {line}"
    );
}

/// The MVCC history's byte bound: past it, a reader older than the history
/// kept gets 1007 (never a wrong value); a newer reader is served.
#[test]
fn history_over_its_byte_bound_fails_old_readers_with_1007() {
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_history_bytes(256 << 10)).unwrap();
    let mut t = kv.begin().unwrap();
    t.set(b"k", b"v0");
    t.commit().unwrap();
    let mut old = kv.begin().unwrap();
    old.read_version().unwrap();
    // 1 MiB of overwritten values: four times the bound.
    for round in 0..2u8 {
        for chunk in 0..8u8 {
            let mut t = kv.begin().unwrap();
            for i in 0..64u8 {
                t.set(&[b'x', chunk, i], &vec![round; 1024]);
            }
            if chunk == 0 {
                t.set(b"k", &[b'v', b'1' + round]);
            }
            t.commit().unwrap();
        }
    }
    let e = old.get(b"k", false).unwrap_err();
    assert_eq!(e.code, KvError::TRANSACTION_TOO_OLD, "{e}");
    let e = old
        .get_range(&RangeOption::new(b"x".to_vec(), b"y".to_vec()), false)
        .unwrap_err();
    assert_eq!(e.code, KvError::TRANSACTION_TOO_OLD, "{e}");
    let mut fresh = kv.begin().unwrap();
    assert_eq!(fresh.get(b"k", false).unwrap(), Some(b"v2".to_vec()));
}

/// A small range clear keeps exact MVCC: a reader before it still sees the
/// rows, one after it sees none.
#[test]
fn a_small_range_clear_keeps_old_readers_exact() {
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap();
    let mut t = kv.begin().unwrap();
    for i in 0..100 {
        t.set(&key(i), b"row");
    }
    t.commit().unwrap();
    let mut old = kv.begin().unwrap();
    old.read_version().unwrap();
    let mut t = kv.begin().unwrap();
    t.clear_range(b"db/", b"db0");
    t.commit().unwrap();
    let r = old
        .get_range(&RangeOption::new(b"db/".to_vec(), b"db0".to_vec()), false)
        .unwrap();
    assert_eq!(r.kvs.len(), 100);
    let mut fresh = kv.begin().unwrap();
    assert_eq!(fresh.get(&key(3), false).unwrap(), None);
}

/// A range clear larger than its share of the history: old readers get
/// 1007 in that range only; elsewhere they are served.
#[test]
fn a_large_range_clear_fails_old_readers_in_its_range_only() {
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_history_bytes(64 << 10)).unwrap();
    let mut t = kv.begin().unwrap();
    for i in 0..100 {
        t.set(&key(i), &[7u8; 1024]);
    }
    t.set(b"other", b"o1");
    t.commit().unwrap();
    let mut old = kv.begin().unwrap();
    old.read_version().unwrap();
    let mut t = kv.begin().unwrap();
    t.clear_range(b"db/", b"db0");
    t.set(b"other", b"o2");
    t.commit().unwrap();
    let e = old.get(&key(3), false).unwrap_err();
    assert_eq!(e.code, KvError::TRANSACTION_TOO_OLD, "{e}");
    assert_eq!(old.get(b"other", false).unwrap(), Some(b"o1".to_vec()));
    let mut fresh = kv.begin().unwrap();
    assert_eq!(fresh.get(&key(3), false).unwrap(), None);
}
