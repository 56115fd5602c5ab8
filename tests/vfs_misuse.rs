//! Issue 10, the VFS's half: paths where SQLite could be told something was
//! written when it was not, or read another database's pages.
//!
//! * a retryable store error at the commit point must make SQLite roll
//!   back (a retried `COMMIT` must never say OK with nothing written), in
//!   a single-database commit, with `synchronous=OFF`, and in a commit
//!   across attached databases; a doomed file never acknowledges a commit;
//! * the same database attached twice to one connection is refused;
//! * `cache=shared`, `immutable=1` and `nolock=1` are refused at open, and
//!   full pathnames never let two stores (or two snapshots) share a cache;
//! * a chained BEGIN (a write after a commit inside one read-lock hold)
//!   sees a commit of another client in the same FDB batch (same version).

mod support;

use std::sync::Arc;

use pagestore::clock::ManualClock;
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions, Faults};
use pagestore::{PageStore, StoreOptions};
use rusqlite::{Connection, OpenFlags};
use support::scalar;

/// A store registered with the VFS with options the `Store` builder does
/// not offer (a manual clock, no commit retries).
struct Custom {
    id: u64,
    kv: Arc<EmbeddedKv>,
}

impl Custom {
    fn new(eopts: EmbeddedOptions, sopts: StoreOptions) -> Custom {
        support::init_tracing();
        let kv = EmbeddedKv::open(eopts).unwrap_or_else(|e| panic!("embedded store: {e}"));
        let pages = PageStore::new(kv.clone(), sopts);
        let id = vfs::registry::register_store(pages);
        Custom { id, kv }
    }

    /// A store whose clock the test moves, and whose commits are not
    /// retried: a commit whose snapshot left the store's 5 s window fails
    /// with the retryable 1007 (`transaction_too_old`).
    fn too_old_at_commit() -> (Custom, Arc<ManualClock>) {
        let clock = ManualClock::new();
        let c = Custom::new(
            EmbeddedOptions::in_memory().with_clock(clock.clone()),
            StoreOptions {
                max_retries: 0,
                clock: clock.clone(),
                ..StoreOptions::default()
            },
        );
        (c, clock)
    }

    fn uri(&self, name: &str) -> String {
        format!("file:{name}?vfs=fdb&store={}", self.id)
    }

    fn open(&self, name: &str) -> Connection {
        open_uri(&self.uri(name), OpenFlags::empty()).unwrap_or_else(|e| panic!("open {name}: {e}"))
    }
}

impl Drop for Custom {
    fn drop(&mut self) {
        vfs::registry::unregister_store(self.id);
    }
}

/// Opens `uri` read-write (plus `extra` flags) with `journal_mode=DELETE`,
/// as `Store::open` does.
fn open_uri(uri: &str, extra: OpenFlags) -> rusqlite::Result<Connection> {
    let _ = vfs::register_linked();
    let c = Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | extra,
    )?;
    c.execute_batch("PRAGMA journal_mode=DELETE")?;
    Ok(c)
}

fn code(r: &rusqlite::Result<()>) -> String {
    match r {
        Ok(()) => "OK".into(),
        Err(e) => match e.sqlite_error() {
            Some(s) => format!("{:?} (extended {})", s.code, s.extended_code),
            None => e.to_string(),
        },
    }
}

// ------------------------------------------------------------ defect 5

/// BEGIN; INSERT; the store's clock moves past the 5 s window so the
/// commit fails with the retryable 1007; then `COMMIT` again, as SQLite's
/// documentation suggests after SQLITE_BUSY. What another connection sees
/// must agree with what the COMMITs said.
fn retried_commit(pragmas: &str) {
    let (s, clock) = Custom::too_old_at_commit();
    let name = support::name("retried-commit");
    let a = s.open(&name);
    a.execute_batch(pragmas).unwrap_or_else(|e| panic!("{e}"));
    a.execute_batch("CREATE TABLE t(x)")
        .unwrap_or_else(|e| panic!("{e}"));
    a.execute_batch("BEGIN; INSERT INTO t VALUES (1);")
        .unwrap_or_else(|e| panic!("{e}"));
    clock.advance_secs(6);
    let first = a.execute_batch("COMMIT");
    let second = a.execute_batch("COMMIT");
    let third = a.execute_batch("COMMIT");
    let rows = scalar::<i64>(&s.open(&name), "SELECT count(*) FROM t");
    let acknowledged = first.is_ok() || second.is_ok() || third.is_ok();
    eprintln!(
        "first COMMIT: {}; second: {}; third: {}; rows seen by another connection: {rows}",
        code(&first),
        code(&second),
        code(&third)
    );
    assert!(
        first.is_err(),
        "precondition: the commit should have failed with 1007"
    );
    assert_eq!(
        acknowledged,
        rows == 1,
        "a COMMIT said OK, yet another connection sees {rows} rows (or the reverse)"
    );
    // SQLite rolled the transaction back: the connection is usable.
    assert!(a.is_autocommit(), "the failed transaction is still open");
    a.execute_batch("INSERT INTO t VALUES (2)")
        .unwrap_or_else(|e| panic!("after the failed commit: {e}"));
    assert_eq!(
        scalar::<i64>(&s.open(&name), "SELECT count(*) FROM t WHERE x = 2"),
        1
    );
}

#[test]
fn retryable_error_at_commit_rolls_back() {
    retried_commit("");
}

#[test]
fn retryable_error_at_commit_rolls_back_with_synchronous_off() {
    retried_commit("PRAGMA synchronous=OFF");
}

#[test]
fn retryable_error_at_commit_rolls_back_with_memory_journal() {
    retried_commit("PRAGMA journal_mode=MEMORY");
}

#[test]
fn retryable_error_at_commit_rolls_back_without_journal() {
    retried_commit("PRAGMA journal_mode=OFF");
}

/// The same across two attached databases (the group commit at the
/// super-journal's deletion).
#[test]
fn retryable_error_at_group_commit_rolls_back() {
    let (s, clock) = Custom::too_old_at_commit();
    let n1 = support::name("retried-group-a");
    let n2 = support::name("retried-group-b");
    let a = s.open(&n1);
    a.execute("ATTACH ?1 AS b", [s.uri(&n2)])
        .unwrap_or_else(|e| panic!("{e}"));
    a.execute_batch("CREATE TABLE main.t(x); CREATE TABLE b.t(x);")
        .unwrap_or_else(|e| panic!("{e}"));
    a.execute_batch("BEGIN; INSERT INTO main.t VALUES (1); INSERT INTO b.t VALUES (1);")
        .unwrap_or_else(|e| panic!("{e}"));
    clock.advance_secs(6);
    let first = a.execute_batch("COMMIT");
    let second = a.execute_batch("COMMIT");
    let rows1 = scalar::<i64>(&s.open(&n1), "SELECT count(*) FROM t");
    let rows2 = scalar::<i64>(&s.open(&n2), "SELECT count(*) FROM t");
    eprintln!(
        "first COMMIT: {}; second: {}; rows: {rows1} and {rows2}",
        code(&first),
        code(&second)
    );
    assert!(
        first.is_err(),
        "precondition: the commit should have failed"
    );
    let acknowledged = first.is_ok() || second.is_ok();
    assert_eq!(rows1, rows2, "not atomic across the databases");
    assert_eq!(
        acknowledged,
        rows1 == 1,
        "a COMMIT said OK, yet the rows are {rows1}/{rows2} (or the reverse)"
    );
    assert!(a.is_autocommit(), "the failed transaction is still open");
}

/// Raw I/O methods: after a failed commit, a sync that restores nothing
/// (what a retried COMMIT sends) and writes of new content fail; a real
/// rollback (the original pages written back, then a sync) is accepted.
#[test]
fn doomed_file_never_acknowledges_a_commit() {
    use libsqlite3_sys as ffi;
    let store = support::store();
    let name = support::name("doomed-raw");
    let c = one_row_table(&store, &name);
    let (mut f, p1, p2) = exclusive_after_reading_two_pages(&raw_name(&store, &name));
    // Another connection changes page 2, which this transaction read.
    c.execute("INSERT INTO t VALUES (2)", [])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut new1 = p1.clone();
    new1[24] = new1[24].wrapping_add(1);
    let mut new2 = p2.clone();
    new2[4000] ^= 0xff;
    assert_eq!(f.write(&new2, 4096), ffi::SQLITE_OK);
    assert_eq!(f.write(&new1, 0), ffi::SQLITE_OK);
    assert_eq!(f.sync(), ffi::SQLITE_BUSY_SNAPSHOT, "the commit conflicts");
    // A retried commit: nothing new written, then a sync.
    let rc = f.sync();
    assert_ne!(
        rc,
        ffi::SQLITE_OK,
        "a sync of a doomed transaction that restores nothing said OK"
    );
    // New content written into the doomed transaction, then a sync.
    let wrc = f.write(&new2, 4096);
    let src = f.sync();
    assert!(
        wrc != ffi::SQLITE_OK || src != ffi::SQLITE_OK,
        "new pages written into a doomed transaction were acknowledged (write {wrc}, sync {src})"
    );
    // Growing the file is no rollback either.
    assert_eq!(f.truncate(10 * 4096), ffi::SQLITE_OK);
    assert_ne!(
        f.sync(),
        ffi::SQLITE_OK,
        "a sync after growing a doomed file said OK"
    );
    // Commit phase two of a doomed transaction fails.
    assert_ne!(
        f.commit_phase_two(),
        ffi::SQLITE_OK,
        "phase two of a doomed transaction said OK"
    );
    // The rollback SQLite really does: the originals back, then a sync.
    assert_eq!(f.write(&p2, 4096), ffi::SQLITE_OK);
    assert_eq!(f.write(&p1, 0), ffi::SQLITE_OK);
    assert_eq!(f.sync(), ffi::SQLITE_OK, "the rollback's sync");
    assert_eq!(f.unlock(ffi::SQLITE_LOCK_NONE), ffi::SQLITE_OK);
    drop(f);
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM t"), 2);
}

/// Raw I/O methods: pages written and synced without a new change counter
/// in page 1 (what SQLite would send if its idea of the counter ever
/// differed from the VFS's) are still a commit: the sync never says OK
/// with nothing written.
#[test]
fn a_commit_that_keeps_the_change_counter_is_committed() {
    use libsqlite3_sys as ffi;
    let store = support::store();
    let name = support::name("same-counter");
    let _c = one_row_table(&store, &name);
    let raw = raw_name(&store, &name);
    let (mut f, p1, p2) = exclusive_after_reading_two_pages(&raw);
    let mut new2 = p2.clone();
    new2[4000] ^= 0xff;
    assert_eq!(f.write(&new2, 4096), ffi::SQLITE_OK);
    assert_eq!(f.write(&p1, 0), ffi::SQLITE_OK);
    let rc = f.sync();
    assert_eq!(f.unlock(ffi::SQLITE_LOCK_NONE), ffi::SQLITE_OK);
    drop(f);
    let mut g = vfs::testing::RawFile::open(&raw).unwrap_or_else(|rc| panic!("open: {rc}"));
    assert_eq!(g.lock(ffi::SQLITE_LOCK_SHARED), ffi::SQLITE_OK);
    let mut now2 = vec![0u8; 4096];
    assert_eq!(g.read(&mut now2, 4096), ffi::SQLITE_OK);
    g.unlock(ffi::SQLITE_LOCK_NONE);
    eprintln!("sync: {rc}; page 2 changed in the store: {}", now2 == new2);
    if rc == ffi::SQLITE_OK {
        assert!(now2 == new2, "the sync said OK, and nothing was written");
    } else {
        assert!(now2 == p2);
    }
}

/// Database `name` of `store` with one table `t(x)` of one row (1).
fn one_row_table(store: &fdbvfs::Store, name: &str) -> Connection {
    let c = store.open(name).unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap_or_else(|e| panic!("{e}"));
    c
}

/// A raw handle on database file `raw` that read pages 1 and 2 under a
/// shared lock and then took the exclusive lock, as SQLite does before it
/// writes; with the two pages' bytes.
fn exclusive_after_reading_two_pages(raw: &[u8]) -> (vfs::testing::RawFile, Vec<u8>, Vec<u8>) {
    use libsqlite3_sys as ffi;
    let mut f = vfs::testing::RawFile::open(raw).unwrap_or_else(|rc| panic!("open: {rc}"));
    assert_eq!(f.lock(ffi::SQLITE_LOCK_SHARED), ffi::SQLITE_OK);
    let mut p1 = vec![0u8; 4096];
    let mut p2 = vec![0u8; 4096];
    assert_eq!(f.read(&mut p1, 0), ffi::SQLITE_OK);
    assert_eq!(f.read(&mut p2, 4096), ffi::SQLITE_OK);
    assert_eq!(f.lock(ffi::SQLITE_LOCK_RESERVED), ffi::SQLITE_OK);
    assert_eq!(f.lock(ffi::SQLITE_LOCK_EXCLUSIVE), ffi::SQLITE_OK);
    (f, p1, p2)
}

/// Database `name` of `store` whose table `t(v)` held the row 1 at the
/// returned version and holds 1 and 2 now.
fn one_then_two(store: &fdbvfs::Store, name: &str) -> (Connection, String) {
    let c = store.open(name).unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("CREATE TABLE t(v INT); INSERT INTO t VALUES (1);")
        .unwrap_or_else(|e| panic!("{e}"));
    let v: String = scalar(&c, "PRAGMA fdb_version");
    c.execute_batch("INSERT INTO t VALUES (2)")
        .unwrap_or_else(|e| panic!("{e}"));
    (c, v)
}

/// `name` plus `store=<id>` the way SQLite lays out a filename.
fn raw_name(store: &fdbvfs::Store, name: &str) -> Vec<u8> {
    let mut raw = name.as_bytes().to_vec();
    let uri = store.uri(name);
    raw.extend_from_slice(b"\0store\0");
    raw.extend_from_slice(uri.rsplit("store=").next().unwrap_or("0").as_bytes());
    raw.push(0);
    raw
}

// ------------------------------------------------------------ defect 9

fn last_error() -> String {
    vfs::take_last_error().unwrap_or_default()
}

#[test]
fn main_database_attached_again_is_refused() {
    let store = support::store();
    let name = support::name("attach-self");
    let c = store.open(&name).unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0);")
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = vfs::take_last_error();
    let r = c.execute("ATTACH ?1 AS again", [store.uri(&name)]);
    let msg = last_error();
    eprintln!("ATTACH of the main database: {r:?}; VFS message: {msg}");
    assert!(r.is_err(), "the main database was attached a second time");
    assert!(msg.contains("already open in this connection"), "{msg}");
    // The connection is unharmed.
    c.execute_batch("UPDATE t SET v = v + 1")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scalar::<i64>(&c, "SELECT v FROM t"), 1);
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM pragma_database_list"),
        1
    );
}

#[test]
fn database_attached_twice_is_refused() {
    let store = support::store();
    let name = support::name("attach-twice");
    let main = support::name("attach-twice-main");
    let c = store.open(&main).unwrap_or_else(|e| panic!("{e}"));
    c.execute("ATTACH ?1 AS a", [store.uri(&name)])
        .unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("CREATE TABLE a.t(v INT); INSERT INTO a.t VALUES (0);")
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = vfs::take_last_error();
    let r = c.execute("ATTACH ?1 AS b", [store.uri(&name)]);
    let msg = last_error();
    eprintln!("second ATTACH: {r:?}; VFS message: {msg}");
    if r.is_ok() {
        // What it led to before the fix: two handles of one database in
        // one transaction.
        let w =
            c.execute_batch("BEGIN; UPDATE a.t SET v = v + 1; UPDATE b.t SET v = v + 10; COMMIT;");
        let v = scalar::<i64>(
            &store.open(&name).unwrap_or_else(|e| panic!("{e}")),
            "SELECT v FROM t",
        );
        panic!("the database was attached twice; a transaction writing both: {w:?}, value now {v}");
    }
    assert!(msg.contains("already open in this connection"), "{msg}");
    // A different database attaches fine, and the first stays usable.
    c.execute(
        "ATTACH ?1 AS other",
        [store.uri(&support::name("attach-other"))],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("UPDATE a.t SET v = v + 1")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scalar::<i64>(&c, "SELECT v FROM a.t"), 1);
}

/// A read-only snapshot of the same database may be attached: it never
/// writes.
#[test]
fn time_travel_attach_of_the_same_database_is_fine() {
    let store = support::store();
    let name = support::name("attach-at");
    let (c, v) = one_then_two(&store, &name);
    c.execute(
        "ATTACH ?1 AS old",
        [format!("{}&version={v}", store.uri(&name))],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM old.t"), 1);
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM main.t"), 2);
}

// ------------------------------------------------------------ defect 10

fn open_err(uri: &str) -> (Option<rusqlite::Error>, String) {
    let _ = vfs::register_linked();
    let _ = vfs::take_last_error();
    let r = open_uri(uri, OpenFlags::empty());
    (r.err(), last_error())
}

#[test]
fn cache_shared_immutable_and_nolock_are_refused() {
    let store = support::store();
    let name = support::name("uri-flags");
    store
        .open(&name)
        .and_then(|c| Ok(c.execute_batch("CREATE TABLE t(x)")?))
        .unwrap_or_else(|e| panic!("{e}"));
    for (param, word) in [
        ("cache=shared", "cache"),
        ("immutable=1", "immutable"),
        ("immutable=yes", "immutable"),
        ("nolock=1", "nolock"),
        ("nolock=true", "nolock"),
    ] {
        let (e, msg) = open_err(&format!("{}&{param}", store.uri(&name)));
        eprintln!("{param}: {e:?}; {msg}");
        assert!(e.is_some(), "{param} was accepted");
        assert!(msg.contains(word), "{param}: {msg}");
    }
    for param in ["cache=private", "immutable=0", "nolock=0", "nolock=off"] {
        let (e, msg) = open_err(&format!("{}&{param}", store.uri(&name)));
        assert!(e.is_none(), "{param} refused: {msg}");
    }
}

/// SQLITE_OPEN_SHAREDCACHE is invisible to a VFS; SQLite then shares a
/// cache between connections whose files have the same full pathname.
/// Two stores with a database of the same name must never share one.
#[test]
fn shared_cache_never_mixes_stores() {
    let s1 = support::store();
    let s2 = support::store();
    let name = support::name("same-name");
    for (s, v) in [(&s1, 1), (&s2, 2)] {
        let c = s.open(&name).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch(&format!(
            "CREATE TABLE t(v INT); INSERT INTO t VALUES ({v});"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let shared = OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    let c1 = open_uri(&s1.uri(&name), shared).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scalar::<i64>(&c1, "SELECT v FROM t"), 1);
    let c2 = open_uri(&s2.uri(&name), shared).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scalar::<i64>(&c2, "SELECT v FROM t"),
        2,
        "a connection to the second store read the first store's rows"
    );
    // Writes go to the right store too.
    c2.execute_batch("INSERT INTO t VALUES (20)")
        .unwrap_or_else(|e| panic!("{e}"));
    let fresh1 = s1.open(&name).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scalar::<i64>(&fresh1, "SELECT count(*) FROM t"), 1);
    drop(c1);
}

/// The same for a time-travel connection and a current one.
#[test]
fn shared_cache_never_mixes_snapshots() {
    let store = support::store();
    let name = support::name("same-snapshot");
    let (_c, v) = one_then_two(&store, &name);
    let shared = OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    let now = open_uri(&store.uri(&name), shared).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scalar::<i64>(&now, "SELECT count(*) FROM t"), 2);
    let old = Connection::open_with_flags(
        format!("{}&version={v}", store.uri(&name)),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | shared,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scalar::<i64>(&old, "SELECT count(*) FROM t"),
        1,
        "the time-travel connection read the current database"
    );
    drop(now);
}

/// Journals and super-journals still work with the new full pathnames: a
/// rollback restores, and a commit across attached databases is atomic.
#[test]
fn journals_work_with_unique_pathnames() {
    let store = support::store();
    let n1 = support::name("paths-a");
    let n2 = support::name("paths-b");
    let c = store.open(&n1).unwrap_or_else(|e| panic!("{e}"));
    c.execute("ATTACH ?1 AS b", [store.uri(&n2)])
        .unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch(
        "CREATE TABLE main.t(x); CREATE TABLE b.t(x);
         BEGIN; INSERT INTO main.t VALUES (1); INSERT INTO b.t VALUES (1); ROLLBACK;
         BEGIN; INSERT INTO main.t VALUES (2); INSERT INTO b.t VALUES (2); COMMIT;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let file: String = scalar(
        &c,
        "SELECT file FROM pragma_database_list WHERE name = 'main'",
    );
    assert!(file.ends_with(&n1), "{file}");
    for n in [&n1, &n2] {
        let o = store.open(n).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scalar::<i64>(&o, "SELECT count(*) FROM t"), 1);
        assert_eq!(scalar::<i64>(&o, "SELECT sum(x) FROM t"), 2);
    }
}

// ------------------------------------------------------------ defect 7

/// Connection A keeps its read lock (an open statement) across a commit,
/// then writes again: its chained BEGIN must notice B's commit that landed
/// in the same FDB batch as A's (same version, later batch order), or A's
/// write, built on its cached page, overwrites B's.
#[test]
fn chained_begin_sees_a_commit_of_the_same_batch() {
    let s = Custom::new(
        EmbeddedOptions::in_memory().with_faults(Faults {
            batch_join_probability: 1.0,
            ..Faults::default()
        }),
        StoreOptions::default(),
    );
    let name = support::name("same-batch");
    let setup = s.open(&name);
    // One row per page: the two rows live on different leaf pages.
    setup
        .execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB);
             INSERT INTO t VALUES (1, 0, zeroblob(3000)), (2, 0, zeroblob(3000));",
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let a = s.open(&name);
    let b = s.open(&name);
    let mut hold = a
        .prepare("SELECT id FROM t")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rows = hold.query([]).unwrap_or_else(|e| panic!("{e}"));
    let _ = rows.next().unwrap_or_else(|e| panic!("{e}"));
    // A's page cache now holds both rows.
    assert_eq!(scalar::<i64>(&a, "SELECT sum(v) FROM t"), 0);
    // B reads before A commits.
    b.execute_batch("BEGIN").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scalar::<i64>(&b, "SELECT v FROM t WHERE id = 2"), 0);
    a.execute_batch("UPDATE t SET v = v + 1 WHERE id = 1")
        .unwrap_or_else(|e| panic!("{e}"));
    let joins = s.kv.model_counts().batch_joins;
    b.execute_batch("UPDATE t SET v = v + 10 WHERE id = 2; COMMIT;")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        s.kv.model_counts().batch_joins > joins,
        "precondition: B's commit joined A's version"
    );
    let r = a.execute_batch("UPDATE t SET v = v + 1 WHERE id = 2");
    drop(rows);
    drop(hold);
    let v2 = scalar::<i64>(&s.open(&name), "SELECT v FROM t WHERE id = 2");
    eprintln!("A's chained write: {}; row 2 is now {v2}", code(&r));
    match r {
        Ok(()) => assert_eq!(v2, 11, "A's write overwrote B's commit"),
        Err(_) => assert_eq!(v2, 10),
    }
}

/// A transaction over databases of two stores commits one store after the
/// other; when the second fails, SQLite rolls back although the first
/// store committed. A write later in the same read-lock hold must not be
/// built on SQLite's rolled-back cache of the first database.
#[test]
fn no_chained_write_after_a_half_committed_multi_store_transaction() {
    let s1 = support::store();
    let (s2, clock) = Custom::too_old_at_commit();
    let n1 = support::name("half-a");
    let n2 = support::name("half-b");
    let c = s1.open(&n1).unwrap_or_else(|e| panic!("{e}"));
    c.execute("ATTACH ?1 AS b", [s2.uri(&n2)])
        .unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch(
        "CREATE TABLE main.t(v INT); INSERT INTO main.t VALUES (0);
         CREATE TABLE b.t(v INT); INSERT INTO b.t VALUES (0);",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut hold = c
        .prepare("SELECT v FROM main.t")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rows = hold.query([]).unwrap_or_else(|e| panic!("{e}"));
    let _ = rows.next().unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("BEGIN; UPDATE main.t SET v = v + 1; UPDATE b.t SET v = v + 1;")
        .unwrap_or_else(|e| panic!("{e}"));
    clock.advance_secs(6);
    let commit = c.execute_batch("COMMIT");
    let committed_here = scalar::<i64>(
        &s1.open(&n1).unwrap_or_else(|e| panic!("{e}")),
        "SELECT v FROM t",
    );
    eprintln!(
        "COMMIT: {}; first store now {committed_here}",
        code(&commit)
    );
    assert!(commit.is_err(), "precondition: the second store failed");
    assert_eq!(committed_here, 1, "precondition: the first store committed");
    let r = c.execute_batch("UPDATE main.t SET v = v + 10");
    drop(rows);
    drop(hold);
    let v = scalar::<i64>(
        &s1.open(&n1).unwrap_or_else(|e| panic!("{e}")),
        "SELECT v FROM t",
    );
    eprintln!("write in the same hold: {}; first store now {v}", code(&r));
    match r {
        Ok(()) => assert_eq!(v, 11, "the write was built on the rolled-back cache"),
        Err(_) => assert_eq!(v, 1),
    }
}
