//! Round-trip budgets (DESIGN.md §7), as deterministic counter tests.
//!
//! Every budget is measured as a delta of the backend's counters
//! ([`pagestore::kv::KvMetrics`]: read versions, reads, commits) around SQL
//! statements on an in-memory embedded store, which counts exactly the
//! round trips FoundationDB would see. Nothing here looks at a clock.
//!
//! * BEGIN costs at most 2 round trips: the read version, and one read of
//!   the change log since this process last looked.
//! * A read-only transaction on a warm cache then reads 0 pages from the store.
//! * A write transaction under 1 MB costs exactly 1 commit, and
//!   BEGIN … UPDATE … COMMIT on a warm cache at most 3 round trips in all.
//! * A cold scan of a table of N pages costs at most N/32 + 2 read round
//!   trips (prefetch of 32 pages per batched read), N/32 rounded up to whole
//!   round trips, BEGIN's change-log read included: one read loads the
//!   database's view, one reads page 1, then ⌈(N-1)/32⌉ batches.

mod support;

use fdbvfs::Store;
use pagestore::kv::KvMetrics;
use rusqlite::Connection;
use support::{scalar, scalar_with};

const ROWS: i64 = 5_000;

fn metrics(store: &Store) -> KvMetrics {
    store.page_store().kv().metrics()
}

fn cache_misses(store: &Store) -> u64 {
    store.page_store().stats().cache.misses
}

/// Runs `f` and returns the counter deltas it caused.
fn measure<T>(store: &Store, f: impl FnOnce() -> T) -> (T, KvMetrics) {
    let before = metrics(store);
    let out = f();
    (out, metrics(store).since(&before))
}

fn show(what: &str, m: &KvMetrics) {
    eprintln!(
        "{what}: read_versions={} reads={} commits={} round_trips={}",
        m.read_versions,
        m.reads,
        m.commits,
        m.round_trips()
    );
}

/// A store with table `t` of `ROWS` rows (~100 bytes each), filled in
/// transactions of 500 rows (each under 1 MB: pages stored inline).
fn fixture(name: &str) -> (Store, Connection) {
    let store = Store::in_memory().expect("store");
    let conn = store.open(name).expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB)")
        .expect("create");
    fill(&conn, 1, ROWS, 100);
    (store, conn)
}

/// Rows `from..=to` with `pad` bytes of padding, 500 rows per commit.
fn fill(conn: &Connection, from: i64, to: i64, pad: usize) {
    support::insert_rows(conn, from, to, pad, 500);
}

fn point_read(conn: &Connection, id: i64) -> i64 {
    scalar_with(conn, "SELECT v FROM t WHERE id = ?1", [id])
}

/// Warms the process cache with every page of `t` (and the schema).
fn warm(conn: &Connection) {
    let _: i64 = scalar(conn, "SELECT sum(length(pad)) FROM t");
}

#[test]
fn begin_costs_at_most_two_round_trips() {
    let (store, conn) = fixture("budget_begin");
    warm(&conn);
    // Another connection commits, so this BEGIN has a change-log entry to
    // read (the expensive case).
    let other = store.open("budget_begin").expect("open");
    other
        .execute("UPDATE t SET v = v + 1 WHERE id = 7", [])
        .expect("update");
    let (_, m) = measure(&store, || {
        conn.execute_batch("BEGIN").expect("begin");
        // A deferred BEGIN takes its snapshot at the first read.
        point_read(&conn, 7)
    });
    conn.execute_batch("COMMIT").expect("commit");
    show("BEGIN + first warm read", &m);
    assert!(m.read_versions <= 1, "{m:?}");
    assert!(m.round_trips() <= 2, "BEGIN cost {m:?}");
    assert_eq!(m.commits, 0);

    // Nothing changed since: still at most the read version and one read.
    let (_, m) = measure(&store, || {
        conn.execute_batch("BEGIN").expect("begin");
        point_read(&conn, 8)
    });
    conn.execute_batch("COMMIT").expect("commit");
    show("BEGIN (no change since) + first warm read", &m);
    assert!(m.round_trips() <= 2, "BEGIN cost {m:?}");
}

#[test]
fn warm_read_only_transaction_reads_no_pages() {
    let (store, conn) = fixture("budget_warm_read");
    warm(&conn);
    for round in 0..3 {
        let misses = cache_misses(&store);
        let (_, m) = measure(&store, || {
            conn.execute_batch("BEGIN").expect("begin");
            for id in [1, 17, 999, 2_500, ROWS] {
                point_read(&conn, id);
            }
            let n: i64 = scalar(&conn, "SELECT count(*) FROM t WHERE id BETWEEN 100 AND 200");
            assert_eq!(n, 101);
            conn.execute_batch("COMMIT").expect("commit");
        });
        show(&format!("warm read-only transaction #{round}"), &m);
        assert_eq!(
            cache_misses(&store),
            misses,
            "pages read from the store by a warm read-only transaction"
        );
        // What remains is BEGIN's budget: no page reads on top of it.
        assert!(m.round_trips() <= 2, "{m:?}");
        assert!(m.reads <= 1, "{m:?}");
        assert_eq!(m.commits, 0, "a read-only transaction commits nothing");
    }
}

#[test]
fn small_write_transaction_is_one_commit() {
    let (store, conn) = fixture("budget_write");
    warm(&conn);
    for round in 0..3i64 {
        let (_, m) = measure(&store, || {
            conn.execute_batch("BEGIN").expect("begin");
            conn.execute("UPDATE t SET v = v + 1 WHERE id = ?1", [100 + round])
                .expect("update");
            conn.execute_batch("COMMIT").expect("commit");
        });
        show(&format!("BEGIN; UPDATE; COMMIT #{round}"), &m);
        assert_eq!(m.commits, 1, "{m:?}");
        assert!(
            m.round_trips() <= 3,
            "BEGIN…UPDATE…COMMIT on a warm cache: GRV, log read, commit; got {m:?}"
        );
    }
    // A bigger one, still under 1 MB: ~600 KB of new rows.
    let (_, m) = measure(&store, || {
        conn.execute_batch("BEGIN").expect("begin");
        fill(&conn, ROWS + 1, ROWS + 300, 2_000);
        conn.execute_batch("COMMIT").expect("commit");
    });
    show("600 KB insert transaction", &m);
    assert_eq!(m.commits, 1, "{m:?}");
    assert!(m.max_commit_bytes < 1 << 20, "{m:?}");
}

/// (pages of the database, read round trips of a cold full scan)
fn cold_scan(store: &Store, conn: &Connection) -> (u64, KvMetrics) {
    let pages: i64 = scalar(conn, "PRAGMA page_count");
    store.page_store().cache().clear();
    let (sum, m) = measure(store, || {
        scalar::<i64>(conn, "SELECT sum(length(pad)) FROM t")
    });
    assert!(sum > 0);
    (pages as u64, m)
}

#[test]
fn cold_scan_is_prefetched() {
    let (store, conn) = fixture("budget_scan");
    let (n, m) = cold_scan(&store, &conn);
    show(&format!("cold scan of {n} pages"), &m);
    let budget = n.div_ceil(32) + 2;
    assert!(n > 100, "the table should span many pages: {n}");
    assert!(
        m.reads <= budget,
        "cold scan of {n} pages: {} reads, budget {budget} ({m:?})",
        m.reads
    );
}

/// The same, for a table written by one transaction larger than the inline
/// commit limit (pages uploaded ahead, then referenced by the commit): the
/// page index entries and the uploaded content arrive in the same round
/// trip (pagestore guesses the upload token from the change log and the
/// pages read before), so the budget is the same.
#[test]
fn cold_scan_of_a_large_commit_is_prefetched() {
    let store = Store::in_memory().expect("store");
    let conn = store.open("budget_scan_large").expect("open");
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB)")
        .expect("create");
    conn.execute_batch("BEGIN").expect("begin");
    fill(&conn, 1, ROWS, 400);
    conn.execute_batch("COMMIT").expect("commit");
    let (n, m) = cold_scan(&store, &conn);
    show(&format!("cold scan of {n} pages (one large commit)"), &m);
    let budget = n.div_ceil(32) + 2;
    assert!(
        m.reads <= budget,
        "cold scan of {n} pages: {} reads, budget {budget} ({m:?})",
        m.reads
    );
}
