//! Transactions held open far beyond FDB's 5 s MVCC window (an injected
//! clock moves 10 s forward).

mod support;

use fdbvfs::Store;
use pagestore::clock::ManualClock;
use rusqlite::{Connection, ErrorCode};
use support::{scalar, scalar_with};

fn setup() -> Result<(Store, std::sync::Arc<ManualClock>, String), fdbvfs::Error> {
    support::init_tracing();
    let clock = ManualClock::new();
    let store = Store::builder().in_memory().clock(clock.clone()).build()?;
    let name = support::name("long");
    let c = store.open(&name)?;
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, n INTEGER, pad BLOB);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 100)
         INSERT INTO t SELECT i, 1000, zeroblob(500) FROM s;",
    )?;
    Ok((store, clock, name))
}

fn n_of(c: &Connection, id: i64) -> i64 {
    scalar_with(c, "SELECT n FROM t WHERE id = ?1", [id])
}

#[test]
fn read_transaction_outlives_the_mvcc_window() -> Result<(), fdbvfs::Error> {
    let (store, clock, name) = setup()?;
    let reader = store.open(&name)?;
    let writer = store.open(&name)?;
    reader.execute_batch("BEGIN")?;
    assert_eq!(n_of(&reader, 1), 1000);
    writer.execute("UPDATE t SET n = 1 WHERE id = 1", [])?;
    writer.execute("UPDATE t SET n = 2 WHERE id = 100", [])?;
    clock.advance_secs(10);
    // Pages read before and pages read for the first time now: both from the snapshot.
    assert_eq!(n_of(&reader, 1), 1000);
    assert_eq!(n_of(&reader, 100), 1000);
    let sum: i64 = scalar(&reader, "SELECT sum(n) FROM t");
    assert_eq!(sum, 100 * 1000);
    reader.execute_batch("COMMIT")?;
    assert_eq!(n_of(&reader, 100), 2);
    Ok(())
}

#[test]
fn old_write_transaction_commits_when_nothing_it_read_changed() -> Result<(), fdbvfs::Error> {
    let (store, clock, name) = setup()?;
    let a = store.open(&name)?;
    let b = store.open(&name)?;
    a.execute_batch("BEGIN")?;
    let seen = n_of(&a, 1);
    b.execute("UPDATE t SET n = 7 WHERE id = 100", [])?; // another page
    clock.advance_secs(10);
    a.execute("UPDATE t SET n = ?1 WHERE id = 1", [seen + 1])?;
    a.execute_batch("COMMIT")?;
    let c = store.open(&name)?;
    assert_eq!((n_of(&c, 1), n_of(&c, 100)), (1001, 7));
    Ok(())
}

#[test]
fn old_write_transaction_aborts_when_its_reads_changed() -> Result<(), fdbvfs::Error> {
    let (store, clock, name) = setup()?;
    let a = store.open(&name)?;
    let b = store.open(&name)?;
    a.execute_batch("BEGIN")?;
    let seen = n_of(&a, 1);
    b.execute("UPDATE t SET n = 5 WHERE id = 1", [])?;
    clock.advance_secs(10);
    a.execute("UPDATE t SET n = ?1 WHERE id = 1", [seen + 1])?;
    let e = a
        .execute_batch("COMMIT")
        .err()
        .and_then(|e| e.sqlite_error_code());
    assert_eq!(e, Some(ErrorCode::DatabaseBusy));
    assert_eq!(n_of(&store.open(&name)?, 1), 5);
    Ok(())
}
