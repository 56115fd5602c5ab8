//! Every batch of page reads checks GC's horizon and the database's
//! catalog entry, but a transaction's reads share one read version, at
//! which the answers never change: only its first batch asks for them (a
//! cold point read is four batches; the other three read pages only). A
//! read at a newer read version asks again (see pages.rs,
//! `a_read_after_a_concurrent_drop_fails_with_dropped`). And pages read
//! below the view's version stay findable in the cache.

mod common;

use common::{env, page, value, PAGE};
use pagestore::PageNo;

#[test]
fn only_the_first_batch_at_a_read_version_reads_the_checks() {
    let e = env();
    let db = e.store.create("checked").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..4 {
        t.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    t.commit().unwrap();
    e.store.cache().clear();

    let mut t = db.begin().unwrap();
    let before = e.kv.metrics();
    assert_eq!(value(&t.read_page(PageNo::new(0)).unwrap().unwrap()), 0);
    let first = e.kv.metrics().since(&before);
    for p in 1..4 {
        let before = e.kv.metrics();
        assert_eq!(
            value(&t.read_page(PageNo::new(p)).unwrap().unwrap()),
            p as u64
        );
        let m = e.kv.metrics().since(&before);
        assert_eq!(m.reads, 1, "page {p}: {m:?}");
        // The page's value (a tag byte and the page), nothing else: not
        // the catalog entry.
        assert_eq!(m.bytes_read, PAGE as u64 + 1, "page {p}: {m:?}");
    }
    assert!(
        first.bytes_read > PAGE as u64 + 1,
        "the first batch reads the catalog entry too: {first:?}"
    );

    // Another transaction at a new read version checks again.
    t.rollback();
    let mut w = db.begin().unwrap();
    w.write_page(PageNo::new(3), &page(33)).unwrap();
    w.commit().unwrap();
    e.store.cache().clear();
    let mut t = db.begin().unwrap();
    let before = e.kv.metrics();
    assert_eq!(value(&t.read_page(PageNo::new(3)).unwrap().unwrap()), 33);
    let m = e.kv.metrics().since(&before);
    assert!(m.bytes_read > PAGE as u64 + 1, "{m:?}");
}

/// Pages prefetched by a transaction whose snapshot the process's view has
/// moved past (another transaction began later, or the staleness
/// refresher ran) are served from the cache afterwards, not read from the
/// store one by one, unless they changed after the snapshot: the view
/// replayed the change log since its load, so a page it does not list did
/// not change. (The compare bench's cold scan made 974 store reads instead
/// of 15 while a bounded connection's refresher ran.)
#[test]
fn prefetched_pages_stay_cached_when_the_view_moved_on() {
    let e = env();
    let db = e.store.create("moved_on").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..10 {
        t.write_page(PageNo::new(p), &page(p as u64)).unwrap();
    }
    t.commit().unwrap();
    e.store.cache().clear();

    let mut old = db.begin().unwrap();
    // Another transaction changes page 5; a later BEGIN moves the view on.
    let mut w = db.begin().unwrap();
    w.write_page(PageNo::new(5), &page(55)).unwrap();
    w.commit().unwrap();
    db.begin().unwrap().rollback();

    let pages: Vec<PageNo> = (0..10).map(PageNo::new).collect();
    let before = e.kv.metrics();
    old.prefetch(&pages).unwrap();
    assert_eq!(e.kv.metrics().since(&before).reads, 1);
    let before = e.kv.metrics();
    for p in (0..10).filter(|&p| p != 5) {
        assert_eq!(
            value(&old.read_page(PageNo::new(p)).unwrap().unwrap()),
            p as u64
        );
    }
    let m = e.kv.metrics().since(&before);
    assert_eq!(
        m.reads, 0,
        "unchanged prefetched pages come from the cache: {m:?}"
    );
    // The changed page still reads as of the old snapshot.
    assert_eq!(value(&old.read_page(PageNo::new(5)).unwrap().unwrap()), 5);
    let mut new = db.begin().unwrap();
    assert_eq!(value(&new.read_page(PageNo::new(5)).unwrap().unwrap()), 55);
}
