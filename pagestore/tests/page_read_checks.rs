//! Every batch of page reads checks GC's horizon and the database's
//! catalog entry, but a transaction's reads share one read version, at
//! which the answers never change: only its first batch asks for them (a
//! cold point read is four batches; the other three read pages only). A
//! read at a newer read version asks again (see pages.rs,
//! `a_read_after_a_concurrent_drop_fails_with_dropped`).

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
