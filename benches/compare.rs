//! fdbvfs side by side with plain SQLite: point reads (warm and cold), a
//! cold full scan, and insert transactions of 1 and 10,000 rows.
//!
//! Every group has one benchmark per target: `sqlite` (a local file,
//! `journal_mode=WAL`, `synchronous=NORMAL`), `fdbvfs-rt0ms` and
//! `fdbvfs-rt0.5ms` (the embedded store in a temporary directory, with 0 and
//! 0.5 ms injected per store round trip), and `fdbvfs-fdb` when built with
//! feature `fdb` and `FDB_CLUSTER_FILE` is set. The warm point-read groups
//! also have `fdbvfs-stale10ms-rt0ms` and `fdbvfs-stale10ms-rt0.5ms`: the
//! same store, connections with a 10 ms staleness bound
//! (`PRAGMA fdb_staleness`). The insert groups also have
//! `fdbvfs-normal-rt0ms`: the embedded store at `synchronous=NORMAL`, as
//! the SQLite side runs (acknowledged before the disk flush).
//!
//! ```text
//! cargo bench --bench compare -- --quick
//! cargo run --release --example bench_table   # table, CSV and chart
//! ```

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{fixture, targets, Rng, Target, ROWS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rusqlite::Connection;

const DB: &str = "bench";

/// The fixture in every target (built once per store), warm.
fn setup(dir: &std::path::Path) -> Vec<(Target, Connection)> {
    let mut out: Vec<(Target, Connection)> = Vec::new();
    for t in targets(dir) {
        let conn = t.open(DB);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap_or(0);
        if rows != ROWS {
            drop(fixture(&t, DB));
        }
        // A connection that did not write the fixture (a writer's SQLite
        // connection keeps state of its own writes).
        drop(conn);
        let conn = t.open(DB);
        scan(&conn);
        out.push((t, conn));
    }
    out
}

fn scan(conn: &Connection) -> i64 {
    conn.prepare_cached("SELECT sum(length(pad)) FROM t")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .expect("scan")
}

fn exec(conn: &Connection, sql: &str) {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// One read-only transaction of `n` point reads.
fn point_reads(conn: &Connection, rng: &mut Rng, n: usize) -> i64 {
    exec(conn, "BEGIN");
    let mut sum = 0;
    {
        let mut s = conn
            .prepare_cached("SELECT v FROM t WHERE id = ?1")
            .expect("prepare");
        for _ in 0..n {
            sum += s
                .query_row([rng.row()], |r| r.get::<_, i64>(0))
                .expect("point read");
        }
    }
    exec(conn, "COMMIT");
    sum
}

/// `iters` runs of `f`, each after making the target cold: fdbvfs's page
/// cache emptied; for plain SQLite a fresh connection (statement prepared
/// before the clock starts). Only `f` is timed.
fn cold(
    t: &Target,
    conn: &Connection,
    iters: u64,
    sql: &str,
    mut f: impl FnMut(&Connection),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let fresh;
        let c = if t.is_sqlite() {
            fresh = t.open(DB);
            fresh.prepare_cached(sql).expect("prepare");
            &fresh
        } else {
            t.make_cold();
            conn
        };
        let start = Instant::now();
        f(c);
        total += start.elapsed();
    }
    total
}

/// Benchmark group `name`: `n` random point reads per iteration on a warm
/// cache (the table scanned first), rows chosen by a generator seeded with
/// `seed`.
fn warm_point_reads(
    c: &mut Criterion,
    conns: &[(Target, Connection)],
    name: &str,
    n: usize,
    seed: u64,
) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(n as u64));
    for (t, conn) in conns {
        t.prepare();
        scan(conn);
        let mut rng = Rng::new(seed);
        g.bench_function(t.label(), |b| {
            b.iter(|| black_box(point_reads(conn, &mut rng, n)))
        });
        t.unprepare();
    }
    g.finish();
}

/// Connections with a 10 ms staleness bound to the embedded targets'
/// store, at 0 and 0.5 ms per round trip (the fixture is already there).
fn bounded(dir: &std::path::Path) -> Vec<(Target, Connection)> {
    let bound = fdbvfs::Staleness::from_duration(Duration::from_millis(10)).expect("bound");
    let store = fdbvfs::Store::builder()
        .dir(dir.join("fdbvfs"))
        .staleness(bound)
        .build()
        .expect("store");
    [("rt0ms", Duration::ZERO), ("rt0.5ms", common::ROUND_TRIP)]
        .into_iter()
        .map(|(rt, latency)| {
            let t = Target::Fdbvfs {
                label: format!("fdbvfs-stale10ms-{rt}"),
                store: store.clone(),
                faults: Some(fdbvfs::Faults {
                    latency,
                    ..fdbvfs::Faults::default()
                }),
            };
            let conn = t.open(DB);
            scan(&conn);
            (t, conn)
        })
        .collect()
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conns = setup(dir.path());
    let plain = conns.len();
    conns.extend(bounded(dir.path()));

    warm_point_reads(c, &conns, "warm_point_read", 1, 1);
    warm_point_reads(c, &conns, "warm_point_read_x100", 100, 2);
    conns.truncate(plain);

    let mut g = c.benchmark_group("cold_point_read");
    g.sample_size(20);
    for (t, conn) in &conns {
        t.prepare();
        let mut rng = Rng::new(3);
        g.bench_function(t.label(), |b| {
            b.iter_custom(|iters| {
                cold(t, conn, iters, "SELECT v FROM t WHERE id = ?1", |c| {
                    black_box(point_reads(c, &mut rng, 1));
                })
            })
        });
        t.unprepare();
    }
    g.finish();

    let mut g = c.benchmark_group("cold_full_scan");
    g.sample_size(10);
    for (t, conn) in &conns {
        t.prepare();
        g.bench_function(t.label(), |b| {
            b.iter_custom(|iters| {
                cold(t, conn, iters, "SELECT sum(length(pad)) FROM t", |c| {
                    black_box(scan(c));
                })
            })
        });
        t.unprepare();
        if let Some(budget) = t.cache_bytes() {
            let (now, peak) = common::rss();
            println!(
                "{}: cache budget {} MiB, RSS {} MiB, peak RSS {} MiB (whole bench process)",
                t.label(),
                budget >> 20,
                now >> 20,
                peak >> 20
            );
        }
    }
    g.finish();
}

fn writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conns = Vec::new();
    for t in targets(dir.path()) {
        let conn = t.open(DB);
        conn.execute_batch(
            "DROP TABLE IF EXISTS w1; DROP TABLE IF EXISTS w10k;
             CREATE TABLE w1(id INTEGER PRIMARY KEY, v INT, pad BLOB);
             CREATE TABLE w10k(id INTEGER PRIMARY KEY, v INT, pad BLOB);",
        )
        .expect("create");
        conns.push((t, conn));
    }
    // The embedded store with SQLite's settings on the other side:
    // `synchronous=NORMAL` commits are acknowledged before the disk flush.
    let normal = Target::Fdbvfs {
        label: "fdbvfs-normal-rt0ms".into(),
        store: fdbvfs::Store::embedded(dir.path().join("fdbvfs")).expect("store"),
        faults: Some(fdbvfs::Faults::default()),
    };
    let conn = normal.open(DB);
    conn.execute_batch("PRAGMA synchronous=NORMAL")
        .expect("pragma");
    conns.push((normal, conn));

    let mut g = c.benchmark_group("insert_1_row_txn");
    for (t, conn) in &conns {
        t.prepare();
        let mut i = 0i64;
        g.bench_function(t.label(), |b| {
            b.iter(|| {
                i += 1;
                exec(conn, "BEGIN");
                conn.prepare_cached("INSERT INTO w1(v, pad) VALUES (?1, randomblob(100))")
                    .and_then(|mut s| s.execute([i]))
                    .expect("insert");
                exec(conn, "COMMIT");
            })
        });
        t.unprepare();
    }
    g.finish();

    let mut g = c.benchmark_group("insert_10k_rows_txn");
    g.sample_size(10);
    g.throughput(Throughput::Elements(10_000));
    for (t, conn) in &conns {
        t.prepare();
        let mut i = 0i64;
        g.bench_function(t.label(), |b| {
            b.iter(|| {
                exec(conn, "BEGIN");
                {
                    let mut s = conn
                        .prepare_cached("INSERT INTO w10k(v, pad) VALUES (?1, randomblob(100))")
                        .expect("prepare");
                    for _ in 0..10_000 {
                        i += 1;
                        s.execute([i]).expect("insert");
                    }
                }
                exec(conn, "COMMIT");
            })
        });
        t.unprepare();
    }
    g.finish();
}

criterion_group!(benches, reads, writes);
criterion_main!(benches);
