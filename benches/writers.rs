//! Concurrent writers: 1, 2, 4 and 8 threads, each with its own connection,
//! updating random rows of a 100k-row table for a fixed time; reports
//! transactions per second and the abort rate (commits refused with
//! `SQLITE_BUSY` and re-run), fdbvfs beside plain SQLite.
//!
//! fdbvfs runs on the embedded store, in a temporary directory (`dir`:
//! durable, one fsync per group of commits) and in memory (`mem`: the
//! injected latency alone stands for the store), with 0 or 0.5 ms injected
//! per store round trip and commit round trips of that or 2 ms
//! (`Faults::commit_latency` tops the per-round-trip latency up to 2 ms).
//! Plain SQLite serializes its writers (`BEGIN IMMEDIATE`, busy timeout).
//!
//! Not a criterion benchmark: throughput of a thread pool over a fixed time
//! is what is measured. Writes `target/criterion/fdbvfs-writers.csv`.
//!
//! ```text
//! cargo bench --bench writers -- --quick     # 1 s per point
//! FDBVFS_BENCH_SECS=5 cargo bench --bench writers
//! cargo bench --bench writers -- --quick fdbvfs-dir   # only these targets
//! ```
//!
//! Words after `--` that are not flags keep only the targets whose label
//! contains one of them (the CSV then holds only those).
//!
//! On `dir`, commits queued behind the store's commit lock are written
//! together (group commit: one redb write, one fsync per group), and the
//! injected commit latency is slept before the lock, as a network round
//! trip would be, so concurrent writers overlap it.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{fixture, Rng, Target, ROWS};
use fdbvfs::{Faults, Store};
use rusqlite::Connection;

const DB: &str = "writers";
const WRITERS: [usize; 4] = [1, 2, 4, 8];

struct Config {
    target: Target,
    round_trip: Duration,
    commit: Duration,
}

struct Point {
    label: String,
    round_trip_ms: f64,
    commit_ms: f64,
    writers: usize,
    seconds: f64,
    commits: u64,
    aborts: u64,
    round_trips: Option<u64>,
}

impl Point {
    fn tps(&self) -> f64 {
        self.commits as f64 / self.seconds
    }
    fn abort_rate(&self) -> f64 {
        let n = self.commits + self.aborts;
        if n == 0 {
            0.0
        } else {
            self.aborts as f64 / n as f64
        }
    }
}

fn configs(dir: &std::path::Path) -> Vec<Config> {
    let sqlite = dir.join("sqlite");
    std::fs::create_dir_all(&sqlite).expect("mkdir");
    let mut out = vec![Config {
        target: Target::Sqlite { path: sqlite },
        round_trip: Duration::ZERO,
        commit: Duration::ZERO,
    }];
    // "dir": the durable store in a temporary directory (each group of
    // commits is fsynced under the store's commit lock); "mem": the same
    // store in memory, where the injected latency alone stands for the
    // store's commit cost, as FDB's would.
    let stores = [
        ("dir", Store::embedded(dir.join("fdbvfs")).expect("store")),
        ("mem", Store::in_memory().expect("store")),
    ];
    for (kind, store) in stores {
        for rt in [Duration::ZERO, common::ROUND_TRIP] {
            for commit in [rt, Duration::from_millis(2)] {
                let faults = Faults {
                    latency: rt,
                    commit_latency: commit - rt,
                    ..Faults::default()
                };
                out.push(Config {
                    target: Target::Fdbvfs {
                        label: format!("fdbvfs-{kind} rt={}ms commit={}ms", ms(rt), ms(commit)),
                        store: store.clone(),
                        faults: Some(faults),
                    },
                    round_trip: rt,
                    commit,
                });
            }
        }
    }
    if let Some(t) = common::fdb_target() {
        // FDB (feature `fdb` and FDB_CLUSTER_FILE): real latencies.
        out.push(Config {
            target: t,
            round_trip: Duration::ZERO,
            commit: Duration::ZERO,
        });
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One transaction: BEGIN, UPDATE a random row, COMMIT. Err(busy) when
/// it must be re-run.
fn txn(conn: &Connection, sqlite: bool, id: i64) -> rusqlite::Result<()> {
    let begin = if sqlite { "BEGIN IMMEDIATE" } else { "BEGIN" };
    conn.prepare_cached(begin)?.execute([])?;
    let out = conn
        .prepare_cached("UPDATE t SET v = v + 1 WHERE id = ?1")
        .and_then(|mut s| s.execute([id]))
        .and_then(|_| conn.prepare_cached("COMMIT")?.execute([]));
    if out.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    out.map(|_| ())
}

fn run(cfg: &Config, writers: usize, secs: f64) -> Point {
    let t = &cfg.target;
    t.prepare();
    let before = match t {
        Target::Fdbvfs { store, .. } => Some(store.page_store().kv().metrics()),
        Target::Sqlite { .. } => None,
    };
    let commits = Arc::new(AtomicU64::new(0));
    let aborts = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let sqlite = t.is_sqlite();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (t, commits, aborts, stop, barrier) = (
                t.clone(),
                commits.clone(),
                aborts.clone(),
                stop.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                let conn = t.open(DB);
                let mut rng = Rng::new(1_000 + w as u64);
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    let id = rng.row();
                    let mut backoff = Duration::from_millis(1);
                    loop {
                        match txn(&conn, sqlite, id) {
                            Ok(()) => {
                                commits.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(e) if common::is_busy(&e) => {
                                aborts.fetch_add(1, Ordering::Relaxed);
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                                // Jittered exponential backoff, as fdbvfs::retry.
                                let j = 0.5 + (rng.next() % 1000) as f64 / 2000.0;
                                std::thread::sleep(backoff.mul_f64(j));
                                backoff = (backoff * 2).min(Duration::from_millis(200));
                            }
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("writer thread");
    }
    let seconds = start.elapsed().as_secs_f64();
    let round_trips = match (t, before) {
        (Target::Fdbvfs { store, .. }, Some(b)) => {
            Some(store.page_store().kv().metrics().since(&b).round_trips())
        }
        _ => None,
    };
    t.unprepare();
    Point {
        label: t.label(),
        round_trip_ms: ms(cfg.round_trip),
        commit_ms: ms(cfg.commit),
        writers,
        seconds,
        commits: commits.load(Ordering::Relaxed),
        aborts: aborts.load(Ordering::Relaxed),
        round_trips,
    }
}

fn main() {
    let secs: f64 = std::env::var("FDBVFS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if common::quick() { 1.0 } else { 3.0 });
    let dir = tempfile::tempdir().expect("tempdir");
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut configs = configs(dir.path());
    configs.retain(|c| {
        let label = c.target.label();
        filters.is_empty() || filters.iter().any(|f| label.contains(f.as_str()))
    });
    let mut points = Vec::new();
    let mut built = std::collections::HashSet::new();
    println!(
        "{:<36} {:>7} {:>10} {:>8} {:>10} {:>10}",
        "target", "writers", "txn/s", "aborts", "abort rate", "rt/commit"
    );
    for cfg in &configs {
        // One fixture per store (the fdbvfs configurations share one).
        let key = match &cfg.target {
            Target::Sqlite { .. } => "sqlite".to_string(),
            Target::Fdbvfs { store, .. } => format!("{store:?}"),
        };
        if built.insert(key) {
            let conn = fixture(&cfg.target, DB);
            let n: i64 = conn
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count");
            assert_eq!(n, ROWS);
        }
        for &w in &WRITERS {
            let p = run(cfg, w, secs);
            println!(
                "{:<36} {:>7} {:>10.0} {:>8} {:>9.2}% {:>10}",
                p.label,
                p.writers,
                p.tps(),
                p.aborts,
                p.abort_rate() * 100.0,
                p.round_trips
                    .map(|r| format!("{:.2}", r as f64 / p.commits.max(1) as f64))
                    .unwrap_or_else(|| "-".into())
            );
            points.push(p);
        }
    }
    let path = common::out_dir().join("fdbvfs-writers.csv");
    let mut f = std::fs::File::create(&path).expect("csv");
    writeln!(
        f,
        "target,round_trip_ms,commit_ms,writers,seconds,commits,aborts,txn_per_s,abort_rate,round_trips"
    )
    .expect("csv");
    for p in &points {
        writeln!(
            f,
            "{},{},{},{},{:.3},{},{},{:.1},{:.4},{}",
            p.label,
            p.round_trip_ms,
            p.commit_ms,
            p.writers,
            p.seconds,
            p.commits,
            p.aborts,
            p.tps(),
            p.abort_rate(),
            p.round_trips.map(|r| r.to_string()).unwrap_or_default()
        )
        .expect("csv");
    }
    println!("wrote {}", path.display());
}
