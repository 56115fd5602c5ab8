//! `Transaction::last_change` (the database's state at a snapshot, as a
//! versionstamp) and `Transaction::assume_read` (pages recorded as read
//! without reading them): what lets the VFS keep SQLite's own page cache
//! when nothing changed.

mod common;

use std::sync::Arc;

use common::{env, page};
use pagestore::{commit_group_checked, PageNo, PageSet};

#[test]
fn same_state_same_value_and_own_commit_is_the_state() {
    let e = env();
    let db = e.store.create("a").unwrap();
    let mut t = db.begin().unwrap();
    t.write_page(PageNo::new(0), &page(1)).unwrap();
    t.commit().unwrap();
    let first = db.begin().unwrap().last_change();
    assert!(first.is_some());
    assert_eq!(db.begin().unwrap().last_change(), first, "nothing changed");
    let mut t = db.begin().unwrap();
    t.write_page(PageNo::new(1), &page(2)).unwrap();
    let c = t.commit().unwrap();
    let after = db.begin().unwrap().last_change();
    assert_eq!(after, c.versionstamp, "the state after our commit is it");
    // Another process's view: the same states.
    let other = e.other_process().open("a").unwrap();
    let seen = other.begin().unwrap().last_change();
    assert!(seen.is_some());
    let mut t = other.begin().unwrap();
    t.write_page(PageNo::new(2), &page(3)).unwrap();
    let c2 = t.commit().unwrap();
    assert_eq!(db.begin().unwrap().last_change(), c2.versionstamp);
    // Time travel knows no state.
    assert_eq!(db.begin_at(c.version).unwrap().last_change(), None);
}

/// Commits of one batch share a version (this harness joins batches
/// whenever it can): a commit after ours in the batch is a change.
#[test]
fn a_later_commit_of_the_same_version_is_a_change() {
    let e = env();
    let db = e.store.create("a").unwrap();
    let mut t = db.begin().unwrap();
    t.write_page(PageNo::new(0), &page(1)).unwrap();
    t.write_page(PageNo::new(1), &page(1)).unwrap();
    t.commit().unwrap();
    let other = e.other_process().open("a").unwrap();
    // Both begin before either commits; no read version is taken between
    // the two commits, so the second joins the first one's version.
    let mut mine = db.begin().unwrap();
    let mut theirs = other.begin().unwrap();
    mine.write_page(PageNo::new(0), &page(2)).unwrap();
    theirs.write_page(PageNo::new(1), &page(3)).unwrap();
    let a = mine.commit().unwrap();
    let b = theirs.commit().unwrap();
    if let Some(e) = &e.embedded {
        assert!(e.model_counts().batch_joins > 0, "precondition: one batch");
    }
    let (va, vb) = (a.versionstamp.unwrap(), b.versionstamp.unwrap());
    assert!(vb > va);
    let now = db.begin().unwrap().last_change();
    assert_eq!(now, Some(vb));
    assert_ne!(now, a.versionstamp, "their commit after ours went unseen");
}

/// Pages assumed read are validated like pages read: a writer whose
/// decision rests on one conflicts when it changed after the snapshot,
/// also as a read-only member of a group.
#[test]
fn assumed_reads_conflict_like_reads() {
    let e = env();
    let db = e.store.create("a").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..4 {
        t.write_page(PageNo::new(p), &page(1)).unwrap();
    }
    t.commit().unwrap();
    let assumed: Arc<PageSet> = Arc::new([PageNo::new(2)].into_iter().collect());
    let change_page_2 = || {
        let mut t = db.begin().unwrap();
        t.write_page(PageNo::new(2), &page(9)).unwrap();
        t.commit().unwrap();
    };

    // Without the assumed read the write commits (the page was not read).
    let mut t = db.begin().unwrap();
    change_page_2();
    t.write_page(PageNo::new(3), &page(5)).unwrap();
    t.commit().unwrap();

    let mut t = db.begin().unwrap();
    t.assume_read(assumed.clone());
    change_page_2();
    t.write_page(PageNo::new(3), &page(5)).unwrap();
    let err = t.commit().unwrap_err();
    assert!(err.is_conflict(), "{err}");

    // As a reader of a group: `r` assumed page 2 of `a`, the group writes `b`.
    let b = e.store.create("b").unwrap();
    let mut r = db.begin().unwrap();
    r.assume_read(assumed);
    let mut w = b.begin_sibling(&r).unwrap();
    change_page_2();
    w.write_page(PageNo::new(0), &page(1)).unwrap();
    let err = commit_group_checked(vec![w], &[&r]).unwrap_err();
    assert!(err.is_conflict(), "{err}");
}
