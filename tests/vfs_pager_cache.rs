//! SQLite keeps its own page cache across transactions when nothing
//! changed (issue 15, item 3; `vfs/src/file/pager_cache.rs`):
//!
//! * `PRAGMA data_version` stays the same after the connection's own
//!   commits and changes after another connection's, in this process or
//!   another (SQLite's pragma3 semantics);
//! * a transaction with nothing changed since the last reads no page
//!   through the VFS but page 1's header;
//! * a writer whose decision rests on a page SQLite served from its cache
//!   still conflicts when that page changed (the page is an assumed read),
//!   also when it is a database the transaction only read (ATTACH);
//! * another client's commit in the same FDB batch as ours (same version,
//!   later batch order) counts as a change.

mod support;

use std::sync::Arc;

use fdbvfs::Store;
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions, Faults};
use pagestore::{PageStore, StoreOptions};
use rusqlite::{Connection, ErrorCode};
use support::{assert_integrity, scalar, scalar_with};

/// Rows of ~3 KB: one per 4 KiB leaf page, so rows live on their own pages.
fn setup(store: &Store, rows: i64) -> String {
    let name = support::name("pcache");
    let c = store.open(&name).unwrap_or_else(|e| panic!("open: {e}"));
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
        .unwrap_or_else(|e| panic!("create: {e}"));
    for i in 1..=rows {
        c.execute("INSERT INTO t VALUES (?1, 0, zeroblob(3000))", [i])
            .unwrap_or_else(|e| panic!("insert: {e}"));
    }
    name
}

fn open(store: &Store, name: &str) -> Connection {
    store
        .open(name)
        .unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn data_version(c: &Connection) -> i64 {
    scalar(c, "PRAGMA data_version")
}

fn v_of(c: &Connection, id: i64) -> i64 {
    scalar_with(c, "SELECT v FROM t WHERE id = ?1", [id])
}

fn exec(c: &Connection, sql: &str) {
    c.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Page lookups through the store's page cache so far: every page SQLite
/// reads through the VFS is one.
fn page_lookups(store: &Store) -> u64 {
    let s = store.page_store().stats().cache;
    s.hits + s.misses
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

#[test]
fn data_version_ignores_own_commits_and_sees_others() {
    let store = support::store();
    let name = setup(&store, 3);
    let a = open(&store, &name);
    let b = open(&store, &name);
    let (a0, b0) = (data_version(&a), data_version(&b));
    for i in 0..3 {
        exec(
            &a,
            &format!("UPDATE t SET v = v + 1 WHERE id = {}", 1 + i % 3),
        );
        assert_eq!(data_version(&a), a0, "own commit {i} changed data_version");
    }
    let b1 = data_version(&b);
    assert_ne!(
        b1, b0,
        "another connection's commits leave data_version alone"
    );
    exec(&b, "UPDATE t SET v = v + 10 WHERE id = 2");
    assert_eq!(data_version(&b), b1, "own commit changed data_version");
    assert_ne!(
        data_version(&a),
        a0,
        "another connection's commit went unseen"
    );
    assert_eq!(v_of(&a, 2), 11);
    assert_integrity(&a);
}

#[test]
fn nothing_changed_reads_only_the_header() {
    let store = support::store();
    let name = setup(&store, 20);
    let a = open(&store, &name);
    let b = open(&store, &name);
    let sum = "SELECT sum(v), count(*) FROM t";
    let warm = |c: &Connection| {
        let before = page_lookups(&store);
        let _: i64 = scalar(c, sum);
        page_lookups(&store) - before
    };
    let first = warm(&a);
    assert!(first > 20, "the first scan reads every page ({first})");
    let again = warm(&a);
    assert!(
        again <= 1,
        "nothing changed: only page 1's header ({again} pages)"
    );
    // An own commit keeps the cache too.
    exec(&a, "UPDATE t SET v = v + 1 WHERE id = 7");
    let after_own = warm(&a);
    assert!(after_own <= 1, "after an own commit ({after_own} pages)");
    // Another connection's commit drops it.
    exec(&b, "UPDATE t SET v = v + 1 WHERE id = 8");
    let after_other = warm(&a);
    assert!(
        after_other > 20,
        "after another's commit ({after_other} pages)"
    );
    assert_eq!(scalar::<i64>(&a, "SELECT sum(v) FROM t"), 2);
}

#[test]
fn keep_cache_off_reads_every_page_again() {
    let store = support::store();
    let name = setup(&store, 10);
    let uri = format!("{}&keep_cache=0", store.uri(&name));
    let (c, err) = support::open_uri(&uri);
    let a = c.unwrap_or_else(|e| panic!("open {uri}: {e} ({err:?})"));
    let _: i64 = scalar(&a, "SELECT sum(v) FROM t");
    let before = page_lookups(&store);
    let _: i64 = scalar(&a, "SELECT sum(v) FROM t");
    assert!(page_lookups(&store) - before > 10);
    let d = data_version(&a);
    exec(&a, "UPDATE t SET v = 1 WHERE id = 1");
    // Without the kept cache every transaction is a new one to SQLite.
    assert_ne!(data_version(&a), d);
}

/// The same through the Rust API: `StoreBuilder::keep_cache(false)`.
#[test]
fn keep_cache_off_from_the_store_builder() {
    let store = Store::builder()
        .in_memory()
        .keep_cache(false)
        .build()
        .unwrap_or_else(|e| panic!("store: {e}"));
    let name = setup(&store, 10);
    let a = store.open(&name).unwrap_or_else(|e| panic!("open: {e}"));
    let _: i64 = scalar(&a, "SELECT sum(v) FROM t");
    let before = page_lookups(&store);
    let _: i64 = scalar(&a, "SELECT sum(v) FROM t");
    assert!(page_lookups(&store) - before > 10);
}

/// A reads row 1 (its page lands in SQLite's cache), then in a new
/// transaction with nothing changed reads it again, from SQLite's cache,
/// and writes row 2 from it. B changes row 1 in between: A's commit must
/// conflict, although row 1's page never reached the VFS in A's
/// transaction.
#[test]
fn a_page_served_from_sqlites_cache_still_conflicts() {
    let store = support::store();
    let name = setup(&store, 4);
    let a = open(&store, &name);
    let b = open(&store, &name);
    assert_eq!(v_of(&a, 1), 0);
    let before = page_lookups(&store);
    exec(&a, "BEGIN");
    let seen = v_of(&a, 1);
    assert!(
        page_lookups(&store) - before <= 1,
        "precondition: row 1 came from SQLite's cache"
    );
    exec(&b, "UPDATE t SET v = 100 WHERE id = 1");
    a.execute("UPDATE t SET v = ?1 + 1 WHERE id = 2", [seen])
        .unwrap_or_else(|e| panic!("update: {e}"));
    let r = a.execute_batch("COMMIT");
    let err = r.expect_err("A committed a write built on a row B had changed");
    assert!(is_busy(&err), "{err}");
    assert!(a.is_autocommit(), "SQLite rolled back");
    // Retried, A sees B's row.
    exec(&a, "BEGIN");
    let seen = v_of(&a, 1);
    a.execute("UPDATE t SET v = ?1 + 1 WHERE id = 2", [seen])
        .unwrap_or_else(|e| panic!("update: {e}"));
    exec(&a, "COMMIT");
    assert_eq!(v_of(&b, 2), 101);
    assert_integrity(&b);
}

/// The same through ATTACH: A's transaction only reads the attached
/// database (from SQLite's cache) and writes the main one; B's change to
/// the attached database must fail A's commit.
#[test]
fn an_attached_database_read_from_sqlites_cache_still_conflicts() {
    let store = support::store();
    let main = setup(&store, 2);
    let other = setup(&store, 2);
    let a = open(&store, &main);
    exec(&a, &format!("ATTACH '{}' AS o", store.uri(&other)));
    let b = open(&store, &other);
    assert_eq!(scalar::<i64>(&a, "SELECT v FROM o.t WHERE id = 1"), 0);
    exec(&a, "BEGIN");
    let seen: i64 = scalar(&a, "SELECT v FROM o.t WHERE id = 1");
    let _: i64 = scalar(&a, "SELECT v FROM main.t WHERE id = 2");
    exec(&b, "UPDATE t SET v = 5 WHERE id = 1");
    a.execute("UPDATE main.t SET v = ?1 + 1 WHERE id = 2", [seen])
        .unwrap_or_else(|e| panic!("update: {e}"));
    let err = a
        .execute_batch("COMMIT")
        .expect_err("A committed a write built on a row B had changed");
    assert!(is_busy(&err), "{err}");
    assert!(a.is_autocommit(), "SQLite rolled back");
    assert_eq!(scalar::<i64>(&a, "SELECT v FROM o.t WHERE id = 1"), 5);
    assert_eq!(scalar::<i64>(&a, "SELECT v FROM main.t WHERE id = 2"), 0);
}

/// A store registered with the VFS directly, so the test can read the
/// embedded backend's model counters (batch joins).
struct Custom {
    id: u64,
    kv: Arc<EmbeddedKv>,
}

impl Custom {
    fn joining_batches() -> Custom {
        support::init_tracing();
        let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_faults(Faults {
            batch_join_probability: 1.0,
            ..Faults::default()
        }))
        .unwrap_or_else(|e| panic!("embedded store: {e}"));
        let pages = PageStore::new(kv.clone(), StoreOptions::default());
        let id = vfs::registry::register_store(pages);
        Custom { id, kv }
    }

    /// Another process on the same store: its own page cache and view.
    fn other_process(&self) -> Custom {
        let pages = PageStore::new(self.kv.clone(), StoreOptions::default());
        let id = vfs::registry::register_store(pages);
        Custom {
            id,
            kv: self.kv.clone(),
        }
    }

    fn open(&self, name: &str) -> Connection {
        support::open_registered(self.id, name)
    }
}

impl Drop for Custom {
    fn drop(&mut self) {
        vfs::registry::unregister_store(self.id);
    }
}

/// B's commit lands in the same batch as A's (same version, after it): A's
/// next transaction must not keep its cache, or it reads row 2 as before
/// B's commit.
#[test]
fn a_commit_in_the_same_batch_after_ours_is_a_change() {
    let s = Custom::joining_batches();
    let name = support::name("pcache-batch");
    let setup = s.open(&name);
    exec(
        &setup,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB);
         INSERT INTO t VALUES (1, 0, zeroblob(3000)), (2, 0, zeroblob(3000));",
    );
    let a = s.open(&name);
    let b = s.open(&name);
    assert_eq!(v_of(&a, 2), 0);
    let a0 = data_version(&a);
    // B's snapshot predates A's commit; it reads and writes row 2 only.
    exec(&b, "BEGIN");
    assert_eq!(v_of(&b, 2), 0);
    exec(&a, "UPDATE t SET v = v + 1 WHERE id = 1");
    let joins = s.kv.model_counts().batch_joins;
    exec(&b, "UPDATE t SET v = v + 10 WHERE id = 2; COMMIT;");
    assert!(
        s.kv.model_counts().batch_joins > joins,
        "precondition: B's commit joined A's version"
    );
    assert_eq!(v_of(&a, 2), 10, "A read its stale cache");
    assert_ne!(data_version(&a), a0);
}

#[test]
fn data_version_sees_another_process_commit() {
    let s1 = Custom::joining_batches();
    let s2 = s1.other_process();
    let name = support::name("pcache-proc");
    exec(
        &s1.open(&name),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB);
         INSERT INTO t VALUES (1, 0, zeroblob(3000));",
    );
    let a = s1.open(&name);
    let b = s2.open(&name);
    let a0 = data_version(&a);
    exec(&a, "UPDATE t SET v = v + 1 WHERE id = 1");
    assert_eq!(data_version(&a), a0, "own commit changed data_version");
    exec(&b, "UPDATE t SET v = v + 1 WHERE id = 1");
    assert_ne!(
        data_version(&a),
        a0,
        "the other process's commit went unseen"
    );
    assert_eq!(v_of(&a, 1), 2);
}
