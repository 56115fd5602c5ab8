//! Profiling harness for the warm read path: an in-memory store with the
//! benches' 100k-row table (8 KiB pages), warmed, then `--reads N` warm
//! point reads in one measured function, so that instruction counts per
//! read are stable (wall time on a shared machine is not).
//!
//! ```sh
//! cargo build --release --example warm_reads
//! valgrind --tool=callgrind --toggle-collect='*warm_reads::measure*' \
//!     target/release/examples/warm_reads --mode txn --reads 2000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | head -60
//! ```
//!
//! Modes: `autocommit` (one SQL point read per transaction), `txn`
//! (transactions of 100 point reads), `page` (pagestore's
//! `Transaction::read_page` directly, random pages, one transaction: the
//! cost of one xRead that reaches the store layer, without SQLite).
//! `--staleness MS` opens connections with that staleness bound.
//! `--target sqlite` runs the SQL modes on plain SQLite (a temporary
//! file, WAL) for comparison. `insert` runs one-row insert transactions
//! (`insert_1_row_txn`), `insert10k` transactions of 10,000 one-row
//! inserts (`insert_10k_rows_txn`; `--reads` counts transactions);
//! `--dir 1` puts the store in a temporary directory (the embedded durable
//! store) and `--synchronous S` sets `PRAGMA synchronous`. `txn` runs transactions of 100 reads, like
//! the `warm_point_read_x100` bench. Prints wall time too, for a quick look.

use std::hint::black_box;
use std::time::Instant;

use fdbvfs::Store;
use pagestore::PageNo;
use rusqlite::Connection;

const ROWS: i64 = 100_000;
const PAD: usize = 100;
const DB: &str = "bench";

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

fn scan(conn: &Connection) -> i64 {
    conn.query_row("SELECT sum(length(pad)) FROM t", [], |r| r.get(0))
        .expect("scan")
}

fn point(conn: &Connection, rng: &mut Rng) -> i64 {
    conn.prepare_cached("SELECT v FROM t WHERE id = ?1")
        .and_then(|mut s| s.query_row([rng.row()], |r| r.get::<_, i64>(0)))
        .expect("point read")
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

fn main() {
    let mode = arg("--mode").unwrap_or_else(|| "txn".into());
    let reads: usize = arg("--reads").and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let sqlite = arg("--target").as_deref() == Some("sqlite");
    // `--staleness MS`: connections under that staleness bound (a
    // transaction may start at this process's view without a round trip).
    let dir = tempfile::tempdir().expect("tempdir");
    let store = match arg("--staleness").and_then(|ms| ms.parse().ok()) {
        Some(ms) => {
            let bound = fdbvfs::Staleness::from_duration(std::time::Duration::from_millis(ms))
                .expect("staleness bound");
            Store::builder().in_memory().staleness(bound).build()
        }
        None if arg("--dir").is_some() => Store::embedded(dir.path().join("store")),
        None => Store::in_memory(),
    }
    .expect("store");
    let conn = if sqlite {
        let c = Connection::open(dir.path().join("t.db")).expect("open");
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
            .expect("pragmas");
        c
    } else {
        store.open(DB).expect("open")
    };
    fill(&conn);
    drop(conn);
    let conn = if sqlite {
        Connection::open(dir.path().join("t.db")).expect("open")
    } else {
        store.open(DB).expect("open")
    };
    if !mode.starts_with("insert") {
        scan(&conn);
    }
    if let Some(sync) = arg("--synchronous") {
        conn.execute_batch(&format!("PRAGMA synchronous={sync}"))
            .expect("synchronous");
    }
    let mut rng = Rng::new(2);
    // Warm the statement cache and every path once.
    point(&conn, &mut rng);
    let misses_before = sqlite_misses(&conn);
    let before = store.page_store().stats().cache;
    let start = Instant::now();
    let sum = match mode.as_str() {
        "autocommit" => measure(&mut || (0..reads).map(|_| point(&conn, &mut rng)).sum()),
        // Transactions of 100 point reads, as warm_point_read_x100.
        "txn" => measure(&mut || {
            let mut s = 0;
            for _ in 0..reads.div_ceil(100) {
                conn.execute_batch("BEGIN").expect("begin");
                s += (0..100).map(|_| point(&conn, &mut rng)).sum::<i64>();
                conn.execute_batch("COMMIT").expect("commit");
            }
            s
        }),
        // One-row insert transactions, as insert_1_row_txn.
        "insert" => measure(&mut || {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS w1(id INTEGER PRIMARY KEY, v INT, pad BLOB)",
            )
            .expect("create");
            for i in 0..reads {
                conn.execute_batch("BEGIN").expect("begin");
                conn.prepare_cached("INSERT INTO w1(v, pad) VALUES (?1, randomblob(100))")
                    .and_then(|mut s| s.execute([i as i64]))
                    .expect("insert");
                conn.execute_batch("COMMIT").expect("commit");
            }
            reads as i64
        }),
        // `--reads` transactions of 10,000 one-row inserts each, as
        // insert_10k_rows_txn (counts are per transaction, not per row).
        "insert10k" => measure(&mut || {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS w10k(id INTEGER PRIMARY KEY, v INT, pad BLOB)",
            )
            .expect("create");
            let mut i = 0i64;
            for _ in 0..reads {
                conn.execute_batch("BEGIN").expect("begin");
                let mut s = conn
                    .prepare_cached("INSERT INTO w10k(v, pad) VALUES (?1, randomblob(100))")
                    .expect("prepare");
                for _ in 0..10_000 {
                    i += 1;
                    s.execute([i]).expect("insert");
                }
                drop(s);
                conn.execute_batch("COMMIT").expect("commit");
            }
            reads as i64
        }),
        "page" => {
            let db = store.page_store().open(DB).expect("open db");
            let mut t = db.begin().expect("begin");
            let count = t.page_count();
            // Warm this transaction's pages once, as SQLite's first reads do.
            for p in 0..count {
                black_box(t.read_page(PageNo::new(p as u32)).expect("read"));
            }
            measure(&mut || {
                let mut s = 0i64;
                for _ in 0..reads {
                    let p = PageNo::new((rng.next() % count) as u32);
                    if let Some(d) = t.read_page(p).expect("read") {
                        s += i64::from(d[0]);
                    }
                }
                s
            })
        }
        other => panic!("unknown --mode {other} (autocommit, txn, insert, insert10k, page)"),
    };
    let took = start.elapsed();
    println!(
        "{mode} on {}: {reads} reads, {:.2} µs/read (sum {sum})",
        if sqlite {
            "sqlite"
        } else if arg("--dir").is_some() {
            "fdbvfs-dir"
        } else {
            "fdbvfs-mem"
        },
        took.as_secs_f64() * 1e6 / reads as f64
    );
    let c = store.page_store().stats().cache;
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page_size");
    println!(
        "SQLite's page cache: {} misses (xReads of pages) in the measured part",
        sqlite_misses(&conn) - misses_before
    );
    println!(
        "page size {page_size}; measured: {} page reads reached the store layer ({} misses)",
        c.hits + c.misses - before.hits - before.misses,
        c.misses - before.misses
    );
}
