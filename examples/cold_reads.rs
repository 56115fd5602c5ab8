//! Profiling harness for cold reads, as the `cold_point_read` and
//! `cold_full_scan` groups of `benches/compare.rs` measure them: the
//! benches' 100k-row table, then `--iters N` cold runs, each made cold
//! outside the measured function (fdbvfs: the store's page cache and views
//! emptied, the connection kept; plain SQLite: a fresh connection with the
//! statement prepared), so that instruction counts per run are stable
//! (wall time on a shared machine is not).
//!
//! ```sh
//! cargo build --release --example cold_reads
//! valgrind --tool=callgrind --toggle-collect='*cold_reads::measure*' \
//!     target/release/examples/cold_reads --mode scan --iters 5
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -120
//! ```
//!
//! Modes: `scan` (`SELECT sum(length(pad)) FROM t`), `point` (one read-only
//! transaction of one point read). The store is embedded in a temporary
//! directory, as in the benches (`--mem`: in memory). `--target sqlite`
//! runs plain SQLite (a temporary file, WAL, synchronous=NORMAL).
//! `--latency US` injects that much per store round trip.

use std::hint::black_box;
use std::time::{Duration, Instant};

use fdbvfs::Store;
use rusqlite::Connection;

const ROWS: i64 = 100_000;
const PAD: usize = 100;
const DB: &str = "bench";
const SCAN: &str = "SELECT sum(length(pad)) FROM t";
const POINT: &str = "SELECT v FROM t WHERE id = ?1";

/// xorshift64*, as in the benches.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn row(&mut self) -> i64 {
        (self.next() % ROWS as u64) as i64 + 1
    }
}

fn fill(conn: &Connection) {
    conn.execute_batch(
        "DROP TABLE IF EXISTS t;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v INT, pad BLOB)",
    )
    .expect("create");
    let mut i = 1;
    while i <= ROWS {
        let end = (i + 4_999).min(ROWS);
        conn.execute(
            &format!(
                "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2)
                 INSERT INTO t SELECT i, i, randomblob({PAD}) FROM s"
            ),
            [i, end],
        )
        .expect("insert");
        i = end + 1;
    }
}

fn exec(conn: &Connection, sql: &str) {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn scan(conn: &Connection) -> i64 {
    conn.prepare_cached(SCAN)
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .expect("scan")
}

/// One read-only transaction of one point read, as the bench.
fn point(conn: &Connection, rng: &mut Rng) -> i64 {
    exec(conn, "BEGIN");
    let v = conn
        .prepare_cached(POINT)
        .and_then(|mut s| s.query_row([rng.row()], |r| r.get::<_, i64>(0)))
        .expect("point read");
    exec(conn, "COMMIT");
    v
}

/// SQLite's page cache misses on `conn` so far (each one an xRead).
fn sqlite_misses(conn: &Connection) -> i64 {
    let (mut cur, mut hi) = (0, 0);
    // SAFETY: the handle is open for the call; the out-pointers are valid.
    unsafe {
        libsqlite3_sys::sqlite3_db_status(
            conn.handle(),
            libsqlite3_sys::SQLITE_DBSTATUS_CACHE_MISS,
            &mut cur,
            &mut hi,
            0,
        );
    }
    i64::from(cur)
}

/// The measured part (callgrind's `--toggle-collect` names it).
#[inline(never)]
fn measure(f: &mut dyn FnMut() -> i64) -> i64 {
    f()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn open_sqlite(path: &std::path::Path) -> Connection {
    let c = Connection::open(path).expect("open");
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .expect("pragmas");
    c
}

fn main() {
    let mode = arg("--mode").unwrap_or_else(|| "scan".into());
    let iters: usize = arg("--iters").and_then(|n| n.parse().ok()).unwrap_or(5);
    let sqlite = arg("--target").as_deref() == Some("sqlite");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = if flag("--mem") {
        Store::in_memory()
    } else {
        Store::embedded(dir.path().join("store"))
    }
    .expect("store");
    let path = dir.path().join("t.db");
    let open = || {
        if sqlite {
            open_sqlite(&path)
        } else {
            store.open(DB).expect("open")
        }
    };
    let conn = open();
    fill(&conn);
    drop(conn);
    // As the bench: a connection that did not write the fixture, warm.
    let conn = open();
    scan(&conn);
    let mut rng = Rng::new(3);
    point(&conn, &mut rng);
    if let Some(us) = arg("--latency").and_then(|us| us.parse().ok()) {
        store
            .set_faults(fdbvfs::Faults {
                latency: Duration::from_micros(us),
                ..fdbvfs::Faults::default()
            })
            .expect("faults");
    }
    let metrics = || store.page_store().kv().metrics().reads;
    let (reads0, cache0) = (metrics(), store.page_store().stats().cache);
    let (mut took, mut sum, mut misses) = (Duration::ZERO, 0i64, 0i64);
    for _ in 0..iters {
        let fresh;
        let c = if sqlite {
            fresh = open_sqlite(&path);
            fresh
                .prepare_cached(if mode == "scan" { SCAN } else { POINT })
                .expect("prepare");
            &fresh
        } else {
            store.page_store().cache().clear();
            &conn
        };
        let before = sqlite_misses(c);
        let start = Instant::now();
        sum += match mode.as_str() {
            "scan" => measure(&mut || black_box(scan(c))),
            "point" => measure(&mut || black_box(point(c, &mut rng))),
            other => panic!("unknown --mode {other} (scan, point)"),
        };
        took += start.elapsed();
        misses += sqlite_misses(c) - before;
    }
    let cache = store.page_store().stats().cache;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page_size");
    println!(
        "{mode} on {}: {iters} cold runs, {:.1} µs/run (sum {sum}); page size {page_size}",
        if sqlite { "sqlite" } else { "fdbvfs" },
        took.as_secs_f64() * 1e6 / iters as f64
    );
    let per = |n: u64| n as f64 / iters as f64;
    println!(
        "per run: {:.1} SQLite page cache misses (xReads), {:.1} store reads, {:.1} store-layer misses, {:.1} hits",
        misses as f64 / iters as f64,
        per(metrics() - reads0),
        per(cache.misses - cache0.misses),
        per(cache.hits - cache0.hits)
    );
}
