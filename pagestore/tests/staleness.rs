//! Bounded staleness (`Database::begin_within`): a bounded BEGIN costs no
//! round trip while the view is fresh, never reads older than the bound
//! (measured on the store clock, a `ManualClock` here) nor older than what
//! its connection saw or committed, and its writes still conflict.

mod common;

use std::time::Duration;

use common::{env, env_with, page, value};
use pagestore::kv::embedded::Faults;
use pagestore::kv::Version;
use pagestore::{Error, PageNo, Staleness, StoreOptions, MAX_STALENESS};
use rand::{RngExt, SeedableRng};

const P: PageNo = PageNo::FIRST;

fn bounded(ms: u64) -> Staleness {
    Staleness::from_duration(Duration::from_millis(ms)).unwrap()
}

fn read(t: &mut pagestore::Transaction, p: PageNo) -> u64 {
    value(&t.read_page(p).unwrap().unwrap())
}

#[test]
fn a_fresh_view_begins_with_no_round_trip() {
    let e = env();
    let db = e.store.create("stale_rt").unwrap();
    let mut w = db.begin().unwrap();
    w.write_page(P, &page(1)).unwrap();
    w.commit().unwrap();
    // The longest bound: the refresher's period (half of it) is far longer
    // than this test, so nothing else counts round trips meanwhile.
    let s = Staleness::Bounded(MAX_STALENESS);
    let mut t = db.begin_within(s, Version::ZERO).unwrap();
    assert_eq!(read(&mut t, P), 1);
    drop(t);
    let m0 = e.kv.metrics();
    for _ in 0..100 {
        let mut t = db.begin_within(s, Version::ZERO).unwrap();
        assert_eq!(read(&mut t, P), 1);
        assert!(t.snapshot_age().unwrap() <= MAX_STALENESS);
    }
    assert_eq!(e.kv.metrics().since(&m0).round_trips(), 0);
    // Strict stays what it was: at most two round trips.
    let m0 = e.kv.metrics();
    let t = db.begin_within(Staleness::Strict, Version::ZERO).unwrap();
    assert!(e.kv.metrics().since(&m0).round_trips() <= 2);
    drop(t);
}

/// Random interleavings of another process's commits, clock steps and
/// bounded BEGINs: every BEGIN sees every commit acknowledged more than the
/// bound before it, and never goes back in time.
#[test]
fn never_older_than_the_bound_nor_than_what_was_seen() {
    let e = env();
    let bound = Duration::from_millis(10);
    let db = e.store.create("stale_bound").unwrap();
    let writer = e.other_process().open("stale_bound").unwrap();
    let mut acked: Vec<(u64, u64)> = Vec::new(); // (value, ack time µs)
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut floor = Version::ZERO;
    let mut last_seen = 0;
    for i in 1..=300u64 {
        if rng.random_bool(0.5) {
            let mut w = writer.begin().unwrap();
            w.write_page(P, &page(i)).unwrap();
            w.commit().unwrap();
            acked.push((i, e.clock_now()));
        }
        e.clock.advance_micros(rng.random_range(0..4_000));
        let began = e.clock_now();
        let mut t = db.begin_within(Staleness::Bounded(bound), floor).unwrap();
        let seen = if i == 1 && acked.is_empty() {
            0
        } else {
            t.read_page(P).unwrap().map_or(0, |p| value(&p))
        };
        let must = acked
            .iter()
            .filter(|(_, at)| *at + bound.as_micros() as u64 <= began)
            .map(|(v, _)| *v)
            .max()
            .unwrap_or(0);
        assert!(
            seen >= must,
            "step {i}: read {seen}, but {must} was acknowledged over {bound:?} before"
        );
        assert!(
            seen >= last_seen,
            "step {i}: went back from {last_seen} to {seen}"
        );
        assert!(t.snapshot_age().unwrap() <= bound + Duration::from_millis(4));
        last_seen = seen;
        floor = t.snapshot();
    }
}

#[test]
fn own_commits_are_always_seen() {
    let e = env();
    let db = e.store.create("stale_own").unwrap();
    let s = Staleness::Bounded(MAX_STALENESS);
    let mut floor = Version::ZERO;
    for i in 1..=20 {
        let mut t = db.begin_within(s, floor).unwrap();
        t.write_page(P, &page(i)).unwrap();
        floor = t.commit().unwrap().version;
        let mut r = db.begin_within(s, floor).unwrap();
        assert_eq!(read(&mut r, P), i);
        assert!(r.snapshot() >= floor);
    }
}

#[test]
fn writes_at_a_stale_snapshot_still_conflict() {
    let e = env();
    let db = e.store.create("stale_conflict").unwrap();
    let other = e.other_process().open("stale_conflict").unwrap();
    let mut w = db.begin().unwrap();
    w.write_page(P, &page(1)).unwrap();
    w.write_page(PageNo::new(1), &page(1)).unwrap();
    w.commit().unwrap();
    let s = Staleness::Bounded(MAX_STALENESS);
    // The other process changes page 0 after this process's view was
    // confirmed: a bounded BEGIN starts before that change.
    let _ = db.begin_within(s, Version::ZERO).unwrap();
    let mut o = other.begin().unwrap();
    o.write_page(P, &page(2)).unwrap();
    o.commit().unwrap();
    let mut t = db.begin_within(s, Version::ZERO).unwrap();
    assert_eq!(read(&mut t, P), 1, "the snapshot is the stale one");
    let v = read(&mut t, P);
    t.write_page(PageNo::new(1), &page(v + 10)).unwrap();
    match t.commit() {
        Err(err) => assert!(err.is_conflict(), "{err}"),
        Ok(c) => panic!("a write based on a stale read committed at {c:?}"),
    }
    let mut t = db.begin().unwrap();
    assert_eq!(read(&mut t, PageNo::new(1)), 1);
}

#[test]
fn a_dropped_database_is_not_read_past_the_bound() {
    let e = env();
    let db = e.store.create("stale_drop").unwrap();
    let mut w = db.begin().unwrap();
    w.write_page(P, &page(1)).unwrap();
    w.commit().unwrap();
    let s = bounded(10);
    drop(db.begin_within(s, Version::ZERO).unwrap());
    e.other_process().drop_database("stale_drop").unwrap();
    e.clock.advance_micros(20_000);
    match db.begin_within(s, Version::ZERO) {
        Err(Error::Dropped(_)) => {}
        other => panic!("expected Dropped, got {other:?}"),
    }
}

/// The background refresher moves the view forward on its own: after
/// another process commits, a bounded BEGIN soon sees the commit without
/// a round trip of its own (without the refresher every such BEGIN past
/// the bound would be a strict one, two round trips).
#[test]
fn the_refresher_keeps_the_view_fresh() {
    let e = env();
    let db = e.store.create("stale_refresh").unwrap();
    let other = e.other_process().open("stale_refresh").unwrap();
    let s = bounded(50);
    drop(db.begin_within(s, Version::ZERO).unwrap());
    let mut o = other.begin().unwrap();
    o.write_page(P, &page(9)).unwrap();
    let c = o.commit().unwrap().version;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let m0 = e.kv.metrics();
        let t = db.begin_within(s, Version::ZERO).unwrap();
        let free = e.kv.metrics().since(&m0).read_versions == 0;
        if free && t.snapshot() >= c {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no BEGIN without a read version saw the commit within 10 s"
        );
    }
}

/// The refresher holds its store weakly: dropping the last handle of a
/// directory store releases it at once (the directory can be reopened).
#[test]
fn the_refresher_does_not_keep_a_store_open() {
    use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
    use pagestore::{PageStore, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path()))
            .unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        let store = PageStore::new(kv, StoreOptions::default());
        let db = match store.open("d") {
            Ok(db) => db,
            Err(_) => store.create("d").unwrap(),
        };
        let mut t = db.begin_within(bounded(1000), Version::ZERO).unwrap();
        t.write_page(P, &page(round)).unwrap();
        t.commit().unwrap();
        drop(db.begin_within(bounded(1000), Version::ZERO).unwrap());
    }
}

/// A large commit's page index is written after it commits, at later
/// versions, into page keys that later writers' conflict ranges cover: the
/// process's next bounded transaction, reading and writing those pages,
/// must still commit (a lone writer must never conflict with itself). The
/// race with another finisher of the index is `tests/protocol.rs`
/// `a_late_page_index_does_not_conflict_with_later_writers`.
#[test]
fn a_bounded_writer_does_not_conflict_with_its_own_large_commit() {
    let e = env_with(
        StoreOptions {
            inline_commit_bytes: 16 * 1024,
            ..StoreOptions::default()
        },
        Faults::default(),
    );
    let db = e.store.create("stale_large").unwrap();
    let s = Staleness::Bounded(MAX_STALENESS);
    let pages = 64u32;
    for round in 1..=5u64 {
        // Large: 64 pages of 4 KiB past the 16 KiB inline limit.
        let mut w = db.begin_within(s, Version::ZERO).unwrap();
        for p in 0..pages {
            w.write_page(PageNo::new(p), &page(round)).unwrap();
        }
        w.commit().unwrap();
        // Read every page and write one: validated against the store.
        let mut t = db.begin_within(s, Version::ZERO).unwrap();
        for p in 0..pages {
            assert_eq!(read(&mut t, PageNo::new(p)), round);
        }
        t.write_page(P, &page(round)).unwrap();
        if let Err(e) = t.commit() {
            panic!("round {round}: the writer conflicted with its own large commit: {e}");
        }
    }
}
