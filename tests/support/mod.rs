//! The one test-support module of the root package's integration tests.
//!
//! * Stores: [`TestBackend`] is where a test's store lives (in memory, a
//!   directory, FoundationDB under a key prefix); [`store`] is a test's own
//!   fresh store (FoundationDB when built with `fdb` and `FDB_CLUSTER_FILE`
//!   is set, else in memory), [`dir_store`] one in a temporary directory,
//!   [`name`] a database name unique in the process, so tests run in
//!   parallel.
//! * Queries: [`scalar`] (one value), [`assert_integrity`].
//! * Measurements in a child process of the test binary: [`child`].
//! * Other processes against the loadable extension: building
//!   `target/release/libfdbvfs.so` ([`cdylib`]), a Python whose `sqlite3`
//!   module can load extensions ([`python`]), running a child to completion
//!   with a deadline ([`run`]), and the FoundationDB switch
//!   ([`fdb_cluster`]).
#![allow(dead_code)]

/// Measurements in a child process (shared with pagestore's tests).
#[path = "../../pagestore/tests/common/child.rs"]
pub mod child;

/// Counting a page store's keys (shared with pagestore's tests).
#[path = "../../pagestore/tests/common/keys.rs"]
pub mod keys;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest a child process may run before it is killed and the test fails.
pub const DEADLINE: Duration = Duration::from_secs(240);

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Outside CI a missing tool skips the test (one line); in CI it fails.
pub fn unavailable(what: &str) {
    if in_ci() {
        panic!("CI=true but {what}");
    }
    eprintln!("SKIP: {what}");
}

/// The FoundationDB cluster file the FDB variants use: `FDB_CLUSTER_FILE`
/// in a build with the `fdb` feature. Otherwise prints one skip line naming
/// `test` and returns `None`.
pub fn fdb_cluster(test: &str) -> Option<PathBuf> {
    let file = std::env::var_os("FDB_CLUSTER_FILE").filter(|c| !c.is_empty());
    match file {
        Some(f) if cfg!(feature = "fdb") => Some(PathBuf::from(f)),
        Some(_) => {
            eprintln!("SKIP (FoundationDB): {test}: FDB_CLUSTER_FILE is set but this build has no `fdb` feature");
            None
        }
        None => {
            eprintln!(
                "SKIP (FoundationDB): {test}: set FDB_CLUSTER_FILE and build with --features fdb"
            );
            None
        }
    }
}

/// `<target>` of this test binary (`<target>/<profile>/deps/<test>-…`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    exe.ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("unexpected test binary path {}", exe.display()))
        .to_path_buf()
}

/// `target/release/libfdbvfs.so` with this build's features, built once per
/// test process by `cargo build --release --lib` unless newer than every
/// source file (see `tests/extension.rs`, which does the same).
pub fn cdylib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = target_dir();
        let lib = target.join("release").join("libfdbvfs.so");
        let built = std::fs::metadata(&lib).and_then(|m| m.modified()).ok();
        if built.is_some_and(|b| newest_source().is_some_and(|s| s <= b)) && !cfg!(feature = "fdb")
        {
            return lib;
        }
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--release", "--lib", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null());
        if cfg!(feature = "fdb") {
            // The extension must be the fdb-built one (issue 14's crash).
            cmd.args(["--features", "fdb"]);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running cargo build: {e}"));
        assert!(
            out.status.success(),
            "cargo build --release --lib failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}

pub fn newest_source() -> Option<std::time::SystemTime> {
    fn walk(p: &Path, newest: &mut std::time::SystemTime) -> std::io::Result<()> {
        let m = std::fs::metadata(p)?;
        if m.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), newest)?;
            }
        } else {
            *newest = (*newest).max(m.modified()?);
        }
        Ok(())
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    walk(&root.join("Cargo.lock"), &mut newest).ok()?;
    for pkg in [".", "vfs", "pagestore"] {
        walk(&root.join(pkg).join("Cargo.toml"), &mut newest).ok()?;
        walk(&root.join(pkg).join("src"), &mut newest).ok()?;
    }
    Some(newest)
}

/// `python -m pip ARGS… --disable-pip-version-check`; outside CI it gives
/// up quickly when offline rather than retry for minutes.
pub fn pip(python: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip"])
        .args(args)
        .arg("--disable-pip-version-check");
    if !in_ci() {
        cmd.args(["--retries", "1", "--timeout", "15"]);
    }
    cmd
}

/// A Python whose `sqlite3` module can load extensions (Debian's
/// `/usr/bin/python3` can; pyenv builds often cannot), or `None` after a
/// skip line (a failure in CI).
pub fn python() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        for p in ["/usr/bin/python3", "python3"] {
            let ok = Command::new(p)
                .args([
                    "-c",
                    "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)",
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Some(PathBuf::from(p));
            }
        }
        unavailable(
            "no python3 whose sqlite3 module can load extensions (Debian: apt-get install python3)",
        );
        None
    })
    .clone()
}

/// A finished process.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// Exited by itself (no signal: a crash fails here) with status 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.signal().is_none(),
            "killed by signal {:?}\n{}",
            self.status.signal(),
            self.describe()
        );
        assert_eq!(self.status.code(), Some(0), "{}", self.describe());
    }

    /// Lines of stdout starting with `tag ` (the rest, split on spaces).
    pub fn tagged(&self, tag: &str) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .filter_map(|l| l.find(tag).map(|i| &l[i..]))
            .filter_map(|l| l.strip_prefix(tag))
            .filter(|rest| rest.is_empty() || rest.starts_with(' '))
            .map(|rest| rest.split_whitespace().map(str::to_string).collect())
            .collect()
    }
}

/// Runs `cmd` to completion (killed past [`DEADLINE`]), with the fdbvfs
/// environment made hermetic (`warn` logs, no default store).
pub fn run(cmd: &mut Command) -> Output {
    cmd.env("FDBVFS_LOG", "warn")
        .env_remove("FDBVFS_DIR")
        .env_remove("FDBVFS_DEFAULT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut err = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let s = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
                eprintln!("child ran past {DEADLINE:?}; killed");
                break s;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait: {e}"),
        }
    };
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}

// ------------------------------------------------------------------ stores

/// Where a test's store lives: the one place the tests choose a backend.
#[derive(Clone, Debug)]
pub enum TestBackend {
    /// A fresh embedded store in memory whose commits share batch versions
    /// whenever they can, as on a loaded FoundationDB cluster (code that
    /// compares versions where it must compare versionstamps fails here).
    Memory,
    /// An embedded store directory.
    Dir(PathBuf),
    /// A FoundationDB cluster, under `prefix` (`None`: the default prefix).
    Fdb {
        cluster: PathBuf,
        prefix: Option<Vec<u8>>,
    },
}

/// `FDB_CLUSTER_FILE` when set and not empty.
fn cluster_file_env() -> Option<PathBuf> {
    std::env::var_os("FDB_CLUSTER_FILE")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
}

impl TestBackend {
    /// A test's default backend: FoundationDB under a fresh prefix when this
    /// build has the `fdb` feature and `FDB_CLUSTER_FILE` is set, else
    /// [`TestBackend::Memory`].
    pub fn for_test() -> TestBackend {
        match cluster_file_env() {
            Some(cluster) if cfg!(feature = "fdb") => TestBackend::fdb_at(cluster, "fdbvfs-test"),
            _ => TestBackend::Memory,
        }
    }

    /// The FoundationDB variant of a test, under a fresh prefix below
    /// `tag`, or `None` after its skip line (see [`fdb_cluster`]).
    pub fn fdb(test: &str, tag: &str) -> Option<TestBackend> {
        Some(TestBackend::fdb_at(fdb_cluster(test)?, tag))
    }

    /// FoundationDB at `cluster` under the fresh prefix `<tag>/<random>/`.
    fn fdb_at(cluster: PathBuf, tag: &str) -> TestBackend {
        let prefix = format!("{tag}/{:016x}/", rand::random::<u64>()).into_bytes();
        TestBackend::Fdb {
            cluster,
            prefix: Some(prefix),
        }
    }

    /// Opens the store (panics, naming the backend, when it cannot).
    pub fn open(&self) -> fdbvfs::Store {
        init_tracing();
        let built = match self {
            TestBackend::Memory => {
                let faults = fdbvfs::Faults {
                    batch_join_probability: 1.0,
                    ..Default::default()
                };
                fdbvfs::Store::builder().in_memory().faults(faults).build()
            }
            TestBackend::Dir(d) => fdbvfs::Store::embedded(d),
            TestBackend::Fdb { cluster, prefix } => open_fdb(cluster, prefix.as_deref()),
        };
        built.unwrap_or_else(|e| panic!("store {self:?}: {e}"))
    }

    /// The environment that hands this store to a child process
    /// ([`TestBackend::from_env`] there). A memory store cannot be handed on.
    pub fn env(&self) -> Vec<(&'static str, std::ffi::OsString)> {
        match self {
            TestBackend::Memory => panic!("an in-memory store cannot be handed to another process"),
            TestBackend::Dir(d) => vec![("FDBVFS_TEST_DIR", d.clone().into_os_string())],
            TestBackend::Fdb { cluster, prefix } => {
                let mut env = vec![("FDBVFS_TEST_CLUSTER", cluster.clone().into_os_string())];
                if let Some(p) = prefix {
                    let p = String::from_utf8_lossy(p).into_owned();
                    env.push(("FDBVFS_TEST_PREFIX", p.into()));
                }
                env
            }
        }
    }

    /// The store a parent handed to this process with [`TestBackend::env`].
    pub fn from_env() -> Option<TestBackend> {
        if let Some(d) = std::env::var_os("FDBVFS_TEST_DIR") {
            return Some(TestBackend::Dir(d.into()));
        }
        let cluster = std::env::var_os("FDBVFS_TEST_CLUSTER")?.into();
        let prefix = std::env::var("FDBVFS_TEST_PREFIX")
            .ok()
            .map(String::into_bytes);
        Some(TestBackend::Fdb { cluster, prefix })
    }

    /// Clears a FoundationDB test's keys (nothing to do elsewhere).
    pub fn clear(&self) {
        #[cfg(feature = "fdb")]
        if let TestBackend::Fdb {
            cluster,
            prefix: Some(p),
        } = self
        {
            let opts = pagestore::kv::fdb::FdbOptions::default().cluster_file(cluster);
            if let Ok(kv) = pagestore::kv::fdb::FdbKv::open(opts) {
                let _ = kv.clear_prefix(p);
            }
        }
    }
}

#[cfg(feature = "fdb")]
fn open_fdb(cluster: &Path, prefix: Option<&[u8]>) -> fdbvfs::Result<fdbvfs::Store> {
    let mut b = fdbvfs::Store::builder().cluster_file(cluster);
    if let Some(p) = prefix {
        b = b.prefix(p.to_vec());
    }
    b.build()
}

#[cfg(not(feature = "fdb"))]
fn open_fdb(_cluster: &Path, _prefix: Option<&[u8]>) -> fdbvfs::Result<fdbvfs::Store> {
    panic!("FoundationDB needs the `fdb` feature")
}

/// A store for one test (derefs to [`fdbvfs::Store`]); a FoundationDB
/// test's keys are cleared when it is dropped.
pub struct TestStore {
    store: fdbvfs::Store,
    backend: TestBackend,
}

impl TestStore {
    pub fn backend(&self) -> &TestBackend {
        &self.backend
    }
}

impl std::ops::Deref for TestStore {
    type Target = fdbvfs::Store;
    fn deref(&self) -> &fdbvfs::Store {
        &self.store
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        self.backend.clear();
    }
}

/// A test's own fresh store on [`TestBackend::for_test`].
pub fn store() -> TestStore {
    let backend = TestBackend::for_test();
    TestStore {
        store: backend.open(),
        backend,
    }
}

/// A fresh store in a temporary directory (kept alive by the returned guard).
pub fn dir_store() -> (fdbvfs::Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = TestBackend::Dir(dir.path().to_path_buf()).open();
    (store, dir)
}

/// A database name unique in this process.
pub fn name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

// ----------------------------------------------------------------- queries

/// The one value `sql` returns (first column of the first row); panics
/// naming the query when it fails.
pub fn scalar<T: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str) -> T {
    scalar_with(conn, sql, [])
}

/// [`scalar`] with parameters.
pub fn scalar_with<T: rusqlite::types::FromSql>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> T {
    conn.query_row(sql, params, |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Asserts that `PRAGMA integrity_check` (every database attached to
/// `conn`) says `ok`, showing every problem it reports otherwise.
pub fn assert_integrity(conn: &rusqlite::Connection) {
    let report = (|| {
        let mut st = conn.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    })()
    .unwrap_or_else(|e| panic!("PRAGMA integrity_check: {e}"));
    assert_eq!(
        report,
        ["ok"],
        "PRAGMA integrity_check found problems:\n{}",
        report.join("\n")
    );
}

/// Inserts rows `from..=to` into `t(id INTEGER PRIMARY KEY, v INT, pad
/// BLOB)` (`v` = `id`, `pad` random bytes), `per_statement` rows per
/// autocommit statement (the tests' round-trip budgets and the benchmarks'
/// fixture).
pub fn insert_rows(
    conn: &rusqlite::Connection,
    from: i64,
    to: i64,
    pad: usize,
    per_statement: i64,
) {
    let mut i = from;
    while i <= to {
        let end = (i + per_statement - 1).min(to);
        conn.execute(
            &format!(
                "WITH RECURSIVE s(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM s WHERE i < ?2)
                 INSERT INTO t SELECT i, i, randomblob({pad}) FROM s"
            ),
            [i, end],
        )
        .unwrap_or_else(|e| panic!("insert rows {i}..={end}: {e}"));
        i = end + 1;
    }
}

/// Opens `uri` (read-write, create, URI) through the linked SQLite and
/// returns the result with the VFS's last error message, so a test can
/// check what an application would be told.
pub fn open_uri(
    uri: &str,
) -> (
    Result<rusqlite::Connection, rusqlite::Error>,
    Option<String>,
) {
    use rusqlite::OpenFlags;
    // Registration happens with the first Store::open; make sure it did.
    let _ = fdbvfs::register_linked();
    let _ = vfs::take_last_error();
    let r = rusqlite::Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI,
    );
    (r, vfs::take_last_error())
}

/// A connection (`journal_mode=DELETE`, as `Store::open` gives) to
/// database `name` of the page store registered with the VFS as `id`
/// (`vfs::registry::register_store`): for tests that build their own
/// `PageStore`.
pub fn open_registered(id: u64, name: &str) -> rusqlite::Connection {
    use rusqlite::OpenFlags;
    let _ = vfs::register_linked();
    let c = rusqlite::Connection::open_with_flags(
        format!("file:{name}?vfs=fdb&store={id}"),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("open {name}: {e}"));
    c.execute_batch("PRAGMA journal_mode=DELETE")
        .unwrap_or_else(|e| panic!("journal_mode on {name}: {e}"));
    c
}
