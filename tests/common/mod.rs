//! Test harness: every test gets its own store and unique database names,
//! so tests run in parallel.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use fdbvfs::Store;

/// A fresh in-memory store.
pub fn store() -> Store {
    init_tracing();
    match Store::in_memory() {
        Ok(s) => s,
        Err(e) => panic!("in-memory store: {e}"),
    }
}

/// A fresh store in a temporary directory (kept alive by the returned guard).
pub fn dir_store() -> (Store, tempfile::TempDir) {
    init_tracing();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let s = Store::embedded(dir.path()).unwrap_or_else(|e| panic!("store: {e}"));
    (s, dir)
}

/// A database name unique in this process.
pub fn name(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
