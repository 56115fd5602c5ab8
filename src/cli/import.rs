//! `fdbvfs import NAME FILE.db [--force]`: copies an existing SQLite file,
//! page by page, into a new database of the store.
//!
//! * **Consistent source.** A rollback-journal file is opened with SQLite
//!   (read-only) and a read transaction is held while its raw bytes are
//!   copied: the SHARED lock keeps writers from changing the file meanwhile,
//!   and no temporary copy is needed (file page N becomes store page N-1).
//!   A WAL-mode file's committed content may still sit in its `-wal` file,
//!   so it is first copied with SQLite's online backup API to a temporary
//!   file (one consistent snapshot, WAL frames included), which is then
//!   imported and removed; its header is switched to rollback-journal mode
//!   (bytes 18..20), which is what the fdb VFS requires.
//! * **Bounded memory.** Pages go through pagestore transactions, which
//!   upload them ahead of commit in chunks under the store's limits; a
//!   transaction is committed every [`BATCH_BYTES`], so the per-page
//!   bookkeeping of one transaction stays bounded whatever the file size.
//! * **Nothing half-done is visible.** The pages go into a temporary,
//!   hidden database (`.import/NAME/TIME-RANDOM`, hidden by `fdbvfs list`),
//!   which is checked with `PRAGMA integrity_check` through the fdb VFS and
//!   only then renamed to NAME in one store transaction
//!   ([`pagestore::PageStore::rename`]; with `--force` the old NAME is
//!   dropped in that same transaction). A failed import drops its temporary;
//!   a killed one leaves it behind, hidden, and a later import (or `fdbvfs
//!   gc`) removes temporaries whose builder showed no sign of life for
//!   [`STALE_AFTER`] (live imports refresh a heartbeat every minute).

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fdbvfs::Store;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pagestore::{Database, PageNo, PageStore};
use rusqlite::{Connection, OpenFlags};
use vfs::header;

use super::{interrupt, Error};

/// Names of databases being imported start with this; they are hidden from
/// `fdbvfs list` and cannot be imported into directly.
pub const TEMP_PREFIX: &str = ".import/";

/// A temporary whose builder showed no sign of life for this long was
/// abandoned (its process died) and is removed by the next import or GC.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);

/// How often a running import refreshes its heartbeat.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(60);

/// Page bytes per pagestore transaction of an import (each uploads its
/// pages ahead in small chunks, then commits in one small store commit).
pub const BATCH_BYTES: u64 = 1 << 30;

/// Test hook: latency (ms) injected into every store round trip of the
/// import (embedded stores only), to make an import slow enough to kill.
/// Only in test builds (feature `testutil`, which the package's own tests
/// turn on).
#[cfg(feature = "testutil")]
pub const LATENCY_ENV: &str = "FDBVFS_IMPORT_TEST_LATENCY_MS";

/// Whether `name` is an import's temporary name.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// The databases of the store that users see (no import temporaries).
pub fn visible_names(store: &Store) -> Result<Vec<String>, Error> {
    Ok(store
        .list()?
        .into_iter()
        .filter(|n| !is_temporary(n))
        .collect())
}

/// A byte progress bar on stderr (bytes, rate, ETA), hidden when stderr is
/// not a terminal.
pub fn byte_bar(total: u64, what: &str) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// A spinner on stderr for a step of unknown length (hidden when stderr is
/// not a terminal).
pub fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// "200.0 MiB".
pub fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// The error of an import stopped by Ctrl-C (its temporary is dropped).
fn interrupted() -> Error {
    Error::Usage("interrupted; nothing was imported".into())
}

/// `fdbvfs import NAME FILE [--force]`.
pub fn import(
    store: &Store,
    name: &str,
    file: &Path,
    force: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let started = Instant::now();
    if is_temporary(name) {
        return Err(Error::Usage(format!(
            "database names starting with {TEMP_PREFIX:?} are reserved for imports in progress"
        )));
    }
    pagestore::validate_name(name).map_err(|e| Error::Usage(e.to_string()))?;
    let pages = store.page_store();
    if !force && exists(pages, name)? {
        return Err(Error::Usage(format!(
            "database {name:?} already exists; use --force to replace it"
        )));
    }
    #[cfg(feature = "testutil")]
    inject_test_latency(store);
    match sweep_stale(pages) {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed abandoned import temporaries"),
        Err(e) => tracing::warn!(error = %e, "could not sweep abandoned import temporaries"),
    }

    let mut source = Source::open(file)?;
    let temp_name = format!(
        "{TEMP_PREFIX}{name}/{}-{:016x}",
        pages.options().clock.now_micros(),
        rand::random::<u64>()
    );
    let db = pages.create(&temp_name).map_err(fdbvfs::Error::from)?;
    let mut temp = Temporary {
        pages: pages.clone(),
        name: temp_name.clone(),
        armed: true,
    };
    let heartbeat = Heartbeat::start(db.clone());

    let page_count = copy_pages(&db, &mut source, file)?;
    let bytes = page_count * u64::from(source.page_size);
    drop(source);

    // Ctrl-C during the commit: stop before verifying (an interrupt only
    // stops a statement that is running when it comes).
    if interrupt::interrupted() {
        return Err(interrupted());
    }
    let check = spinner("verifying (PRAGMA integrity_check)");
    let verdict = {
        let conn = store.open(&temp_name)?;
        let _watch = interrupt::watch(&conn);
        if interrupt::interrupted() {
            return Err(interrupted());
        }
        integrity_check(&conn)
    };
    check.finish_and_clear();
    if interrupt::interrupted() {
        return Err(interrupted());
    }
    let problems = verdict.map_err(|e| Error::Sql { n: 1, source: e })?;
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "{} does not pass PRAGMA integrity_check; nothing was imported: {}",
            file.display(),
            problems.join("; ")
        )));
    }

    // No heartbeat into the database once it is visible.
    drop(heartbeat);
    match pages.rename(&temp_name, name, force) {
        Ok(_) => temp.armed = false,
        Err(pagestore::Error::AlreadyExists(_)) => {
            return Err(Error::Usage(format!(
                "database {name:?} was created while importing; nothing was imported (use --force to replace it)"
            )))
        }
        Err(e) => return Err(fdbvfs::Error::from(e).into()),
    }
    writeln!(
        out,
        "imported {} into {name:?}: {page_count} pages, {} in {:.1} s; integrity_check ok",
        file.display(),
        human_bytes(bytes),
        started.elapsed().as_secs_f64()
    )?;
    Ok(out.flush()?)
}

fn exists(pages: &PageStore, name: &str) -> Result<bool, Error> {
    match pages.open(name) {
        Ok(_) => Ok(true),
        Err(pagestore::Error::NotFound(_)) => Ok(false),
        Err(e) => Err(fdbvfs::Error::from(e).into()),
    }
}

#[cfg(feature = "testutil")]
fn inject_test_latency(store: &Store) {
    let Some(ms) = std::env::var(LATENCY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return;
    };
    let faults = fdbvfs::Faults {
        latency: Duration::from_millis(ms),
        ..Default::default()
    };
    if let Err(e) = store.set_faults(faults) {
        tracing::warn!(error = %e, "{LATENCY_ENV} ignored");
    }
}

/// Drops import temporaries whose builder showed no sign of life for
/// [`STALE_AFTER`]. Returns how many were removed.
pub fn sweep_stale(pages: &PageStore) -> Result<usize, Error> {
    let now = pages.options().clock.now_micros();
    let stale = STALE_AFTER.as_micros() as u64;
    let mut removed = 0;
    for info in pages.list().map_err(fdbvfs::Error::from)? {
        if !is_temporary(&info.name) {
            continue;
        }
        let db = match pages.open(&info.name) {
            Ok(db) => db,
            Err(pagestore::Error::NotFound(_)) => continue,
            Err(e) => return Err(fdbvfs::Error::from(e).into()),
        };
        let last = db.last_activity_micros().map_err(fdbvfs::Error::from)?;
        if now.saturating_sub(last) >= stale
            && pages
                .drop_database(&info.name)
                .map_err(fdbvfs::Error::from)?
        {
            tracing::info!(database = %info.name, "dropped an abandoned import");
            removed += 1;
        }
    }
    Ok(removed)
}

/// The import's temporary database, dropped unless the import succeeded.
struct Temporary {
    pages: PageStore,
    name: String,
    armed: bool,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.pages.drop_database(&self.name) {
                tracing::warn!(database = %self.name, error = %e, "could not drop the import's temporary database; a later import or gc will");
            }
        }
    }
}

/// Refreshes the temporary's heartbeat until dropped.
struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(db: Database) -> Heartbeat {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("import-heartbeat".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(HEARTBEAT_EVERY)
                {
                    if let Err(e) = db.heartbeat() {
                        tracing::warn!(error = %e, "import heartbeat failed");
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "no import heartbeat thread"))
            .ok();
        Heartbeat {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Rows of `PRAGMA integrity_check` other than `ok` (at most 20).
pub fn integrity_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA integrity_check(20)")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut problems = Vec::new();
    for row in rows {
        let row = row?;
        if row != "ok" {
            problems.push(row);
        }
    }
    Ok(problems)
}

/// The file being imported, locked or copied so that it reads as one
/// consistent state.
struct Source {
    /// Holds a read transaction (SHARED lock) on a rollback-journal source
    /// while its bytes are copied.
    _conn: Option<Connection>,
    file: File,
    len: u64,
    page_size: u32,
    /// Page 1 says WAL mode (bytes 18..20 = 2): switch it to rollback.
    wal_header: bool,
    /// Backup copy of a WAL-mode source, removed when done.
    copy: Option<PathBuf>,
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(p) = self.copy.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn read_header(path: &Path) -> Result<(File, u64, [u8; header::LEN]), Error> {
    let io = |e: std::io::Error| Error::Usage(format!("cannot read {}: {e}", path.display()));
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut header = [0u8; header::LEN];
    if len > 0 {
        file.read_exact(&mut header).map_err(|_| {
            Error::Usage(format!(
                "{} is not an SQLite database (shorter than its 100-byte header)",
                path.display()
            ))
        })?;
        if !header::is_database(&header) {
            return Err(Error::Usage(format!(
                "{} is not an SQLite database (no \"SQLite format 3\" header)",
                path.display()
            )));
        }
    }
    Ok((file, len, header))
}

impl Source {
    fn open(path: &Path) -> Result<Source, Error> {
        let (_, _, header) = read_header(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| Error::Usage(format!("cannot open {}: {e}", path.display())))?;
        let sql_err = |e: rusqlite::Error| {
            Error::Usage(format!("cannot read {} with SQLite: {e}", path.display()))
        };
        // BEGIN plus a read takes the SHARED lock (or, in WAL mode, pins a
        // snapshot) until the transaction ends.
        conn.execute_batch("BEGIN")
            .and_then(|_| {
                conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .map_err(sql_err)?;
        let wal = header::is_wal(&header);
        if !wal {
            // Read again under the lock: the file may have changed between.
            let (file, len, header) = read_header(path)?;
            if header::is_wal(&header) {
                return Err(Error::Usage(format!(
                    "{} switched to WAL mode while being opened; try again",
                    path.display()
                )));
            }
            return Source::raw(Some(conn), file, len, &header, path, None);
        }
        let copy = std::env::temp_dir().join(format!(
            "fdbvfs-import-{}-{:016x}.db",
            std::process::id(),
            rand::random::<u64>()
        ));
        let cleanup = |e: Error| {
            let _ = std::fs::remove_file(&copy);
            e
        };
        backup(&conn, &copy, path).map_err(cleanup)?;
        drop(conn);
        let (file, len, header) = read_header(&copy).map_err(cleanup)?;
        Source::raw(None, file, len, &header, path, Some(copy))
    }

    fn raw(
        conn: Option<Connection>,
        file: File,
        len: u64,
        header: &[u8; header::LEN],
        path: &Path,
        copy: Option<PathBuf>,
    ) -> Result<Source, Error> {
        let page_size = if len == 0 {
            4096
        } else {
            header::page_size_of(header).ok_or_else(|| {
                Error::Usage(format!(
                    "{} has an invalid page size in its header",
                    path.display()
                ))
            })?
        };
        let mut file = file;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
        Ok(Source {
            _conn: conn,
            file,
            len,
            page_size,
            wal_header: header::is_wal(header),
            copy,
        })
    }

    fn page_count(&self) -> u64 {
        self.len.div_ceil(u64::from(self.page_size))
    }

    /// Reads the next page into `buf` (zero-filled past the end of a short
    /// last page, as SQLite reads it).
    fn next_page(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf[filled..].fill(0);
        Ok(())
    }
}

/// Copies a WAL-mode source to `copy` with SQLite's online backup API.
fn backup(conn: &Connection, copy: &Path, path: &Path) -> Result<(), Error> {
    let err = |e: rusqlite::Error| {
        Error::Usage(format!(
            "cannot copy WAL-mode {} to {}: {e}",
            path.display(),
            copy.display()
        ))
    };
    let mut dst = Connection::open(copy).map_err(err)?;
    let bar = spinner("snapshotting the WAL-mode source (backup API)");
    {
        let b = rusqlite::backup::Backup::new(conn, &mut dst).map_err(err)?;
        loop {
            match b.step(4096).map_err(err)? {
                rusqlite::backup::StepResult::Done => break,
                rusqlite::backup::StepResult::More if interrupt::interrupted() => {
                    return Err(interrupted())
                }
                rusqlite::backup::StepResult::More => {
                    let p = b.progress();
                    bar.set_message(format!(
                        "snapshotting the WAL-mode source: {} of {} pages",
                        p.pagecount - p.remaining,
                        p.pagecount
                    ));
                }
                // Another connection holds a lock on the copy (none should).
                _ => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    bar.finish_and_clear();
    dst.close().map_err(|(_, e)| err(e))
}

/// Copies every page of `source` into `db`; returns the page count.
fn copy_pages(db: &Database, source: &mut Source, file: &Path) -> Result<u64, Error> {
    let count = source.page_count();
    let size = source.page_size;
    let bar = byte_bar(count * u64::from(size), "importing");
    let store_err = |e: pagestore::Error| Error::from(fdbvfs::Error::from(e));
    let mut buf = vec![0u8; size as usize];
    let mut txn = db.begin().map_err(store_err)?;
    let mut in_txn = 0u64;
    for pgno in 0..count {
        if interrupt::interrupted() {
            return Err(interrupted());
        }
        let pgno = u32::try_from(pgno)
            .map_err(|_| Error::Usage(format!("{} has too many pages", file.display())))?;
        source
            .next_page(&mut buf)
            .map_err(|e| Error::Usage(format!("cannot read {}: {e}", file.display())))?;
        if pgno == 0 && source.wal_header {
            // WAL mode needs shared memory across hosts; the fdb VFS uses
            // the rollback journal (the file is checkpointed: the backup
            // copy holds every committed page).
            header::set_rollback_journal(&mut buf);
        }
        txn.write_page(PageNo::new(pgno), &buf).map_err(store_err)?;
        in_txn += u64::from(size);
        bar.inc(u64::from(size));
        if in_txn >= BATCH_BYTES {
            txn.commit().map_err(store_err)?;
            txn = db.begin().map_err(store_err)?;
            in_txn = 0;
        }
    }
    txn.commit().map_err(store_err)?;
    bar.finish_and_clear();
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_from_header() {
        let mut h = [0u8; 100];
        h[16..18].copy_from_slice(&4096u16.to_be_bytes());
        assert_eq!(header::page_size_of(&h), Some(4096));
        h[16..18].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(header::page_size_of(&h), Some(65536));
        h[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert_eq!(header::page_size_of(&h), None);
        h[16..18].copy_from_slice(&256u16.to_be_bytes());
        assert_eq!(header::page_size_of(&h), None);
    }

    #[test]
    fn temporaries_are_recognised() {
        assert!(is_temporary(".import/x/1-2"));
        assert!(!is_temporary("import/x"));
        assert!(!is_temporary("orders"));
    }

    fn plain_db(path: &Path, wal: bool) {
        let c = Connection::open(path).unwrap();
        if wal {
            let _: String = c
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .unwrap();
            c.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
        }
        c.execute_batch(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT i, hex(randomblob(50)) FROM n;
             CREATE INDEX t_v ON t(v);",
        )
        .unwrap();
        if wal {
            // Keep the connection open so that the content stays in the
            // WAL file: forget it (closing would checkpoint).
            std::mem::forget(c);
        }
    }

    fn run_import(store: &Store, name: &str, file: &Path, force: bool) -> Result<String, Error> {
        let mut out = Vec::new();
        import(store, name, file, force, &mut out)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn imports_rollback_and_wal_files_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        for wal in [false, true] {
            let file = dir.path().join(format!("src-{wal}.db"));
            plain_db(&file, wal);
            let name = format!("db-{wal}");
            let out = run_import(&store, &name, &file, false).unwrap();
            assert!(out.contains("integrity_check ok"), "{out}");
            let conn = store.open(&name).unwrap();
            let n: i64 = conn
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 2000);
            // The WAL-mode source arrives in rollback-journal mode.
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_ne!(mode, "wal");
            let err = run_import(&store, &name, &file, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains("--force"), "{err}");
        }
        // --force replaces in one step; no temporaries are left behind.
        let file = dir.path().join("src-false.db");
        run_import(&store, "db-true", &file, true).unwrap();
        let names = store.list().unwrap();
        assert_eq!(names, vec!["db-false".to_string(), "db-true".to_string()]);
    }

    #[test]
    fn rejects_what_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        let file = dir.path().join("junk.db");
        std::fs::write(&file, vec![7u8; 5000]).unwrap();
        let err = run_import(&store, "x", &file, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an SQLite database"), "{err}");
        let err = run_import(&store, "x", &dir.path().join("missing.db"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
        let err = run_import(&store, ".import/x", &file, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("reserved"), "{err}");
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn empty_file_imports_as_empty_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_memory().unwrap();
        let file = dir.path().join("empty.db");
        std::fs::write(&file, b"").unwrap();
        run_import(&store, "e", &file, false).unwrap();
        let conn = store.open("e").unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
    }

    #[test]
    fn stale_temporaries_are_swept_live_ones_kept() {
        let clock = pagestore::clock::ManualClock::new();
        let store = Store::builder()
            .in_memory()
            .clock(clock.clone())
            .build()
            .unwrap();
        let pages = store.page_store();
        pages.create(".import/a/1-1").unwrap();
        clock.advance_secs(STALE_AFTER.as_secs() - 10);
        let live = pages.create(".import/b/2-2").unwrap();
        assert_eq!(sweep_stale(pages).unwrap(), 0);
        clock.advance_secs(20);
        live.heartbeat().unwrap();
        assert_eq!(sweep_stale(pages).unwrap(), 1);
        let names = store.list().unwrap();
        assert_eq!(names, vec![".import/b/2-2".to_string()]);
        assert!(visible_names(&store).unwrap().is_empty());
    }
}
