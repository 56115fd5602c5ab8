//! Concurrency through the fdb VFS: real multi-writer commits.

mod support;

use fdbvfs::Store;
use rusqlite::{Connection, ErrorCode};
use support::{assert_integrity, scalar, scalar_with};

fn setup(store: &Store, rows: i64) -> Result<String, fdbvfs::Error> {
    let name = support::name("conc");
    let c = store.open(&name)?;
    // ~500-byte rows: a 4 KiB page holds about 7, so row 1 and row `rows`
    // live on different leaf pages.
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, pad BLOB)")?;
    let tx = c.unchecked_transaction()?;
    for i in 1..=rows {
        tx.execute("INSERT INTO t VALUES (?1, 1000, zeroblob(500))", [i])?;
    }
    tx.commit()?;
    Ok(name)
}

fn n_of(c: &Connection, id: i64) -> i64 {
    scalar_with(c, "SELECT n FROM t WHERE id = ?1", [id])
}

fn extended_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code),
        _ => None,
    }
}

#[test]
fn writers_on_different_pages_both_commit() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = setup(&store, 200)?;
    let a = store.open(&name)?;
    let b = store.open(&name)?;
    a.execute_batch("BEGIN")?;
    b.execute_batch("BEGIN")?;
    a.execute("UPDATE t SET n = n + 1 WHERE id = 1", [])?;
    b.execute("UPDATE t SET n = n + 2 WHERE id = 200", [])?;
    let conflicts_before = store.page_store().stats().conflicts;
    a.execute_batch("COMMIT")?;
    b.execute_batch("COMMIT")?; // no retry needed
    assert_eq!(store.page_store().stats().conflicts, conflicts_before);
    let c = store.open(&name)?;
    assert_eq!(n_of(&c, 1), 1001);
    assert_eq!(n_of(&c, 200), 1002);
    Ok(())
}

#[test]
fn writers_on_the_same_row_one_gets_busy_snapshot_then_retry_wins() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = setup(&store, 50)?;
    let a = store.open(&name)?;
    let mut b = store.open(&name)?;
    a.execute_batch("BEGIN")?;
    b.execute_batch("BEGIN")?;
    a.execute("UPDATE t SET n = n + 1 WHERE id = 7", [])?;
    b.execute("UPDATE t SET n = n + 10 WHERE id = 7", [])?;
    a.execute_batch("COMMIT")?;
    let err = match b.execute_batch("COMMIT") {
        Ok(()) => panic!("the second writer of the same row must conflict"),
        Err(e) => e,
    };
    assert!(fdbvfs::is_busy(&err), "{err}");
    assert_eq!(
        extended_code(&err),
        Some(libsqlite3_sys::SQLITE_BUSY_SNAPSHOT)
    );
    // SQLite rolled the transaction back; nothing of it was written.
    assert!(b.is_autocommit());
    assert_eq!(n_of(&b, 7), 1001);
    // Re-run it (what `retry` does) and both updates are present.
    fdbvfs::retry(&mut b, |tx| {
        tx.execute("UPDATE t SET n = n + 10 WHERE id = 7", [])
    })?;
    assert_eq!(n_of(&store.open(&name)?, 7), 1011);
    assert_integrity(&b);
    Ok(())
}

#[test]
fn autocommit_conflict_is_busy_and_writes_nothing() -> Result<(), fdbvfs::Error> {
    // A conflict detected at the commit of a single (autocommit) statement.
    let store = support::store();
    let name = setup(&store, 20)?;
    let a = store.open(&name)?;
    let b = store.open(&name)?;
    // b reads row 3 inside a transaction, a changes it, b writes based on it.
    b.execute_batch("BEGIN")?;
    let seen = n_of(&b, 3);
    a.execute("UPDATE t SET n = 5 WHERE id = 3", [])?;
    b.execute("UPDATE t SET n = ?1 WHERE id = 4", [seen + 1])?;
    let err = b
        .execute_batch("COMMIT")
        .err()
        .map(|e| e.sqlite_error_code());
    assert_eq!(err, Some(Some(ErrorCode::DatabaseBusy)));
    let c = store.open(&name)?;
    assert_eq!(n_of(&c, 3), 5);
    assert_eq!(n_of(&c, 4), 1000, "the failed transaction wrote nothing");
    Ok(())
}

#[test]
fn new_transactions_see_every_earlier_commit() -> Result<(), fdbvfs::Error> {
    // Strict serializability on one store, and SQLite's own page cache must
    // never serve a stale page across transactions (the header trick).
    let store = support::store();
    let name = setup(&store, 30)?;
    let writer = store.open(&name)?;
    let reader = store.open(&name)?;
    for i in 0..50i64 {
        writer.execute("UPDATE t SET n = ?1 WHERE id = (?1 % 30) + 1", [2000 + i])?;
        assert_eq!(n_of(&reader, (2000 + i) % 30 + 1), 2000 + i);
    }
    Ok(())
}

#[test]
fn read_transaction_keeps_its_snapshot() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = setup(&store, 30)?;
    let writer = store.open(&name)?;
    let reader = store.open(&name)?;
    reader.execute_batch("BEGIN")?;
    assert_eq!(n_of(&reader, 1), 1000);
    writer.execute("UPDATE t SET n = 1 WHERE id = 1", [])?;
    writer.execute("UPDATE t SET n = 2 WHERE id = 30", [])?;
    assert_eq!(n_of(&reader, 1), 1000);
    assert_eq!(
        n_of(&reader, 30),
        1000,
        "pages first read after the commit come from the snapshot too"
    );
    reader.execute_batch("COMMIT")?; // read-only transactions never abort
    assert_eq!(n_of(&reader, 30), 2);
    Ok(())
}

#[test]
fn threads_increment_without_lost_updates() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = setup(&store, 5)?;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let store = store.clone();
            let name = name.clone();
            std::thread::spawn(move || -> Result<(), fdbvfs::Error> {
                let mut c = store.open(&name)?;
                for _ in 0..25 {
                    fdbvfs::retry(&mut c, |tx| {
                        tx.execute("UPDATE t SET n = n + 1 WHERE id = 1", [])
                    })?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| fdbvfs::Error::Config("thread panicked".into()))??;
    }
    assert_eq!(n_of(&store.open(&name)?, 1), 1100);
    Ok(())
}

#[test]
fn fdb_pragmas() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = setup(&store, 3)?;
    let c = store.open(&name)?;
    let v1: String = scalar(&c, "PRAGMA fdb_version");
    c.execute("UPDATE t SET n = 1 WHERE id = 1", [])?;
    let v2: String = scalar(&c, "PRAGMA fdb_version");
    let (v1, v2): (u64, u64) = (v1.parse().unwrap_or(0), v2.parse().unwrap_or(0));
    assert!(v1 > 0 && v2 > v1, "{v1} {v2}");
    let stats: String = scalar(&c, "PRAGMA fdb_stats");
    assert!(
        stats.contains("cache_hits=") && stats.contains("round_trips="),
        "{stats}"
    );
    let size: String = scalar(&c, "PRAGMA fdb_cache_size = 1048576");
    assert_eq!(size, "1048576");
    let size: String = scalar(&c, "PRAGMA fdb_cache_size");
    assert_eq!(size, "1048576");
    // Time travel to v1: the update is not there, and writes are refused.
    let old = store.open_at(&name, fdbvfs::At::Version(fdbvfs::Version::new(v1)))?;
    assert_eq!(n_of(&old, 1), 1000);
    let e = old.execute("UPDATE t SET n = 3 WHERE id = 1", []).err();
    assert_eq!(
        e.and_then(|e| e.sqlite_error_code()),
        Some(ErrorCode::ReadOnly)
    );
    Ok(())
}

#[test]
fn sequential_scan_prefetches() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = setup(&store, 2000)?; // ~290 pages
                                     // A cold cache: a fresh process would have none.
    store.page_store().cache().clear();
    let c = store.open(&name)?;
    let before = store.page_store().stats().kv.reads;
    let sum: i64 = scalar(&c, "SELECT sum(n) FROM t");
    assert_eq!(sum, 2000 * 1000);
    let reads = store.page_store().stats().kv.reads - before;
    assert!(
        reads > 0 && reads < 40,
        "a cold scan of ~290 pages took {reads} store reads"
    );
    Ok(())
}

#[test]
fn writes_while_a_statement_keeps_the_read_lock() -> Result<(), fdbvfs::Error> {
    // A SELECT still stepping keeps SQLite's SHARED lock across several
    // autocommit writes of the same connection: each later write continues
    // from the previous commit (or fails with BUSY if someone else wrote).
    let store = support::store();
    let name = setup(&store, 40)?;
    let c = store.open(&name)?;
    let other = store.open(&name)?;
    {
        let mut stmt = c.prepare("SELECT id FROM t ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut seen = 0;
        while let Some(r) = rows.next()? {
            let id: i64 = r.get(0)?;
            seen += 1;
            if id <= 3 {
                c.execute("UPDATE t SET n = n + 1 WHERE id = ?1", [id + 10])?;
            }
            if id == 4 {
                // Another connection commits: the next write in this
                // lock hold must not overwrite it blindly.
                other.execute("UPDATE t SET n = 77 WHERE id = 20", [])?;
                let r = c.execute("UPDATE t SET n = n + 1 WHERE id = 20", []);
                assert_eq!(
                    r.err().and_then(|e| e.sqlite_error_code()),
                    Some(ErrorCode::DatabaseBusy)
                );
            }
        }
        assert_eq!(seen, 40);
    }
    let check = store.open(&name)?;
    assert_eq!(n_of(&check, 11), 1001);
    assert_eq!(n_of(&check, 12), 1001);
    assert_eq!(n_of(&check, 13), 1001);
    assert_eq!(n_of(&check, 20), 77);
    Ok(())
}
