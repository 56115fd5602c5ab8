//! Big databases (issues 3 and 4), on on-disk embedded stores:
//!
//! * `database_past_4_gib`: a database grown past 4 GiB (64 KiB pages, rows
//!   of 100 MB blobs) passes `PRAGMA integrity_check` and reads back; rows
//!   with seeded content straddle the lock-byte page at 1 GiB and the 4 GiB
//!   mark, and one lies wholly past 4 GiB: their bytes are compared.
//! * `one_gib_transaction_commits_in_small_store_transactions`: one SQLite
//!   transaction of more than 1 GiB (4 KiB pages) commits as ONE pagestore
//!   commit, while no store transaction exceeds 2 MB (FDB's limit is 10 MB):
//!   page content is uploaded ahead in chunks on the same code path FDB
//!   uses. Then it reads back.
//!
//! Each test prints its wall time, the store counters and the process's peak
//! RSS (VmHWM: process-wide, so it covers both tests when they run in
//! parallel).

mod support;

use std::time::Instant;

use rusqlite::Connection;
use support::{assert_integrity, scalar, scalar_with};

const MB: usize = 1_000_000;
const GIB: u64 = 1 << 30;
/// Bulk rows (content zero).
const ROW: usize = 100 * MB;

/// Deterministic content for row `seed` (splitmix64 stream).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Peak resident set size of this process, in MiB (Linux).
fn peak_rss_mib() -> u64 {
    support::child::status_kib("VmHWM:") / 1024
}

fn db_bytes(c: &Connection) -> u64 {
    let n: i64 = scalar(c, "PRAGMA page_count");
    let ps: i64 = scalar(c, "PRAGMA page_size");
    n as u64 * ps as u64
}

/// Asserts row `id` holds exactly `expect`.
fn check_row(c: &Connection, id: i64, expect: &[u8]) -> rusqlite::Result<()> {
    let got: Vec<u8> = scalar_with(c, "SELECT data FROM big WHERE id = ?1", [id]);
    assert_eq!(got.len(), expect.len(), "row {id}: length");
    if let Some(i) = got.iter().zip(expect).position(|(a, b)| a != b) {
        panic!("row {id}: first differing byte at {i}");
    }
    Ok(())
}

fn page_count(c: &Connection) -> u64 {
    scalar::<i64>(c, "PRAGMA page_count") as u64
}

#[test]
fn database_past_4_gib() -> Result<(), fdbvfs::Error> {
    let started = Instant::now();
    let (store, _dir) = support::dir_store();
    let name = support::name("big4g");
    let c = store.open(&name)?;
    c.execute_batch(
        "PRAGMA page_size = 65536;
         CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB NOT NULL);",
    )?;
    let ps: u64 = 65536;
    // Rows 1..=10: 1.0e9 bytes (just under 1 GiB); row 11 (seeded content)
    // straddles the lock-byte page at 1 GiB; rows 12..=42 bring the file to
    // ~4.2e9; row 43 (seeded) straddles 4 GiB (4.29e9); row 44 (seeded,
    // small) lies past it: 4.30e9 bytes in all.
    let seeded: [(i64, usize); 3] = [(11, ROW), (43, ROW), (44, 3 * MB)];
    let mut extents = Vec::new();
    for id in 1..=44i64 {
        let before = page_count(&c);
        match seeded.iter().find(|(i, _)| *i == id) {
            Some(&(_, len)) => {
                c.execute(
                    "INSERT INTO big VALUES (?1, ?2)",
                    rusqlite::params![id, pattern(id as u64, len)],
                )?;
                // The row's overflow pages were appended: its content lies
                // between the old and the new end of the file.
                extents.push((id, (before * ps, page_count(&c) * ps)));
            }
            None => {
                c.execute(
                    "INSERT INTO big VALUES (?1, zeroblob(?2))",
                    [id, ROW as i64],
                )?;
            }
        }
    }
    let written = started.elapsed();
    let size = db_bytes(&c);
    assert!(size > 4 * GIB, "database is {size} bytes");
    // The seeded rows sit where intended.
    let at = |id: i64| extents.iter().find(|(i, _)| *i == id).map(|(_, e)| *e);
    let (b11, e11) = at(11).unwrap_or_default();
    assert!(b11 < GIB && e11 > GIB, "row 11 at {b11}..{e11}");
    let (b43, e43) = at(43).unwrap_or_default();
    assert!(b43 < 4 * GIB && e43 > 4 * GIB, "row 43 at {b43}..{e43}");
    let (b44, _) = at(44).unwrap_or_default();
    assert!(b44 > 4 * GIB, "row 44 at {b44}");
    drop(c);

    // A fresh connection: everything through the VFS again.
    let c = store.open(&name)?;
    let t = Instant::now();
    assert_integrity(&c);
    let checked = t.elapsed();
    assert_eq!(db_bytes(&c), size);
    let n: i64 = scalar(&c, "SELECT count(*) FROM big");
    assert_eq!(n, 44);
    for (id, len) in seeded {
        check_row(&c, id, &pattern(id as u64, len))?;
    }
    // Bulk rows near the ends read back as written.
    for id in [10i64, 12, 42] {
        let ok: bool = scalar_with(
            &c,
            "SELECT length(data) = ?2 AND data = zeroblob(?2) FROM big WHERE id = ?1",
            [id, ROW as i64],
        );
        assert!(ok, "row {id}");
    }
    let m = store.page_store().kv().metrics();
    eprintln!(
        "past 4 GiB: {:.2} GB in {:.1} s (write {:.1} s, integrity_check {:.1} s); \
         kv commits {} bytes_written {} max_commit_bytes {}; peak RSS {} MiB",
        size as f64 / 1e9,
        started.elapsed().as_secs_f64(),
        written.as_secs_f64(),
        checked.as_secs_f64(),
        m.commits,
        m.bytes_written,
        m.max_commit_bytes,
        peak_rss_mib()
    );
    assert!(m.max_commit_bytes < 2_000_000, "{m:?}");
    Ok(())
}

#[test]
fn one_gib_transaction_commits_in_small_store_transactions() -> Result<(), fdbvfs::Error> {
    let started = Instant::now();
    let (store, _dir) = support::dir_store();
    let name = support::name("big1g");
    let mut c = store.open(&name)?;
    c.execute_batch(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB NOT NULL);
         INSERT INTO big VALUES (0, x'00');",
    )?;
    let kv_before = store.page_store().kv().metrics();
    let st_before = store.page_store().stats();
    let page_size: i64 = scalar(&c, "PRAGMA page_size");
    // Rows 1..=11 of 100 MB (> 1 GiB); rows 1, 6 and 11 have seeded content.
    let seeded = [1i64, 6, 11];
    let tx = c.transaction()?;
    for id in 1..=11i64 {
        if seeded.contains(&id) {
            tx.execute(
                "INSERT INTO big VALUES (?1, ?2)",
                rusqlite::params![id, pattern(1000 + id as u64, ROW)],
            )?;
        } else {
            tx.execute(
                "INSERT INTO big VALUES (?1, zeroblob(?2))",
                [id, ROW as i64],
            )?;
        }
    }
    tx.execute("UPDATE big SET data = x'01' WHERE id = 0", [])?;
    let t = Instant::now();
    tx.commit()?;
    let commit_time = t.elapsed();
    let written = started.elapsed();
    let kv = store.page_store().kv().metrics().since(&kv_before);
    let st = store.page_store().stats();
    assert_eq!(
        st.commits - st_before.commits,
        1,
        "one pagestore commit for the one SQLite transaction"
    );
    assert!(
        kv.bytes_written > GIB,
        "the transaction's pages reached the store: {kv:?}"
    );
    assert!(
        kv.commits > 1_000,
        "the pages went in many small store transactions: {kv:?}"
    );
    // The maximum over the whole store (including setup).
    let max = store.page_store().kv().metrics().max_commit_bytes;
    assert!(
        max < 2_000_000,
        "a store transaction of {max} bytes (FDB's limit is 10 MB)"
    );
    drop(c);

    let c = store.open(&name)?;
    let t = Instant::now();
    assert_integrity(&c);
    let checked = t.elapsed();
    let size = db_bytes(&c);
    assert!(size > GIB, "database is {size} bytes");
    let (n, total): (i64, i64) =
        c.query_row("SELECT count(*), sum(length(data)) FROM big", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    assert_eq!((n, total), (12, 11 * ROW as i64 + 1));
    let first: Vec<u8> = scalar(&c, "SELECT data FROM big WHERE id = 0");
    assert_eq!(first, vec![1u8]);
    for id in seeded {
        check_row(&c, id, &pattern(1000 + id as u64, ROW))?;
    }
    let ok: bool = scalar_with(
        &c,
        "SELECT data = zeroblob(?1) FROM big WHERE id = 10",
        [ROW as i64],
    );
    assert!(ok);
    eprintln!(
        "1 GiB transaction: page_size {page_size}, {:.2} GB in {:.1} s (inserts+commit {:.1} s, \
         COMMIT {:.1} s, integrity_check {:.1} s); kv commits {} bytes_written {} \
         max_commit_bytes {max}; peak RSS {} MiB",
        size as f64 / 1e9,
        started.elapsed().as_secs_f64(),
        written.as_secs_f64(),
        commit_time.as_secs_f64(),
        checked.as_secs_f64(),
        kv.commits,
        kv.bytes_written,
        peak_rss_mib()
    );
    Ok(())
}
