//! Counting the keys a page store holds: what GC tests compare before and
//! after a pass. Shared by pagestore's tests and the root package's
//! (included there with `#[path]`).
#![allow(dead_code)]

use pagestore::kv::{strinc, RangeOption};
use pagestore::PageStore;

/// Keys under `store`'s prefix, read in pages of 10,000.
pub fn count_keys(store: &PageStore) -> usize {
    let prefix = store.options().prefix.clone();
    let end = strinc(&prefix).unwrap_or_else(|| panic!("prefix {prefix:?} has no successor"));
    let (mut from, mut n) = (prefix, 0);
    loop {
        let r = store
            .kv()
            .begin()
            .and_then(|mut t| {
                t.get_range(
                    &RangeOption::new(from.clone(), end.clone()).limit(10_000),
                    true,
                )
            })
            .unwrap_or_else(|e| panic!("scan: {e}"));
        n += r.kvs.len();
        match r.kvs.last() {
            Some(last) if r.more || r.kvs.len() == 10_000 => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return n,
        }
    }
}
