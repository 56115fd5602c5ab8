//! The KV contract suite on the embedded backend, in memory and on disk,
//! with a manual clock so the 5 s window costs no waiting.

use std::sync::Arc;

use pagestore::clock::ManualClock;
use pagestore::kv::contract;
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::Kv;

#[test]
fn contract_in_memory() {
    let clock = ManualClock::new();
    let make = || -> Arc<dyn Kv> {
        EmbeddedKv::open(EmbeddedOptions::in_memory().with_clock(clock.clone())).unwrap()
    };
    let advance = |secs: u64| clock.advance_secs(secs);
    contract::run_all(&make, Some(&advance));
}

#[test]
fn contract_on_disk() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let make = || -> Arc<dyn Kv> {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = root.path().join(format!("store{i}"));
        EmbeddedKv::open(EmbeddedOptions::dir(dir).with_clock(clock.clone())).unwrap()
    };
    let advance = |secs: u64| clock.advance_secs(secs);
    contract::run_all(&make, Some(&advance));
}

#[test]
fn contract_on_one_shared_store() {
    // Properties use their own key prefixes: they also hold on one store.
    let kv: Arc<dyn Kv> = EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap();
    for (i, (name, property)) in contract::PROPERTIES.iter().enumerate() {
        let prefix = format!("shared/{i}/{name}/");
        property(kv.as_ref(), prefix.as_bytes());
    }
}
