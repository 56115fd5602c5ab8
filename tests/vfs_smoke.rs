mod common;

#[test]
fn create_insert_read_back() -> Result<(), fdbvfs::Error> {
    let store = common::store();
    let n = common::name("smoke");
    let conn = store.open(&n)?;
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'), ('b');",
    )?;
    let c2 = store.open(&n)?;
    let k: i64 = c2.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
    assert_eq!(k, 2);
    let ic: String = c2.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(ic, "ok");
    Ok(())
}
