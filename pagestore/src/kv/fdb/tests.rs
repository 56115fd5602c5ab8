//! Tests of the FDB backend. The pure ones run wherever the test binary
//! links (it needs libfdb_c); the ones that talk to a cluster run only when
//! `FDB_CLUSTER_FILE` is set.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foundationdb::options::StreamingMode;

use super::txn::{fdb_mutation, fdb_range};
use super::{FdbKv, FdbOptions, CLUSTER_FILE_ENV};
use crate::kv::{
    strinc, ConflictKind, Kv, KvError, MutationType, RangeOption, ReadRequest, ReadResult,
    INCOMPLETE_VERSIONSTAMP,
};

/// The store under test, or `None` (after printing the skip line) when no
/// cluster is configured.
fn store() -> Option<Arc<FdbKv>> {
    if std::env::var_os(CLUSTER_FILE_ENV).is_none_or(|v| v.is_empty()) {
        println!("skipped: FDB_CLUSTER_FILE not set");
        return None;
    }
    match FdbKv::open(FdbOptions::default()) {
        Ok(kv) => Some(kv),
        Err(e) => panic!("FDB_CLUSTER_FILE is set but the cluster cannot be opened: {e}"),
    }
}

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("fdbvfs-kv-test/{test}/{}/{nanos}/", std::process::id()).into_bytes()
}

fn key(prefix: &[u8], suffix: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(suffix.as_bytes());
    k
}

#[test]
fn options_default_to_fdb_limits() {
    let o = FdbOptions::default();
    assert_eq!(o.timeout, Duration::from_secs(5));
    assert!(o.cluster_file.is_none());
    let o = o
        .cluster_file("/tmp/x.cluster")
        .timeout(Duration::from_millis(250));
    let (path, described) = o.resolve_cluster_file();
    assert_eq!(
        path.as_deref(),
        Some(std::path::Path::new("/tmp/x.cluster"))
    );
    assert_eq!(described, "/tmp/x.cluster");
}

#[test]
fn range_options_pick_streaming_mode() {
    let unlimited = fdb_range(&RangeOption::new(b"a".to_vec(), b"b".to_vec()));
    assert!(matches!(unlimited.mode, StreamingMode::WantAll));
    assert_eq!(unlimited.limit, None);
    assert!(!unlimited.reverse);
    let limited = fdb_range(
        &RangeOption::new(b"a".to_vec(), b"b".to_vec())
            .limit(1)
            .reverse(),
    );
    assert!(matches!(limited.mode, StreamingMode::Exact));
    assert_eq!(limited.limit, Some(1));
    assert!(limited.reverse);
    assert_eq!(limited.begin.key(), b"a");
    assert_eq!(limited.end.key(), b"b");
}

#[test]
fn mutation_types_map_one_to_one() {
    let ours = [
        MutationType::Add,
        MutationType::BitAnd,
        MutationType::BitOr,
        MutationType::BitXor,
        MutationType::Max,
        MutationType::Min,
        MutationType::ByteMax,
        MutationType::ByteMin,
        MutationType::SetVersionstampedKey,
        MutationType::SetVersionstampedValue,
        MutationType::CompareAndClear,
        MutationType::AppendIfFits,
    ];
    let mut codes: Vec<_> = ours.iter().map(|m| fdb_mutation(*m).code()).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), ours.len());
}

#[test]
fn set_get_clear_and_metrics() {
    let Some(kv) = store() else { return };
    let p = prefix("set_get");
    let before = kv.metrics();
    let mut t = kv.begin().unwrap();
    t.set(&key(&p, "a"), b"1");
    t.set(&key(&p, "b"), b"22");
    assert!(t.approximate_size() >= 2 * (p.len() + 1) + 3);
    let c = t.commit().unwrap();
    assert!(c.versionstamp.is_some());
    assert_eq!(c.versionstamp.unwrap().version(), c.version);

    let mut t = kv.begin().unwrap();
    assert!(t.read_version().unwrap() >= c.version);
    assert_eq!(t.get(&key(&p, "a"), false).unwrap(), Some(b"1".to_vec()));
    assert_eq!(t.get(&key(&p, "zz"), true).unwrap(), None);
    let ro = t.commit().unwrap();
    assert!(ro.versionstamp.is_none() && ro.version >= c.version);

    let m = kv.metrics().since(&before);
    assert_eq!(m.commits, 1);
    assert_eq!(m.read_versions, 1);
    assert_eq!(m.reads, 2);
    assert_eq!(m.bytes_read, 1);
    assert_eq!(m.bytes_written as usize, 2 * (p.len() + 1) + 3);

    let mut t = kv.begin().unwrap();
    t.clear(&key(&p, "a"));
    t.commit().unwrap();
    let mut t = kv.begin().unwrap();
    assert_eq!(t.get(&key(&p, "a"), false).unwrap(), None);
    assert_eq!(t.get(&key(&p, "b"), false).unwrap(), Some(b"22".to_vec()));
    kv.clear_prefix(&p).unwrap();
}

#[test]
fn ranges_limit_reverse_and_continuation() {
    let Some(kv) = store() else { return };
    let p = prefix("ranges");
    let end = strinc(&p).unwrap();
    // 300 rows of 1 KB: more than one WantAll chunk.
    let mut t = kv.begin().unwrap();
    for i in 0..300 {
        t.set(&key(&p, &format!("{i:04}")), &[7u8; 1000]);
    }
    t.commit().unwrap();

    let mut t = kv.begin().unwrap();
    let all = t
        .get_range(&RangeOption::new(p.clone(), end.clone()), true)
        .unwrap();
    assert_eq!(all.kvs.len(), 300);
    assert!(!all.more);
    assert!(all.kvs.windows(2).all(|w| w[0].key < w[1].key));

    let last = t
        .get_range(
            &RangeOption::new(p.clone(), end.clone()).limit(1).reverse(),
            false,
        )
        .unwrap();
    assert_eq!(last.kvs.len(), 1);
    assert_eq!(last.kvs[0].key, key(&p, "0299"));
    assert!(!last.more);

    let ten = t
        .get_range(
            &RangeOption::new(key(&p, "0100"), end.clone()).limit(10),
            false,
        )
        .unwrap();
    assert_eq!(ten.kvs.len(), 10);
    assert_eq!(ten.kvs[9].key, key(&p, "0109"));

    let empty = t
        .get_range(&RangeOption::new(end.clone(), p.clone()), false)
        .unwrap();
    assert!(empty.kvs.is_empty() && !empty.more);
    drop(t);
    kv.clear_prefix(&p).unwrap();
}

#[test]
fn batch_is_one_round_trip() {
    let Some(kv) = store() else { return };
    let p = prefix("batch");
    let mut t = kv.begin().unwrap();
    for i in 0..20 {
        t.set(&key(&p, &format!("{i:02}")), format!("v{i}").as_bytes());
    }
    t.commit().unwrap();

    let mut t = kv.begin().unwrap();
    t.read_version().unwrap();
    let before = kv.metrics();
    let mut reqs: Vec<ReadRequest> = (0..20)
        .map(|i| ReadRequest::Get(key(&p, &format!("{i:02}"))))
        .collect();
    reqs.push(ReadRequest::Range(
        RangeOption::new(p.clone(), strinc(&p).unwrap())
            .limit(1)
            .reverse(),
    ));
    reqs.push(ReadRequest::Get(key(&p, "missing")));
    let out = t.get_batch(&reqs, false).unwrap();
    let m = kv.metrics().since(&before);
    assert_eq!(m.reads, 1);
    assert_eq!(m.read_versions, 0);
    assert_eq!(out.len(), 22);
    assert_eq!(out[3], ReadResult::Value(Some(b"v3".to_vec())));
    match &out[20] {
        ReadResult::Range(r) => assert_eq!(r.kvs[0].key, key(&p, "19")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(out[21], ReadResult::Value(None));
    drop(t);
    kv.clear_prefix(&p).unwrap();
}

#[test]
fn conflicts_are_1020_and_counted() {
    let Some(kv) = store() else { return };
    let p = prefix("conflict");
    let k = key(&p, "x");
    let mut a = kv.begin().unwrap();
    let mut b = kv.begin().unwrap();
    assert_eq!(a.get(&k, false).unwrap(), None);
    b.set(&k, b"b");
    b.commit().unwrap();
    a.set(&key(&p, "y"), b"a");
    let before = kv.metrics();
    let err = a.commit().unwrap_err();
    assert_eq!(err.code, KvError::NOT_COMMITTED);
    assert!(err.is_retryable_not_committed());
    assert_eq!(kv.metrics().since(&before).conflicts, 1);

    // An explicit read-conflict range conflicts the same way; a snapshot
    // read does not.
    let mut a = kv.begin().unwrap();
    let mut s = kv.begin().unwrap();
    a.read_version().unwrap();
    s.get(&k, true).unwrap();
    a.add_conflict_range(&k, &key(&p, "x\0"), ConflictKind::Read);
    a.set(&key(&p, "z"), b"a");
    s.set(&key(&p, "w"), b"s");
    let mut b = kv.begin().unwrap();
    b.set(&k, b"b2");
    b.commit().unwrap();
    assert_eq!(a.commit().unwrap_err().code, KvError::NOT_COMMITTED);
    s.commit().unwrap();
    kv.clear_prefix(&p).unwrap();
}

#[test]
fn versionstamped_key_and_value() {
    let Some(kv) = store() else { return };
    let p = prefix("vs");
    let mut k = p.clone();
    let offset = k.len() as u32;
    k.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
    k.extend_from_slice(&offset.to_le_bytes());
    let mut v = b"at:".to_vec();
    v.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
    v.extend_from_slice(&3u32.to_le_bytes());
    let mut t = kv.begin().unwrap();
    t.atomic_op(&k, b"value", MutationType::SetVersionstampedKey);
    t.atomic_op(&key(&p, "meta"), &v, MutationType::SetVersionstampedValue);
    let c = t.commit().unwrap();
    let stamp = c.versionstamp.unwrap();

    let mut t = kv.begin().unwrap();
    let mut expect = p.clone();
    expect.extend_from_slice(&stamp.0);
    assert_eq!(t.get(&expect, false).unwrap(), Some(b"value".to_vec()));
    let mut expect_v = b"at:".to_vec();
    expect_v.extend_from_slice(&stamp.0);
    assert_eq!(t.get(&key(&p, "meta"), false).unwrap(), Some(expect_v));
    drop(t);

    let mut t = kv.begin().unwrap();
    t.atomic_op(&key(&p, "n"), &5u64.to_le_bytes(), MutationType::Add);
    t.atomic_op(&key(&p, "n"), &2u64.to_le_bytes(), MutationType::Add);
    t.commit().unwrap();
    let mut t = kv.begin().unwrap();
    assert_eq!(
        t.get(&key(&p, "n"), false).unwrap(),
        Some(7u64.to_le_bytes().to_vec())
    );
    drop(t);
    kv.clear_prefix(&p).unwrap();
}

#[test]
fn set_read_version_reads_the_past() {
    let Some(kv) = store() else { return };
    let p = prefix("rv");
    let k = key(&p, "k");
    let mut t = kv.begin().unwrap();
    t.set(&k, b"old");
    let first = t.commit().unwrap();
    let mut t = kv.begin().unwrap();
    t.set(&k, b"new");
    t.commit().unwrap();

    let before = kv.metrics();
    let mut t = kv.begin().unwrap();
    t.set_read_version(first.version);
    assert_eq!(t.read_version().unwrap(), first.version);
    assert_eq!(t.get(&k, true).unwrap(), Some(b"old".to_vec()));
    assert_eq!(kv.metrics().since(&before).read_versions, 0);
    drop(t);
    kv.clear_prefix(&p).unwrap();
}

#[test]
fn unreachable_cluster_times_out_with_a_clear_error() {
    if store().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.cluster");
    // Nothing listens on port 1.
    std::fs::write(&path, "nowhere:nowhere@127.0.0.1:1\n").unwrap();
    let opts = FdbOptions::default()
        .cluster_file(&path)
        .timeout(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let err = FdbKv::open(opts).unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TIMED_OUT, "{err}");
    assert!(err.message.contains("nowhere.cluster"), "{err}");
    // A read that timed out wrote nothing, and says it can be retried (the
    // VFS reports SQLITE_BUSY_TIMEOUT).
    assert!(err.message.contains("can be retried"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn old_transactions_fail_with_1007() {
    let Some(_) = store() else { return };
    // A timeout above the 5 s window, so that FDB's 1007 is what we see.
    let kv = FdbKv::open(FdbOptions::default().timeout(Duration::from_secs(20))).unwrap();
    let p = prefix("too_old");
    let mut t = kv.begin().unwrap();
    t.set(&key(&p, "a"), b"1");
    let first = t.commit().unwrap();
    let mut t = kv.begin().unwrap();
    t.read_version().unwrap();
    t.set(&key(&p, "b"), b"x");
    std::thread::sleep(Duration::from_secs(6));
    // A key this transaction has not read yet goes to a storage server.
    let err = t.get(&key(&p, "a"), false).unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_OLD, "{err}");
    assert!(err.is_retryable_not_committed());
    let err = t.commit().unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_OLD, "{err}");
    let mut old = kv.begin().unwrap();
    old.set_read_version(first.version);
    let err = old.get(&key(&p, "a"), true).unwrap_err();
    assert_eq!(err.code, KvError::TRANSACTION_TOO_OLD, "{err}");
    kv.clear_prefix(&p).unwrap();
}
