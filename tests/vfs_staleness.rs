//! Bounded staleness through SQL: the `staleness=` URI parameter, the
//! `Store` option, `PRAGMA fdb_staleness` and `PRAGMA fdb_snapshot_age`,
//! and what a bound buys (no round trip per transaction while the view is
//! fresh) and keeps (a connection sees its own and its process's commits).
//! Staleness against other processes, the bound itself on a manual clock
//! and conflicts of stale writers are tested in pagestore's
//! `tests/staleness.rs`; the history checker runs with a bound in
//! `history_check.rs` (`mixed_workload_bounded_staleness`).

mod support;

use std::time::Duration;

use fdbvfs::{Staleness, Store};
use pagestore::MAX_STALENESS;
use support::{name, scalar, scalar_with};

fn bounded_store(bound: Duration) -> Store {
    Store::builder()
        .in_memory()
        .staleness(Staleness::from_duration(bound).unwrap())
        .build()
        .unwrap()
}

#[test]
fn the_bound_is_set_by_uri_option_and_pragma() {
    let store = bounded_store(Duration::from_millis(10));
    let db = name("stale_set");
    let conn = store.open(&db).unwrap();
    assert_eq!(scalar::<String>(&conn, "PRAGMA fdb_staleness"), "10ms");
    assert_eq!(
        scalar::<String>(&conn, "PRAGMA fdb_staleness = '250us'"),
        "250us"
    );
    assert_eq!(scalar::<String>(&conn, "PRAGMA fdb_staleness"), "250us");
    assert_eq!(
        scalar::<String>(&conn, "PRAGMA fdb_staleness = strict"),
        "strict"
    );
    let e = conn
        .execute_batch("PRAGMA fdb_staleness = '10 years'")
        .unwrap_err();
    assert!(e.to_string().contains("staleness"), "{e}");
    let e = conn
        .execute_batch("PRAGMA fdb_staleness = '9s'")
        .unwrap_err();
    assert!(e.to_string().contains("above"), "{e}");
    // The URI parameter, on a connection of a strict store.
    let plain = Store::in_memory().unwrap();
    let uri = format!("{}&staleness=3ms", plain.uri(&db));
    let (c, err) = support::open_uri(&uri);
    let c = c.unwrap_or_else(|e| panic!("{e}: {err:?}"));
    assert_eq!(scalar::<String>(&c, "PRAGMA fdb_staleness"), "3ms");
    let (c, err) = support::open_uri(&format!("{}&staleness=soon", plain.uri(&db)));
    assert!(c.is_err());
    assert!(err.unwrap_or_default().contains("staleness"));
}

#[test]
fn fresh_bounded_transactions_cost_no_round_trip() {
    // The longest bound: the refresher's period is far beyond this test.
    let store = bounded_store(MAX_STALENESS);
    let conn = store.open(&name("stale_rt")).unwrap();
    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB)")
        .unwrap();
    support::insert_rows(&conn, 1, 2_000, 20, 500);
    let _: i64 = scalar(&conn, "SELECT count(*) FROM t");
    let kv = store.page_store().kv().clone();
    let m0 = kv.metrics();
    for id in 1..=200i64 {
        let got: i64 = scalar_with(&conn, "SELECT id FROM t WHERE id = ?1", [id]);
        assert_eq!(got, id);
    }
    let m = kv.metrics().since(&m0);
    assert_eq!(m.round_trips(), 0, "{m:?}");
    let age: i64 = scalar::<String>(&conn, "PRAGMA fdb_snapshot_age")
        .parse()
        .unwrap();
    assert!(
        (0..=MAX_STALENESS.as_micros() as i64).contains(&age),
        "{age}"
    );
    // Strict, the same reads cost a read version each (at most two round
    // trips per transaction, tests/budget_round_trips.rs).
    conn.execute_batch("PRAGMA fdb_staleness = strict").unwrap();
    let m0 = kv.metrics();
    for id in 1..=10i64 {
        let _: i64 = scalar_with(&conn, "SELECT id FROM t WHERE id = ?1", [id]);
    }
    let m = kv.metrics().since(&m0);
    assert!(m.read_versions >= 10 && m.round_trips() <= 20, "{m:?}");
}

#[test]
fn a_bounded_connection_sees_its_own_and_its_process_commits() {
    let store = bounded_store(MAX_STALENESS);
    let db = name("stale_own");
    let a = store.open(&db).unwrap();
    let b = store.open(&db).unwrap();
    a.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0)")
        .unwrap();
    for i in 1..=50i64 {
        let (w, r) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        w.execute("UPDATE t SET v = ?1 WHERE k = 1", [i]).unwrap();
        assert_eq!(scalar::<i64>(w, "SELECT v FROM t WHERE k = 1"), i);
        assert_eq!(scalar::<i64>(r, "SELECT v FROM t WHERE k = 1"), i);
    }
    support::assert_integrity(&a);
}

#[test]
fn bounded_writers_stay_serializable() {
    // Concurrent increments from bounded connections: every acknowledged
    // increment is in the total (a stale read that wrote would lose one).
    let store = bounded_store(Duration::from_millis(2));
    let db = name("stale_incr");
    let setup = store.open(&db).unwrap();
    setup
        .execute_batch("CREATE TABLE c(k INTEGER PRIMARY KEY, n INT); INSERT INTO c VALUES (1, 0)")
        .unwrap();
    let acked: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                let db = db.clone();
                s.spawn(move || {
                    let mut conn = store.open(&db).unwrap();
                    let mut ok = 0u64;
                    for _ in 0..50 {
                        let r = fdbvfs::retry(&mut conn, |c| {
                            let n: i64 =
                                c.query_row("SELECT n FROM c WHERE k = 1", [], |r| r.get(0))?;
                            c.execute("UPDATE c SET n = ?1 WHERE k = 1", [n + 1])?;
                            Ok(())
                        });
                        if r.is_ok() {
                            ok += 1;
                        }
                    }
                    ok
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let n: i64 = scalar(&setup, "SELECT n FROM c WHERE k = 1");
    assert_eq!(n as u64, acked);
}

/// Attached databases begin at the snapshot of the first one a
/// transaction locks: a stale one could predate a commit the connection
/// made to another of them, so with attached databases of the store a
/// bounded connection begins strictly (its own commits stay visible).
#[test]
fn attached_databases_see_the_connections_own_commits() {
    let store = bounded_store(MAX_STALENESS);
    let (a, b) = (name("stale_att_a"), name("stale_att_b"));
    let conn = store.open(&a).unwrap();
    let other = store.open(&b).unwrap();
    other
        .execute_batch("CREATE TABLE u(k INTEGER PRIMARY KEY, v INT); INSERT INTO u VALUES (1, 0)")
        .unwrap();
    drop(other);
    conn.execute_batch("CREATE TABLE t(k INTEGER PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0)")
        .unwrap();
    conn.execute(&format!("ATTACH DATABASE '{}' AS b", store.uri(&b)), [])
        .unwrap();
    for i in 1..=20i64 {
        // A transaction over main only: main's view is confirmed now.
        let _: i64 = scalar(&conn, "SELECT v FROM main.t WHERE k = 1");
        conn.execute("UPDATE b.u SET v = ?1 WHERE k = 1", [i])
            .unwrap();
        let (x, y): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT v FROM main.t WHERE k = 1), (SELECT v FROM b.u WHERE k = 1)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((x, y), (0, i), "step {i}: own commit to b not seen");
    }
}
