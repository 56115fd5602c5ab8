//! Test harness: every test gets its own store and unique database names,
//! so tests run in parallel.
//!
//! [`store`] is a fresh in-memory embedded store; built with `--features fdb`
//! and with `FDB_CLUSTER_FILE` set, it is the FoundationDB cluster under a
//! random key prefix, cleared when the test's store is dropped.
#![allow(dead_code)]

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};

use fdbvfs::Store;

/// A store for one test (derefs to [`Store`]).
pub struct TestStore {
    store: Store,
    /// The key prefix to clear afterwards (FDB only).
    fdb_prefix: Option<Vec<u8>>,
}

impl Deref for TestStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.store
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        #[cfg(feature = "fdb")]
        if let Some(prefix) = &self.fdb_prefix {
            if let Ok(kv) = pagestore::kv::fdb::FdbKv::open_default() {
                let _ = kv.clear_prefix(prefix);
            }
        }
        let _ = &self.fdb_prefix;
    }
}

/// A fresh store: in memory, or FoundationDB under a random prefix (see the
/// module docs).
pub fn store() -> TestStore {
    init_tracing();
    #[cfg(feature = "fdb")]
    if let Some(cluster) = std::env::var_os("FDB_CLUSTER_FILE").filter(|c| !c.is_empty()) {
        let prefix = format!("fdbvfs-test/{:016x}/", rand::random::<u64>()).into_bytes();
        let store = Store::builder()
            .cluster_file(std::path::PathBuf::from(cluster))
            .prefix(prefix.clone())
            .build()
            .unwrap_or_else(|e| panic!("FDB store: {e}"));
        return TestStore {
            store,
            fdb_prefix: Some(prefix),
        };
    }
    // Commits share batch versions whenever they can, as on a loaded
    // FoundationDB cluster (versions compared where versionstamps must be
    // fail here).
    let faults = pagestore::kv::embedded::Faults {
        batch_join_probability: 1.0,
        ..Default::default()
    };
    match Store::builder().in_memory().faults(faults).build() {
        Ok(store) => TestStore {
            store,
            fdb_prefix: None,
        },
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

/// Opens `uri` (read-write, create, URI) through the linked SQLite and
/// returns the result with the VFS's last error message, so a test can
/// check what an application would be told.
pub fn open_uri(
    uri: &str,
) -> (
    Result<rusqlite::Connection, rusqlite::Error>,
    Option<String>,
) {
    use rusqlite::OpenFlags;
    // Registration happens with the first Store::open; make sure it did.
    let _ = vfs::register_linked();
    let _ = vfs::take_last_error();
    let r = rusqlite::Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI,
    );
    (r, vfs::take_last_error())
}
