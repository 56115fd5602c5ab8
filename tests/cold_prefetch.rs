//! Cold reads prefetched by the B-tree's shape (issue 15, item 6), as
//! deterministic round-trip counts.
//!
//! Sequential read-ahead only helps when a B-tree's pages lie in page-number
//! order. An index filled in random key order, or a table whose inserts
//! were interleaved with another's, has its leaves scattered: each leaf
//! would be one store round trip. Interior pages name their children, so
//! once a scan moves from one child to the next, the following children are
//! fetched in batches of [`vfs::file::PREFETCH_PAGES`]: a cold scan costs
//! about depth + pages/32 round trips, not one per page.
//!
//! Budget of each cold query (store reads, BEGIN's change-log read
//! included): one read loads the database's view, one reads page 1, one
//! per level of the tree on the way down, one more per level before the
//! scan is recognised (the second sibling read), then ⌈pages/32⌉ batches.

mod support;

use fdbvfs::Store;
use pagestore::kv::KvMetrics;
use rusqlite::Connection;
use support::{assert_integrity, scalar, scalar_with};
use vfs::file::PREFETCH_PAGES;

/// Reads allowed on top of depth + ⌈pages/32⌉: the view, page 1, and the
/// first sibling read at each of up to 3 levels before a scan shows.
const SLACK: u64 = 5;

fn metrics(store: &Store) -> KvMetrics {
    store.page_store().kv().metrics()
}

/// Pages of B-tree `name` and its depth (levels, 1 for a lone root), from
/// SQLite's dbstat.
fn shape(conn: &Connection, name: &str) -> (u64, u64) {
    let pages: i64 = scalar_with(conn, "SELECT count(*) FROM dbstat WHERE name = ?1", [name]);
    let depth: i64 = scalar_with(
        conn,
        "SELECT max(length(path) - length(replace(path, '/', ''))) FROM dbstat WHERE name = ?1",
        [name],
    );
    (pages as u64, depth as u64)
}

/// Runs `sql` (one integer result) with the process cache dropped first,
/// and returns the result and the store counters it cost.
fn cold<T: rusqlite::types::FromSql>(
    store: &Store,
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> (T, KvMetrics) {
    store.page_store().cache().clear();
    let before = metrics(store);
    let out = scalar_with(conn, sql, params);
    (out, metrics(store).since(&before))
}

fn check(what: &str, m: &KvMetrics, pages: u64, depth: u64) {
    let budget = depth + pages.div_ceil(PREFETCH_PAGES as u64) + SLACK;
    eprintln!(
        "{what}: {pages} pages, depth {depth}: reads={} read_versions={} (budget {budget})",
        m.reads, m.read_versions
    );
    assert!(
        m.reads <= budget,
        "{what}: {} store reads for {pages} pages of depth {depth}, budget {budget} ({m:?})",
        m.reads
    );
    assert_eq!(m.commits, 0, "{m:?}");
}

/// An index filled in random key order: its leaves lie all over the file,
/// so a range scan over it reads pages in no page-number order.
#[test]
fn cold_indexed_range_scan_is_prefetched_by_shape() {
    const ROWS: i64 = 30_000;
    let store = Store::in_memory().expect("store");
    let conn = store.open("cold_prefetch_index").expect("open");
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, pad BLOB); CREATE INDEX t_k ON t(k)",
    )
    .expect("create");
    // k is a permutation of the ids (7919 is prime to ROWS), as 20-digit
    // text so that index pages hold ~100 entries.
    let mut i = 1;
    while i <= ROWS {
        let end = (i + 999).min(ROWS);
        conn.execute(
            "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2)
             INSERT INTO t SELECT i, printf('%020d', (i * 7919) % ?3), randomblob(20) FROM s",
            [i, end, ROWS],
        )
        .expect("insert");
        i = end + 1;
    }
    let (pages, depth) = shape(&conn, "t_k");
    assert!(
        pages > 4 * PREFETCH_PAGES as u64,
        "index too small: {pages}"
    );
    assert!(depth >= 2, "index should have interior pages: {depth}");

    // The middle ~60% of the keys: the scan starts inside the tree.
    let (lo, hi) = (format!("{:020}", ROWS / 5), format!("{:020}", ROWS * 4 / 5));
    let sql = "SELECT count(*) FROM t INDEXED BY t_k WHERE k BETWEEN ?1 AND ?2";
    let (n, m): (i64, _) = cold(&store, &conn, sql, [&lo, &hi]);
    assert_eq!(n, ROWS * 3 / 5 + 1);
    check("cold indexed range scan", &m, pages, depth);

    // Warm: the same answer from the cache, nothing read.
    let before = metrics(&store);
    let again: i64 = scalar_with(&conn, sql, [&lo, &hi]);
    assert_eq!(again, n);
    assert!(metrics(&store).since(&before).reads <= 1);

    // Backwards: SQLite walks each interior page's children from the last.
    store.page_store().cache().clear();
    let before = metrics(&store);
    let keys = descending_keys(&conn, &lo, &hi);
    let m = metrics(&store).since(&before);
    assert_eq!(keys.len() as i64, n);
    assert!(keys.windows(2).all(|w| w[0] > w[1]), "not descending");
    check("cold descending range scan", &m, pages, depth);

    // A lookup is not a scan: no batch, one read per level as before (plus
    // the view and page 1).
    let (id, m): (i64, _) = cold(
        &store,
        &conn,
        "SELECT id FROM t INDEXED BY t_k WHERE k = ?1",
        [format!("{:020}", 7919)],
    );
    assert_eq!(id, 1);
    eprintln!("cold point lookup: depth {depth}: reads={}", m.reads);
    assert!(m.reads <= depth + 2, "cold point lookup: {m:?}");
    assert_integrity(&conn);
}

/// Keys of `t_k` in `lo..=hi`, read in descending order.
fn descending_keys(conn: &Connection, lo: &str, hi: &str) -> Vec<String> {
    let sql = "SELECT k FROM t INDEXED BY t_k WHERE k BETWEEN ?1 AND ?2 ORDER BY k DESC";
    let mut st = conn.prepare(sql).expect("prepare");
    let rows = st
        .query_map([lo, hi], |r| r.get::<_, String>(0))
        .expect("query");
    rows.collect::<rusqlite::Result<_>>().expect("rows")
}

/// Two tables filled by interleaved inserts in random key order: each
/// one's leaves split all over the file and alternate with the other's, so
/// no page-number run exists to read ahead.
#[test]
fn cold_scan_of_an_interleaved_table_is_prefetched_by_shape() {
    const ROWS: i64 = 8_000;
    let store = Store::in_memory().expect("store");
    let conn = store.open("cold_prefetch_interleaved").expect("open");
    conn.execute_batch(
        "CREATE TABLE a(id INTEGER PRIMARY KEY, pad BLOB);
         CREATE TABLE b(id INTEGER PRIMARY KEY, pad BLOB);",
    )
    .expect("create");
    // Small transactions: their pages are stored inline (a commit over
    // 1 MB uploads them, and reading those costs a second round trip per
    // batch, which is not what this test measures).
    const PER_COMMIT: i64 = 25;
    for chunk in 0..ROWS / PER_COMMIT {
        conn.execute_batch("BEGIN").expect("begin");
        for i in chunk * PER_COMMIT + 1..=(chunk + 1) * PER_COMMIT {
            // A permutation of 1..=ROWS (7919 is prime to ROWS).
            let id = (i * 7919) % ROWS + 1;
            conn.execute("INSERT INTO a VALUES (?1, randomblob(100))", [id])
                .expect("insert a");
            conn.execute("INSERT INTO b VALUES (?1, randomblob(100))", [id])
                .expect("insert b");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    let (pages, depth) = shape(&conn, "a");
    assert!(
        pages > 4 * PREFETCH_PAGES as u64,
        "table too small: {pages}"
    );

    let (sum, m): (i64, _) = cold(&store, &conn, "SELECT sum(length(pad)) FROM a", []);
    assert_eq!(sum, ROWS * 100);
    check("cold scan of an interleaved table", &m, pages, depth);
    let n: i64 = scalar(&conn, "SELECT count(*) FROM b");
    assert_eq!(n, ROWS);
    assert_integrity(&conn);
}

/// A table written in rowid order lies in page-number order: sequential
/// read-ahead's growing windows (32, 64, … pages up to
/// [`vfs::file::PREFETCH_MAX_BYTES`]) read it in fewer round trips than
/// batches of 32 would, and reading by shape must not take that away.
#[test]
fn cold_scan_of_a_sequential_table_keeps_growing_windows() {
    const ROWS: i64 = 20_000;
    let store = Store::in_memory().expect("store");
    let conn = store.open("cold_prefetch_sequential").expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB)")
        .expect("create");
    support::insert_rows(&conn, 1, ROWS, 200, 500);
    let (pages, depth) = shape(&conn, "t");
    let (sum, m): (i64, _) = cold(&store, &conn, "SELECT sum(length(pad)) FROM t", []);
    assert_eq!(sum, ROWS * 200);
    // Windows doubling from 32 pages cover the table in k batches, with
    // 32·(2^k − 1) ≥ pages.
    let batches = (pages / PREFETCH_PAGES as u64 + 1)
        .next_power_of_two()
        .ilog2() as u64;
    let budget = batches + depth + SLACK;
    eprintln!(
        "cold scan of a sequential table: {pages} pages, depth {depth}: reads={} (budget {budget})",
        m.reads
    );
    assert!(
        pages > 16 * PREFETCH_PAGES as u64,
        "table too small: {pages}"
    );
    assert!(
        m.reads <= budget,
        "{} reads, budget {budget} ({m:?})",
        m.reads
    );
}
