//! `PRAGMA synchronous` on the fdb VFS: SQLite still applies it, and the
//! VFS carries it to the store: OFF and NORMAL commits are relaxed
//! (acknowledged before they are on disk, see `pagestore::Durability`),
//! FULL (the default) and EXTRA durable. Counted by the embedded store's
//! model counts (`relaxed_commits`).

mod support;

use std::sync::Arc;

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::{PageStore, StoreOptions};
use rusqlite::Connection;
use support::scalar;

/// An embedded store registered with the VFS, kept to read its counts.
struct Registered {
    id: u64,
    kv: Arc<EmbeddedKv>,
}

impl Registered {
    fn new() -> Registered {
        support::init_tracing();
        let kv = EmbeddedKv::open(EmbeddedOptions::in_memory())
            .unwrap_or_else(|e| panic!("embedded store: {e}"));
        let id = vfs::registry::register_store(PageStore::new(kv.clone(), StoreOptions::default()));
        Registered { id, kv }
    }

    fn open(&self, name: &str) -> Connection {
        support::open_registered(self.id, name)
    }

    fn relaxed(&self) -> u64 {
        self.kv.model_counts().relaxed_commits
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        vfs::registry::unregister_store(self.id);
    }
}

fn run(c: &Connection, sql: &str) {
    c.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[test]
fn off_and_normal_commit_relaxed_full_and_extra_durable() {
    let s = Registered::new();
    let name = support::name("sync");
    let c = s.open(&name);
    run(&c, "CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    // The default is FULL: nothing relaxed.
    assert_eq!(scalar::<i64>(&c, "PRAGMA synchronous"), 2);
    assert_eq!(s.relaxed(), 0);
    for (level, sqlite_level, relaxed) in [
        ("OFF", 0, true),
        ("NORMAL", 1, true),
        ("FULL", 2, false),
        ("EXTRA", 3, false),
        ("0", 0, true),
        ("2", 2, false),
    ] {
        run(&c, &format!("PRAGMA synchronous = {level}"));
        // SQLite applied it as well.
        assert_eq!(scalar::<i64>(&c, "PRAGMA synchronous"), sqlite_level);
        let before = s.relaxed();
        run(&c, "INSERT INTO t VALUES (2)");
        run(&c, "BEGIN; UPDATE t SET x = x + 1; COMMIT");
        let want = if relaxed { 2 } else { 0 };
        assert_eq!(s.relaxed() - before, want, "synchronous = {level}");
    }
    // Another connection to the same database starts at FULL.
    let d = s.open(&name);
    let before = s.relaxed();
    run(&d, "INSERT INTO t VALUES (3)");
    assert_eq!(s.relaxed(), before);
    assert_eq!(scalar::<i64>(&d, "SELECT count(*) FROM t"), 8);
    support::assert_integrity(&d);
}
