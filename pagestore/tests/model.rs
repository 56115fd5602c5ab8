//! Randomized model test: concurrent page transactions with injected
//! conflicts, unknown commit results and latency. Every committed history
//! must equal the serial execution of the committed transactions in commit
//! order, every read must match the state at the transaction's snapshot, and
//! no committed write may be lost or applied twice.

mod common;

use pagestore::PageNo;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use common::{env_with, page, value};
use pagestore::kv::embedded::Faults;
use pagestore::kv::{Version, Versionstamp};
use pagestore::StoreOptions;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const PAGES: u32 = 12;

#[derive(Debug, Clone)]
struct Done {
    snapshot: Version,
    commit: Option<Versionstamp>,
    reads: Vec<(u32, u64)>,
    writes: Vec<(u32, u64)>,
}

fn run(seed: u64, conflict_p: f64, unknown_p: f64, latency_us: u64, threads: u64, txns: u64) {
    let e = env_with(StoreOptions::default(), Faults::default());
    let db = e.store.create("model").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..PAGES {
        t.write_page(PageNo::new(p), &page(0)).unwrap();
    }
    t.commit().unwrap();
    e.set_faults(Faults {
        conflict_probability: conflict_p,
        unknown_result_probability: unknown_p,
        latency: Duration::from_micros(latency_us),
        ..Faults::default()
    });

    let done = Mutex::new(Vec::<Done>::new());
    std::thread::scope(|s| {
        for th in 0..threads {
            let db = db.clone();
            let done = &done;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ (th + 1).wrapping_mul(0x9e37_79b9));
                for i in 0..txns {
                    let id = (th + 1) << 32 | (i + 1);
                    let mut t = db.begin().unwrap();
                    let mut reads = Vec::new();
                    for _ in 0..rng.random_range(0..4) {
                        let p = rng.random_range(0..PAGES);
                        let v = value(&t.read_page(PageNo::new(p)).unwrap().unwrap());
                        reads.push((p, v));
                    }
                    let mut writes = Vec::new();
                    for _ in 0..rng.random_range(0..3) {
                        let p = rng.random_range(0..PAGES);
                        t.write_page(PageNo::new(p), &page(id)).unwrap();
                        writes.retain(|(q, _)| *q != p);
                        writes.push((p, id));
                    }
                    let snapshot = t.snapshot();
                    match t.commit() {
                        Ok(c) => done.lock().unwrap().push(Done {
                            snapshot,
                            commit: c.versionstamp,
                            reads,
                            writes,
                        }),
                        Err(err) if err.is_retryable() => {}
                        Err(err) => panic!("unexpected error: {err}"),
                    }
                }
            });
        }
    });
    e.set_faults(Faults::default());

    let done = done.into_inner().unwrap();
    let mut writers: Vec<&Done> = done.iter().filter(|d| d.commit.is_some()).collect();
    writers.sort_by_key(|d| d.commit);
    // State after each commit, to check reads at snapshots.
    let mut state: BTreeMap<u32, u64> = (0..PAGES).map(|p| (p, 0)).collect();
    let mut history: Vec<(u64, BTreeMap<u32, u64>)> = vec![(0, state.clone())];
    for d in &writers {
        for &(p, v) in &d.reads {
            assert_eq!(
                state[&p], v,
                "commit {:?} read a value changed before it committed",
                d.commit
            );
        }
        for &(p, v) in &d.writes {
            state.insert(p, v);
        }
        history.push((d.commit.unwrap().version().get(), state.clone()));
    }
    for d in &done {
        let at = history
            .iter()
            .rev()
            .find(|(v, _)| *v <= d.snapshot.get())
            .map(|(_, s)| s)
            .unwrap();
        for &(p, v) in &d.reads {
            assert_eq!(at[&p], v, "a read did not match the state at its snapshot");
        }
    }
    // The store holds exactly the serial outcome; each commit applied once.
    let mut t = db.begin().unwrap();
    for p in 0..PAGES {
        assert_eq!(
            value(&t.read_page(PageNo::new(p)).unwrap().unwrap()),
            state[&p],
            "page {p}"
        );
    }
    let changes = db.changes_between(Version::ZERO, t.snapshot()).unwrap();
    assert_eq!(changes.len(), writers.len() + 1);
    let tokens: HashSet<_> = changes.iter().map(|c| c.record.token).collect();
    assert_eq!(
        tokens.len(),
        changes.len(),
        "a transaction was applied twice"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn committed_histories_are_serializable(
        seed in any::<u64>(),
        conflict_p in 0.0f64..0.2,
        unknown_p in 0.0f64..0.3,
        latency_us in 0u64..300,
    ) {
        run(seed, conflict_p, unknown_p, latency_us, 4, 40);
    }
}

#[test]
fn heavy_faults_still_serializable() {
    run(7, 0.3, 0.5, 50, 6, 60);
}
