//! Test harness: each test gets its own store. On the embedded backend (the
//! default) that is a fresh in-memory store with an injectable clock; with
//! `--features fdb` and `FDB_CLUSTER_FILE` set, the same tests run on a real
//! FoundationDB cluster under a random key prefix that is cleared afterwards.
#![allow(dead_code)]

pub mod keys;

use std::sync::Arc;
use std::time::Duration;

use pagestore::clock::ManualClock;
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions, Faults};
use pagestore::kv::Kv;
use pagestore::{PageStore, StoreOptions};

pub const PAGE: usize = 512;

pub struct Env {
    pub kv: Arc<dyn Kv>,
    /// The embedded store, when the test runs on it (faults, clock).
    pub embedded: Option<Arc<EmbeddedKv>>,
    pub store: PageStore,
    pub clock: Arc<ManualClock>,
    prefix: Vec<u8>,
}

impl Env {
    /// Injects faults; returns false on a backend that cannot (real FDB).
    pub fn set_faults(&self, faults: Faults) -> bool {
        match &self.embedded {
            Some(kv) => {
                kv.set_faults(faults);
                true
            }
            None => false,
        }
    }

    /// Another process on the same store: its own page cache and views,
    /// the same backend, key prefix and clock.
    pub fn other_process(&self) -> PageStore {
        PageStore::new(
            self.kv.clone(),
            StoreOptions {
                clock: self.clock.clone(),
                prefix: self.prefix.clone(),
                ..StoreOptions::default()
            },
        )
    }

    /// The store clock's time, µs.
    pub fn clock_now(&self) -> u64 {
        use pagestore::clock::Clock;
        self.clock.now_micros()
    }

    /// Lets `secs` seconds pass: the manual clock on the embedded backend,
    /// real time on FDB (whose MVCC window is real).
    pub fn advance_secs(&self, secs: u64) {
        self.clock.advance_secs(secs);
        if self.embedded.is_none() {
            std::thread::sleep(Duration::from_secs(secs));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        #[cfg(feature = "fdb")]
        if self.embedded.is_none() {
            if let Ok(kv) = pagestore::kv::fdb::FdbKv::open_default() {
                let _ = kv.clear_prefix(&self.prefix);
            }
        }
    }
}

/// Commits share batch versions whenever they can (as on a loaded
/// FoundationDB cluster): code that compares versions where it must compare
/// versionstamps fails here.
pub fn env() -> Env {
    env_with(
        StoreOptions::default(),
        Faults {
            batch_join_probability: 1.0,
            ..Faults::default()
        },
    )
}

#[cfg(feature = "fdb")]
fn fdb_kv() -> Option<Arc<dyn Kv>> {
    std::env::var_os("FDB_CLUSTER_FILE")?;
    let kv = pagestore::kv::fdb::FdbKv::open_default().expect("open FDB from FDB_CLUSTER_FILE");
    Some(kv)
}

#[cfg(not(feature = "fdb"))]
fn fdb_kv() -> Option<Arc<dyn Kv>> {
    None
}

pub fn env_with(opts: StoreOptions, faults: Faults) -> Env {
    let clock = ManualClock::new();
    let prefix = format!("t{:016x}/", rand::random::<u64>()).into_bytes();
    let (kv, embedded): (Arc<dyn Kv>, _) = match fdb_kv() {
        Some(kv) => (kv, None),
        None => {
            let kv = EmbeddedKv::open(
                EmbeddedOptions::in_memory()
                    .with_clock(clock.clone())
                    .with_faults(faults),
            )
            .expect("open embedded store");
            (kv.clone(), Some(kv))
        }
    };
    let store = PageStore::new(
        kv.clone(),
        StoreOptions {
            clock: clock.clone(),
            prefix: prefix.clone(),
            ..opts
        },
    );
    Env {
        kv,
        embedded,
        store,
        clock,
        prefix,
    }
}

/// A store whose transactions spill written pages to the store (upload
/// them ahead of the commit) past `bytes`.
pub fn env_spilling_past(bytes: usize) -> Env {
    env_with(
        StoreOptions {
            spill_bytes: bytes,
            ..StoreOptions::default()
        },
        Faults::default(),
    )
}

/// A page whose first and last 8 bytes hold `v`.
pub fn page(v: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    p[..8].copy_from_slice(&v.to_le_bytes());
    p[PAGE - 8..].copy_from_slice(&v.to_le_bytes());
    p
}

pub fn value(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[..8].try_into().unwrap())
}
