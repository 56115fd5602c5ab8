//! The KV contract suite (`pagestore/tests/contract`) against a real
//! FoundationDB cluster. Runs only with `--features fdb` and when
//! `FDB_CLUSTER_FILE` is set (see docs/running-on-fdb.md); otherwise it
//! prints `skipped: FDB_CLUSTER_FILE not set`.
#![cfg(feature = "fdb")]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod contract;

use pagestore::kv::fdb::{FdbKv, FdbOptions};

fn configured() -> bool {
    let set = std::env::var_os("FDB_CLUSTER_FILE").is_some_and(|v| !v.is_empty());
    if !set {
        println!("skipped: FDB_CLUSTER_FILE not set");
    }
    set
}

/// A key prefix of its own for this run, so that runs (and leftovers of
/// failed runs) never meet; cleared at the end.
fn run_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("fdbvfs-contract/{test}/{}-{nanos}/", std::process::id())
}

fn open(opts: FdbOptions) -> Arc<FdbKv> {
    match FdbKv::open(opts) {
        Ok(kv) => kv,
        Err(e) => panic!("FDB_CLUSTER_FILE is set but the cluster cannot be opened: {e}"),
    }
}

/// Clears the run's keys even when a property panics.
struct Cleanup<'a>(&'a FdbKv, &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.clear_prefix(self.1.as_bytes()) {
            eprintln!("cleanup of {} failed: {e}", self.1);
        }
    }
}

#[test]
fn fdb_honours_the_kv_contract() {
    if !configured() {
        return;
    }
    let kv = open(FdbOptions::default());
    let prefix = run_prefix("properties");
    let _cleanup = Cleanup(&kv, &prefix);
    for (name, property) in contract::PROPERTIES {
        let p = format!("{prefix}{name}/");
        println!("contract property {name}");
        // Metrics are compared as differences, so one store serves all.
        property(kv.as_ref(), p.as_bytes());
    }
}

/// FDB's 5 s MVCC window is real time: wait it out. The transaction
/// timeout is raised above the window so that FDB's own 1007 is what the
/// property sees (with the default 5 s timeout, reads of a transaction that
/// old fail with 1031 first).
///
/// Ignored by default: the property re-reads, after the window, a key the
/// same transaction already read, and FDB's client answers such a re-read
/// from its read-your-writes cache without asking a storage server, so it
/// succeeds instead of failing with 1007. Run with `--ignored` to check the
/// rest (commit, reads of keys not read before, an old explicit version).
#[test]
#[ignore = "FDB serves re-reads of a key from its RYW cache even after the 5 s window"]
fn fdb_transactions_too_old_after_the_window() {
    if !configured() {
        return;
    }
    let kv = open(FdbOptions::default().timeout(Duration::from_secs(20)));
    let prefix = run_prefix("too_old");
    let _cleanup = Cleanup(&kv, &prefix);
    let sleep = |secs: u64| std::thread::sleep(Duration::from_secs(secs));
    contract::transaction_too_old_after_window(kv.as_ref(), prefix.as_bytes(), &sleep);
}
