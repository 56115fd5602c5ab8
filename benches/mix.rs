//! A speedtest1-like mix, fdbvfs side by side with plain SQLite.
//!
//! SQLite's `speedtest1` runs a fixed sequence of typical work: bulk inserts
//! with and without indexes, range and LIKE queries, index builds, updates
//! and deletes in large transactions, VACUUM, joins, point lookups on
//! integer and text keys, `integrity_check`, `ANALYZE`. This bench runs a
//! sequence of the same kinds (our own SQL and data, not speedtest1's), on
//! a fresh database per iteration, and measures the whole sequence.
//!
//! Targets: `sqlite` (a local file, `journal_mode=WAL`,
//! `synchronous=NORMAL`), `fdbvfs-normal` (the embedded store in a
//! temporary directory at `synchronous=NORMAL`, SQLite's setting),
//! `fdbvfs-full` (the default: every commit durable when acknowledged) and
//! `fdbvfs-normal-stale10ms` (NORMAL, connections with a 10 ms staleness
//! bound: autocommit reads start without a round trip).
//!
//! Before measuring it runs the mix once per target and prints the time of
//! each step (stderr), so the table shows where a ratio comes from.
//!
//! ```text
//! cargo bench --bench mix -- --quick
//! MIX_SIZE=20 cargo bench --bench mix -- --quick   # smaller tables
//! ```

mod common;

use std::time::{Duration, Instant};

use common::{Rng, Target};
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection};

/// Relative size, as speedtest1's `--size` (100: 50,000-row tables).
fn size() -> u32 {
    std::env::var("MIX_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

/// English words for `n` (up to billions): the text column's values.
fn words(mut n: u64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let mut out: Vec<String> = Vec::new();
    for (unit, name) in [
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ] {
        if n >= unit {
            out.push(words(n / unit));
            out.push(name.into());
            n %= unit;
        }
    }
    if n >= 100 {
        out.push(ONES[(n / 100) as usize].into());
        out.push("hundred".into());
        n %= 100;
    }
    if n >= 20 {
        out.push(TENS[(n / 10) as usize].into());
        n %= 10;
        if n > 0 {
            out.push(ONES[n as usize].into());
        }
    } else if n > 0 || out.is_empty() {
        out.push(ONES[n as usize].into());
    }
    out.join(" ")
}

/// A permutation of `1..=n` into `0..=mask` (mask = 2^k - 1 >= n): an odd
/// multiplier is a bijection modulo a power of two, so keys are unique and
/// arrive out of order.
fn scatter(i: u64, mask: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15 | 1) & mask
}

fn mask_for(n: u64) -> u64 {
    n.next_power_of_two().saturating_mul(2) - 1
}

fn exec(c: &Connection, sql: &str) {
    c.execute_batch(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs `sql` with each parameter pair, stepping every row.
fn each_pair(c: &Connection, sql: &str, pairs: impl Iterator<Item = (i64, i64)>) {
    let mut s = c.prepare_cached(sql).expect("prepare");
    for (a, b) in pairs {
        let mut rows = s.query(params![a, b]).expect("query");
        while rows.next().expect("step").is_some() {}
    }
}

/// One step of the mix: its name and what it runs.
type Step = (&'static str, Box<dyn Fn(&Connection, &mut Rng)>);

/// The steps, for tables of `sz` rows.
fn steps(sz: u64) -> Vec<Step> {
    let mask = mask_for(sz);
    let span = (sz / 5_000) as i64 + 10;
    let q = sz / 5;
    let range = move |r: &mut Rng| {
        let a = (r.next() & mask) as i64;
        (a, a + (r.next() % span as u64) as i64)
    };
    let fill = move |c: &Connection, table: &str, key_first: bool| {
        exec(c, "BEGIN");
        let mut s = c
            .prepare(&format!("INSERT INTO {table} VALUES (?1, ?2, ?3)"))
            .expect("prepare");
        for i in 1..=sz {
            let x = scatter(i, mask) as i64;
            let (a, b) = if key_first {
                (i as i64, x)
            } else {
                (x, i as i64)
            };
            s.execute(params![a, b, words(x as u64)]).expect("insert");
        }
        drop(s);
        exec(c, "COMMIT");
    };
    vec![
        (
            "insert, no index",
            Box::new(move |c, _| {
                exec(c, "CREATE TABLE t1(a INTEGER, b INTEGER, c TEXT)");
                fill(c, "t1", false);
            }),
        ),
        (
            "ordered insert, PK",
            Box::new(move |c, _| {
                exec(
                    c,
                    "CREATE TABLE t2(a INTEGER PRIMARY KEY, b INTEGER, c TEXT)",
                );
                fill(c, "t2", true);
            }),
        ),
        (
            "unordered insert, PK",
            Box::new(move |c, _| {
                exec(
                    c,
                    "CREATE TABLE t3(a INTEGER PRIMARY KEY, b INTEGER, c TEXT)",
                );
                fill(c, "t3", false);
            }),
        ),
        (
            "range scans, unindexed",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                each_pair(
                    c,
                    "SELECT count(*), avg(b), sum(length(c)) FROM t1 WHERE b BETWEEN ?1 AND ?2",
                    (0..25).map(|_| range(r)),
                );
                exec(c, "COMMIT");
            }),
        ),
        (
            "LIKE scans with ORDER BY",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                let mut s = c
                    .prepare("SELECT a, b, c FROM t1 WHERE c LIKE ?1 ORDER BY a LIMIT 10")
                    .expect("prepare");
                for _ in 0..10 {
                    let pat = format!("%{}%", words(r.next() % 1000));
                    let mut rows = s.query([pat]).expect("query");
                    while rows.next().expect("step").is_some() {}
                }
                drop(s);
                exec(c, "COMMIT");
            }),
        ),
        (
            "create five indexes",
            Box::new(|c, _| {
                exec(
                    c,
                    "BEGIN;
                 CREATE INDEX t1b ON t1(b); CREATE INDEX t1c ON t1(c);
                 CREATE UNIQUE INDEX t2b ON t2(b); CREATE INDEX t2c ON t2(c DESC);
                 CREATE INDEX t3bc ON t3(b, c);
                 COMMIT;",
                );
            }),
        ),
        (
            "range queries, indexed",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                each_pair(
                    c,
                    "SELECT count(*), avg(b), sum(length(c)) FROM t1 WHERE b BETWEEN ?1 AND ?2",
                    (0..q).map(|_| range(r)),
                );
                each_pair(
                    c,
                    "SELECT count(*), avg(b), sum(length(c)) FROM t2 WHERE a BETWEEN ?1 AND ?2",
                    (0..q).map(|_| range(r)),
                );
                exec(c, "COMMIT");
            }),
        ),
        (
            "insert with three indexes",
            Box::new(|c, _| {
                exec(
                    c,
                    "BEGIN;
                 CREATE TABLE t4(a INTEGER PRIMARY KEY, b INTEGER, c TEXT);
                 CREATE INDEX t4b ON t4(b); CREATE INDEX t4c ON t4(c);
                 INSERT INTO t4 SELECT * FROM t1;
                 COMMIT;",
                );
            }),
        ),
        (
            "delete and refill",
            Box::new(|c, _| {
                exec(c, "DELETE FROM t2");
                exec(c, "INSERT INTO t2 SELECT * FROM t1");
            }),
        ),
        ("vacuum", Box::new(|c, _| exec(c, "VACUUM"))),
        (
            "add column, query",
            Box::new(|c, _| {
                exec(c, "ALTER TABLE t2 ADD COLUMN d DEFAULT 123");
                exec(c, "SELECT sum(d) FROM t2");
            }),
        ),
        (
            "range updates, indexed",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                each_pair(
                    c,
                    "UPDATE t2 SET d = b * 2 WHERE b BETWEEN ?1 AND ?2",
                    (0..q).map(|_| range(r)),
                );
                exec(c, "COMMIT");
            }),
        ),
        (
            "row updates",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                each_pair(
                    c,
                    "UPDATE t2 SET d = b * 3 WHERE a = ?1 AND ?2 = ?2",
                    (0..sz).map(|_| ((r.next() % sz) as i64 + 1, 0)),
                );
                exec(c, "COMMIT");
            }),
        ),
        (
            "update whole table",
            Box::new(|c, _| exec(c, "UPDATE t2 SET d = b * 4")),
        ),
        (
            "range deletes, indexed",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                each_pair(
                    c,
                    "DELETE FROM t2 WHERE b BETWEEN ?1 AND ?2",
                    (0..q).map(|_| range(r)),
                );
                exec(c, "COMMIT");
            }),
        ),
        (
            "row deletes",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                each_pair(
                    c,
                    "DELETE FROM t3 WHERE a = ?1 AND ?2 = ?2",
                    (0..sz).map(|_| ((r.next() & mask) as i64, 0)),
                );
                exec(c, "COMMIT");
            }),
        ),
        (
            "refill with REPLACE",
            Box::new(|c, _| {
                exec(c, "REPLACE INTO t2(a, b, c) SELECT a, b, c FROM t1");
                exec(c, "REPLACE INTO t3(a, b, c) SELECT a, b, c FROM t1");
            }),
        ),
        (
            "four-way joins",
            Box::new(move |c, r| {
                exec(c, "BEGIN");
                each_pair(
                    c,
                    "SELECT t1.c FROM t1, t2, t3, t4 WHERE t4.a BETWEEN ?1 AND ?2
                 AND t3.a = t4.b AND t2.a = t3.b AND t1.c = t2.c",
                    (0..q).map(|_| {
                        let a = (r.next() % sz) as i64 + 1;
                        (a, a + 4 + (r.next() % 10) as i64)
                    }),
                );
                exec(c, "COMMIT");
            }),
        ),
        (
            "replace on integer key",
            Box::new(move |c, _| {
                exec(c, "BEGIN; CREATE TABLE t5(a INTEGER PRIMARY KEY, b TEXT);");
                let mut s = c
                    .prepare("REPLACE INTO t5 VALUES (?1, ?2)")
                    .expect("prepare");
                for i in 1..=sz {
                    s.execute(params![scatter(i, mask_for(sz / 3)) as i64, words(i)])
                        .expect("replace");
                }
                drop(s);
                exec(c, "COMMIT");
            }),
        ),
        (
            "point reads on integer key (autocommit)",
            Box::new(move |c, _| {
                each_pair(
                    c,
                    "SELECT b FROM t5 WHERE a = ?1 AND ?2 = ?2",
                    (1..=sz).map(|i| (scatter(i, mask_for(sz / 3)) as i64, 0)),
                );
            }),
        ),
        (
            "replace on text key",
            Box::new(move |c, _| {
                exec(
                    c,
                    "BEGIN; CREATE TABLE t6(a TEXT PRIMARY KEY, b INTEGER) WITHOUT ROWID;",
                );
                let mut s = c
                    .prepare("REPLACE INTO t6 VALUES (?1, ?2)")
                    .expect("prepare");
                for i in 1..=sz {
                    s.execute(params![words(scatter(i, mask_for(sz / 3))), i as i64])
                        .expect("replace");
                }
                drop(s);
                exec(c, "COMMIT");
            }),
        ),
        (
            "point reads on text key (autocommit)",
            Box::new(move |c, _| {
                let mut s = c
                    .prepare_cached("SELECT b FROM t6 WHERE a = ?1")
                    .expect("prepare");
                for i in 1..=sz {
                    let mut rows = s
                        .query([words(scatter(i, mask_for(sz / 3)))])
                        .expect("query");
                    while rows.next().expect("step").is_some() {}
                }
            }),
        ),
        (
            "distinct",
            Box::new(|c, _| {
                exec(c, "SELECT DISTINCT b FROM t5; SELECT DISTINCT b FROM t6;");
            }),
        ),
        (
            "integrity_check",
            Box::new(|c, _| {
                let ok: String = c
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .expect("integrity_check");
                assert_eq!(ok, "ok");
            }),
        ),
        ("analyze", Box::new(|c, _| exec(c, "ANALYZE"))),
    ]
}

/// The targets of this bench, in `dir`.
fn targets(dir: &std::path::Path) -> Vec<(Target, bool)> {
    let sqlite = dir.join("sqlite");
    std::fs::create_dir_all(&sqlite).expect("mkdir");
    let store = fdbvfs::Store::embedded(dir.join("fdbvfs")).expect("embedded store");
    let fdb = |label: &str| Target::Fdbvfs {
        label: label.into(),
        store: store.clone(),
        faults: None,
    };
    vec![
        (Target::Sqlite { path: sqlite }, false),
        (fdb("fdbvfs-normal"), false),
        (fdb("fdbvfs-full"), false),
        (fdb("fdbvfs-normal-stale10ms"), true),
    ]
}

/// A connection to a fresh database `name` of `t`, set up as the label says.
fn open(t: &Target, name: &str, stale: bool) -> Connection {
    let c = t.open(name);
    if t.label().contains("normal") {
        exec(&c, "PRAGMA synchronous=NORMAL");
    }
    if stale {
        exec(&c, "PRAGMA fdb_staleness='10ms'");
    }
    c
}

/// Runs the whole mix on a fresh database; returns each step's time.
fn run_mix(t: &Target, name: &str, stale: bool, sz: u64) -> Vec<(&'static str, Duration)> {
    let c = open(t, name, stale);
    let mut rng = Rng::new(7);
    steps(sz)
        .into_iter()
        .map(|(label, f)| {
            let start = Instant::now();
            f(&c, &mut rng);
            (label, start.elapsed())
        })
        .collect()
}

fn mix(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sz = u64::from(size()) * 500;
    let targets = targets(dir.path());
    let mut seq = 0u32;
    // One run per target first: the per-step table.
    let mut table: Vec<(String, Vec<(&'static str, Duration)>)> = Vec::new();
    for (t, stale) in &targets {
        seq += 1;
        eprintln!("mix: one run on {} ({sz}-row tables)", t.label());
        table.push((t.label(), run_mix(t, &format!("mix{seq}"), *stale, sz)));
    }
    print_table(&table);
    let mut g = c.benchmark_group("speedtest1_like_mix");
    g.sample_size(10);
    for (t, stale) in &targets {
        g.bench_function(t.label(), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    seq += 1;
                    let steps = run_mix(t, &format!("mix{seq}"), *stale, sz);
                    total += steps.iter().map(|(_, d)| *d).sum::<Duration>();
                }
                total
            })
        });
    }
    g.finish();
}

/// Prints each step's time per target and the ratio to plain SQLite.
fn print_table(table: &[(String, Vec<(&'static str, Duration)>)]) {
    let Some((_, base)) = table.iter().find(|(l, _)| l == "sqlite") else {
        return;
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut head = format!("{:<42}", "step (ms; ratio to sqlite)");
    for (label, _) in table {
        head.push_str(&format!(" {label:>24}"));
    }
    eprintln!("{head}");
    for (i, (step, b)) in base.iter().enumerate() {
        let mut line = format!("{step:<42}");
        for (_, runs) in table {
            let d = runs[i].1;
            line.push_str(&format!(
                " {:>14.1} ({:>5.2}x)",
                ms(d),
                ms(d) / ms(*b).max(1e-6)
            ));
        }
        eprintln!("{line}");
    }
    let total = |r: &[(&str, Duration)]| r.iter().map(|(_, d)| *d).sum::<Duration>();
    let mut line = format!("{:<42}", "total");
    for (_, runs) in table {
        let d = total(runs);
        line.push_str(&format!(
            " {:>14.1} ({:>5.2}x)",
            ms(d),
            ms(d) / ms(total(base)).max(1e-6)
        ));
    }
    eprintln!("{line}");
}

criterion_group!(benches, mix);
criterion_main!(benches);
