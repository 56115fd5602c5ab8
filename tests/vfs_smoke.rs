mod support;
use support::{assert_integrity, scalar};

#[test]
fn create_insert_read_back() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let n = support::name("smoke");
    let conn = store.open(&n)?;
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'), ('b');",
    )?;
    let c2 = store.open(&n)?;
    let k: i64 = scalar(&c2, "SELECT count(*) FROM t");
    assert_eq!(k, 2);
    assert_integrity(&c2);
    Ok(())
}

#[test]
fn vacuum_shrinks_and_stays_consistent() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let n = support::name("vacuum");
    let conn = store.open(&n)?;
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, pad BLOB);
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 500)
         INSERT INTO t SELECT i, randomblob(1000) FROM s;
         DELETE FROM t WHERE id > 10;",
    )?;
    let before: i64 = scalar(&conn, "PRAGMA page_count");
    conn.execute_batch("VACUUM")?;
    let c2 = store.open(&n)?;
    let after: i64 = scalar(&c2, "PRAGMA page_count");
    assert!(after < before, "{after} < {before}");
    assert_integrity(&c2);
    let k: i64 = scalar(&c2, "SELECT count(*) FROM t");
    assert_eq!(k, 10);
    // The store holds no pages past the new end.
    let db = store.page_store().open(&n)?;
    let mut t = db.begin()?;
    assert_eq!(t.page_count(), after as u64);
    // VACUUM into another page size: the store keeps its page size, the
    // file bytes are what SQLite wrote, in both directions.
    for size in [8192i64, 1024] {
        c2.execute_batch(&format!("PRAGMA page_size={size}; VACUUM;"))?;
        let c3 = store.open(&n)?;
        let got: i64 = scalar(&c3, "PRAGMA page_size");
        assert_eq!(got, size);
        assert_integrity(&c3);
        c3.execute("INSERT INTO t VALUES (NULL, randomblob(5000))", [])?;
        let k: i64 = scalar(&c3, "SELECT count(*) FROM t");
        assert!(k >= 11);
    }
    Ok(())
}
