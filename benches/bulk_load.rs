//! The long benchmark: a bulk load of 1 GiB in ONE transaction, fdbvfs
//! beside plain SQLite. Not part of the quick set: it runs only with
//! `FDBVFS_BENCH_LONG=1` (it writes ~1 GiB per target and takes minutes).
//!
//! ```text
//! FDBVFS_BENCH_LONG=1 cargo bench --bench bulk_load
//! FDBVFS_BENCH_LONG=1 FDBVFS_BULK_BYTES=268435456 cargo bench --bench bulk_load
//! ```
//!
//! Rows are `(id, randomblob(1000))`; the load is timed from BEGIN to the
//! end of COMMIT. Writes `target/criterion/fdbvfs-bulk_load.csv`.

mod common;

use std::io::Write;
use std::time::Instant;

use common::Target;

const ROW_BYTES: u64 = 1_000;

fn main() {
    if std::env::var("FDBVFS_BENCH_LONG").as_deref() != Ok("1") {
        println!("bulk_load: skipped (set FDBVFS_BENCH_LONG=1 to run the 1 GiB load)");
        return;
    }
    let bytes: u64 = std::env::var("FDBVFS_BULK_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30);
    let rows = bytes / ROW_BYTES;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut results: Vec<(String, f64, u64)> = Vec::new();
    for t in common::targets(dir.path()) {
        let name = "bulk";
        let conn = t.open(name);
        conn.execute_batch(
            "DROP TABLE IF EXISTS b; CREATE TABLE b(id INTEGER PRIMARY KEY, x BLOB)",
        )
        .expect("create");
        t.prepare();
        let before = match &t {
            Target::Fdbvfs { store, .. } => Some(store.page_store().kv().metrics()),
            Target::Sqlite { .. } => None,
        };
        let start = Instant::now();
        conn.execute_batch("BEGIN").expect("begin");
        {
            let mut s = conn
                .prepare("INSERT INTO b(id, x) VALUES (?1, randomblob(?2))")
                .expect("prepare");
            for i in 1..=rows {
                s.execute([i as i64, ROW_BYTES as i64]).expect("insert");
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
        let secs = start.elapsed().as_secs_f64();
        t.unprepare();
        let (_, peak) = common::rss();
        let rt = match (&t, before) {
            (Target::Fdbvfs { store, .. }, Some(b)) => {
                let m = store.page_store().kv().metrics().since(&b);
                format!(
                    " round_trips={} commits={} max_commit_bytes={}",
                    m.round_trips(),
                    m.commits,
                    m.max_commit_bytes
                )
            }
            _ => String::new(),
        };
        println!(
            "{:<16} {:>6.1} s {:>7.1} MiB/s  peak RSS {} MiB{rt}",
            t.label(),
            secs,
            bytes as f64 / secs / (1 << 20) as f64,
            peak >> 20
        );
        results.push((t.label(), secs, peak));
        drop(conn);
        match &t {
            Target::Fdbvfs { store, .. } => {
                store.drop_database(name).expect("drop");
            }
            Target::Sqlite { path } => {
                for f in ["bulk.db", "bulk.db-wal", "bulk.db-shm"] {
                    let _ = std::fs::remove_file(path.join(f));
                }
            }
        }
    }
    let sqlite = results
        .iter()
        .find(|r| r.0 == "sqlite")
        .map_or(f64::NAN, |r| r.1);
    let path = common::out_dir().join("fdbvfs-bulk_load.csv");
    let mut f = std::fs::File::create(&path).expect("csv");
    writeln!(f, "target,bytes,seconds,ratio_vs_sqlite,peak_rss_bytes").expect("csv");
    for (label, secs, peak) in &results {
        writeln!(f, "{label},{bytes},{secs:.3},{:.3},{peak}", secs / sqlite).expect("csv");
    }
    println!("wrote {}", path.display());
}
