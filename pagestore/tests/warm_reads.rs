//! The warm read path: a page read served by this process's view and page
//! cache costs no store round trip, read-ahead of cached pages costs none
//! either, and neither ever serves a version other than the newest at the
//! transaction's snapshot.

mod common;

use common::{env, page, value};
use pagestore::PageNo;

const PAGES: u32 = 64;

/// A database of `PAGES` pages, page `p` holding `p`, all read once (warm).
fn warm(e: &common::Env, name: &str) -> pagestore::Database {
    let db = e.store.create(name).unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..PAGES {
        t.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    t.commit().unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..PAGES {
        t.read_page(PageNo::new(p)).unwrap();
    }
    db
}

fn all() -> Vec<PageNo> {
    (0..PAGES).map(PageNo::new).collect()
}

#[test]
fn read_ahead_of_cached_pages_costs_no_round_trip() {
    let e = env();
    let db = warm(&e, "ahead");
    let mut t = db.begin().unwrap();
    let (m0, hits0) = (e.kv.metrics(), e.store.stats().cache.hits);
    t.prefetch(&all()).unwrap();
    assert_eq!(e.kv.metrics().since(&m0).round_trips(), 0);
    assert_eq!(e.store.stats().cache.hits - hits0, u64::from(PAGES));
    // A prefetch adds nothing to the read set.
    assert!(t.read_set().is_empty());
    drop(t);
    // One page changed by another process (this one's commits cache what
    // they write): read-ahead fetches it alone, in one round trip, and the
    // read that follows is served from the cache.
    let other = e.other_process().open("ahead").unwrap();
    let mut w = other.begin().unwrap();
    w.write_page(PageNo::new(5), &page(500)).unwrap();
    w.commit().unwrap();
    let mut t = db.begin().unwrap();
    let m1 = e.kv.metrics();
    t.prefetch(&all()).unwrap();
    assert_eq!(e.kv.metrics().since(&m1).round_trips(), 1);
    let m2 = e.kv.metrics();
    assert_eq!(value(&t.read_page(PageNo::new(5)).unwrap().unwrap()), 500);
    assert_eq!(value(&t.read_page(PageNo::new(6)).unwrap().unwrap()), 6);
    assert_eq!(e.kv.metrics().since(&m2).round_trips(), 0);
}

#[test]
fn each_snapshot_reads_its_own_newest_version() {
    let e = env();
    let db = warm(&e, "snap");
    let p = PageNo::new(3);
    let mut old = db.begin().unwrap();
    let mut w = db.begin().unwrap();
    w.write_page(p, &page(30)).unwrap();
    w.commit().unwrap();
    // `new` moves the view past `old`'s snapshot: the view's newest
    // version of the page is now too new for `old`, which must read the
    // older one (from the store), never the newer.
    let mut new = db.begin().unwrap();
    assert_eq!(value(&new.read_page(p).unwrap().unwrap()), 30);
    assert_eq!(value(&old.read_page(p).unwrap().unwrap()), 3);
    // Another process commits: this process's view does not know yet, and
    // `new` keeps reading its snapshot's version.
    let other = e.other_process().open("snap").unwrap();
    let mut w = other.begin().unwrap();
    w.write_page(p, &page(31)).unwrap();
    w.commit().unwrap();
    assert_eq!(value(&new.read_page(p).unwrap().unwrap()), 30);
    assert_eq!(value(&old.read_page(p).unwrap().unwrap()), 3);
    // Emptying the cache and views changes no answer.
    e.store.cache().clear();
    assert_eq!(value(&new.read_page(p).unwrap().unwrap()), 30);
    assert_eq!(value(&old.read_page(p).unwrap().unwrap()), 3);
    let mut newest = db.begin().unwrap();
    assert_eq!(value(&newest.read_page(p).unwrap().unwrap()), 31);
    // A transaction's own write wins over the page it read before.
    newest.write_page(p, &page(32)).unwrap();
    assert_eq!(value(&newest.read_page(p).unwrap().unwrap()), 32);
}

#[test]
fn a_database_handle_keeps_its_view_across_a_cache_clear() {
    let e = env();
    let db = warm(&e, "clear");
    e.store.cache().clear();
    // The first transaction after the clear reads every page from the
    // store; the handle's view learns them (the BEGIN above reloaded that
    // same view), so the next transaction reads none.
    let mut t = db.begin().unwrap();
    for p in 0..PAGES {
        assert_eq!(
            value(&t.read_page(PageNo::new(p)).unwrap().unwrap()),
            p as u64
        );
    }
    drop(t);
    let mut t = db.begin().unwrap();
    let m = e.kv.metrics();
    for p in 0..PAGES {
        assert_eq!(
            value(&t.read_page(PageNo::new(p)).unwrap().unwrap()),
            p as u64
        );
    }
    assert_eq!(e.kv.metrics().since(&m).round_trips(), 0);
}
