//! History: time index, time travel, forks, restore, retention and GC.

mod common;

use pagestore::kv::Version;
use pagestore::PageNo;
use std::time::Duration;

use common::keys::count_keys;
use common::{env, page, value};
use pagestore::{Database, Error};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn write(db: &Database, pages: &[(u32, u64)]) -> Version {
    let mut t = db.begin().unwrap();
    for &(p, v) in pages {
        t.write_page(PageNo::new(p), &page(v)).unwrap();
    }
    t.commit().unwrap().version
}

fn read(db: &Database, p: u32) -> Option<u64> {
    db.begin()
        .unwrap()
        .read_page(PageNo::new(p))
        .unwrap()
        .map(|b| value(&b))
}

fn read_at(db: &Database, v: Version, p: u32) -> Option<u64> {
    db.begin_at(v)
        .unwrap()
        .read_page(PageNo::new(p))
        .unwrap()
        .map(|b| value(&b))
}

#[test]
fn time_travel_answers_exact_contents_at_past_times() {
    let e = env();
    let db = e.store.create("tt").unwrap();
    let mut times = Vec::new();
    for i in 1..=50u64 {
        e.clock.advance_micros(1_000_000);
        // Page 0 counts commits; page i%5+1 records the latest i.
        write(&db, &[(0, i), ((i % 5 + 1) as u32, i)]);
        times.push(e.clock_now());
    }
    let mut rng = StdRng::seed_from_u64(11);
    for _ in 0..10 {
        let k = rng.random_range(0..50usize);
        // A time between commit k and commit k+1.
        let t = times[k] + rng.random_range(0..900_000);
        let v = db.version_at(t).unwrap().unwrap();
        let mut old = db.begin_at(v).unwrap();
        let n = k as u64 + 1;
        assert_eq!(
            value(&old.read_page(PageNo::new(0)).unwrap().unwrap()),
            n,
            "at commit {n}"
        );
        for slot in 1..=5u32 {
            let expect = (1..=n).rev().find(|i| (i % 5 + 1) as u32 == slot);
            assert_eq!(
                old.read_page(PageNo::new(slot)).unwrap().map(|b| value(&b)),
                expect
            );
        }
        assert!(
            old.write_page(PageNo::new(0), &page(0)).is_err(),
            "time travel is read-only"
        );
    }
    // Before the database existed: no version; before its first commit: empty.
    assert_eq!(db.version_at(1).unwrap(), None);
    assert!(db.version_at(times[49] + 5_000_000).unwrap().unwrap() >= Version::new(1));
}

#[test]
fn a_writer_with_a_slow_clock_cannot_make_the_index_go_backwards() {
    let e = env();
    let db = e.store.create("skew").unwrap();
    e.clock.advance_micros(10_000_000);
    let v1 = write(&db, &[(0, 1)]);
    let t1 = e.clock_now();
    // A second writer whose clock is 5 s behind commits later.
    e.clock.rewind_micros(5_000_000);
    let v2 = write(&db, &[(0, 2)]);
    assert!(v2 > v1);
    // Every time from t1 on maps to v2 or later, never back to v1.
    for dt in [0u64, 1, 1_000_000, 10_000_000] {
        assert!(db.version_at(t1 + dt).unwrap().unwrap() >= v2);
    }
}

#[test]
fn forks_are_isolated_both_ways_and_cost_the_same_whatever_the_size() {
    let e = env();
    let small = e.store.create("small").unwrap();
    write(&small, &[(0, 1)]);
    let big = e.store.create("big").unwrap();
    // ~100 MB of pages in 512-byte pages is too slow for a unit test; the
    // cost of a fork depends on no page at all, so 20 MB shows it as well.
    for chunk in 0..20u32 {
        let pages: Vec<(u32, u64)> = (0..2048).map(|i| (chunk * 2048 + i, 7)).collect();
        write(&big, &pages);
    }
    let m0 = e.kv.metrics();
    e.store.fork("small", "small-fork", None).unwrap();
    let m1 = e.kv.metrics();
    e.store.fork("big", "big-fork", None).unwrap();
    let m2 = e.kv.metrics();
    assert_eq!(m1.since(&m0).round_trips(), m2.since(&m1).round_trips());
    assert_eq!(m2.since(&m1).commits, 1, "a fork is one commit");

    let fork = e.store.open("big-fork").unwrap();
    assert_eq!(read(&fork, 40_959), Some(7));
    assert_eq!(fork.begin().unwrap().page_count(), 40_960);
    // Writes to the fork do not show in the source, and vice versa.
    write(&fork, &[(1, 100)]);
    write(&big, &[(2, 200)]);
    assert_eq!(read(&fork, 1), Some(100));
    assert_eq!(read(&big, 1), Some(7));
    assert_eq!(read(&fork, 2), Some(7));
    assert_eq!(read(&big, 2), Some(200));

    // A fork of the fork sees the fork's writes, not the source's later ones.
    let ff = e.store.fork("big-fork", "big-fork-2", None).unwrap();
    assert_eq!(read(&ff, 1), Some(100));
    assert_eq!(read(&ff, 2), Some(7));
    write(&ff, &[(3, 300)]);
    assert_eq!(read(&fork, 3), Some(7));
    assert_eq!(read(&ff, 3), Some(300));
    // Pages past the end extend only the fork.
    write(&ff, &[(50_000, 5)]);
    assert_eq!(ff.begin().unwrap().page_count(), 50_001);
    assert_eq!(fork.begin().unwrap().page_count(), 40_960);
}

#[test]
fn forking_at_a_time() {
    let e = env();
    let db = e.store.create("src").unwrap();
    e.clock.advance_micros(1_000_000);
    write(&db, &[(0, 1)]);
    let t1 = e.clock_now();
    e.clock.advance_micros(1_000_000);
    write(&db, &[(0, 2)]);
    let v = db.version_at(t1).unwrap().unwrap();
    let fork = e.store.fork("src", "src-then", Some(v)).unwrap();
    assert_eq!(read(&fork, 0), Some(1));
    assert_eq!(read(&db, 0), Some(2));
    assert!(matches!(
        e.store.fork("src", "src", None),
        Err(Error::AlreadyExists(_))
    ));
}

#[test]
fn restore_rewinds_and_can_be_undone() {
    let e = env();
    let db = e.store.create("r").unwrap();
    let v1 = write(&db, &[(0, 1), (1, 1), (2, 1)]);
    write(&db, &[(1, 2)]);
    let v3 = write(&db, &[(2, 3), (3, 3)]);
    let before = e.kv.metrics();
    db.restore_to(v1).unwrap();
    let m = e.kv.metrics().since(&before);
    assert_eq!(m.commits, 1, "a restore is one commit");
    assert_eq!(read(&db, 0), Some(1));
    assert_eq!(read(&db, 1), Some(1));
    assert_eq!(read(&db, 2), Some(1));
    assert_eq!(read(&db, 3), None, "pages added later are gone");
    assert_eq!(db.begin().unwrap().page_count(), 3);
    // History is kept: undo the restore by restoring to just before it.
    db.restore_to(v3).unwrap();
    assert_eq!(read(&db, 1), Some(2));
    assert_eq!(read(&db, 2), Some(3));
    assert_eq!(read(&db, 3), Some(3));
    assert_eq!(read_at(&db, v1, 1), Some(1));
}

#[test]
fn restore_conflicts_with_a_concurrent_writer() {
    let e = env();
    let db = e.store.create("rc").unwrap();
    let v1 = write(&db, &[(0, 1)]);
    write(&db, &[(0, 2)]);
    let mut w = db.begin().unwrap();
    let x = value(&w.read_page(PageNo::new(0)).unwrap().unwrap());
    db.restore_to(v1).unwrap();
    w.write_page(PageNo::new(0), &page(x + 10)).unwrap();
    assert!(w.commit().unwrap_err().is_conflict());
    assert_eq!(read(&db, 0), Some(1));
}

#[test]
fn gc_keeps_exactly_what_the_window_and_forks_can_reach() {
    let e = env();
    let db = e.store.create("gc").unwrap();
    db.set_retention(Duration::from_secs(1)).unwrap();
    let mut versions = Vec::new();
    for i in 1..=20u64 {
        e.clock.advance_micros(500_000);
        versions.push(write(&db, &[(0, i), ((i % 4 + 1) as u32, i)]));
    }
    // A fork pinned at the 5th commit.
    let fork = e.store.fork("gc", "gc-fork", Some(versions[4])).unwrap();
    let keys_before = count_keys(&e.store);
    let dry = db.gc(true).unwrap();
    assert!(dry.page_versions > 0 && dry.dry_run);
    assert_eq!(
        count_keys(&e.store),
        keys_before,
        "a dry run removes nothing"
    );
    let report = db.gc(false).unwrap();
    assert_eq!(report.page_versions, dry.page_versions);
    let keys_after = count_keys(&e.store);
    assert!(keys_after < keys_before, "{keys_after} < {keys_before}");
    assert!(
        e.kv.metrics().max_commit_bytes < 1_000_000,
        "GC transactions stay under 1 MB"
    );
    // Inside the window (the last second: the last 2 commits) every
    // version still answers exactly.
    for (i, &v) in versions.iter().enumerate().skip(18) {
        assert_eq!(read_at(&db, v, 0), Some(i as u64 + 1));
    }
    // Older snapshots fail cleanly instead of reading removed versions.
    assert!(matches!(
        db.begin_at(versions[2]),
        Err(Error::SnapshotTooOld { .. })
    ));
    // The fork still reads its origin as of the pin.
    assert_eq!(read(&fork, 0), Some(5));
    for slot in 1..=4u32 {
        let expect = (1..=5u64).rev().find(|i| (i % 4 + 1) as u32 == slot);
        assert_eq!(read(&fork, slot), expect);
    }
    // Exactly the reachable page versions remain: page 0 keeps the newest
    // at or below the horizon, those above, and the one at the pin.
    let again = db.gc(false).unwrap();
    assert_eq!(again.page_versions, 0, "a second pass finds nothing");
    assert_eq!(read(&db, 0), Some(20));
}

#[test]
fn gc_runs_concurrently_with_writers_without_visible_change() {
    let e = env();
    let db = e.store.create("gcw").unwrap();
    db.set_retention(Duration::from_secs(0)).unwrap();
    write(&db, &[(0, 0), (1, 0)]);
    std::thread::scope(|s| {
        let w = s.spawn(|| {
            let mut done = 0u64;
            while done < 200 {
                let mut t = db.begin().unwrap();
                let a = value(&t.read_page(PageNo::new(0)).unwrap().unwrap());
                let b = value(&t.read_page(PageNo::new(1)).unwrap().unwrap());
                assert_eq!(a, b, "a transaction saw a torn state");
                t.write_page(PageNo::new(0), &page(a + 1)).unwrap();
                t.write_page(PageNo::new(1), &page(b + 1)).unwrap();
                match t.commit() {
                    Ok(_) => done += 1,
                    Err(err) if err.is_retryable() => {}
                    Err(err) => panic!("{err}"),
                }
                e.clock.advance_micros(10_000);
            }
        });
        while !w.is_finished() {
            db.gc(false).unwrap();
        }
    });
    assert_eq!(read(&db, 0), Some(200));
    assert_eq!(read(&db, 1), Some(200));
}

#[test]
fn dropping_an_origin_keeps_its_forks_working() {
    let e = env();
    let db = e.store.create("o").unwrap();
    write(&db, &[(0, 1), (1, 1)]);
    let fork = e.store.fork("o", "o-fork", None).unwrap();
    assert!(e.store.drop_database("o").unwrap());
    assert!(e.store.open("o").unwrap_err().is_not_found());
    assert_eq!(read(&fork, 0), Some(1));
    e.store.gc(false).unwrap();
    assert_eq!(read(&fork, 1), Some(1));
    let with_fork = count_keys(&e.store);
    assert!(e.store.drop_database("o-fork").unwrap());
    assert!(count_keys(&e.store) < with_fork);
    assert_eq!(
        count_keys(&e.store),
        0,
        "the last fork's drop frees its origin"
    );
}
