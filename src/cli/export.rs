//! `fdbvfs export NAME OUT.db [--at T] [--force]`: writes one consistent
//! snapshot of a database (one pagestore transaction: the latest version,
//! or the version `--at` names) to a plain SQLite file.
//!
//! Pages are read in prefetched batches (one store round trip per
//! [`PREFETCH`] pages not cached) and written in order to `OUT.db.part`,
//! which is synced, checked with `PRAGMA integrity_check` by plain SQLite,
//! and only then renamed to `OUT.db`: an interrupted export never leaves a
//! partial `OUT.db`. Page 1 is written as SQLite saw it through the fdb VFS:
//! the version-valid-for number (bytes 92..96) equals the change counter
//! (24..28), so the in-header page count is trusted, and the file is in
//! rollback-journal mode (bytes 18..20 = 1).

use pagestore::PageNo;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fdbvfs::{At, Store};
use rusqlite::{Connection, OpenFlags};

use super::import::{byte_bar, human_bytes, integrity_check, spinner};
use super::{interrupt, Error};

/// Pages fetched from the store per round trip.
pub const PREFETCH: usize = 256;

fn store_err(e: pagestore::Error) -> Error {
    Error::from(fdbvfs::Error::from(e))
}

/// `OUT.db` → `OUT.db.part`.
fn part_path(out: &Path) -> PathBuf {
    let mut s: OsString = out.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Makes page 1 what SQLite saw through the VFS (see the module docs).
pub fn fix_header(page1: &mut [u8]) {
    if page1.len() < 100 {
        return;
    }
    if page1[18] == 2 || page1[19] == 2 {
        page1[18] = 1;
        page1[19] = 1;
    }
    let (counter, rest) = page1.split_at_mut(92);
    rest[..4].copy_from_slice(&counter[24..28]);
}

/// `fdbvfs export NAME OUT [--at T] [--force]`.
pub fn export(
    store: &Store,
    name: &str,
    path: &Path,
    at: Option<At>,
    force: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let started = Instant::now();
    if !force && path.exists() {
        return Err(Error::Usage(format!(
            "{} exists; use --force to overwrite it",
            path.display()
        )));
    }
    let db = store.page_store().open(name).map_err(store_err)?;
    let mut txn = match at {
        Some(a) => db.begin_at(store.version_at(name, a)?).map_err(store_err)?,
        None => db.begin().map_err(store_err)?,
    };
    let version = txn.snapshot();
    let count = txn.page_count();
    let size = txn.page_size().unwrap_or(4096);
    let part = part_path(path);
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::Usage(format!("cannot {what} {}: {e}", p.display()))
    };
    let file = File::create(&part).map_err(|e| io("create", &part, e))?;
    let result = (|| -> Result<(), Error> {
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        let bar = byte_bar(count * u64::from(size), "exporting");
        let zeros = vec![0u8; size as usize];
        let mut first = 0u64;
        while first < count {
            if interrupt::interrupted() {
                return Err(Error::Usage(format!(
                    "interrupted; {} was not written",
                    path.display()
                )));
            }
            let last = (first + PREFETCH as u64).min(count);
            let batch: Vec<PageNo> = (first..last)
                .map(|p| {
                    u32::try_from(p)
                        .map(PageNo::new)
                        .map_err(|_| Error::Usage("too many pages".into()))
                })
                .collect::<Result<_, _>>()?;
            txn.prefetch(&batch).map_err(store_err)?;
            for &p in &batch {
                let page = txn.read_page(p).map_err(store_err)?;
                let data: &[u8] = match &page {
                    Some(d) if d.len() == size as usize => &d[..],
                    Some(d) => {
                        return Err(Error::Usage(format!(
                            "page {} of {name:?} has {} bytes, not the database's page size {size}",
                            p.to_sqlite(),
                            d.len()
                        )))
                    }
                    // A hole (never written): SQLite reads it as zeros.
                    None => &zeros,
                };
                if p == PageNo::FIRST {
                    let mut page1 = data.to_vec();
                    fix_header(&mut page1);
                    w.write_all(&page1)
                } else {
                    w.write_all(data)
                }
                .map_err(|e| io("write", &part, e))?;
                bar.inc(u64::from(size));
            }
            first = last;
        }
        w.flush().map_err(|e| io("write", &part, e))?;
        drop(w);
        file.sync_all().map_err(|e| io("sync", &part, e))?;
        bar.finish_and_clear();
        let check = spinner("verifying (PRAGMA integrity_check)");
        let conn = Connection::open_with_flags(
            &part,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Usage(format!("cannot open {}: {e}", part.display())))?;
        let verdict = {
            let _watch = interrupt::watch(&conn);
            integrity_check(&conn)
        };
        drop(conn);
        check.finish_and_clear();
        if interrupt::interrupted() {
            return Err(Error::Usage(format!(
                "interrupted; {} was not written",
                path.display()
            )));
        }
        let problems = verdict.map_err(|e| Error::Sql { n: 1, source: e })?;
        if !problems.is_empty() {
            return Err(Error::Usage(format!(
                "the exported copy of {name:?} does not pass PRAGMA integrity_check: {}",
                problems.join("; ")
            )));
        }
        std::fs::rename(&part, path).map_err(|e| io("rename to", path, e))?;
        // Make the rename durable (best effort: not every file system
        // lets a directory be opened).
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    drop(file);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    txn.rollback();
    writeln!(
        out,
        "exported {name:?} at version {version} to {}: {count} pages, {} in {:.1} s; integrity_check ok",
        path.display(),
        human_bytes(count * u64::from(size)),
        started.elapsed().as_secs_f64()
    )?;
    Ok(out.flush()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(store: &Store, name: &str, path: &Path, at: Option<At>) -> Result<String, Error> {
        let mut out = Vec::new();
        export(store, name, path, at, false, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn exports_latest_and_past_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        let conn = store.open("d").unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x INTEGER PRIMARY KEY, y TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 3000)
             INSERT INTO t SELECT i, hex(randomblob(40)) FROM n;",
        )
        .unwrap();
        let v: String = conn
            .query_row("PRAGMA fdb_version", [], |r| r.get(0))
            .unwrap();
        let v: u64 = v.parse().unwrap();
        conn.execute("DELETE FROM t WHERE x > 1000", []).unwrap();

        let now = dir.path().join("now.db");
        let out = run(&store, "d", &now, None).unwrap();
        assert!(out.contains("integrity_check ok"), "{out}");
        let then = dir.path().join("then.db");
        run(
            &store,
            "d",
            &then,
            Some(At::Version(fdbvfs::Version::new(v))),
        )
        .unwrap();
        for (p, n) in [(&now, 1000), (&then, 3000)] {
            let c = Connection::open(p).unwrap();
            let got: i64 = c
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(got, n);
            let mode: String = c
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "delete");
            assert!(integrity_check(&c).unwrap().is_empty());
        }
        assert!(!part_path(&now).exists());
        let err = run(&store, "d", &now, None).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let err = run(&store, "missing", &dir.path().join("m.db"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no database named"), "{err}");
    }

    #[test]
    fn header_fix_mirrors_the_vfs() {
        let mut p = vec![0u8; 512];
        p[18] = 2;
        p[19] = 2;
        p[24..28].copy_from_slice(&[1, 2, 3, 4]);
        p[92..96].copy_from_slice(&[9, 9, 9, 9]);
        fix_header(&mut p);
        assert_eq!(&p[18..20], &[1, 1]);
        assert_eq!(&p[92..96], &[1, 2, 3, 4]);
    }
}
