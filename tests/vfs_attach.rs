//! Transactions over several attached fdb databases (issue 7, item 4):
//! one snapshot for every database of a SQL transaction, and one store
//! commit (all or none) for every database it wrote.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use fdbvfs::{Faults, Store, Version};
use pagestore::StoreStats;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::{Connection, ErrorCode};
use support::{assert_integrity, scalar, scalar_with};

/// `main` = database `a`, with `b` attached as `b`.
fn open_pair(store: &Store, a: &str, b: &str) -> Connection {
    let c = store.open(a).unwrap_or_else(|e| panic!("open {a}: {e}"));
    c.execute("ATTACH ?1 AS b", [store.uri(b)])
        .unwrap_or_else(|e| panic!("attach {b}: {e}"));
    c
}

/// A fresh store and the names of two databases `<tag>-a` and `<tag>-b`.
fn fresh_pair(tag: &str) -> (support::TestStore, String, String) {
    let name = |side: &str| support::name(&format!("{tag}-{side}"));
    (support::store(), name("a"), name("b"))
}

/// [`open_pair`] with both tables set up ([`setup`]).
fn set_up_pair(store: &Store, a: &str, b: &str) -> Connection {
    let c = open_pair(store, a, b);
    setup(&c);
    c
}

/// Adds 1 to row 1 of both databases in one SQL transaction of `c`;
/// returns the store's counters before and after it.
fn add_one_to_both(store: &Store, c: &Connection) -> (StoreStats, StoreStats) {
    let before = store.page_store().stats();
    c.execute_batch(
        "BEGIN;
         UPDATE main.t SET v = v + 1 WHERE id = 1;
         UPDATE b.t SET v = v + 1 WHERE id = 1;
         COMMIT;",
    )
    .unwrap_or_else(|e| panic!("transaction: {e}"));
    (before, store.page_store().stats())
}

/// Begins a transaction of `c` that writes 1000 into row 1 of both
/// databases.
fn write_both(c: &Connection) {
    c.execute_batch(
        "BEGIN;
         UPDATE main.t SET v = 1000 WHERE id = 1;
         UPDATE b.t SET v = 1000 WHERE id = 1;",
    )
    .expect("writes");
}

/// Another connection (`other`, on `b` alone) sets `b`'s row 1 to 7.
fn change_b_elsewhere(other: &Connection) {
    other
        .execute("UPDATE t SET v = 7 WHERE id = 1", [])
        .expect("concurrent update of b");
}

/// Row `id`'s `v` in `main.t` and in `b.t`, as `c` sees them.
fn row_values(c: &Connection, id: i64) -> (i64, i64) {
    let v = |db: &str| scalar_with(c, &format!("SELECT v FROM {db}.t WHERE id = ?1"), [id]);
    (v("main"), v("b"))
}

fn setup(c: &Connection) {
    c.execute_batch(
        "BEGIN;
         CREATE TABLE main.t(id INTEGER PRIMARY KEY, v INT);
         CREATE TABLE b.t(id INTEGER PRIMARY KEY, v INT);
         INSERT INTO main.t VALUES (1, 10), (2, 20);
         INSERT INTO b.t VALUES (1, 100), (2, 200);
         COMMIT;",
    )
    .unwrap_or_else(|e| panic!("setup: {e}"));
}

fn extended_code(e: &rusqlite::Error) -> Option<(ErrorCode, i32)> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some((f.code, f.extended_code)),
        _ => None,
    }
}

#[test]
fn attached_databases_use_a_journal_mode_with_a_super_journal() {
    let (store, a, b) = fresh_pair("jm");
    let c = open_pair(&store, &a, &b);
    assert_eq!(scalar::<String>(&c, "PRAGMA main.journal_mode"), "delete");
    assert_eq!(scalar::<String>(&c, "PRAGMA b.journal_mode"), "delete");
}

#[test]
fn a_transaction_over_two_databases_is_one_store_commit() {
    let (store, a, b) = fresh_pair("one");
    let c = set_up_pair(&store, &a, &b);
    // The setup transaction itself wrote both (tables created in one group).
    let fresh = open_pair(&store, &a, &b);
    assert_eq!(scalar::<i64>(&fresh, "SELECT sum(v) FROM main.t"), 30);
    assert_eq!(scalar::<i64>(&fresh, "SELECT sum(v) FROM b.t"), 300);

    let (before, after) = add_one_to_both(&store, &c);
    assert_eq!(
        after.kv.commits - before.kv.commits,
        1,
        "one store commit for both databases"
    );
    assert_eq!(after.commits - before.commits, 1);

    // One commit, one version: both databases report it.
    let va: u64 = scalar::<String>(&c, "PRAGMA main.fdb_version")
        .parse()
        .unwrap_or(0);
    let vb: u64 = scalar::<String>(&c, "PRAGMA b.fdb_version")
        .parse()
        .unwrap_or(1);
    assert_eq!(va, vb, "both databases committed at one version");
    // And the change logs of both databases show that version.
    let (da, db) = (
        store.page_store().open(&a).expect("open a"),
        store.page_store().open(&b).expect("open b"),
    );
    assert!(!da
        .changes_between(Version::new(va - 1), Version::new(va))
        .expect("log a")
        .is_empty());
    assert!(!db
        .changes_between(Version::new(vb - 1), Version::new(vb))
        .expect("log b")
        .is_empty());

    let fresh = open_pair(&store, &a, &b);
    assert_eq!(row_values(&fresh, 1), (11, 101));

    // ROLLBACK of a transaction over both leaves both untouched.
    c.execute_batch(
        "BEGIN;
         UPDATE main.t SET v = 0;
         UPDATE b.t SET v = 0;
         ROLLBACK;",
    )
    .unwrap_or_else(|e| panic!("rollback: {e}"));
    assert_eq!(scalar::<i64>(&fresh, "SELECT sum(v) FROM main.t"), 31);
    assert_eq!(scalar::<i64>(&fresh, "SELECT sum(v) FROM b.t"), 301);
    assert_eq!(fdbvfs_panics(), 0);
}

fn fdbvfs_panics() -> u64 {
    vfs::panics_caught()
}

#[test]
fn a_conflict_on_one_database_fails_the_whole_commit() {
    let (store, a, b) = fresh_pair("cf");
    let mut c = set_up_pair(&store, &a, &b);
    let other = store.open(&b).expect("open b alone");

    write_both(&c);
    // Another connection changes b's row meanwhile: only b conflicts.
    change_b_elsewhere(&other);
    let before = store.page_store().stats();
    let e = c
        .execute_batch("COMMIT")
        .expect_err("the commit must conflict");
    assert_eq!(
        extended_code(&e),
        Some((ErrorCode::DatabaseBusy, rusqlite::ffi::SQLITE_BUSY_SNAPSHOT)),
        "{e}"
    );
    assert!(fdbvfs::is_busy(&e));
    assert!(c.is_autocommit(), "SQLite rolled the transaction back");
    let after = store.page_store().stats();
    assert_eq!(after.commits, before.commits, "nothing committed");
    assert_eq!(after.conflicts - before.conflicts, 1);

    // main's write is not there (nor in this connection's cache).
    for conn in [&c, &open_pair(&store, &a, &b)] {
        assert_eq!(row_values(conn, 1), (10, 7));
        assert_integrity(conn);
    }

    // Re-running succeeds, both written.
    fdbvfs::retry(&mut c, |tx| {
        tx.execute("UPDATE main.t SET v = v + 5 WHERE id = 1", [])?;
        tx.execute("UPDATE b.t SET v = v + 5 WHERE id = 1", [])?;
        Ok(())
    })
    .expect("retry");
    let fresh = open_pair(&store, &a, &b);
    assert_eq!(row_values(&fresh, 1), (15, 12));
    assert_eq!(fdbvfs_panics(), 0);
}

/// A failed group commit while a read statement keeps both databases
/// locked: SQLite rolls each database back from its journal only if the
/// super-journal the journal names still exists, so the VFS must report it
/// until the rollback is over; otherwise SQLite's page cache (kept, since
/// the lock is held) would still show the rolled-back writes.
#[test]
fn a_failed_group_commit_is_rolled_back_from_the_journals() {
    let (store, a, b) = fresh_pair("pb");
    let c = set_up_pair(&store, &a, &b);
    let other = store.open(&b).expect("open b alone");
    write_both(&c);
    let mut pending = c
        .prepare("SELECT id FROM main.t UNION ALL SELECT id FROM b.t")
        .expect("prepare");
    let mut rows = pending.query([]).expect("query");
    assert!(rows.next().expect("step").is_some());
    change_b_elsewhere(&other);
    let e = c.execute_batch("COMMIT").expect_err("conflict");
    assert!(fdbvfs::is_busy(&e), "{e}");
    // Still inside the read transaction the pending statement holds: the
    // snapshot's values, not the rolled-back writes.
    assert_eq!(row_values(&c, 1), (10, 100));
    while rows.next().expect("step").is_some() {}
    drop(rows);
    drop(pending);
    assert_eq!(row_values(&c, 1), (10, 7));
    assert_integrity(&c);
}

/// TRUNCATE and PERSIST journals also carry the super-journal: the same
/// all-or-nothing commits.
#[test]
fn truncate_and_persist_journals_commit_atomically_too() {
    for mode in ["truncate", "persist"] {
        let (store, a, b) = fresh_pair("jt");
        let c = open_pair(&store, &a, &b);
        assert_eq!(
            scalar::<String>(&c, &format!("PRAGMA journal_mode={mode}")),
            mode
        );
        assert_eq!(scalar::<String>(&c, "PRAGMA b.journal_mode"), mode);
        setup(&c);
        let (before, after) = add_one_to_both(&store, &c);
        assert_eq!(after.kv.commits - before.kv.commits, 1, "{mode}");
        let other = store.open(&b).expect("open b alone");
        write_both(&c);
        change_b_elsewhere(&other);
        let e = c.execute_batch("COMMIT").expect_err("conflict");
        assert!(fdbvfs::is_busy(&e), "{mode}: {e}");
        let fresh = open_pair(&store, &a, &b);
        assert_eq!(row_values(&fresh, 1), (11, 7), "{mode}");
        assert_integrity(&c);
    }
}

#[test]
fn a_conflict_on_main_fails_the_write_to_the_attached_database_too() {
    let (store, a, b) = fresh_pair("cm");
    let c = set_up_pair(&store, &a, &b);
    let other = store.open(&a).expect("open a alone");
    c.execute_batch(
        "BEGIN;
         UPDATE b.t SET v = 1000 WHERE id = 2;
         UPDATE main.t SET v = 1000 WHERE id = 2;",
    )
    .expect("writes");
    other
        .execute("UPDATE t SET v = 8 WHERE id = 2", [])
        .expect("concurrent update of a");
    let e = c.execute_batch("COMMIT").expect_err("conflict");
    assert!(fdbvfs::is_busy(&e), "{e}");
    let fresh = open_pair(&store, &a, &b);
    assert_eq!(row_values(&fresh, 2), (8, 200));
}

#[test]
fn a_read_transaction_sees_one_snapshot_across_databases() {
    let (store, a, b) = fresh_pair("snap");
    let reader = open_pair(&store, &a, &b);
    let writer = open_pair(&store, &a, &b);
    setup(&writer);

    reader.execute_batch("BEGIN").expect("begin");
    // The transaction's snapshot is taken at its first read, of main.
    assert_eq!(
        scalar::<i64>(&reader, "SELECT v FROM main.t WHERE id = 1"),
        10
    );

    let before = store.page_store().stats();
    writer
        .execute_batch(
            "BEGIN;
             UPDATE main.t SET v = 11 WHERE id = 1;
             UPDATE b.t SET v = 101 WHERE id = 1;
             COMMIT;",
        )
        .expect("writer");
    assert_eq!(store.page_store().stats().kv.commits - before.kv.commits, 1);

    // b is read for the first time after the writer committed to both:
    // it must still show the state of the reader's snapshot.
    assert_eq!(
        scalar::<i64>(&reader, "SELECT v FROM b.t WHERE id = 1"),
        100
    );
    assert_eq!(
        scalar::<i64>(&reader, "SELECT v FROM main.t WHERE id = 1"),
        10
    );
    assert_eq!(
        scalar::<i64>(
            &reader,
            "SELECT (SELECT v FROM main.t WHERE id = 1) + (SELECT v FROM b.t WHERE id = 1)"
        ),
        110
    );
    let va: u64 = scalar::<String>(&reader, "PRAGMA main.fdb_version")
        .parse()
        .unwrap_or(0);
    let vb: u64 = scalar::<String>(&reader, "PRAGMA b.fdb_version")
        .parse()
        .unwrap_or(1);
    assert_eq!(va, vb, "one snapshot");
    reader.execute_batch("COMMIT").expect("commit");

    // The next transaction sees the write in both.
    assert_eq!(
        scalar::<i64>(&reader, "SELECT v FROM b.t WHERE id = 1"),
        101
    );
    assert_eq!(
        scalar::<i64>(&reader, "SELECT v FROM main.t WHERE id = 1"),
        11
    );
}

/// Write skew across databases: T1 reads main and writes b, T2 reads b and
/// writes main, both from one snapshot. Serializable execution lets only
/// one commit: a commit also validates the read sets of the databases the
/// transaction only read (`pagestore::commit_group_checked`).
#[test]
fn write_skew_across_databases_is_refused() {
    let (store, a, b) = fresh_pair("ws");
    let t1 = open_pair(&store, &a, &b);
    let t2 = open_pair(&store, &a, &b);
    setup(&t1);
    t1.execute_batch("BEGIN").expect("begin 1");
    t2.execute_batch("BEGIN").expect("begin 2");
    assert_eq!(scalar::<i64>(&t1, "SELECT v FROM main.t WHERE id = 1"), 10);
    assert_eq!(scalar::<i64>(&t2, "SELECT v FROM b.t WHERE id = 1"), 100);
    t1.execute("UPDATE b.t SET v = 0 WHERE id = 1", [])
        .expect("t1 writes b");
    t2.execute("UPDATE main.t SET v = 0 WHERE id = 1", [])
        .expect("t2 writes main");
    let r1 = t1.execute_batch("COMMIT");
    let r2 = t2.execute_batch("COMMIT");
    assert!(
        r1.is_err() || r2.is_err(),
        "both committed: not serializable across databases"
    );
}

#[test]
fn databases_of_different_stores_commit_per_store() {
    let s1 = support::store();
    let s2 = support::store();
    let (a, b) = (support::name("xs-a"), support::name("xs-b"));
    let c = s1.open(&a).expect("open a");
    c.execute("ATTACH ?1 AS b", [s2.uri(&b)]).expect("attach");
    setup(&c);
    c.execute_batch(
        "BEGIN;
         UPDATE main.t SET v = v + 1;
         UPDATE b.t SET v = v + 1;
         COMMIT;",
    )
    .expect("transaction over two stores");
    assert_eq!(
        scalar::<i64>(&s1.open(&a).expect("a"), "SELECT sum(v) FROM t"),
        32
    );
    assert_eq!(
        scalar::<i64>(&s2.open(&b).expect("b"), "SELECT sum(v) FROM t"),
        302
    );
}

// ---------------------------------------------------------------- bank

const ACCOUNTS: i64 = 100;
const SPLIT: i64 = 50; // ids below in main, the others in b
const INITIAL: i64 = 1_000;
const THREADS: usize = 8;
const TRANSFERS: usize = 150; // per thread

fn table(id: i64) -> &'static str {
    if id < SPLIT {
        "main.acct"
    } else {
        "b.acct"
    }
}

/// Accounts split over two attached databases; 8 threads, each with its own
/// connection, move money between random accounts (about half of the
/// transfers cross databases) under injected conflicts, unknown commit
/// results and latency. The combined total never changes and both
/// databases stay intact.
#[test]
fn cross_database_bank() {
    support::init_tracing();
    let store = Store::builder().in_memory().build().expect("store");
    let (a, b) = (support::name("bank-a"), support::name("bank-b"));
    {
        let c = open_pair(&store, &a, &b);
        c.execute_batch(
            "BEGIN;
             CREATE TABLE main.acct(id INTEGER PRIMARY KEY, bal INT NOT NULL);
             CREATE TABLE b.acct(id INTEGER PRIMARY KEY, bal INT NOT NULL);",
        )
        .expect("schema");
        for id in 0..ACCOUNTS {
            c.execute(
                &format!("INSERT INTO {} VALUES (?1, ?2)", table(id)),
                [id, INITIAL],
            )
            .expect("insert");
        }
        c.execute_batch("COMMIT").expect("commit schema");
    }
    store
        .set_faults(Faults {
            conflict_probability: 0.05,
            unknown_result_probability: 0.05,
            latency: Duration::from_micros(100),
            ..Faults::default()
        })
        .expect("faults");

    let done = Arc::new(AtomicU64::new(0));
    let crossed = Arc::new(AtomicU64::new(0));
    let uncertain = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            let (store, a, b) = (store.clone(), a.clone(), b.clone());
            let (done, crossed, uncertain, start) = (
                done.clone(),
                crossed.clone(),
                uncertain.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                let mut c = open_pair(&store, &a, &b);
                let mut rng = StdRng::seed_from_u64(0xBA2C + w as u64);
                start.wait();
                for _ in 0..TRANSFERS {
                    let from = rng.random_range(0..ACCOUNTS);
                    let mut to = rng.random_range(0..ACCOUNTS - 1);
                    if to >= from {
                        to += 1;
                    }
                    let amount = rng.random_range(1..=50i64);
                    let out = fdbvfs::retry(&mut c, |tx| {
                        let bal: i64 = tx.query_row(
                            &format!("SELECT bal FROM {} WHERE id = ?1", table(from)),
                            [from],
                            |r| r.get(0),
                        )?;
                        if bal < amount {
                            return Ok(false);
                        }
                        tx.execute(
                            &format!("UPDATE {} SET bal = bal - ?2 WHERE id = ?1", table(from)),
                            [from, amount],
                        )?;
                        tx.execute(
                            &format!("UPDATE {} SET bal = bal + ?2 WHERE id = ?1", table(to)),
                            [to, amount],
                        )?;
                        Ok(true)
                    });
                    match out {
                        Ok(moved) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            if moved && table(from) != table(to) {
                                crossed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // The store could not tell whether the commit
                        // landed (pagestore gave up recovering a 1021):
                        // either way it is all or nothing, which the
                        // final total checks.
                        Err(fdbvfs::Error::Sqlite(e))
                            if extended_code(&e)
                                .is_some_and(|(code, _)| code == ErrorCode::SystemIoFailure) =>
                        {
                            uncertain.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("worker {w}: transfer failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for h in workers {
        h.join().expect("worker panicked");
    }
    store.set_faults(Faults::default()).expect("clear faults");

    let c = open_pair(&store, &a, &b);
    let total_main = scalar::<i64>(&c, "SELECT sum(bal) FROM main.acct");
    let total_b = scalar::<i64>(&c, "SELECT sum(bal) FROM b.acct");
    let stats = store.page_store().stats();
    eprintln!(
        "cross-database bank: {} transfers done ({} across databases, {} uncertain), main {total_main}, b {total_b}, store conflicts {}, unknown results {}",
        done.load(Ordering::Relaxed),
        crossed.load(Ordering::Relaxed),
        uncertain.load(Ordering::Relaxed),
        stats.kv.conflicts,
        stats.kv.unknown_results,
    );
    assert_eq!(
        total_main + total_b,
        ACCOUNTS * INITIAL,
        "money created or lost"
    );
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM main.acct WHERE bal < 0"),
        0
    );
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM b.acct WHERE bal < 0"),
        0
    );
    assert_eq!(scalar::<i64>(&c, "SELECT count(*) FROM main.acct"), SPLIT);
    assert_eq!(
        scalar::<i64>(&c, "SELECT count(*) FROM b.acct"),
        ACCOUNTS - SPLIT
    );
    assert_integrity(&c);
    assert!(
        crossed.load(Ordering::Relaxed) > 50,
        "transfers across the databases must have happened"
    );
    assert!(
        stats.kv.conflicts > 0,
        "the faults must have caused conflicts"
    );
    assert_eq!(fdbvfs_panics(), 0);
}

/// With `journal_mode=MEMORY` SQLite uses no super-journal, so each
/// database commits alone at its own sync (not atomic: `b` can still fail
/// after `main` committed if another writer changes `b` in between). But
/// `main`'s commit validates what the transaction read in `b` (its pages
/// reach the VFS only at `b`'s own sync, so at `main`'s commit `b` is a
/// read-only sibling): a conflict on `b` already known then fails the
/// COMMIT before anything is written.
#[test]
fn with_memory_journals_each_database_commits_alone() {
    let (store, a, b) = fresh_pair("mem");
    let c = set_up_pair(&store, &a, &b);
    assert_eq!(scalar::<String>(&c, "PRAGMA journal_mode=MEMORY"), "memory");
    assert_eq!(scalar::<String>(&c, "PRAGMA b.journal_mode"), "memory");
    let other = store.open(&b).expect("open b alone");
    write_both(&c);
    change_b_elsewhere(&other);
    let e = c.execute_batch("COMMIT").expect_err("b conflicts");
    assert!(fdbvfs::is_busy(&e), "{e}");
    let fresh = open_pair(&store, &a, &b);
    assert_eq!(
        row_values(&fresh, 1),
        (10, 7),
        "main's commit validated b's read set and refused"
    );
    assert_integrity(&c);
}
