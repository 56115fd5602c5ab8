//! A cold point read fetches the pages on its path and no more: page 1,
//! which every transaction reads first, followed by page 2 (the root of the
//! first table created) is no sequential scan, so it must not widen the
//! read into a 32-page prefetch (the `cold_point_read` bench read 35 pages
//! from the store for 4, two thirds of its instructions).

mod support;

use fdbvfs::Store;
use support::scalar;

#[test]
fn cold_point_read_in_a_table_rooted_at_page_2_fetches_only_its_path() {
    let store = Store::in_memory().expect("store");
    let conn = store.open("cold_point").expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB)")
        .expect("create");
    support::insert_rows(&conn, 1, 20_000, 100, 5_000);
    let root: i64 = scalar(&conn, "SELECT rootpage FROM sqlite_schema WHERE name = 't'");
    assert_eq!(root, 2, "the table's root is the page after page 1");
    let depth: i64 = scalar(
        &conn,
        "SELECT max(length(path) - length(replace(path, '/', ''))) FROM dbstat WHERE name = 't'",
    );
    let pages: i64 = scalar(&conn, "SELECT count(*) FROM dbstat WHERE name = 't'");
    assert!(pages > 100 && depth >= 1, "{pages} pages, depth {depth}");

    for id in [1, 7_919, 20_000] {
        store.page_store().cache().clear();
        let before = store.page_store().stats().cache;
        let v: i64 = conn
            .query_row("SELECT v FROM t WHERE id = ?1", [id], |r| r.get(0))
            .expect("point read");
        assert_eq!(v, id);
        let fetched = store.page_store().stats().cache.misses - before.misses;
        // Page 1, then one page per level: the root, interior pages, the
        // leaf (depth counts the levels below the root).
        let path = 1 + (depth as u64 + 1);
        assert!(
            fetched <= path,
            "row {id}: {fetched} pages fetched from the store for a path of {path}"
        );
    }
}
