//! A contract test suite for [`Kv`] backends, written only against the
//! trait, so that the embedded backend and FDB are held to the same
//! behaviour.
//!
//! Each property is a public function taking a store and a key prefix (so
//! that properties can share one store); [`run_all`] runs them all, each on
//! a fresh store. These are test helpers: a violated property panics with a
//! message saying what broke.
//!
//! It lives among pagestore's tests, not in the library, so that no build
//! of the library carries it: `kv_contract.rs`, `shared.rs` and
//! `fdb_contract.rs` each include it with `mod contract;` (and each uses a
//! part of it, hence `dead_code` is allowed).
//!
//! Every property holds on FoundationDB 7.3 (`tests/fdb_contract.rs`).
//! What FDB does that no property can force on a real cluster (commits
//! sharing a batch version, a commit landing after its client heard 1021)
//! is modelled by the embedded backend and tested in
//! `tests/embedded_backend.rs`; differences the embedded backend keeps are
//! listed in `tests/kv_contract.rs`.
//!
//! ```ignore
//! contract::run_all(&|| -> Arc<dyn Kv> { EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap() }, None);
//! ```

#![allow(dead_code)]

use std::sync::Arc;

use pagestore::kv::limits::{MAX_KEY_SIZE, MAX_TRANSACTION_SIZE, MAX_VALUE_SIZE};
use pagestore::kv::{
    ConflictKind, KeyValue, Kv, KvError, KvResult, KvTxn, MutationType, RangeOption, ReadRequest,
    ReadResult, Version, Versionstamp, INCOMPLETE_VERSIONSTAMP,
};

/// Moves the store's clock forward by whole seconds (no sleeping).
pub type AdvanceClock<'a> = &'a dyn Fn(u64);

/// One property of the contract.
pub type Property = fn(&dyn Kv, &[u8]);

/// Every property that needs no clock control, by name.
pub const PROPERTIES: &[(&str, Property)] = &[
    ("mvcc_visibility", mvcc_visibility),
    ("read_your_writes", read_your_writes),
    (
        "snapshot_reads_add_no_conflicts",
        snapshot_reads_add_no_conflicts,
    ),
    ("point_read_write_conflict", point_read_write_conflict),
    ("range_read_write_conflict", range_read_write_conflict),
    (
        "limited_range_conflicts_only_on_rows_read",
        limited_range_conflicts_only_on_rows_read,
    ),
    ("blind_writes_never_conflict", blind_writes_never_conflict),
    ("explicit_conflict_ranges", explicit_conflict_ranges),
    ("key_size_limit", key_size_limit),
    ("value_size_limit", value_size_limit),
    ("transaction_size_limit", transaction_size_limit),
    (
        "versionstamps_follow_commit_order",
        versionstamps_follow_commit_order,
    ),
    (
        "versionstamped_value_is_unreadable",
        versionstamped_value_is_unreadable,
    ),
    ("atomic_ops", atomic_ops),
    (
        "range_limit_reverse_and_continuation",
        range_limit_reverse_and_continuation,
    ),
    (
        "get_batch_keeps_request_order",
        get_batch_keeps_request_order,
    ),
    ("read_only_commit", read_only_commit),
    ("round_trips_are_counted", round_trips_are_counted),
    (
        "concurrent_commits_have_distinct_ordered_versionstamps",
        concurrent_commits_have_distinct_ordered_versionstamps,
    ),
    (
        "reads_answered_by_own_writes_add_no_conflicts",
        reads_answered_by_own_writes_add_no_conflicts,
    ),
    (
        "versionstamped_key_range_is_unreadable",
        versionstamped_key_range_is_unreadable,
    ),
    (
        "versionstamped_key_conflicts_on_its_whole_range",
        versionstamped_key_conflicts_on_its_whole_range,
    ),
];

/// Runs every property, each on a fresh store from `make`; the properties
/// about the 5 s window run only when `advance_clock` is given.
pub fn run_all(make: &dyn Fn() -> Arc<dyn Kv>, advance_clock: Option<AdvanceClock<'_>>) {
    for (i, (name, property)) in PROPERTIES.iter().enumerate() {
        let kv = make();
        let prefix = format!("contract/{i:02}/{name}/");
        tracing::debug!(property = name, "contract property");
        property(kv.as_ref(), prefix.as_bytes());
    }
    if let Some(advance) = advance_clock {
        let kv = make();
        transaction_too_old_after_window(kv.as_ref(), b"contract/too_old/", advance);
    }
}

fn ok<T>(r: KvResult<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error {e}"),
    }
}

fn expect_code<T: std::fmt::Debug>(r: KvResult<T>, code: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected error {code}, got Ok({v:?})"),
        Err(e) => assert_eq!(e.code, code, "{what}: expected error {code}, got {e}"),
    }
}

fn k(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

fn begin(kv: &dyn Kv) -> Box<dyn KvTxn> {
    ok(kv.begin(), "begin")
}

fn put(kv: &dyn Kv, pairs: &[(&[u8], &[u8])]) {
    let mut t = begin(kv);
    for (key, value) in pairs {
        t.set(key, value);
    }
    ok(t.commit(), "commit of setup writes");
}

fn read(kv: &dyn Kv, key: &[u8]) -> Option<Vec<u8>> {
    let mut t = begin(kv);
    ok(t.get(key, false), "read")
}

fn scan(t: &mut dyn KvTxn, begin: &[u8], end: &[u8]) -> Vec<KeyValue> {
    let mut out = Vec::new();
    let mut from = begin.to_vec();
    loop {
        let r = ok(
            t.get_range(&RangeOption::new(from.clone(), end), false),
            "scan",
        );
        let last = r.kvs.last().map(|kv| kv.key.clone());
        out.extend(r.kvs);
        match (r.more, last) {
            (true, Some(last)) => {
                from = last;
                from.push(0);
            }
            (true, None) => panic!("range read said `more` but returned no rows"),
            (false, _) => return out,
        }
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<Vec<u8>> {
    kvs.iter().map(|kv| kv.key.clone()).collect()
}

/// A transaction at an older read version does not see later commits, in
/// point or range reads; a new transaction does.
pub fn mvcc_visibility(kv: &dyn Kv, p: &[u8]) {
    let (a, b, c) = (k(p, "a"), k(p, "b"), k(p, "c"));
    put(kv, &[(&a, b"1"), (&b, b"1")]);
    let mut old = begin(kv);
    let rv = ok(old.read_version(), "read version");
    let mut w = begin(kv);
    w.set(&a, b"2");
    w.clear(&b);
    w.set(&c, b"new");
    let info = ok(w.commit(), "commit");
    assert!(
        info.version > rv,
        "commit version {} <= read version {rv}",
        info.version
    );
    assert_eq!(
        ok(old.get(&a, true), "old get"),
        Some(b"1".to_vec()),
        "old txn sees a later set"
    );
    assert_eq!(
        ok(old.get(&b, true), "old get"),
        Some(b"1".to_vec()),
        "old txn sees a later clear"
    );
    assert_eq!(
        ok(old.get(&c, true), "old get"),
        None,
        "old txn sees a later insert"
    );
    let r = ok(
        old.get_range(&RangeOption::new(a.clone(), k(p, "z")), true),
        "old range",
    );
    assert_eq!(
        keys(&r.kvs),
        vec![a.clone(), b.clone()],
        "old range sees later commits"
    );
    assert_eq!(r.kvs[0].value, b"1".to_vec());
    // The same read version set explicitly sees the same state.
    let mut again = begin(kv);
    again.set_read_version(rv);
    assert_eq!(
        ok(again.get(&a, true), "get at set version"),
        Some(b"1".to_vec())
    );
    let mut new = begin(kv);
    assert_eq!(ok(new.get(&a, false), "new get"), Some(b"2".to_vec()));
    assert_eq!(ok(new.get(&b, false), "new get"), None);
    assert_eq!(ok(new.get(&c, false), "new get"), Some(b"new".to_vec()));
}

/// A transaction sees its own sets, clears, range clears and atomic ops,
/// in point and range reads.
pub fn read_your_writes(kv: &dyn Kv, p: &[u8]) {
    let (a, b, c, d, n) = (k(p, "a"), k(p, "b"), k(p, "c"), k(p, "d"), k(p, "n"));
    put(
        kv,
        &[
            (&a, b"1"),
            (&b, b"1"),
            (&c, b"1"),
            (&d, b"1"),
            (&n, &5u64.to_le_bytes()),
        ],
    );
    let mut t = begin(kv);
    t.set(&a, b"set");
    assert_eq!(ok(t.get(&a, false), "get"), Some(b"set".to_vec()));
    t.clear(&a);
    assert_eq!(ok(t.get(&a, false), "get"), None);
    t.clear_range(&b, &d);
    assert_eq!(ok(t.get(&b, false), "get"), None);
    assert_eq!(ok(t.get(&c, false), "get"), None);
    assert_eq!(ok(t.get(&d, false), "get"), Some(b"1".to_vec()));
    t.set(&c, b"back");
    t.atomic_op(&n, &3u64.to_le_bytes(), MutationType::Add);
    assert_eq!(
        ok(t.get(&n, false), "get"),
        Some(8u64.to_le_bytes().to_vec())
    );
    let fresh = k(p, "m");
    t.atomic_op(&fresh, &7u64.to_le_bytes(), MutationType::Add);
    assert_eq!(
        ok(t.get(&fresh, false), "get"),
        Some(7u64.to_le_bytes().to_vec())
    );
    let r = ok(
        t.get_range(&RangeOption::new(p.to_vec(), k(p, "z")), false),
        "range",
    );
    let got: Vec<(Vec<u8>, Vec<u8>)> = r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(
        got,
        vec![
            (c.clone(), b"back".to_vec()),
            (d.clone(), b"1".to_vec()),
            (fresh.clone(), 7u64.to_le_bytes().to_vec()),
            (n.clone(), 8u64.to_le_bytes().to_vec()),
        ],
        "range read through own writes"
    );
    ok(t.commit(), "commit");
    assert_eq!(read(kv, &a), None);
    assert_eq!(read(kv, &b), None);
    assert_eq!(read(kv, &c), Some(b"back".to_vec()));
    assert_eq!(read(kv, &n), Some(8u64.to_le_bytes().to_vec()));
}

/// Snapshot reads add no read-conflict ranges.
pub fn snapshot_reads_add_no_conflicts(kv: &dyn Kv, p: &[u8]) {
    let (a, other) = (k(p, "a"), k(p, "other"));
    put(kv, &[(&a, b"1")]);
    let mut t = begin(kv);
    ok(t.get(&a, true), "snapshot get");
    ok(
        t.get_range(&RangeOption::new(p.to_vec(), k(p, "z")), true),
        "snapshot range",
    );
    ok(
        t.get_batch(&[ReadRequest::Get(a.clone())], true),
        "snapshot batch",
    );
    put(kv, &[(&a, b"2")]);
    t.set(&other, b"x");
    ok(t.commit(), "commit after snapshot reads of a changed key");
}

/// A serializable point read conflicts with a later write of that key.
pub fn point_read_write_conflict(kv: &dyn Kv, p: &[u8]) {
    let (a, b) = (k(p, "a"), k(p, "b"));
    put(kv, &[(&a, b"1")]);
    let mut t = begin(kv);
    ok(t.get(&a, false), "get");
    put(kv, &[(&a, b"2")]);
    t.set(&b, b"x");
    expect_code(
        t.commit(),
        KvError::NOT_COMMITTED,
        "read-write conflict on a key",
    );
    assert_eq!(
        read(kv, &b),
        None,
        "a conflicting commit applied its writes"
    );
    // A write of a key never read does not conflict.
    let mut t = begin(kv);
    ok(t.get(&a, false), "get");
    put(kv, &[(&k(p, "unrelated"), b"2")]);
    t.set(&b, b"x");
    ok(t.commit(), "commit without conflict");
    // A read of a missing key conflicts with its later creation.
    let mut t = begin(kv);
    assert_eq!(ok(t.get(&k(p, "missing"), false), "get"), None);
    put(kv, &[(&k(p, "missing"), b"now")]);
    t.set(&b, b"y");
    expect_code(
        t.commit(),
        KvError::NOT_COMMITTED,
        "conflict on a created key",
    );
}

/// A serializable range read conflicts with a later write inside the range,
/// including an insert of a new key and a clear.
pub fn range_read_write_conflict(kv: &dyn Kv, p: &[u8]) {
    let (a, out) = (k(p, "r/a"), k(p, "s"));
    put(kv, &[(&a, b"1")]);
    for (name, write) in [("insert", 0), ("clear", 1), ("clear_range", 2)] {
        let mut t = begin(kv);
        ok(
            t.get_range(&RangeOption::new(k(p, "r/"), k(p, "r0")), false),
            "range",
        );
        let mut w = begin(kv);
        match write {
            0 => w.set(&k(p, "r/new"), b"x"),
            1 => w.clear(&a),
            _ => w.clear_range(&k(p, "r/"), &k(p, "r0")),
        }
        ok(w.commit(), "concurrent write");
        t.set(&out, b"x");
        expect_code(
            t.commit(),
            KvError::NOT_COMMITTED,
            &format!("range conflict ({name})"),
        );
        put(kv, &[(&a, b"1")]);
    }
    // A write just outside the range does not conflict.
    let mut t = begin(kv);
    ok(
        t.get_range(&RangeOption::new(k(p, "r/"), k(p, "r0")), false),
        "range",
    );
    put(kv, &[(&k(p, "r0"), b"x")]);
    t.set(&out, b"x");
    ok(
        t.commit(),
        "write at the range's end key is outside the range",
    );
}

/// A range read with a row limit conflicts only on the part it returned.
pub fn limited_range_conflicts_only_on_rows_read(kv: &dyn Kv, p: &[u8]) {
    let names = ["k0", "k2", "k4", "k6"];
    let owned: Vec<Vec<u8>> = names.iter().map(|n| k(p, n)).collect();
    let pairs: Vec<(&[u8], &[u8])> = owned.iter().map(|x| (x.as_slice(), &b"v"[..])).collect();
    put(kv, &pairs);
    let mut t = begin(kv);
    let r = ok(
        t.get_range(&RangeOption::new(k(p, "k"), k(p, "l")).limit(2), false),
        "limited range",
    );
    assert_eq!(keys(&r.kvs), vec![k(p, "k0"), k(p, "k2")]);
    put(kv, &[(&k(p, "k5"), b"x")]);
    t.set(&k(p, "out"), b"x");
    ok(t.commit(), "write after the rows a limited read returned");
    let mut t = begin(kv);
    ok(
        t.get_range(&RangeOption::new(k(p, "k"), k(p, "l")).limit(2), false),
        "limited range",
    );
    put(kv, &[(&k(p, "k1"), b"x")]);
    t.set(&k(p, "out"), b"x");
    expect_code(
        t.commit(),
        KvError::NOT_COMMITTED,
        "write among the rows read",
    );
    // Reverse: covers from the last row returned to the end.
    let mut t = begin(kv);
    let r = ok(
        t.get_range(
            &RangeOption::new(k(p, "k"), k(p, "l")).limit(1).reverse(),
            false,
        ),
        "reverse limited range",
    );
    assert_eq!(keys(&r.kvs), vec![k(p, "k6")]);
    put(kv, &[(&k(p, "k3"), b"x")]);
    t.set(&k(p, "out"), b"x");
    ok(
        t.commit(),
        "write before the rows a reverse limited read returned",
    );
}

/// Transactions that only write never conflict.
pub fn blind_writes_never_conflict(kv: &dyn Kv, p: &[u8]) {
    let a = k(p, "a");
    let mut t1 = begin(kv);
    let mut t2 = begin(kv);
    ok(t1.read_version(), "read version");
    ok(t2.read_version(), "read version");
    t1.set(&a, b"1");
    t2.set(&a, b"2");
    t2.atomic_op(&k(p, "n"), &1u64.to_le_bytes(), MutationType::Add);
    ok(t2.commit(), "blind write");
    ok(t1.commit(), "second blind write of the same key");
    assert_eq!(read(kv, &a), Some(b"1".to_vec()), "last commit wins");
}

/// Explicit read- and write-conflict ranges behave like reads and writes.
pub fn explicit_conflict_ranges(kv: &dyn Kv, p: &[u8]) {
    // Explicit read range vs. a real write.
    let mut t = begin(kv);
    ok(t.read_version(), "read version");
    t.add_conflict_range(&k(p, "a"), &k(p, "c"), ConflictKind::Read);
    put(kv, &[(&k(p, "b"), b"x")]);
    t.set(&k(p, "out"), b"x");
    expect_code(t.commit(), KvError::NOT_COMMITTED, "explicit read range");
    // Real read vs. an explicit write range (without a mutation there).
    let mut t = begin(kv);
    ok(t.get(&k(p, "m"), false), "get");
    let mut w = begin(kv);
    w.add_conflict_range(&k(p, "l"), &k(p, "n"), ConflictKind::Write);
    w.set(&k(p, "elsewhere"), b"x");
    ok(w.commit(), "commit with a write-conflict range");
    t.set(&k(p, "out"), b"x");
    expect_code(t.commit(), KvError::NOT_COMMITTED, "explicit write range");
    // Ranges that do not meet do not conflict.
    let mut t = begin(kv);
    ok(t.read_version(), "read version");
    t.add_conflict_range(&k(p, "x"), &k(p, "y"), ConflictKind::Read);
    put(kv, &[(&k(p, "y"), b"x")]);
    t.set(&k(p, "out"), b"x");
    ok(t.commit(), "disjoint explicit ranges");
}

/// A key over 10,000 bytes fails the commit with 2102; exactly 10,000 is fine.
pub fn key_size_limit(kv: &dyn Kv, p: &[u8]) {
    let mut key = p.to_vec();
    key.resize(MAX_KEY_SIZE, b'k');
    put(kv, &[(&key, b"v")]);
    key.push(b'k');
    let mut t = begin(kv);
    t.set(&key, b"v");
    expect_code(t.commit(), KvError::KEY_TOO_LARGE, "oversized key");
    let mut t = begin(kv);
    match t.get(&key, false) {
        Ok(None) => {}
        Err(e) if e.code == KvError::KEY_TOO_LARGE => {}
        other => panic!("read of an oversized key: {other:?}"),
    }
}

/// A value over 100,000 bytes fails the commit with 2103.
pub fn value_size_limit(kv: &dyn Kv, p: &[u8]) {
    let key = k(p, "v");
    put(kv, &[(&key, &vec![7u8; MAX_VALUE_SIZE])]);
    assert_eq!(read(kv, &key).map(|v| v.len()), Some(MAX_VALUE_SIZE));
    let mut t = begin(kv);
    t.set(&key, &vec![7u8; MAX_VALUE_SIZE + 1]);
    expect_code(t.commit(), KvError::VALUE_TOO_LARGE, "oversized value");
}

/// A transaction over 10,000,000 bytes fails with 2101 and applies nothing;
/// `approximate_size` tracks what was added.
pub fn transaction_size_limit(kv: &dyn Kv, p: &[u8]) {
    let mut t = begin(kv);
    let value = vec![1u8; 99_000];
    let mut last = t.approximate_size();
    let mut i = 0;
    while t.approximate_size() <= MAX_TRANSACTION_SIZE {
        t.set(&k(p, &format!("big/{i:04}")), &value);
        assert!(
            t.approximate_size() >= last + value.len(),
            "approximate_size did not grow"
        );
        last = t.approximate_size();
        i += 1;
    }
    expect_code(
        t.commit(),
        KvError::TRANSACTION_TOO_LARGE,
        "oversized transaction",
    );
    assert_eq!(
        read(kv, &k(p, "big/0000")),
        None,
        "an oversized transaction applied writes"
    );
}

fn stamped(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    let offset = key.len() as u32;
    key.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
    key.extend_from_slice(suffix);
    key.extend_from_slice(&offset.to_le_bytes());
    key
}

/// Versionstamped keys of two commits sort in commit order; the value
/// placeholder is replaced; the commit's versionstamp is the one written.
pub fn versionstamps_follow_commit_order(kv: &dyn Kv, p: &[u8]) {
    let log = k(p, "log/");
    let mut stamps = Vec::new();
    for i in 0..2u8 {
        let mut t = begin(kv);
        t.atomic_op(
            &stamped(&log, &[i]),
            &[i],
            MutationType::SetVersionstampedKey,
        );
        let mut value = b"vs:".to_vec();
        value.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
        value.extend_from_slice(&3u32.to_le_bytes());
        t.atomic_op(
            &k(p, &format!("val{i}")),
            &value,
            MutationType::SetVersionstampedValue,
        );
        let info = ok(t.commit(), "versionstamped commit");
        let vs = info
            .versionstamp
            .unwrap_or_else(|| panic!("commit with writes has no versionstamp"));
        assert_eq!(
            vs.version(),
            info.version,
            "versionstamp version != commit version"
        );
        stamps.push(vs);
    }
    assert!(stamps[0] < stamps[1], "versionstamps out of commit order");
    let mut t = begin(kv);
    let end = pagestore::kv::strinc(&log).unwrap_or_default();
    let rows = ok(
        t.get_range(&RangeOption::new(log.clone(), end), false),
        "log",
    );
    assert_eq!(rows.kvs.len(), 2);
    for (i, (row, vs)) in rows.kvs.iter().zip(&stamps).enumerate() {
        let got = Versionstamp::from_slice(&row.key[log.len()..log.len() + 10]);
        assert_eq!(got, Some(*vs), "key {i} carries the wrong versionstamp");
        assert_eq!(row.key[log.len() + 10..], [i as u8], "key suffix lost");
        assert_eq!(row.value, vec![i as u8]);
        let value = ok(t.get(&k(p, &format!("val{i}")), false), "value").unwrap_or_default();
        assert_eq!(&value[..3], b"vs:");
        assert_eq!(&value[3..], &vs.0, "value placeholder not replaced");
    }
}

/// Reading a key written with a versionstamped value in the same
/// transaction fails with 1036.
pub fn versionstamped_value_is_unreadable(kv: &dyn Kv, p: &[u8]) {
    let key = k(p, "v");
    let mut t = begin(kv);
    let mut value = INCOMPLETE_VERSIONSTAMP.to_vec();
    value.extend_from_slice(&0u32.to_le_bytes());
    t.atomic_op(&key, &value, MutationType::SetVersionstampedValue);
    expect_code(
        t.get(&key, false),
        KvError::ACCESSED_UNREADABLE,
        "read of a versionstamped value",
    );
    let mut t = begin(kv);
    t.atomic_op(&key, &value, MutationType::SetVersionstampedValue);
    expect_code(
        t.get_range(&RangeOption::new(p.to_vec(), k(p, "z")), false),
        KvError::ACCESSED_UNREADABLE,
        "range read over a versionstamped value",
    );
}

/// (name, value before, op, parameter, value after)
type AtomicCase = (
    &'static str,
    Option<Vec<u8>>,
    MutationType,
    Vec<u8>,
    Option<Vec<u8>>,
);

/// Atomic ops with FDB's parameter semantics, applied at commit.
pub fn atomic_ops(kv: &dyn Kv, p: &[u8]) {
    let le = |v: u64| v.to_le_bytes().to_vec();
    let cases: Vec<AtomicCase> = vec![
        ("add", Some(le(40)), MutationType::Add, le(2), Some(le(42))),
        ("add_absent", None, MutationType::Add, le(2), Some(le(2))),
        (
            "and",
            Some(vec![0b1100]),
            MutationType::BitAnd,
            vec![0b1010],
            Some(vec![0b1000]),
        ),
        (
            "and_absent",
            None,
            MutationType::BitAnd,
            vec![0b1010],
            Some(vec![0b1010]),
        ),
        (
            "or",
            Some(vec![0b1100]),
            MutationType::BitOr,
            vec![0b1010],
            Some(vec![0b1110]),
        ),
        (
            "xor",
            Some(vec![0b1100]),
            MutationType::BitXor,
            vec![0b1010],
            Some(vec![0b0110]),
        ),
        (
            "max",
            Some(le(300)),
            MutationType::Max,
            le(7),
            Some(le(300)),
        ),
        ("min", Some(le(300)), MutationType::Min, le(7), Some(le(7))),
        ("min_absent", None, MutationType::Min, le(7), Some(le(7))),
        (
            "byte_max",
            Some(b"b".to_vec()),
            MutationType::ByteMax,
            b"ab".to_vec(),
            Some(b"b".to_vec()),
        ),
        (
            "byte_min",
            Some(b"b".to_vec()),
            MutationType::ByteMin,
            b"ab".to_vec(),
            Some(b"ab".to_vec()),
        ),
        (
            "cac_equal",
            Some(b"x".to_vec()),
            MutationType::CompareAndClear,
            b"x".to_vec(),
            None,
        ),
        (
            "cac_other",
            Some(b"y".to_vec()),
            MutationType::CompareAndClear,
            b"x".to_vec(),
            Some(b"y".to_vec()),
        ),
        (
            "append",
            Some(b"ab".to_vec()),
            MutationType::AppendIfFits,
            b"cd".to_vec(),
            Some(b"abcd".to_vec()),
        ),
    ];
    let mut setup = begin(kv);
    for (name, before, _, _, _) in &cases {
        if let Some(v) = before {
            setup.set(&k(p, name), v);
        }
    }
    ok(setup.commit(), "setup");
    let mut t = begin(kv);
    for (name, _, op, param, _) in &cases {
        t.atomic_op(&k(p, name), param, *op);
    }
    ok(t.commit(), "atomic ops");
    for (name, _, _, _, after) in &cases {
        assert_eq!(read(kv, &k(p, name)), *after, "atomic op {name}");
    }
}

/// `limit`, `reverse`, and continuation after `more` until the whole range
/// is read.
pub fn range_limit_reverse_and_continuation(kv: &dyn Kv, p: &[u8]) {
    let all: Vec<Vec<u8>> = (0..30).map(|i| k(p, &format!("r{i:02}"))).collect();
    // 30 x 90 KB: more than one chunk on every backend.
    let value = vec![9u8; 90_000];
    for chunk in all.chunks(10) {
        let mut t = begin(kv);
        for key in chunk {
            t.set(key, &value);
        }
        ok(t.commit(), "setup");
    }
    let (b, e) = (k(p, "r"), k(p, "s"));
    let mut t = begin(kv);
    let r = ok(
        t.get_range(&RangeOption::new(b.clone(), e.clone()).limit(5), false),
        "limit",
    );
    assert_eq!(keys(&r.kvs), all[..5].to_vec(), "limit 5");
    let r = ok(
        t.get_range(
            &RangeOption::new(b.clone(), e.clone()).limit(3).reverse(),
            false,
        ),
        "reverse",
    );
    let want: Vec<Vec<u8>> = all.iter().rev().take(3).cloned().collect();
    assert_eq!(keys(&r.kvs), want, "reverse limit 3");
    let got = scan(t.as_mut(), &b, &e);
    assert_eq!(keys(&got), all, "continuation after `more`");
    assert!(got.iter().all(|kv| kv.value == value));
    // A reverse scan continues from the first key returned.
    let mut rev = Vec::new();
    let mut end = e.clone();
    loop {
        let r = ok(
            t.get_range(&RangeOption::new(b.clone(), end.clone()).reverse(), false),
            "reverse scan",
        );
        let more = r.more;
        if let Some(last) = r.kvs.last() {
            end = last.key.clone();
        }
        rev.extend(keys(&r.kvs));
        if !more {
            break;
        }
    }
    let want: Vec<Vec<u8>> = all.iter().rev().cloned().collect();
    assert_eq!(rev, want, "reverse continuation");
    let empty = ok(
        t.get_range(&RangeOption::new(e.clone(), b.clone()), false),
        "inverted range",
    );
    assert!(empty.kvs.is_empty() && !empty.more);
}

/// `get_batch` answers in request order, at one read version.
pub fn get_batch_keeps_request_order(kv: &dyn Kv, p: &[u8]) {
    put(
        kv,
        &[(&k(p, "a"), b"1"), (&k(p, "b"), b"2"), (&k(p, "c"), b"3")],
    );
    let mut t = begin(kv);
    t.set(&k(p, "d"), b"4");
    let out = ok(
        t.get_batch(
            &[
                ReadRequest::Get(k(p, "c")),
                ReadRequest::Range(RangeOption::new(k(p, "a"), k(p, "z")).reverse().limit(2)),
                ReadRequest::Get(k(p, "missing")),
                ReadRequest::Get(k(p, "a")),
                ReadRequest::Get(k(p, "d")),
            ],
            false,
        ),
        "batch",
    );
    assert_eq!(out.len(), 5);
    assert_eq!(out[0], ReadResult::Value(Some(b"3".to_vec())));
    match &out[1] {
        ReadResult::Range(r) => assert_eq!(keys(&r.kvs), vec![k(p, "d"), k(p, "c")]),
        other => panic!("batch slot 1: {other:?}"),
    }
    assert_eq!(out[2], ReadResult::Value(None));
    assert_eq!(out[3], ReadResult::Value(Some(b"1".to_vec())));
    assert_eq!(out[4], ReadResult::Value(Some(b"4".to_vec())));
}

/// A read-only commit returns the read version and no versionstamp.
pub fn read_only_commit(kv: &dyn Kv, p: &[u8]) {
    put(kv, &[(&k(p, "a"), b"1")]);
    let mut t = begin(kv);
    let rv = ok(t.read_version(), "read version");
    ok(t.get(&k(p, "a"), false), "get");
    let info = ok(t.commit(), "read-only commit");
    assert_eq!(info.version, rv);
    assert_eq!(info.versionstamp, None);
}

/// One read version, one read and one commit are three round trips; a
/// batch is one; a read-only commit is none.
pub fn round_trips_are_counted(kv: &dyn Kv, p: &[u8]) {
    let m0 = kv.metrics();
    let mut t = begin(kv);
    ok(t.get(&k(p, "a"), false), "get");
    t.set(&k(p, "a"), b"1");
    ok(t.commit(), "commit");
    let m = kv.metrics().since(&m0);
    assert_eq!((m.read_versions, m.reads, m.commits), (1, 1, 1), "{m:?}");
    assert_eq!(m.round_trips(), 3);
    assert!(m.bytes_written >= 2);
    let m0 = kv.metrics();
    let mut t = begin(kv);
    let reqs: Vec<ReadRequest> = (0..10)
        .map(|i| ReadRequest::Get(k(p, &format!("b{i}"))))
        .collect();
    ok(t.get_batch(&reqs, false), "batch");
    ok(t.commit(), "read-only commit");
    let m = kv.metrics().since(&m0);
    assert_eq!((m.read_versions, m.reads, m.commits), (1, 1, 0), "{m:?}");
}

/// Reads and commits of a transaction whose read version is older than the
/// 5 s window fail with 1007; so does a read at an old version set
/// explicitly.
pub fn transaction_too_old_after_window(kv: &dyn Kv, p: &[u8], advance: AdvanceClock<'_>) {
    put(kv, &[(&k(p, "a"), b"1")]);
    let mut t = begin(kv);
    let rv = ok(t.read_version(), "read version");
    ok(t.get(&k(p, "a"), false), "get");
    t.set(&k(p, "b"), b"x");
    let mut reader = begin(kv);
    ok(reader.get(&k(p, "a"), false), "get");
    advance(6);
    expect_code(
        t.get(&k(p, "a"), false),
        KvError::TRANSACTION_TOO_OLD,
        "read after 6 s",
    );
    expect_code(t.commit(), KvError::TRANSACTION_TOO_OLD, "commit after 6 s");
    expect_code(
        reader.get_range(&RangeOption::new(p.to_vec(), k(p, "z")), false),
        KvError::TRANSACTION_TOO_OLD,
        "range read after 6 s",
    );
    let mut old = begin(kv);
    old.set_read_version(rv);
    expect_code(
        old.get(&k(p, "a"), false),
        KvError::TRANSACTION_TOO_OLD,
        "read at an old set version",
    );
    // A fresh transaction is fine.
    let mut fresh = begin(kv);
    assert_eq!(
        ok(fresh.get(&k(p, "a"), false), "fresh get"),
        Some(b"1".to_vec())
    );
    fresh.set(&k(p, "b"), b"y");
    ok(fresh.commit(), "fresh commit");
}

/// Commits running concurrently (which FDB may put in one proxy batch,
/// with one commit version) get distinct versionstamps whose version part
/// is their commit version; versionstamped keys sort in versionstamp
/// order, and each client's successive commits have increasing stamps.
pub fn concurrent_commits_have_distinct_ordered_versionstamps(kv: &dyn Kv, p: &[u8]) {
    let log = k(p, "log/");
    let threads = 4u8;
    let per_thread = 8u8;
    let stamps: Vec<Vec<(Versionstamp, u8, u8)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = &log;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for i in 0..per_thread {
                        let mut txn = begin(kv);
                        txn.atomic_op(
                            &stamped(log, &[t, i]),
                            &[t, i],
                            MutationType::SetVersionstampedKey,
                        );
                        let info = ok(txn.commit(), "concurrent versionstamped commit");
                        let vs = info
                            .versionstamp
                            .unwrap_or_else(|| panic!("commit with writes has no versionstamp"));
                        assert_eq!(
                            vs.version(),
                            info.version,
                            "stamp version != commit version"
                        );
                        mine.push((vs, t, i));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("committer thread panicked"))
            })
            .collect()
    });
    for mine in &stamps {
        for w in mine.windows(2) {
            assert!(
                w[0].0 < w[1].0,
                "one client's later commit has a smaller versionstamp: {:?} then {:?}",
                w[0].0,
                w[1].0
            );
        }
    }
    let mut all: Vec<(Versionstamp, u8, u8)> = stamps.into_iter().flatten().collect();
    all.sort();
    for w in all.windows(2) {
        assert!(
            w[0].0 != w[1].0,
            "two commits share versionstamp {:?}",
            w[0].0
        );
    }
    let mut t = begin(kv);
    let end = pagestore::kv::strinc(&log).unwrap_or_default();
    let rows = scan(t.as_mut(), &log, &end);
    assert_eq!(rows.len(), all.len(), "versionstamped keys missing");
    for (row, (vs, th, i)) in rows.iter().zip(&all) {
        assert_eq!(
            Versionstamp::from_slice(&row.key[log.len()..log.len() + 10]),
            Some(*vs),
            "keys do not sort in versionstamp order"
        );
        assert_eq!(
            row.value,
            vec![*th, *i],
            "key at {vs:?} holds another commit's value"
        );
    }
}

/// FDB adds no read-conflict range for what a transaction's own writes
/// answer: a key it set, a range it cleared. Keys whose value comes from
/// the store (untouched, or atomic ops over the stored value) conflict.
pub fn reads_answered_by_own_writes_add_no_conflicts(kv: &dyn Kv, p: &[u8]) {
    let (a, n, out) = (k(p, "a"), k(p, "n"), k(p, "out"));
    put(kv, &[(&a, b"0"), (&n, &1u64.to_le_bytes())]);
    // A key set, then read (serializable): no conflict on it.
    let mut t = begin(kv);
    ok(t.read_version(), "read version");
    t.set(&a, b"mine");
    assert_eq!(ok(t.get(&a, false), "get"), Some(b"mine".to_vec()));
    put(kv, &[(&a, b"theirs")]);
    t.set(&out, b"1");
    ok(t.commit(), "read of an own set key conflicted");
    assert_eq!(read(kv, &a), Some(b"mine".to_vec()), "last commit wins");
    // A range cleared, then read: no conflict on it.
    let (rb, re) = (k(p, "r/"), k(p, "r0"));
    put(kv, &[(&k(p, "r/1"), b"x")]);
    let mut t = begin(kv);
    ok(t.read_version(), "read version");
    t.clear_range(&rb, &re);
    let r = ok(
        t.get_range(&RangeOption::new(rb.clone(), re.clone()), false),
        "range",
    );
    assert!(r.kvs.is_empty(), "cleared range read back rows");
    put(kv, &[(&k(p, "r/2"), b"x")]);
    t.set(&out, b"2");
    ok(t.commit(), "range read of an own cleared range conflicted");
    assert_eq!(
        read(kv, &k(p, "r/2")),
        None,
        "the clear committed after the insert"
    );
    // The same range read, but reaching one untouched key: conflict.
    let mut t = begin(kv);
    ok(t.read_version(), "read version");
    t.clear_range(&rb, &k(p, "r/5"));
    ok(
        t.get_range(&RangeOption::new(rb.clone(), re.clone()), false),
        "range",
    );
    put(kv, &[(&k(p, "r/7"), b"x")]);
    t.set(&out, b"3");
    expect_code(
        t.commit(),
        KvError::NOT_COMMITTED,
        "range read beyond the cleared part",
    );
    // An atomic op over the stored value, then read: conflict.
    let mut t = begin(kv);
    t.atomic_op(&n, &1u64.to_le_bytes(), MutationType::Add);
    assert_eq!(
        ok(t.get(&n, false), "get"),
        Some(2u64.to_le_bytes().to_vec())
    );
    put(kv, &[(&n, &10u64.to_le_bytes())]);
    expect_code(
        t.commit(),
        KvError::NOT_COMMITTED,
        "read of an atomic op over the stored value",
    );
    // Snapshot reads see own writes too.
    let mut t = begin(kv);
    t.set(&a, b"snap");
    assert_eq!(ok(t.get(&a, true), "snapshot get"), Some(b"snap".to_vec()));
}

/// A versionstamp with version `v`, batch order 0, as key bytes.
fn stamp_bytes(v: Version) -> [u8; 10] {
    Versionstamp::new(v, 0).0
}

/// FDB: every key a versionstamped key may land on (its stamp from the
/// read version + 1 up to all-0xff) is unreadable (1036) in the
/// transaction that wrote it, in point and range reads; keys below that
/// range, and the range once cleared, are readable.
pub fn versionstamped_key_range_is_unreadable(kv: &dyn Kv, p: &[u8]) {
    let log = k(p, "log/");
    let mut t = begin(kv);
    let rv = ok(t.read_version(), "read version");
    let mut old = log.clone();
    old.extend_from_slice(&stamp_bytes(rv));
    put(kv, &[(&old, b"old")]);
    t.atomic_op(
        &stamped(&log, b""),
        b"v",
        MutationType::SetVersionstampedKey,
    );
    let mut future = log.clone();
    future.extend_from_slice(&stamp_bytes(rv.after(1_000_000)));
    expect_code(
        t.get(&future, false),
        KvError::ACCESSED_UNREADABLE,
        "read of a key a versionstamped key may land on",
    );
    expect_code(
        t.get_range(&RangeOption::new(log.clone(), k(p, "log0")), false),
        KvError::ACCESSED_UNREADABLE,
        "range read over keys a versionstamped key may land on",
    );
    assert_eq!(
        ok(t.get(&old, true), "read below the range"),
        None,
        "a key below the versionstamp range is readable (at the read version)"
    );
    let other = k(p, "other");
    assert_eq!(ok(t.get(&other, false), "read elsewhere"), None);
    ok(t.commit(), "commit");
}

/// FDB's write-conflict range of a versionstamped key is every key it may
/// land on: a reader of any key in that range (not only the key finally
/// written) conflicts with the commit.
pub fn versionstamped_key_conflicts_on_its_whole_range(kv: &dyn Kv, p: &[u8]) {
    let log = k(p, "log/");
    let mut reader = begin(kv);
    let rv = ok(reader.read_version(), "read version");
    // A key far above any stamp the writer can get, inside its range.
    let mut far = log.clone();
    far.extend_from_slice(&[0xfe; 10]);
    assert_eq!(ok(reader.get(&far, false), "get"), None);
    let mut w = begin(kv);
    ok(w.read_version(), "read version");
    w.atomic_op(
        &stamped(&log, b""),
        b"v",
        MutationType::SetVersionstampedKey,
    );
    let info = ok(w.commit(), "versionstamped commit");
    assert!(info.version > rv);
    reader.set(&k(p, "out"), b"x");
    expect_code(
        reader.commit(),
        KvError::NOT_COMMITTED,
        "read of a key in a versionstamped key's range, written after the read version",
    );
}
