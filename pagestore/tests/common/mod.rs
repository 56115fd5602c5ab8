//! Test harness: each test gets its own in-memory store.
#![allow(dead_code)]

use std::sync::Arc;

use pagestore::clock::ManualClock;
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions, Faults};
use pagestore::{PageStore, StoreOptions};

pub const PAGE: usize = 512;

pub struct Env {
    pub kv: Arc<EmbeddedKv>,
    pub store: PageStore,
    pub clock: Arc<ManualClock>,
}

pub fn env() -> Env {
    env_with(StoreOptions::default(), Faults::default())
}

pub fn env_with(opts: StoreOptions, faults: Faults) -> Env {
    let clock = ManualClock::new();
    let kv = EmbeddedKv::open(
        EmbeddedOptions::in_memory()
            .with_clock(clock.clone())
            .with_faults(faults),
    )
    .expect("open embedded store");
    let store = PageStore::new(
        kv.clone(),
        StoreOptions {
            clock: clock.clone(),
            ..opts
        },
    );
    Env { kv, store, clock }
}

/// A page whose first 8 bytes hold `v`.
pub fn page(v: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    p[..8].copy_from_slice(&v.to_le_bytes());
    p[PAGE - 8..].copy_from_slice(&v.to_le_bytes());
    p
}

pub fn value(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[..8].try_into().unwrap())
}
