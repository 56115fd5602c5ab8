//! The snapshot shared between commits (`Durable::snapshot`): reused while
//! nothing was committed, never served across a commit, and never kept when
//! a commit happened while it was being opened.

use std::sync::Arc;

use super::{Durable, Snapshot};
use crate::kv::embedded::writes::Mutation;
use crate::kv::Version;

fn commit(d: &Durable, version: u64, key: &[u8], value: &[u8]) {
    let mut g = d.begin_group().unwrap();
    g.apply(
        Version::new(version),
        &[Mutation::Set(key.to_vec(), value.to_vec())],
        1 << 20,
    )
    .unwrap();
    g.commit(false).unwrap();
}

fn same(a: &Snapshot, b: &Snapshot) -> bool {
    Arc::ptr_eq(&a.table, &b.table)
}

#[test]
fn a_snapshot_is_shared_until_the_next_commit() {
    let (d, v0) = Durable::open(None).unwrap();
    let s1 = d.snapshot().unwrap();
    let s2 = d.snapshot().unwrap();
    assert!(same(&s1, &s2));
    assert_eq!(s1.version, v0);
    commit(&d, v0.get() + 10, b"k", b"1");
    let s3 = d.snapshot().unwrap();
    assert!(!same(&s1, &s3));
    assert_eq!(s3.version, Version::new(v0.get() + 10));
    assert_eq!(s3.get(b"k").unwrap(), Some(b"1".to_vec()));
    // The older one still shows its own state.
    assert_eq!(s1.get(b"k").unwrap(), None);
    assert!(same(&s3, &d.snapshot().unwrap()));
}

#[test]
fn a_snapshot_opened_across_a_commit_is_not_shared() {
    let (d, v0) = Durable::open(None).unwrap();
    let Err(generation) = d.shared_snapshot() else {
        panic!("nothing shared yet");
    };
    // Opened before the commit became visible, offered after it.
    let stale = d.open_snapshot().unwrap();
    commit(&d, v0.get() + 10, b"k", b"1");
    d.share(generation, &stale);
    let s = d.snapshot().unwrap();
    assert!(!same(&s, &stale));
    assert_eq!(s.version, Version::new(v0.get() + 10));
    assert_eq!(s.get(b"k").unwrap(), Some(b"1".to_vec()));
}
