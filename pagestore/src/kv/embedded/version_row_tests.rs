//! The version row (`durable::VERSION_ROW`): stores that kept the version
//! in a `meta` table of their own open with it (and go on from it), and the
//! row is never shown to readers nor written by clients.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, TableDefinition};

use super::{DATA_FILE, VERSION_ROW};
use crate::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use crate::kv::{Kv, RangeOption, Version};

const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn open(dir: &Path) -> Arc<EmbeddedKv> {
    EmbeddedKv::open(EmbeddedOptions::dir(dir)).unwrap()
}

fn put(kv: &EmbeddedKv, key: &[u8], value: &[u8]) -> Version {
    let mut t = kv.begin().unwrap();
    t.set(key, value);
    t.commit().unwrap().version
}

/// Every row a client can read, both ways.
fn rows(kv: &EmbeddedKv) -> Vec<(Vec<u8>, Vec<u8>)> {
    let all = RangeOption::new(Vec::new(), vec![0xff; 32]);
    let mut t = kv.begin().unwrap();
    let fwd: Vec<_> = t
        .get_range(&all, false)
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    let mut rev: Vec<_> = t
        .get_range(&all.clone().reverse(), false)
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    rev.reverse();
    assert_eq!(fwd, rev);
    let last = t.get_range(&all.reverse().limit(1), false).unwrap().kvs;
    assert_eq!(
        last.first().map(|kv| kv.key.clone()),
        fwd.last().map(|r| r.0.clone())
    );
    assert_eq!(t.get(VERSION_ROW, false).unwrap(), None);
    fwd
}

/// Rewrites a closed store as stores before the version row were: the
/// version in table `meta`, no version row.
fn make_old_format(dir: &Path, version: u64) {
    let db = Database::create(dir.join(DATA_FILE)).unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut data = w.open_table(DATA).unwrap();
        assert!(data.remove(VERSION_ROW).unwrap().is_some());
        let mut meta = w.open_table(META).unwrap();
        meta.insert("version", version).unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn a_store_with_its_version_in_a_meta_table_opens_and_goes_on_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let kv = open(&dir);
    let v1 = put(&kv, b"a", b"1");
    drop(kv);
    // Far past the clock: only the migrated version explains later ones.
    let old = v1.get() + 1_000_000_000;
    make_old_format(&dir, old);
    let kv = open(&dir);
    assert_eq!(kv.committed_version(), Version::new(old));
    assert_eq!(rows(&kv), vec![(b"a".to_vec(), b"1".to_vec())]);
    let v2 = put(&kv, b"b", b"2");
    assert!(v2 > Version::new(old), "{v2:?} after {old}");
    drop(kv);
    // The row now rules (the stale meta table is not read again).
    let kv = open(&dir);
    assert_eq!(kv.committed_version(), v2);
    assert_eq!(
        rows(&kv),
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec())
        ]
    );
}

#[test]
fn the_version_row_is_no_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let kv = open(&dir);
    assert_eq!(rows(&kv), vec![]);
    put(&kv, b"a", b"1");
    put(&kv, b"\xff", b"system");
    assert_eq!(
        rows(&kv),
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"\xff".to_vec(), b"system".to_vec())
        ]
    );
    // Writes into the special key space are refused.
    for key in [VERSION_ROW, b"\xff\xffx".as_slice()] {
        let mut t = kv.begin().unwrap();
        t.set(key, b"mine");
        assert_eq!(t.commit().unwrap_err().code, 2004);
        let mut t = kv.begin().unwrap();
        t.clear(key);
        assert_eq!(t.commit().unwrap_err().code, 2004);
    }
    // A clear of everything leaves the version.
    let mut t = kv.begin().unwrap();
    t.clear_range(&[], &[0xff; 32]);
    let v = t.commit().unwrap().version;
    assert_eq!(rows(&kv), vec![]);
    drop(kv);
    let kv = open(&dir);
    assert_eq!(kv.committed_version(), v);
    assert_eq!(rows(&kv), vec![]);
    assert!(put(&kv, b"c", b"3") > v);
}
