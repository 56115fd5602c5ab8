//! Bounded memory of journals and temp files (issue 11, part 3): past the
//! process budget they spill to an unnamed temp file, and past their size
//! limit a write is `SQLITE_FULL`, never an abort.
//!
//! The limits are process-wide and read from the environment at first use,
//! so every test runs in a child process (this binary re-run on one test)
//! with its own settings; RSS is sampled there, undisturbed by other tests.

mod support;

use std::time::Duration;

use fdbvfs::Store;
use support::child::{field, in_child, peak_rss};
use support::scalar;

const CHILD_ENV: &str = "FDBVFS_MEMORY_BOUNDS_CHILD";
const MIB: u64 = 1 << 20;

/// The environment of the children whose temp files spill past 32 MiB.
fn temp_budget_32_mib() -> [(&'static str, String); 1] {
    [("FDBVFS_TEMP_MEMORY_BYTES", (32 * MIB).to_string())]
}

/// Rows of the sort: ~240 MB of sort keys.
const SORT_ROWS: u64 = 1_500_000;

fn sort_child() {
    let store = Store::builder()
        .in_memory()
        .cache_bytes(4 * MIB)
        .build()
        .unwrap();
    let conn = store.open("sort").unwrap();
    let ((rows, bytes), baseline, peak) = peak_rss(|| {
        let mut stmt = conn
            .prepare(&format!(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {SORT_ROWS}) \
                 SELECT randomblob(160) AS b FROM c ORDER BY b"
            ))
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let (mut n, mut bytes, mut last) = (0u64, 0u64, Vec::new());
        while let Some(r) = rows.next().unwrap() {
            let b: Vec<u8> = r.get(0).unwrap();
            assert!(b >= last, "not sorted");
            bytes += b.len() as u64;
            last = b;
            n += 1;
        }
        (n, bytes)
    });
    assert_eq!(rows, SORT_ROWS);
    println!(
        "RESULT sorted_mib={} baseline_kib={baseline} peak_kib={peak} above_baseline_kib={} temp_memory_now={}",
        bytes / MIB,
        peak.saturating_sub(baseline),
        vfs::memfile::temp_memory_bytes()
    );
}

/// Acceptance (issue 11): a large sort (~240 MB of temp files) runs
/// without growing RSS past the configured temp memory budget (32 MiB
/// here) plus what SQLite and the store hold anyway.
#[test]
fn a_large_sort_stays_within_the_temp_memory_budget() {
    const T: &str = "a_large_sort_stays_within_the_temp_memory_budget";
    let Some(line) = in_child(T, CHILD_ENV, &temp_budget_32_mib(), sort_child) else {
        return;
    };
    eprintln!("{line}");
    let above = field(&line, "above_baseline_kib");
    assert!(
        above < 64 * 1024,
        "a {} MiB sort grew RSS by {above} KiB with a 32 MiB temp budget: {line}",
        field(&line, "sorted_mib")
    );
    assert_eq!(field(&line, "temp_memory_now"), 0, "{line}");
}

fn journal_full_child() {
    let store = Store::in_memory().unwrap();
    let conn = store.open("journal").unwrap();
    conn.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 6000)
         INSERT INTO t SELECT x, randomblob(3000) FROM c;",
    )
    .unwrap();
    let sum = |conn: &rusqlite::Connection| -> i64 {
        scalar(conn, "SELECT sum(length(b)) + sum(unicode(b)) FROM t")
    };
    let before = sum(&conn);
    // ~18 MB of journal against an 8 MiB limit.
    let err = conn
        .execute("UPDATE t SET b = randomblob(3000)", [])
        .unwrap_err();
    let code = err.sqlite_error_code();
    println!("error: {err}");
    assert_eq!(code, Some(rusqlite::ErrorCode::DiskFull), "{err}");
    // Rolled back, and the connection goes on.
    assert_eq!(sum(&conn), before);
    conn.execute("UPDATE t SET b = x'00' WHERE id = 1", [])
        .unwrap();
    println!("RESULT full=1");
}

/// Every limit is a clear SQLite error: a journal past
/// `FDBVFS_TEMP_MAX_BYTES` fails the statement with `SQLITE_FULL`, the
/// transaction rolls back and the connection stays usable.
#[test]
fn a_journal_past_its_limit_is_sqlite_full() {
    const T: &str = "a_journal_past_its_limit_is_sqlite_full";
    let Some(line) = in_child(
        T,
        CHILD_ENV,
        &[
            ("FDBVFS_TEMP_MAX_BYTES", (8 * MIB).to_string()),
            ("FDBVFS_TEMP_MEMORY_BYTES", (2 * MIB).to_string()),
        ],
        journal_full_child,
    ) else {
        return;
    };
    assert_eq!(field(&line, "full"), 1);
}

fn idle_child() {
    fdbvfs::register_linked().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let canon = dir.path().canonicalize().unwrap();
    let uri = format!("file:idle?vfs=fdb&dir={}", dir.path().display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
        | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
        | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(&uri, flags).unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (42);")
        .unwrap();
    let open = || vfs::registry::open_dirs().contains(&canon);
    // In use: kept however long it waits.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(open(), "a store in use was released");
    drop(conn);
    let mut waited = 0;
    while open() && waited < 300 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert!(!open(), "an idle store was not released");
    // The next connection opens it again, data intact.
    let conn = rusqlite::Connection::open_with_flags(&uri, flags).unwrap();
    let x: i64 = scalar(&conn, "SELECT x FROM t");
    assert_eq!(x, 42);
    assert!(open());
    println!("RESULT released=1");
}

/// A `dir=` store no connection uses is released after the idle timeout
/// (`FDBVFS_IDLE_STORE_SECS`), and opened again when named again.
#[test]
fn an_idle_store_is_released() {
    const T: &str = "an_idle_store_is_released";
    let Some(line) = in_child(
        T,
        CHILD_ENV,
        &[("FDBVFS_IDLE_STORE_SECS", "0.5".into())],
        idle_child,
    ) else {
        return;
    };
    assert_eq!(field(&line, "released"), 1);
}

/// Rows of the UPDATE test (4 KB each: ~150 MB of table, as much journal).
const UPDATE_ROWS: u64 = 37_500;

fn update_child() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder()
        .dir(dir.path())
        .cache_bytes(8 * MIB)
        .build()
        .unwrap();
    let conn = store.open("update").unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {UPDATE_ROWS})
         INSERT INTO t SELECT x, randomblob(4000) FROM c;"
    ))
    .unwrap();
    let (_, baseline, peak) = peak_rss(|| {
        conn.execute("UPDATE t SET b = randomblob(4000)", [])
            .unwrap()
    });
    let n: i64 = scalar(&conn, "SELECT count(*) FROM t");
    assert_eq!(n as u64, UPDATE_ROWS);
    println!(
        "RESULT table_mib={} baseline_kib={baseline} peak_kib={peak} above_baseline_kib={}",
        UPDATE_ROWS * 4000 / MIB,
        peak.saturating_sub(baseline)
    );
}

/// Acceptance (issue 11): an UPDATE-heavy transaction (~150 MB of rollback
/// journal) runs without growing RSS far past the temp memory budget (32
/// MiB here): the journal spills to disk, and the store uploads large
/// transactions ahead.
#[test]
fn an_update_heavy_transaction_stays_within_the_temp_memory_budget() {
    const T: &str = "an_update_heavy_transaction_stays_within_the_temp_memory_budget";
    let Some(line) = in_child(T, CHILD_ENV, &temp_budget_32_mib(), update_child) else {
        return;
    };
    eprintln!("{line}");
    let above = field(&line, "above_baseline_kib");
    assert!(
        above < 100 * 1024,
        "a {} MiB UPDATE grew RSS by {above} KiB with a 32 MiB temp budget: {line}",
        field(&line, "table_mib")
    );
}
