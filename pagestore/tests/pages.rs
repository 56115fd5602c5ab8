//! Page transactions through the public API: versions, conflicts, long
//! transactions, large commits, the catalog, the cache and round trips.

mod common;

use pagestore::PageNo;
use std::collections::HashSet;

use common::{env, env_spilling_past, env_with, page, value, PAGE};
use pagestore::kv::embedded::Faults;
use pagestore::kv::limits::MAX_TRANSACTION_SIZE;
use pagestore::kv::Version;
use pagestore::{Error, StoreOptions};

#[test]
fn pages_round_trip_and_keep_versions() {
    let e = env();
    let db = e.store.create("a").unwrap();
    let mut t = db.begin().unwrap();
    assert_eq!(t.page_count(), 0);
    assert!(t.read_page(PageNo::new(0)).unwrap().is_none());
    t.write_page(PageNo::new(0), &page(1)).unwrap();
    t.write_page(PageNo::new(5), &page(5)).unwrap();
    assert_eq!(
        value(&t.read_page(PageNo::new(0)).unwrap().unwrap()),
        1,
        "read your writes"
    );
    let v1 = t.commit().unwrap().version;

    let mut t = db.begin().unwrap();
    assert_eq!(t.page_count(), 6);
    assert_eq!(t.page_size(), Some(PAGE as u32));
    assert!(
        t.read_page(PageNo::new(3)).unwrap().is_none(),
        "a hole reads as absent"
    );
    t.write_page(PageNo::new(0), &page(2)).unwrap();
    let v2 = t.commit().unwrap().version;
    assert!(v2 > v1);

    let mut old = db.begin_at(v1).unwrap();
    assert_eq!(value(&old.read_page(PageNo::new(0)).unwrap().unwrap()), 1);
    assert!(
        old.write_page(PageNo::new(0), &page(9)).is_err(),
        "time travel is read-only"
    );
    let mut new = db.begin().unwrap();
    assert_eq!(value(&new.read_page(PageNo::new(0)).unwrap().unwrap()), 2);
    assert_eq!(value(&new.read_page(PageNo::new(5)).unwrap().unwrap()), 5);

    let changes = db.changes_between(Version::ZERO, v2).unwrap();
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes[0].record.pages,
        vec![PageNo::new(0), PageNo::new(5)]
    );
    assert_eq!(changes[1].record.pages, vec![PageNo::new(0)]);
}

#[test]
fn page_size_is_fixed_and_validated() {
    let e = env();
    let db = e.store.create("ps").unwrap();
    let mut t = db.begin().unwrap();
    assert!(matches!(
        t.write_page(PageNo::new(0), &[0u8; 1000]),
        Err(Error::PageSize { .. })
    ));
    t.write_page(PageNo::new(0), &vec![1u8; 65536]).unwrap();
    assert!(t.write_page(PageNo::new(1), &[0u8; 512]).is_err());
    t.commit().unwrap();
    let mut t = db.begin().unwrap();
    assert!(t.write_page(PageNo::new(1), &[0u8; 4096]).is_err());
    t.write_page(PageNo::new(u32::MAX), &vec![2u8; 65536])
        .unwrap();
    t.commit().unwrap();
    let mut t = db.begin().unwrap();
    assert_eq!(t.page_count(), u32::MAX as u64 + 1);
    assert_eq!(t.read_page(PageNo::new(u32::MAX)).unwrap().unwrap()[0], 2);
}

#[test]
fn conflicts_are_page_level() {
    let e = env();
    let db = e.store.create("c").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..4 {
        t.write_page(PageNo::new(p), &page(0)).unwrap();
    }
    t.commit().unwrap();

    // Different pages read and written: both commit.
    let mut a = db.begin().unwrap();
    let mut b = db.begin().unwrap();
    a.read_page(PageNo::new(1)).unwrap();
    a.write_page(PageNo::new(1), &page(10)).unwrap();
    b.read_page(PageNo::new(2)).unwrap();
    b.write_page(PageNo::new(2), &page(20)).unwrap();
    a.commit().unwrap();
    b.commit().unwrap();

    // Same page read and written: the second fails, writing nothing.
    let mut a = db.begin().unwrap();
    let mut b = db.begin().unwrap();
    let va = value(&a.read_page(PageNo::new(3)).unwrap().unwrap());
    let vb = value(&b.read_page(PageNo::new(3)).unwrap().unwrap());
    a.write_page(PageNo::new(3), &page(va + 1)).unwrap();
    b.write_page(PageNo::new(3), &page(vb + 1)).unwrap();
    b.write_page(PageNo::new(0), &page(99)).unwrap();
    a.commit().unwrap();
    let err = b.commit().unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let mut t = db.begin().unwrap();
    assert_eq!(value(&t.read_page(PageNo::new(3)).unwrap().unwrap()), 1);
    assert_eq!(
        value(&t.read_page(PageNo::new(0)).unwrap().unwrap()),
        0,
        "nothing of b written"
    );

    // Blind writes (written, not read) never conflict.
    let mut a = db.begin().unwrap();
    let mut b = db.begin().unwrap();
    a.write_page(PageNo::new(3), &page(7)).unwrap();
    b.write_page(PageNo::new(3), &page(8)).unwrap();
    a.commit().unwrap();
    b.commit().unwrap();

    // Read-only transactions never fail.
    let mut r = db.begin().unwrap();
    r.read_page(PageNo::new(3)).unwrap();
    let mut w = db.begin().unwrap();
    w.read_page(PageNo::new(3)).unwrap();
    w.write_page(PageNo::new(3), &page(1)).unwrap();
    w.commit().unwrap();
    r.commit().unwrap();
}

#[test]
fn size_changes_conflict_with_size_readers() {
    let e = env();
    let db = e.store.create("z").unwrap();
    let mut t = db.begin().unwrap();
    t.write_page(PageNo::new(0), &page(0)).unwrap();
    t.commit().unwrap();
    let mut a = db.begin().unwrap();
    let mut b = db.begin().unwrap();
    let n = a.page_count();
    a.write_page(PageNo::new(n as u32), &page(1)).unwrap();
    let n = b.page_count();
    b.write_page(PageNo::new(n as u32), &page(2)).unwrap();
    a.commit().unwrap();
    assert!(b.commit().unwrap_err().is_conflict());
}

#[test]
fn truncate_drops_pages() {
    let e = env();
    let db = e.store.create("t").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..10 {
        t.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    t.commit().unwrap();
    let mut t = db.begin().unwrap();
    t.truncate(4).unwrap();
    assert!(t.read_page(PageNo::new(5)).unwrap().is_none());
    t.write_page(PageNo::new(6), &page(66)).unwrap();
    t.commit().unwrap();
    let mut t = db.begin().unwrap();
    assert_eq!(t.page_count(), 7);
    assert_eq!(value(&t.read_page(PageNo::new(3)).unwrap().unwrap()), 3);
    assert!(t.read_page(PageNo::new(4)).unwrap().is_none());
    assert!(t.read_page(PageNo::new(5)).unwrap().is_none());
    assert_eq!(value(&t.read_page(PageNo::new(6)).unwrap().unwrap()), 66);
    assert!(t.read_page(PageNo::new(9)).unwrap().is_none());
}

#[test]
fn long_transactions_outlive_the_mvcc_window() {
    let e = env();
    let db = e.store.create("long").unwrap();
    let mut t = db.begin().unwrap();
    t.write_page(PageNo::new(0), &page(1)).unwrap();
    t.write_page(PageNo::new(1), &page(1)).unwrap();
    t.commit().unwrap();

    let mut reader = db.begin().unwrap();
    let mut writer = db.begin().unwrap();
    assert_eq!(
        value(&reader.read_page(PageNo::new(0)).unwrap().unwrap()),
        1
    );
    writer.read_page(PageNo::new(1)).unwrap();
    // Someone else commits, then 10 s pass: far beyond FDB's 5 s.
    let mut other = db.begin().unwrap();
    other.write_page(PageNo::new(0), &page(2)).unwrap();
    other.commit().unwrap();
    e.advance_secs(10);
    e.store.cache().clear();
    assert_eq!(
        value(&reader.read_page(PageNo::new(0)).unwrap().unwrap()),
        1,
        "snapshot kept"
    );
    assert_eq!(
        value(&reader.read_page(PageNo::new(1)).unwrap().unwrap()),
        1
    );
    reader.commit().unwrap();
    // The writer read page 1 only, which nobody changed: it commits.
    writer.write_page(PageNo::new(1), &page(5)).unwrap();
    writer.commit().unwrap();
    // An old writer whose page changed meanwhile conflicts.
    let mut stale = db.begin().unwrap();
    stale.read_page(PageNo::new(0)).unwrap();
    let mut w = db.begin().unwrap();
    w.read_page(PageNo::new(0)).unwrap();
    w.write_page(PageNo::new(0), &page(3)).unwrap();
    w.commit().unwrap();
    e.advance_secs(10);
    stale.write_page(PageNo::new(0), &page(4)).unwrap();
    assert!(stale.commit().unwrap_err().is_conflict());
}

#[test]
fn a_64_mib_transaction_commits_under_the_10_mb_limit() {
    let e = env_spilling_past(8 << 20);
    let db = e.store.create("big").unwrap();
    let page_size = 4096;
    let pages = (64u32 << 20) / page_size as u32;
    let mut t = db.begin().unwrap();
    for p in 0..pages {
        let mut b = vec![(p % 251) as u8; page_size];
        b[..4].copy_from_slice(&p.to_le_bytes());
        t.write_page(PageNo::new(p), &b).unwrap();
    }
    t.commit().unwrap();
    let m = e.kv.metrics();
    assert!(
        m.max_commit_bytes < (MAX_TRANSACTION_SIZE / 4) as u64,
        "largest store transaction {} bytes",
        m.max_commit_bytes
    );
    e.store.cache().clear();
    let mut t = db.begin().unwrap();
    assert_eq!(t.page_count(), pages as u64);
    for p in (0..pages).step_by(97).chain([pages - 1]) {
        let b = t.read_page(PageNo::new(p)).unwrap().unwrap();
        assert_eq!(&b[..4], &p.to_le_bytes());
        assert_eq!(b[page_size - 1], (p % 251) as u8);
    }
    // A conflicting writer that read a page of the large commit's range
    // before it landed is refused.
    let mut before = db.begin().unwrap();
    before.read_page(PageNo::new(7)).unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..pages / 2 {
        t.write_page(PageNo::new(p), &vec![9u8; page_size]).unwrap();
    }
    t.commit().unwrap();
    before
        .write_page(PageNo::new(7), &vec![1u8; page_size])
        .unwrap();
    assert!(before.commit().unwrap_err().is_conflict());
    let mut t = db.begin().unwrap();
    assert_eq!(t.read_page(PageNo::new(7)).unwrap().unwrap()[100], 9);
}

#[test]
fn abandoned_uploads_are_swept() {
    let e = env_spilling_past(16 << 10);
    let db = e.store.create("sweep").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..64 {
        t.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    // Simulates a process that died mid-transaction: no rollback ran.
    std::mem::forget(t);
    assert_eq!(
        db.sweep_uploads(std::time::Duration::from_secs(60))
            .unwrap(),
        0
    );
    e.clock.advance_secs(120); // the sweep reads the store clock only
    assert_eq!(
        db.sweep_uploads(std::time::Duration::from_secs(60))
            .unwrap(),
        1
    );
    let mut t = db.begin().unwrap();
    assert_eq!(t.page_count(), 0);
}

/// The names `store` lists, in its order.
fn database_names<C: FromIterator<String>>(store: &pagestore::PageStore) -> C {
    store.list().unwrap().into_iter().map(|d| d.name).collect()
}

#[test]
fn a_thousand_databases_are_created_listed_and_dropped() {
    let e = env();
    let before = e.kv.metrics().commits;
    for i in 0..1000 {
        e.store.create(&format!("db-{i:04}")).unwrap();
    }
    assert_eq!(
        e.kv.metrics().commits - before,
        1000,
        "one commit per create"
    );
    let names: Vec<String> = database_names(&e.store);
    assert_eq!(names.len(), 1000);
    assert_eq!(names[0], "db-0000");
    assert!(matches!(
        e.store.create("db-0001"),
        Err(Error::AlreadyExists(_))
    ));
    for i in (0..1000).step_by(2) {
        assert!(e.store.drop_database(&format!("db-{i:04}")).unwrap());
    }
    assert!(!e.store.drop_database("db-0000").unwrap());
    let names: HashSet<String> = database_names(&e.store);
    assert_eq!(names.len(), 500);
    assert!(names.contains("db-0001") && !names.contains("db-0000"));
}

#[test]
fn dropping_removes_all_keys_and_a_reused_name_is_fresh() {
    let e = env();
    let db = e.store.create("x").unwrap();
    let mut t = db.begin().unwrap();
    t.write_page(PageNo::new(0), &page(1)).unwrap();
    t.commit().unwrap();
    assert!(e.store.drop_database("x").unwrap());
    assert!(e.store.open("x").unwrap_err().is_not_found());
    let db = e.store.create("x").unwrap();
    let mut t = db.begin().unwrap();
    assert_eq!(t.page_count(), 0);
    assert!(t.read_page(PageNo::new(0)).unwrap().is_none());
}

#[test]
fn names_are_validated() {
    let e = env();
    assert!(matches!(e.store.create(""), Err(Error::InvalidName(_))));
    assert!(matches!(
        e.store.create(&"n".repeat(256)),
        Err(Error::InvalidName(_))
    ));
    e.store.create(&"é".repeat(127)).unwrap();
    e.store.create("with/slash and spaces ☃").unwrap();
}

#[test]
fn warm_reads_cost_no_round_trips_and_begin_at_most_two() {
    let e = env();
    let db = e.store.create("rt").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..100 {
        t.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    t.commit().unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..100 {
        t.read_page(PageNo::new(p)).unwrap();
    }
    drop(t);
    // Another commit, then a new transaction: 2 round trips to begin, 1 to
    // read the changed page, 0 for the rest.
    let mut w = db.begin().unwrap();
    w.write_page(PageNo::new(7), &page(700)).unwrap();
    w.commit().unwrap();
    let m0 = e.kv.metrics();
    let mut t = db.begin().unwrap();
    let m1 = e.kv.metrics();
    assert!(m1.since(&m0).round_trips() <= 2, "{:?}", m1.since(&m0));
    for p in 0..100 {
        if p != 7 {
            t.read_page(PageNo::new(p)).unwrap();
        }
    }
    assert_eq!(e.kv.metrics().since(&m1).round_trips(), 0);
    assert_eq!(value(&t.read_page(PageNo::new(7)).unwrap().unwrap()), 700);
    assert!(e.kv.metrics().since(&m1).round_trips() <= 1);
    let hits = e.store.stats().cache.hits;
    assert!(hits >= 99);
}

#[test]
fn commits_survive_unknown_results_exactly_once() {
    let e = env_with(
        StoreOptions::default(),
        Faults {
            unknown_result_probability: 1.0,
            ..Faults::default()
        },
    );
    if !e.set_faults(Faults::default()) {
        eprintln!("skipped: fault injection needs the embedded backend");
        return;
    }
    let db = e.store.create("u").unwrap();
    let mut t = db.begin().unwrap();
    t.write_page(PageNo::new(0), &page(0)).unwrap();
    t.commit().unwrap();
    e.set_faults(Faults {
        unknown_result_probability: 1.0,
        ..Faults::default()
    });
    for i in 1..=20u64 {
        let mut t = db.begin().unwrap();
        let v = value(&t.read_page(PageNo::new(0)).unwrap().unwrap());
        assert_eq!(v, i - 1);
        t.write_page(PageNo::new(0), &page(v + 1)).unwrap();
        t.commit().unwrap();
    }
    e.set_faults(Faults::default());
    let mut t = db.begin().unwrap();
    assert_eq!(value(&t.read_page(PageNo::new(0)).unwrap().unwrap()), 20);
    let changes = db.changes_between(Version::ZERO, t.snapshot()).unwrap();
    assert_eq!(changes.len(), 21, "each transaction applied exactly once");
    let tokens: HashSet<_> = changes.iter().map(|c| c.record.token).collect();
    assert_eq!(tokens.len(), 21);
    assert!(e.store.stats().recovered_unknown > 0);
}

#[test]
fn commit_groups_are_atomic_across_databases() {
    let e = env();
    let a = e.store.create("ga").unwrap();
    let b = e.store.create("gb").unwrap();
    let mut ta = a.begin().unwrap();
    let mut tb = b.begin_sibling(&ta).unwrap();
    assert_eq!(ta.snapshot(), tb.snapshot(), "one snapshot for the group");
    ta.write_page(PageNo::new(0), &page(1)).unwrap();
    tb.write_page(PageNo::new(0), &page(1)).unwrap();
    let c = pagestore::commit_group(vec![ta, tb]).unwrap();
    let vs = c.versionstamp.unwrap();
    assert_eq!(
        a.changes_between(Version::ZERO, c.version).unwrap()[0].versionstamp,
        vs
    );
    assert_eq!(
        b.changes_between(Version::ZERO, c.version).unwrap()[0].versionstamp,
        vs
    );

    // A conflict on one database fails the whole group: nothing written.
    let mut ta = a.begin().unwrap();
    let mut tb = b.begin_sibling(&ta).unwrap();
    let va = value(&ta.read_page(PageNo::new(0)).unwrap().unwrap());
    let vb = value(&tb.read_page(PageNo::new(0)).unwrap().unwrap());
    let mut other = b.begin().unwrap();
    other.read_page(PageNo::new(0)).unwrap();
    other.write_page(PageNo::new(0), &page(50)).unwrap();
    other.commit().unwrap();
    ta.write_page(PageNo::new(0), &page(va + 1)).unwrap();
    tb.write_page(PageNo::new(0), &page(vb + 1)).unwrap();
    assert!(pagestore::commit_group(vec![ta, tb])
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        value(
            &a.begin()
                .unwrap()
                .read_page(PageNo::new(0))
                .unwrap()
                .unwrap()
        ),
        1
    );
    assert_eq!(
        value(
            &b.begin()
                .unwrap()
                .read_page(PageNo::new(0))
                .unwrap()
                .unwrap()
        ),
        50
    );

    // A sibling started later still reads the group's snapshot.
    let ta = a.begin().unwrap();
    let mut w = b.begin().unwrap();
    w.write_page(PageNo::new(0), &page(77)).unwrap();
    w.commit().unwrap();
    let mut tb = b.begin_sibling(&ta).unwrap();
    assert_eq!(value(&tb.read_page(PageNo::new(0)).unwrap().unwrap()), 50);
}

#[test]
fn spilled_pages_read_back_within_the_transaction() {
    let e = env_spilling_past(64 << 10);
    let db = e.store.create("spill").unwrap();
    let mut t = db.begin().unwrap();
    // Read first so the transaction holds a reused read version that
    // predates every upload.
    assert!(t.read_page(PageNo::new(0)).unwrap().is_none());
    for p in 0..300u32 {
        t.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    for p in [0u32, 150, 299] {
        assert_eq!(
            value(&t.read_page(PageNo::new(p)).unwrap().unwrap()),
            p as u64
        );
    }
    t.commit().unwrap();
}

#[test]
fn read_only_siblings_are_validated_no_write_skew() {
    let e = env();
    let a = e.store.create("wa").unwrap();
    let b = e.store.create("wb").unwrap();
    for db in [&a, &b] {
        let mut t = db.begin().unwrap();
        t.write_page(PageNo::new(0), &page(1)).unwrap();
        t.commit().unwrap();
    }
    // T1 reads a, writes b. T2 reads b, writes a. Both at one snapshot.
    let mut t1a = a.begin().unwrap();
    let mut t1b = b.begin_sibling(&t1a).unwrap();
    let mut t2b = b.begin_sibling(&t1a).unwrap();
    let mut t2a = a.begin_sibling(&t1a).unwrap();
    t1a.read_page(PageNo::new(0)).unwrap();
    t1b.write_page(PageNo::new(0), &page(2)).unwrap();
    t2b.read_page(PageNo::new(0)).unwrap();
    t2a.write_page(PageNo::new(0), &page(2)).unwrap();
    pagestore::commit_group_checked(vec![t1b], &[&t1a]).unwrap();
    let err = pagestore::commit_group_checked(vec![t2a], &[&t2b]).unwrap_err();
    assert!(err.is_conflict(), "write skew across databases: {err}");
    // Members without writes count as readers as well.
    let mut r = b.begin().unwrap();
    let mut w = a.begin_sibling(&r).unwrap();
    r.read_page(PageNo::new(0)).unwrap();
    w.write_page(PageNo::new(0), &page(3)).unwrap();
    let mut other = b.begin().unwrap();
    other.write_page(PageNo::new(0), &page(9)).unwrap();
    other.commit().unwrap();
    assert!(pagestore::commit_group(vec![w, r])
        .unwrap_err()
        .is_conflict());
}

/// A transaction whose database another process drops meanwhile: a page
/// read that has to use a read version after the drop (its own is older
/// than the 5 s window) fails with `Dropped`; it must not find "no page"
/// where the snapshot had one (SQLite would see zeros, a corrupt file).
#[test]
fn a_read_after_a_concurrent_drop_fails_with_dropped() {
    let e = env();
    let writer = e.other_process();
    let wdb = writer.create("dropped_under").unwrap();
    let mut w = wdb.begin().unwrap();
    for p in 0..4 {
        w.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    w.commit().unwrap();
    let db = e.store.open("dropped_under").unwrap();
    let mut t = db.begin().unwrap();
    assert_eq!(value(&t.read_page(PageNo::new(0)).unwrap().unwrap()), 0);
    e.advance_secs(10);
    assert!(writer.drop_database("dropped_under").unwrap());
    match t.read_page(PageNo::new(1)) {
        Err(Error::Dropped(_)) => {}
        other => panic!("expected Dropped, got {other:?}"),
    }
}
