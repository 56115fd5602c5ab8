//! A batch of "last row of the range" reads (a page's newest version at a
//! snapshot, the read of every cold page) answers exactly as the same range
//! reads one by one, however the embedded store serves it (one forward walk
//! per ascending run): at the newest version, at an older read version
//! (history laid over the store), with gaps, many versions per key prefix,
//! runs broken by descending ranges, and point reads mixed in.

use std::sync::Arc;

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::{Kv, RangeOption, ReadRequest, ReadResult, Version};

/// Key of "page" `p` at "version" `v`.
fn key(p: u8, v: u8) -> Vec<u8> {
    vec![b'p', p, v]
}

/// Pages 0..60, page p written by the commits `0..=p % 12` (page p has
/// 1 + p % 12 versions); returns the store and the read version after
/// each commit.
fn store() -> (Arc<EmbeddedKv>, Vec<Version>) {
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory()).expect("open");
    let mut versions = Vec::new();
    for c in 0u8..12 {
        let mut t = kv.begin().expect("begin");
        for p in (0u8..60).filter(|p| p % 12 >= c) {
            t.set(&key(p, c), &[p, c, 0xAA]);
        }
        t.commit().expect("commit");
        versions.push(kv.begin().expect("begin").read_version().expect("rv"));
    }
    (kv, versions)
}

/// The newest version of page `p` at "version" `snap`: a reverse range
/// read of limit 1.
fn last_row(p: u8, snap: u8) -> ReadRequest {
    ReadRequest::Range(
        RangeOption::new(key(p, 0), key(p, snap + 1))
            .limit(1)
            .reverse(),
    )
}

fn check(kv: &EmbeddedKv, rv: Version, requests: &[ReadRequest]) {
    let mut t = kv.begin().expect("begin");
    t.set_read_version(rv);
    let batch = t.get_batch(requests, true).expect("batch");
    let one_by_one: Vec<ReadResult> = requests
        .iter()
        .map(|r| {
            let mut t = kv.begin().expect("begin");
            t.set_read_version(rv);
            match r {
                ReadRequest::Range(o) => ReadResult::Range(t.get_range(o, true).expect("range")),
                ReadRequest::Get(k) => ReadResult::Value(t.get(k, true).expect("get")),
            }
        })
        .collect();
    assert_eq!(batch, one_by_one, "read version {rv}");
}

#[test]
fn last_row_batches_answer_like_single_reads() {
    let (kv, versions) = store();
    for &rv in [versions[11], versions[5], versions[0]].iter() {
        for snap in [0u8, 3, 11, 200] {
            for stride in [1usize, 3, 13] {
                let mut requests: Vec<ReadRequest> = (0u8..70)
                    .step_by(stride)
                    .map(|p| last_row(p, snap))
                    .collect();
                check(&kv, rv, &requests);
                // A point read in the middle, a descending range breaking
                // the run, and the same range twice.
                requests.insert(3.min(requests.len()), ReadRequest::Get(key(2, 0)));
                requests.push(last_row(1, snap));
                requests.push(last_row(1, snap));
                requests.push(last_row(40, snap));
                check(&kv, rv, &requests);
            }
        }
    }
}
