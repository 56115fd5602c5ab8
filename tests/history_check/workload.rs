//! The multi-process list-append workload behind `tests/history_check.rs`
//! and `examples/soak.rs`, and the merge of its per-process histories for
//! the checker (`checker.rs`).
//!
//! Processes (all on one embedded store directory in shared mode: the
//! first to open it serves `<dir>/kv.sock`, the others are clients and take
//! over when the owner dies):
//!
//! * a **setup** child creates the databases and exits;
//! * **Rust workers** (this binary re-run as a child), each with several
//!   threads of list-append transactions through rusqlite and the `fdb`
//!   VFS, a background GC thread (every database but `rs` has retention
//!   0), and, in slot 0, an "operations" thread that forks, restores and
//!   drops;
//! * **Python workers** (Debian's `python3` loading
//!   `target/release/libfdbvfs.so` into the system libsqlite3 through
//!   ctypes: `worker.py`), list-append transactions through the loadable
//!   extension;
//! * the **parent** kills a random worker (SIGKILL) every few seconds and
//!   starts a new one in its place (the owner of the directory included),
//!   and some workers run with failpoints that abort them at a protocol
//!   step (`FAILPOINTS`);
//! * a **final** child reads the final state and runs `integrity_check`.
//!
//! Databases: `la` and `lb` (lists; `la` also holds big rows for large
//! transactions), written together by ATTACH groups; `sc`, dropped and
//! re-created by the operations thread (each incarnation has its own id in
//! `meta`, so its keys are distinct in the history); `rs`, restored by the
//! operations thread (its keys are checked for duplicates, garbage and
//! aborted reads, and its acknowledged appends after the last restore must
//! be in the final state; the restore itself is checked exactly: the
//! restored version must equal the snapshot it restored to). A fork of
//! `la` is a read-only transaction of `la` (its content is read and goes
//! into the history with the fork's time interval).
//!
//! Outcomes: COMMIT OK → ok; `SQLITE_BUSY*` anywhere, or any error before
//! COMMIT → failed definitely (the same values are retried as a new
//! attempt, up to a limit, so a "failed" attempt that landed shows as a
//! duplicate); any other error at COMMIT, or a kill before the outcome was
//! recorded → unknown.
//!
//! Each process appends JSON lines to its own file under `<root>/hist`:
//! `inv` before a transaction (its appends), `done` after it, `restore`,
//! `drop`, `stats` (cumulative counters) and `anomaly` (an oracle check
//! failed).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagestore::kv::embedded::{EmbeddedOptions, Faults};
use pagestore::kv::Version;
use pagestore::{PageStore, StoreOptions};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

use super::checker::{self, History, Kind, Op, Outcome, Txn};

const ROLE_ENV: &str = "HISTORY_CHECK_ROLE";
const ROOT_ENV: &str = "HISTORY_CHECK_ROOT";
const SLOT_ENV: &str = "HISTORY_CHECK_SLOT";
const INC_ENV: &str = "HISTORY_CHECK_INC";
const START_ENV: &str = "HISTORY_CHECK_START_NS";
const THREADS_ENV: &str = "HISTORY_CHECK_THREADS";
const FAULTS_ENV: &str = "HISTORY_CHECK_FAULTS";
const PACE_ENV: &str = "HISTORY_CHECK_PACE";
/// The workers' staleness bound in µs (absent or 0: strict).
const STALENESS_ENV: &str = "HISTORY_CHECK_STALENESS_US";

/// This worker's `staleness=` URI parameter (empty: strict).
static STALENESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Key window: keys `[w * STRIDE, w * STRIDE + ACTIVE)` are hot during
/// window `w` of `WINDOW` (overlapping windows; lists stay short).
const WINDOW_NS: u64 = 4_000_000_000;
const STRIDE: u64 = 3;
const ACTIVE: u64 = 5;
/// Attempts of one logical transaction (same values) before it is given up
/// as failed.
const ATTEMPTS: u32 = 4;
/// A large transaction writes this many bytes of blob (spill and upload
/// thresholds are lowered to well below it in the workers).
const BIG_BYTES: i64 = 300_000;

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process of the
/// machine (Python's `time.monotonic_ns()` reads the same one).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How a child process is started: this test binary running one ignored
/// test, or an example binary with no arguments.
#[derive(Clone, Debug)]
pub enum Launcher {
    TestBinary { test: &'static str },
    Example,
}

impl Launcher {
    fn command(&self) -> Command {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let mut c = Command::new(exe);
        if let Launcher::TestBinary { test } = self {
            c.args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ]);
        }
        c.env_remove("FAILPOINTS")
            .env_remove("FDBVFS_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }
}

/// What a run does.
#[derive(Clone, Debug)]
pub struct Config {
    pub seconds: u64,
    pub rust_workers: usize,
    pub threads: usize,
    pub python_workers: usize,
    pub python_threads: usize,
    /// A planted bug (`plant::…` failpoint) switched on in every Rust
    /// worker.
    pub plant: Option<&'static str>,
    /// Mean time between SIGKILLs of a random worker (none when zero).
    pub kill_every: Duration,
    /// Some workers run with failpoints that abort them at a protocol step.
    pub failpoint_kills: bool,
    pub conflict_probability: f64,
    pub unknown_result_probability: f64,
    /// Unknown results whose commit lands later (`Faults::late_unknown_probability`).
    pub late_unknown_probability: f64,
    /// Commits sharing their predecessor's version (an FDB proxy batch).
    pub batch_join_probability: f64,
    pub latency: Duration,
    /// Pause between a worker thread's transactions, at most.
    pub idle: Duration,
    /// Pause between a worker's GC passes, at most.
    pub gc_every: Duration,
    /// Percentage of a Rust worker thread's transactions run as chained
    /// pairs (two transactions under one held read lock).
    pub chained_percent: u64,
    /// Percentage of a Rust worker thread's transactions that are ATTACH
    /// groups over `la` and `lb` (at most 75).
    pub group_percent: u64,
    pub launcher: Launcher,
    /// Where child stderr goes (`None`: discarded).
    pub log_dir: Option<PathBuf>,
    pub seed: u64,
    /// The Rust workers' connections run with this staleness bound
    /// (`staleness=` URI parameter; zero: strict), and the checker allows
    /// read-only transactions that much staleness.
    pub staleness: Duration,
}

impl Config {
    /// Everything on: the CI run and the soak.
    pub fn all_faults(seconds: u64, launcher: Launcher) -> Config {
        Config {
            seconds,
            rust_workers: 3,
            threads: 3,
            python_workers: 1,
            python_threads: 2,
            plant: None,
            kill_every: Duration::from_secs(6),
            failpoint_kills: true,
            conflict_probability: 0.03,
            unknown_result_probability: 0.03,
            late_unknown_probability: 0.02,
            batch_join_probability: 0.3,
            latency: Duration::from_micros(200),
            idle: Duration::ZERO,
            gc_every: Duration::from_millis(250),
            chained_percent: 5,
            group_percent: 20,
            launcher,
            log_dir: None,
            seed: rand::random(),
            staleness: Duration::ZERO,
        }
    }

    /// A planted bug, with the workload sharpened to expose it quickly:
    /// kills and spurious conflicts off (noise here), more unknown results
    /// (late ones too), and for the horizon bug GC every few milliseconds
    /// with pauses between transactions (so a process's view of a database
    /// falls behind GC's horizon).
    pub fn planted(plant: &'static str, seconds: u64, launcher: Launcher) -> Config {
        let mut c = Config::all_faults(seconds, launcher);
        c.plant = Some(plant);
        c.python_workers = 0;
        c.kill_every = Duration::ZERO;
        c.failpoint_kills = false;
        c.conflict_probability = 0.0;
        c.unknown_result_probability = 0.1;
        c.late_unknown_probability = 0.1;
        if plant == "plant::ignore_staleness_bound" {
            // Bounded connections, paused between transactions so that
            // another process's commits land while a view sits unrefreshed.
            c.staleness = Duration::from_millis(5);
            c.idle = Duration::from_millis(20);
        }
        if plant == "plant::skip_horizon_check" {
            c.gc_every = Duration::from_millis(10);
            c.idle = Duration::from_millis(100);
            c.chained_percent = 40;
        }
        c
    }
}

// ------------------------------------------------------------------ child

/// The child side: runs the role named in the environment and returns
/// true, or returns false when this process is not a child.
pub fn child_main() -> bool {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return false;
    };
    let root = PathBuf::from(std::env::var_os(ROOT_ENV).unwrap_or_else(|| panic!("no root")));
    let _scenario = fail::FailScenario::setup();
    let env_u64 = |k: &str| -> u64 {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let faults = parse_faults(&std::env::var(FAULTS_ENV).unwrap_or_default());
    // `HISTORY_CHECK_LOG=<filter>` (e.g. `warn`): the child logs to its
    // stderr, kept under `logs/` with `HISTORY_CHECK_KEEP` (VFS errors such
    // as a SQLITE_CORRUPT's cause are `warn`).
    if let Ok(filter) = std::env::var("HISTORY_CHECK_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let stale_us = env_u64(STALENESS_ENV);
    if stale_us > 0 && role == "worker" {
        let _ = STALENESS.set(format!("&staleness={stale_us}us"));
    }
    match role.as_str() {
        "setup" => setup(&root, faults),
        "final" => final_read(&root),
        "worker" => worker(
            &root,
            env_u64(SLOT_ENV) as usize,
            env_u64(INC_ENV),
            env_u64(START_ENV),
            env_u64(THREADS_ENV).max(1) as usize,
            faults,
        ),
        r => panic!("unknown role {r}"),
    }
    true
}

fn parse_faults(s: &str) -> Faults {
    let f: Vec<f64> = s.split(',').filter_map(|x| x.parse().ok()).collect();
    if f.len() != 5 {
        return Faults::default();
    }
    Faults {
        conflict_probability: f[0],
        unknown_result_probability: f[1],
        late_unknown_probability: f[2],
        batch_join_probability: f[3],
        latency: Duration::from_micros(f[4] as u64),
        ..Faults::default()
    }
}

/// Timing knobs of the worker processes (from the environment).
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// Pause between a thread's transactions (0..=this, uniformly).
    idle_ms: u64,
    /// Pause between GC passes (half to all of this).
    gc_ms: u64,
    /// Percentage of transactions run as chained pairs.
    chained_pct: u64,
    /// Percentage of ATTACH group transactions (`la` + `lb`).
    group_pct: u64,
}

fn pace_from_env() -> Pace {
    let v: Vec<u64> = std::env::var(PACE_ENV)
        .unwrap_or_default()
        .split(',')
        .filter_map(|x| x.parse().ok())
        .collect();
    Pace {
        idle_ms: v.first().copied().unwrap_or(0),
        gc_ms: v.get(1).copied().unwrap_or(250).max(2),
        chained_pct: v.get(2).copied().unwrap_or(0),
        group_pct: v.get(3).copied().unwrap_or(20),
    }
}

/// This process's store: the embedded directory through the VFS registry
/// (so the workers can lower the spill and large-commit thresholds, which
/// `fdbvfs::StoreBuilder` does not expose), registered for `store=<id>`.
struct Opened {
    id: u64,
    pages: PageStore,
    embedded: Option<std::sync::Arc<pagestore::kv::embedded::EmbeddedKv>>,
}

fn open_store(root: &Path, faults: Faults) -> Opened {
    vfs::register_linked().unwrap_or_else(|e| panic!("register the VFS: {e}"));
    let h = fdbvfs::backend::open_dir(&root.join("store"), |canon| {
        let e = EmbeddedOptions::dir(canon).with_faults(faults);
        let s = StoreOptions {
            inline_commit_bytes: 96 << 10,
            chunk_bytes: 64 << 10,
            spill_bytes: 160 << 10,
            ..StoreOptions::default()
        };
        (e, s)
    })
    .unwrap_or_else(|e| panic!("open the store: {e}"));
    if let Some(kv) = &h.embedded {
        kv.set_faults(faults);
    }
    let pages = h.pages.clone();
    let embedded = h.embedded.clone();
    let id = vfs::registry::register_store(h.pages);
    Opened {
        id,
        pages,
        embedded,
    }
}

fn uri(id: u64, name: &str) -> String {
    let stale = STALENESS.get().map_or("", String::as_str);
    format!("file:{name}?vfs=fdb&store={id}{stale}")
}

fn connect(id: u64, name: &str) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        uri(id, name),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.execute_batch("PRAGMA journal_mode=DELETE;")?;
    c.busy_timeout(Duration::from_secs(5))?;
    Ok(c)
}

const LISTS: &str = "CREATE TABLE IF NOT EXISTS lists(k INTEGER PRIMARY KEY, vals TEXT NOT NULL)";

/// Runs `f` in a transaction until it commits (setup and final reads: not
/// under test, but faults may be on).
fn settle<T>(conn: &mut Connection, mut f: impl FnMut(&Connection) -> rusqlite::Result<T>) -> T {
    let mut last = None;
    for _ in 0..200 {
        match attempt(conn, &mut f) {
            Ok(v) => return v,
            Err(e) => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    panic!("setup transaction never committed: {last:?}");
}

/// One run of `f` in a transaction; rolled back when it fails.
fn attempt<T>(
    conn: &mut Connection,
    f: &mut impl FnMut(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let r = (|| {
        conn.execute_batch("BEGIN")?;
        let v = f(conn)?;
        conn.execute_batch("COMMIT")?;
        Ok::<_, rusqlite::Error>(v)
    })();
    if r.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    r
}

fn setup(root: &Path, faults: Faults) {
    let s = open_store(root, faults);
    for db in ["la", "lb", "rs", "sc"] {
        let mut c = connect(s.id, db).unwrap_or_else(|e| panic!("open {db}: {e}"));
        settle(&mut c, |c| {
            c.execute_batch(LISTS)?;
            if db == "la" {
                c.execute_batch("CREATE TABLE IF NOT EXISTS big(id INTEGER PRIMARY KEY, b BLOB)")?;
            }
            if db == "sc" {
                c.execute_batch(
                    "CREATE TABLE IF NOT EXISTS meta(one INTEGER PRIMARY KEY CHECK (one = 1), inc INTEGER NOT NULL);
                     INSERT OR IGNORE INTO meta VALUES (1, 1);",
                )?;
            }
            Ok(())
        });
        if db != "rs" {
            set_retention_zero(&s.pages, db);
        }
    }
}

fn set_retention_zero(pages: &PageStore, db: &str) {
    for _ in 0..50 {
        match pages.open(db).and_then(|d| d.set_retention(Duration::ZERO)) {
            Ok(()) => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn read_lists(c: &Connection, table: &str) -> rusqlite::Result<BTreeMap<u64, Vec<u64>>> {
    let mut st = c.prepare(&format!("SELECT k, vals FROM {table}"))?;
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (k, v) = row?;
        out.insert(k as u64, parse_list(&v));
    }
    Ok(out)
}

fn parse_list(s: &str) -> Vec<u64> {
    s.split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect()
}

/// Like [`settle`], but gives up (with the error) after a few non-BUSY
/// failures: the final read reports a broken database instead of dying.
fn try_settle<T>(
    conn: &mut Connection,
    mut f: impl FnMut(&Connection) -> rusqlite::Result<T>,
) -> Result<T, String> {
    let mut other = 0;
    for _ in 0..200 {
        match attempt(conn, &mut f) {
            Ok(v) => return Ok(v),
            Err(e) => {
                if !is_busy(&e) {
                    other += 1;
                    if other >= 3 {
                        return Err(e.to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Err("never committed".into())
}

/// The final state of every database (faults off), with `integrity_check`;
/// a database that cannot be read is reported, not fatal.
fn final_read(root: &Path) {
    let s = open_store(root, Faults::default());
    let mut out = serde_json::Map::new();
    let mut integrity = serde_json::Map::new();
    for db in ["la", "lb", "rs", "sc"] {
        let read = connect(s.id, db)
            .map_err(|e| format!("open: {e}"))
            .and_then(|mut c| {
                let r = try_settle(&mut c, |c| {
                    let inc: i64 = if db == "sc" {
                        c.query_row("SELECT inc FROM meta", [], |r| r.get(0))
                            .unwrap_or(-1)
                    } else {
                        0
                    };
                    let lists = if db == "sc" && inc < 0 {
                        BTreeMap::new()
                    } else {
                        read_lists(c, "lists")?
                    };
                    Ok((inc, lists))
                });
                let ic: String = c
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .unwrap_or_else(|e| format!("integrity_check failed: {e}"));
                integrity.insert(db.into(), json!(ic));
                r
            });
        match read {
            Ok((inc, lists)) => {
                let key_db = if db == "sc" {
                    format!("sc#{inc}")
                } else {
                    db.to_string()
                };
                out.insert(
                    db.into(),
                    json!({
                        "db": key_db,
                        "lists": lists.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                    }),
                );
            }
            Err(e) => {
                out.insert(db.into(), json!({ "error": e }));
            }
        }
    }
    out.insert("integrity".into(), Value::Object(integrity));
    let text = serde_json::to_string(&Value::Object(out)).unwrap_or_default();
    std::fs::write(root.join("final.json"), text).unwrap_or_else(|e| panic!("final.json: {e}"));
}

/// Appends JSON lines to this process's history file, one write per line
/// (a kill loses at most the line being written).
struct Recorder {
    file: Mutex<File>,
}

impl Recorder {
    fn new(path: &Path) -> Recorder {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("history file {}: {e}", path.display()));
        Recorder {
            file: Mutex::new(file),
        }
    }

    fn line(&self, v: Value) {
        let mut s = v.to_string();
        s.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = f.write_all(s.as_bytes());
    }
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    unknown: AtomicU64,
    attempts: AtomicU64,
    busy: AtomicU64,
    errors: AtomicU64,
    large: AtomicU64,
    slow: AtomicU64,
    groups: AtomicU64,
    chained: AtomicU64,
    gc_passes: AtomicU64,
    gc_errors: AtomicU64,
    forks: AtomicU64,
    restores: AtomicU64,
    drops: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Worker {
    id: u64,
    pages: PageStore,
    rec: Recorder,
    inc: u64,
    start_ns: u64,
    stop_file: PathBuf,
    counters: Counters,
    pace: Pace,
    /// Counter of the `sc` incarnations this worker created.
    sc_seq: AtomicU64,
    /// The backend when this process owns the directory (fault model
    /// counters).
    embedded: Option<std::sync::Arc<pagestore::kv::embedded::EmbeddedKv>>,
    /// Error messages seen (first words), for the run's figures.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.stop_file.exists()
    }

    fn stats(&self) -> Value {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let m = self.pages.kv().metrics();
        let st = self.pages.stats();
        let mc = self
            .embedded
            .as_ref()
            .map(|k| k.model_counts())
            .unwrap_or_default();
        json!({
            "t": "stats", "lang": "rust",
            "backend": self.pages.kv().backend_name(),
            "ok": g(&c.ok), "failed": g(&c.failed), "unknown": g(&c.unknown),
            "attempts": g(&c.attempts), "busy": g(&c.busy), "errors": g(&c.errors),
            "large": g(&c.large), "slow": g(&c.slow), "groups": g(&c.groups), "chained": g(&c.chained),
            "gc_passes": g(&c.gc_passes), "gc_errors": g(&c.gc_errors),
            "forks": g(&c.forks), "restores": g(&c.restores), "drops": g(&c.drops),
            "kv_conflicts": m.conflicts, "kv_unknown_results": m.unknown_results,
            "recovered_unknown": st.recovered_unknown,
            "late_applied": mc.late_applied, "late_held": mc.late_held, "batch_joins": mc.batch_joins,
            "error_kinds": *self.errors.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }

    fn note_error(&self, e: &rusqlite::Error) {
        let s = e.to_string();
        let key: String = s.chars().take(60).collect();
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(0) += 1;
    }
}

fn worker(root: &Path, slot: usize, inc: u64, start_ns: u64, threads: usize, faults: Faults) {
    let s = open_store(root, faults);
    let w = Arc::new(Worker {
        id: s.id,
        pages: s.pages.clone(),
        rec: Recorder::new(&root.join("hist").join(format!("w{inc}.jsonl"))),
        inc,
        start_ns,
        stop_file: root.join("stop"),
        counters: Counters::default(),
        pace: pace_from_env(),
        sc_seq: AtomicU64::new(0),
        embedded: s.embedded.clone(),
        errors: Mutex::new(BTreeMap::new()),
    });
    let mut handles = Vec::new();
    for t in 0..threads {
        let w = w.clone();
        handles.push(std::thread::spawn(move || appender(&w, t as u64)));
    }
    {
        let w = w.clone();
        handles.push(std::thread::spawn(move || gc_loop(&w)));
    }
    if slot == 0 {
        let w = w.clone();
        handles.push(std::thread::spawn(move || operations(&w)));
    }
    {
        let w = w.clone();
        handles.push(std::thread::spawn(move || {
            while !w.stopping() {
                w.rec.line(w.stats());
                std::thread::sleep(Duration::from_millis(500));
            }
        }));
    }
    for h in handles {
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    }
    w.rec.line(w.stats());
}

fn gc_loop(w: &Worker) {
    let mut rng = rand::rng();
    while !w.stopping() {
        let ms = w.pace.gc_ms;
        std::thread::sleep(Duration::from_millis(rng.random_range(ms / 2..=ms)));
        match w.pages.gc(false) {
            Ok(_) => bump(&w.counters.gc_passes),
            Err(_) => bump(&w.counters.gc_errors),
        }
    }
}

/// Which connection a transaction uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    La,
    /// `la` with `lb` attached: one SQL transaction over both databases.
    Group,
    Sc,
    Rs,
}

#[derive(Clone, Debug)]
enum PlanOp {
    /// (schema alias: "main" or "lb", database name, key)
    Read(&'static str, &'static str, u64),
    Append(&'static str, &'static str, u64, u64),
}

fn key_name(db: &str, sc_inc: i64, k: u64) -> String {
    if db == "sc" {
        format!("sc#{sc_inc}/{k}")
    } else {
        format!("{db}/{k}")
    }
}

/// A transaction's outcome as the client saw it.
enum Attempt {
    Ok(Vec<Op>),
    /// Definitely not committed; BUSY (worth retrying) or not.
    Failed {
        busy: bool,
        why: String,
    },
    Unknown(Vec<Op>, String),
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy)
}

/// `SQLITE_CORRUPT`: never right on a healthy store (e.g. a page read
/// before its commit's index existed); errors carrying this prefix are
/// anomalies.
const CORRUPT: &str = "SQLITE_CORRUPT";

fn describe(e: &rusqlite::Error, when: &str) -> String {
    let corrupt = matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseCorrupt);
    if corrupt {
        format!("{CORRUPT} {when}: {e}")
    } else {
        format!("{when}: {e}")
    }
}

fn run_attempt(
    w: &Worker,
    conn: &Connection,
    target: Target,
    plan: &[PlanOp],
    large: bool,
    slow: Option<Duration>,
) -> Attempt {
    let mut ops = Vec::new();
    let body = (|| -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN")?;
        let sc_inc: i64 = if target == Target::Sc {
            conn.query_row("SELECT inc FROM meta", [], |r| r.get(0))?
        } else {
            0
        };
        for (i, op) in plan.iter().enumerate() {
            match op {
                PlanOp::Read(schema, db, k) => {
                    let v: Option<String> = match conn.query_row(
                        &format!("SELECT vals FROM {schema}.lists WHERE k = ?1"),
                        [*k as i64],
                        |r| r.get(0),
                    ) {
                        Ok(v) => Some(v),
                        Err(rusqlite::Error::QueryReturnedNoRows) => None,
                        Err(e) => return Err(e),
                    };
                    ops.push(Op::Read {
                        key: key_name(db, sc_inc, *k),
                        values: v.as_deref().map(parse_list).unwrap_or_default(),
                    });
                }
                PlanOp::Append(schema, db, k, v) => {
                    conn.execute(
                        &format!(
                            "INSERT INTO {schema}.lists(k, vals) VALUES (?1, ?2)
                             ON CONFLICT(k) DO UPDATE SET vals = vals || ' ' || excluded.vals"
                        ),
                        rusqlite::params![*k as i64, v.to_string()],
                    )?;
                    ops.push(Op::Append {
                        key: key_name(db, sc_inc, *k),
                        value: *v,
                    });
                }
            }
            if i == 0 {
                if let Some(d) = slow {
                    std::thread::sleep(d);
                }
            }
        }
        if large {
            conn.execute(
                "INSERT OR REPLACE INTO main.big(id, b) VALUES (?1, randomblob(?2))",
                rusqlite::params![rand::rng().random_range(0..3i64), BIG_BYTES],
            )?;
        }
        Ok(())
    })();
    let rollback = || {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
    };
    if let Err(e) = body {
        rollback();
        w.note_error(&e);
        return Attempt::Failed {
            busy: is_busy(&e),
            why: describe(&e, "before COMMIT"),
        };
    }
    match conn.execute_batch("COMMIT") {
        Ok(()) => Attempt::Ok(ops),
        Err(e) if is_busy(&e) => {
            rollback();
            w.note_error(&e);
            Attempt::Failed {
                busy: true,
                why: describe(&e, "COMMIT"),
            }
        }
        Err(e) => {
            rollback();
            w.note_error(&e);
            Attempt::Unknown(ops, describe(&e, "COMMIT"))
        }
    }
}

fn ops_json(ops: &[Op]) -> Value {
    Value::Array(
        ops.iter()
            .map(|o| match o {
                Op::Append { key, value } => json!(["a", key, value]),
                Op::Read { key, values } => json!(["r", key, values]),
            })
            .collect(),
    )
}

/// 1–3 reads and appends of hot keys in `dbs` ((schema, database) pairs).
fn make_plan(
    w: &Worker,
    thread: u64,
    n: u64,
    rng: &mut StdRng,
    dbs: &[(&'static str, &'static str)],
) -> Vec<PlanOp> {
    let window = now_ns().saturating_sub(w.start_ns) / WINDOW_NS;
    let mut plan = Vec::new();
    let mut value = 0u64;
    let mut next_value = || {
        value += 1;
        w.inc * 1_000_000_000 + thread * 10_000_000 + n * 10 + value
    };
    for _ in 0..rng.random_range(1..=3) {
        let (schema, db) = dbs[rng.random_range(0..dbs.len())];
        let k = window * STRIDE + rng.random_range(0..ACTIVE);
        match rng.random_range(0..3) {
            0 => plan.push(PlanOp::Read(schema, db, k)),
            1 => plan.push(PlanOp::Append(schema, db, k, next_value())),
            _ => {
                // Read-modify-write of one key: the lost-update shape.
                plan.push(PlanOp::Read(schema, db, k));
                plan.push(PlanOp::Append(schema, db, k, next_value()));
            }
        }
    }
    plan
}

fn record_invoke(w: &Worker, id: &str, plan: &[PlanOp]) {
    let appends: Vec<Value> = plan
        .iter()
        .filter_map(|p| match p {
            PlanOp::Append(_, db, k, v) => Some(json!([db, k, v])),
            PlanOp::Read(..) => None,
        })
        .collect();
    w.rec
        .line(json!({"t": "inv", "id": id, "ns": now_ns(), "appends": appends}));
}

/// Two transactions on one connection of `la` while a read statement
/// stays open across them: SQLite keeps its read lock and its page cache,
/// so the second BEGIN is "chained" (the VFS must prove nothing changed
/// since the first commit, from the change log, which GC at retention 0
/// removes meanwhile). One attempt each: a retry would chain again.
fn chained_pair(w: &Worker, thread: u64, n: &mut u64, rng: &mut StdRng) {
    let Ok(conn) = connect(w.id, "la") else {
        return;
    };
    let Ok(mut st) = conn.prepare("SELECT k FROM main.lists") else {
        return;
    };
    let Ok(mut rows) = st.query([]) else {
        return;
    };
    // The read lock (and with it SQLite's snapshot for statements that
    // only read) dates from here: both transactions' intervals start here.
    let held_from = now_ns();
    let _ = rows.next();
    bump(&w.counters.chained);
    for step in 0..2 {
        if step == 1 {
            let ms = w.pace.idle_ms.max(50);
            std::thread::sleep(Duration::from_millis(rng.random_range(ms / 2..=ms)));
        }
        *n += 1;
        let plan = make_plan(w, thread, *n, rng, &[("main", "la")]);
        let id = format!("w{}-t{thread}-{}", w.inc, *n);
        record_invoke(w, &id, &plan);
        bump(&w.counters.attempts);
        let t0 = held_from;
        let attempt = run_attempt(w, &conn, Target::La, &plan, false, None);
        let t1 = now_ns();
        let (out, ops, why) = match attempt {
            Attempt::Ok(ops) => {
                bump(&w.counters.ok);
                ("ok", ops_json(&ops), None)
            }
            Attempt::Failed { busy, why } => {
                if busy {
                    bump(&w.counters.busy);
                }
                bump(&w.counters.failed);
                ("fail", json!([]), Some(why))
            }
            Attempt::Unknown(ops, why) => {
                bump(&w.counters.unknown);
                ("unknown", ops_json(&ops), Some(why))
            }
        };
        w.rec.line(json!({"t": "done", "id": id, "ns0": t0, "ns": t1, "out": out, "ops": ops, "errors": why.into_iter().collect::<Vec<_>>()}));
        if out != "ok" {
            break;
        }
    }
}

fn appender(w: &Worker, thread: u64) {
    let mut rng = StdRng::seed_from_u64(w.inc * 1000 + thread);
    let mut conns: HashMap<&'static str, Connection> = HashMap::new();
    let mut n = 0u64;
    while !w.stopping() {
        n += 1;
        if w.pace.idle_ms > 0 {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..=w.pace.idle_ms)));
        }
        if rng.random_range(0..100) < w.pace.chained_pct {
            chained_pair(w, thread, &mut n, &mut rng);
            continue;
        }
        let g = w.pace.group_pct.min(75);
        let target = match rng.random_range(0..100) {
            x if x < 75 - g => Target::La,
            x if x < 75 => Target::Group,
            75..88 => Target::Sc,
            _ => Target::Rs,
        };
        let (conn_name, dbs): (&'static str, &[(&'static str, &'static str)]) = match target {
            Target::La => ("la", &[("main", "la")]),
            Target::Group => ("group", &[("main", "la"), ("lb", "lb")]),
            Target::Sc => ("sc", &[("main", "sc")]),
            Target::Rs => ("rs", &[("main", "rs")]),
        };
        let plan = make_plan(w, thread, n, &mut rng, dbs);
        let large = target == Target::La && rng.random_bool(0.04);
        let slow = rng
            .random_bool(0.05)
            .then(|| Duration::from_millis(rng.random_range(50..400)));
        if large {
            bump(&w.counters.large);
        }
        if slow.is_some() {
            bump(&w.counters.slow);
        }
        if target == Target::Group {
            bump(&w.counters.groups);
        }
        let id = format!("w{}-t{thread}-{n}", w.inc);
        record_invoke(w, &id, &plan);
        let mut attempt = 0;
        let mut whys: Vec<String> = Vec::new();
        let result = loop {
            attempt += 1;
            bump(&w.counters.attempts);
            if !conns.contains_key(conn_name) {
                let c = connect(
                    w.id,
                    if conn_name == "group" {
                        "la"
                    } else {
                        conn_name
                    },
                )
                .and_then(|c| {
                    if conn_name == "group" {
                        c.execute_batch(&format!("ATTACH DATABASE '{}' AS lb", uri(w.id, "lb")))?;
                    }
                    Ok(c)
                });
                match c {
                    Ok(c) => {
                        conns.insert(conn_name, c);
                    }
                    Err(e) => {
                        w.note_error(&e);
                        std::thread::sleep(Duration::from_millis(50));
                        break (
                            now_ns(),
                            Attempt::Failed {
                                busy: false,
                                why: describe(&e, "open"),
                            },
                        );
                    }
                }
            }
            let conn = &conns[conn_name];
            let t0 = now_ns();
            match run_attempt(w, conn, target, &plan, large, slow) {
                Attempt::Failed { busy: true, why } if attempt < ATTEMPTS => {
                    whys.push(why);
                    bump(&w.counters.busy);
                    std::thread::sleep(Duration::from_micros(rng.random_range(100..3000)));
                }
                Attempt::Failed { busy, why } => {
                    whys.push(why.clone());
                    if busy {
                        bump(&w.counters.busy);
                    } else {
                        // A connection that failed otherwise (e.g. its
                        // database was dropped) is opened anew.
                        conns.remove(conn_name);
                    }
                    break (t0, Attempt::Failed { busy, why });
                }
                other => break (t0, other),
            }
        };
        let (t0, attempt) = result;
        let t1 = now_ns();
        let (out, ops) = match attempt {
            Attempt::Ok(ops) => {
                bump(&w.counters.ok);
                ("ok", ops_json(&ops))
            }
            Attempt::Failed { .. } => {
                bump(&w.counters.failed);
                ("fail", json!([]))
            }
            Attempt::Unknown(ops, why) => {
                whys.push(why);
                bump(&w.counters.unknown);
                conns.remove(conn_name);
                ("unknown", ops_json(&ops))
            }
        };
        w.rec.line(json!({"t": "done", "id": id, "ns0": t0, "ns": t1, "out": out, "ops": ops, "errors": whys}));
    }
}

/// Slot 0's forks, restores and drops, in turn.
fn operations(w: &Worker) {
    let mut rng = rand::rng();
    let mut step = 0u64;
    ensure_sc(w);
    while !w.stopping() {
        std::thread::sleep(Duration::from_millis(rng.random_range(500..1500)));
        if w.stopping() {
            break;
        }
        step += 1;
        match step % 3 {
            0 => fork_la(w, step),
            1 => restore_rs(w, &mut rng),
            _ => drop_sc(w, step),
        }
    }
}

/// A fork of `la` is a read of `la`: its content goes into the history as
/// a read-only transaction spanning the fork call.
///
/// Every other fork is made from SQL (`PRAGMA fdb_fork` inside a read
/// transaction: a fork of that transaction's snapshot), the others through
/// the store API (the latest version).
fn fork_la(w: &Worker, step: u64) {
    let name = format!("fk{}-{step}", w.inc);
    let t0 = now_ns();
    let forked = if step.is_multiple_of(2) {
        w.pages.fork("la", &name, None).is_ok()
    } else {
        connect(w.id, "la")
            .and_then(|c| {
                c.execute_batch("BEGIN")?;
                let r = (|| {
                    c.query_row("SELECT count(*) FROM lists", [], |r| r.get::<_, i64>(0))?;
                    c.query_row(&format!("PRAGMA fdb_fork = '{name}'"), [], |r| {
                        r.get::<_, String>(0)
                    })
                })();
                let _ = c.execute_batch("COMMIT");
                r
            })
            .is_ok()
    };
    if !forked {
        return;
    }
    let t1 = now_ns();
    bump(&w.counters.forks);
    if let Ok(mut c) = connect(w.id, &name) {
        let lists = settle(&mut c, |c| read_lists(c, "lists"));
        let ops: Vec<Op> = lists
            .iter()
            .map(|(k, v)| Op::Read {
                key: format!("la/{k}"),
                values: v.clone(),
            })
            .collect();
        w.rec.line(json!({"t": "done", "id": format!("fork-{name}"), "ns0": t0, "ns": t1, "out": "ok", "ops": ops_json(&ops)}));
    }
    let _ = w.pages.drop_database(&name);
}

/// Restore `rs` to a snapshot read a moment earlier; the restored version
/// must equal the snapshot exactly.
fn restore_rs(w: &Worker, rng: &mut rand::rngs::ThreadRng) {
    let Ok(mut c) = connect(w.id, "rs") else {
        return;
    };
    let (snapshot, version) = settle(&mut c, |c| {
        let l = read_lists(c, "lists")?;
        let v: String = c.query_row("PRAGMA fdb_version", [], |r| r.get(0))?;
        Ok((l, v.parse::<u64>().unwrap_or(0)))
    });
    drop(c);
    std::thread::sleep(Duration::from_millis(rng.random_range(100..600)));
    let t0 = now_ns();
    w.rec.line(json!({"t": "restore-start", "ns0": t0}));
    // Through the API, or from SQL (`PRAGMA fdb_restore`), in turn.
    let r: Result<u64, String> = if version.is_multiple_of(2) {
        w.pages
            .open("rs")
            .map_err(vfs::Error::from)
            .and_then(|db| {
                db.restore_retrying(Version::new(version))
                    .map_err(vfs::Error::from)
            })
            .map(|c| c.version)
            .map(Version::get)
            .map_err(|e| e.to_string())
    } else {
        connect(w.id, "rs")
            .and_then(|c| {
                c.query_row(&format!("PRAGMA fdb_restore = 'v:{version}'"), [], |r| {
                    r.get::<_, String>(0)
                })
            })
            .map_err(|e| e.to_string())
            .and_then(|v| v.parse::<u64>().map_err(|e| format!("{v:?}: {e}")))
    };
    let t1 = now_ns();
    match r {
        Ok(at) => {
            bump(&w.counters.restores);
            w.rec
                .line(json!({"t": "restore", "ns0": t0, "ns": t1, "out": "ok", "version": at}));
            let check = Connection::open_with_flags(
                format!("{}&version={at}", uri(w.id, "rs")),
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
            )
            .and_then(|c| read_lists(&c, "lists"));
            match check {
                Ok(l) if l == snapshot => {}
                Ok(l) => w.rec.line(json!({"t": "anomaly", "what": format!(
                    "restore of rs to v{version} (commit v{at}) reads {l:?}, expected the snapshot {snapshot:?}")})),
                Err(e) => w.note_error(&e),
            }
        }
        Err(e) => {
            // Failed or unknown: the parent treats it as possibly applied.
            w.rec
                .line(json!({"t": "restore", "ns0": t0, "ns": t1, "out": "unknown", "why": e.to_string()}));
        }
    }
}

/// Makes sure `sc` has its tables and an incarnation id.
fn ensure_sc(w: &Worker) -> Option<i64> {
    let mut c = connect(w.id, "sc").ok()?;
    // Unique per incarnation of `sc`: this worker's number and a counter.
    let inc = (w.inc * 100_000 + w.sc_seq.fetch_add(1, Ordering::Relaxed)) as i64;
    let got = settle(&mut c, |c| {
        c.execute_batch(LISTS)?;
        c.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta(one INTEGER PRIMARY KEY CHECK (one = 1), inc INTEGER NOT NULL)",
        )?;
        c.execute("INSERT OR IGNORE INTO meta VALUES (1, ?1)", [inc])?;
        c.query_row("SELECT inc FROM meta", [], |r| r.get::<_, i64>(0))
    });
    set_retention_zero(&w.pages, "sc");
    Some(got)
}

/// Reads `sc`'s final state (a normal transaction of the history), drops
/// it, and creates it anew with a new incarnation id.
fn drop_sc(w: &Worker, step: u64) {
    let t0 = now_ns();
    let read = connect(w.id, "sc").and_then(|c| {
        c.execute_batch("BEGIN")?;
        let r = (|| {
            let inc: i64 = c.query_row("SELECT inc FROM meta", [], |r| r.get(0))?;
            let l = read_lists(&c, "lists")?;
            Ok((inc, l))
        })();
        let _ = c.execute_batch("COMMIT");
        r
    });
    let t1 = now_ns();
    let Ok((inc, lists)) = read else {
        ensure_sc(w);
        return;
    };
    let ops: Vec<Op> = lists
        .iter()
        .map(|(k, v)| Op::Read {
            key: format!("sc#{inc}/{k}"),
            values: v.clone(),
        })
        .collect();
    w.rec.line(json!({"t": "done", "id": format!("sc-final-{inc}-{step}"), "ns0": t0, "ns": t1, "out": "ok", "ops": ops_json(&ops)}));
    let d0 = now_ns();
    w.rec
        .line(json!({"t": "drop-start", "inc": inc, "ns0": d0}));
    let r = w.pages.drop_database("sc");
    let d1 = now_ns();
    w.rec.line(json!({"t": "drop", "inc": inc, "ns0": d0, "ns": d1, "out": if r.is_ok() { "ok" } else { "unknown" }}));
    if r.is_ok() {
        bump(&w.counters.drops);
    }
    ensure_sc(w);
}

// ------------------------------------------------------------------ parent

/// The run's figures.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub seconds: f64,
    pub processes_started: u64,
    pub python_processes: u64,
    pub txns_ok: u64,
    pub txns_failed: u64,
    pub txns_unknown: u64,
    pub python_txns_ok: u64,
    pub attempts: u64,
    pub busy_aborts: u64,
    pub kills: u64,
    pub failpoint_aborts: u64,
    pub owner_kills: u64,
    pub gc_passes: u64,
    pub forks: u64,
    pub restores: u64,
    pub drops: u64,
    pub large: u64,
    pub slow: u64,
    pub groups: u64,
    pub chained: u64,
    pub kv_conflicts: u64,
    pub kv_unknown_results: u64,
    pub late_held: u64,
    pub late_applied: u64,
    pub batch_joins: u64,
    pub graph_txns: usize,
    pub dependency_edges: usize,
    pub keys: usize,
    pub anomalies: usize,
    pub error_kinds: BTreeMap<String, u64>,
    /// Workers that exited by themselves other than by a failpoint abort
    /// (a panic: see `crash_notes`).
    pub crashes: u64,
    pub crash_notes: Vec<String>,
    /// Wall time of each phase (setup, workload, stop, final read, check).
    pub phases: Vec<(&'static str, f64)>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "history check: {:.0} s, {} worker processes started ({} python)",
            self.seconds, self.processes_started, self.python_processes
        )?;
        writeln!(
            f,
            "  transactions: ok {} / failed {} / unknown {} (python ok {}); attempts {}, BUSY aborts {}",
            self.txns_ok, self.txns_failed, self.txns_unknown, self.python_txns_ok, self.attempts, self.busy_aborts
        )?;
        writeln!(
            f,
            "  kills: SIGKILL {} (owner {}), failpoint aborts {}; GC passes {}; forks {}, restores {}, drops {}",
            self.kills, self.owner_kills, self.failpoint_aborts, self.gc_passes, self.forks, self.restores, self.drops
        )?;
        writeln!(
            f,
            "  large txns {}, slow txns {}, ATTACH groups {}, chained pairs {}; store conflicts {}, unknown results {} (seen by the processes)",
            self.large, self.slow, self.groups, self.chained, self.kv_conflicts, self.kv_unknown_results
        )?;
        writeln!(
            f,
            "  FDB model (owners): unknown results held and applied late {} of {}, commits joining a batch version {}",
            self.late_applied, self.late_held, self.batch_joins
        )?;
        writeln!(
            f,
            "  checker: {} txns in the graph, {} dependency edges, {} keys; anomalies {}",
            self.graph_txns, self.dependency_edges, self.keys, self.anomalies
        )?;
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, s)| format!("{p} {s:.1} s"))
            .collect();
        writeln!(f, "  phases: {}", phases.join(", "))?;
        if self.crashes > 0 {
            writeln!(
                f,
                "  worker crashes (not failpoint aborts): {}",
                self.crashes
            )?;
            for n in self.crash_notes.iter().take(5) {
                writeln!(f, "    {n}")?;
            }
        }
        let mut errs: Vec<_> = self.error_kinds.iter().collect();
        errs.sort_by(|a, b| b.1.cmp(a.1));
        for (e, n) in errs.into_iter().take(8) {
            writeln!(f, "    error x{n}: {e}")?;
        }
        Ok(())
    }
}

/// A run's result: figures and every anomaly found.
pub struct RunResult {
    pub figures: Figures,
    pub anomalies: Vec<checker::Anomaly>,
}

struct Proc {
    child: Child,
    slot: usize,
    inc: u64,
    python: bool,
    started: Instant,
}

/// The extension and the system libsqlite3 for the Python worker, when
/// `python3` and both libraries are there.
fn python_available(lib: PathBuf) -> Option<(PathBuf, PathBuf)> {
    let sqlite = [
        "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0",
        "/usr/lib/aarch64-linux-gnu/libsqlite3.so.0",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())?;
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (ok && lib.exists()).then_some((lib, sqlite))
}

/// Runs the workload and checks its history.
pub fn run(cfg: &Config, cdylib: Option<PathBuf>) -> RunResult {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let root = tmp.path().to_path_buf();
    std::fs::create_dir_all(root.join("hist")).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let start_ns = now_ns();
    let faults = format!(
        "{},{},{},{},{}",
        cfg.conflict_probability,
        cfg.unknown_result_probability,
        cfg.late_unknown_probability,
        cfg.batch_join_probability,
        cfg.latency.as_micros()
    );
    let pace = format!(
        "{},{},{},{}",
        cfg.idle.as_millis(),
        cfg.gc_every.as_millis(),
        cfg.chained_percent,
        cfg.group_percent
    );
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut next_inc = 1u64;
    // Children's stderr: in `log_dir` when given, else under the root
    // (shown when setup or the final read fails).
    let log_dir = cfg.log_dir.clone().unwrap_or_else(|| root.join("logs"));
    std::fs::create_dir_all(&log_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let log = |name: &str| -> Stdio {
        File::create(log_dir.join(name))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    };
    let spawn_rust = |role: &str, slot: usize, inc: u64, failpoints: String| -> Child {
        let mut c = cfg.launcher.command();
        c.env(ROLE_ENV, role)
            .env(ROOT_ENV, &root)
            .env(SLOT_ENV, slot.to_string())
            .env(INC_ENV, inc.to_string())
            .env(START_ENV, start_ns.to_string())
            .env(THREADS_ENV, cfg.threads.to_string())
            .env(PACE_ENV, &pace)
            .env(STALENESS_ENV, cfg.staleness.as_micros().to_string())
            .env(
                FAULTS_ENV,
                if role == "final" {
                    String::new()
                } else {
                    faults.clone()
                },
            )
            .env("FDBVFS_LOG", "error")
            .stderr(log(&format!("{role}-{inc}.log")));
        if !failpoints.is_empty() {
            c.env("FAILPOINTS", failpoints);
        }
        c.spawn().unwrap_or_else(|e| panic!("spawn {role}: {e}"))
    };
    let wait = |mut c: Child, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            match c.try_wait() {
                Ok(Some(s)) => {
                    if !s.success() {
                        let err = std::fs::read_to_string(log_dir.join(format!("{what}-0.log")))
                            .unwrap_or_default();
                        let tail: String = err
                            .chars()
                            .rev()
                            .take(4000)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect();
                        panic!("{what} child failed: {s}\n{tail}");
                    }
                    return;
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = c.kill();
                    panic!("{what} child hung");
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("wait {what}: {e}"),
            }
        }
    };
    let phase = Instant::now();
    wait(spawn_rust("setup", 0, 0, String::new()), "setup");
    let setup_s = phase.elapsed().as_secs_f64();

    let plant = cfg.plant.map(|p| format!("{p}=return")).unwrap_or_default();
    let failpoints_for = |rng: &mut StdRng| -> String {
        let mut fps: Vec<String> = Vec::new();
        if !plant.is_empty() {
            fps.push(plant.clone());
        }
        if cfg.failpoint_kills && rng.random_bool(0.6) {
            const KILLS: &[&str] = &[
                "commit::before=0.2%return(abort)",
                "commit::after=0.2%return(abort)",
                "upload::after_chunk=3%return(abort)",
                "materialize::after_chunk=5%return(abort)",
                "gc::after_horizon=0.5%return(abort)",
                "gc::after_pages=0.5%return(abort)",
                "restore::before_commit=15%return(abort)",
                "drop::before=15%return(abort)",
            ];
            fps.push(KILLS[rng.random_range(0..KILLS.len())].to_string());
            // Widen the windows between the steps of the protocols.
            fps.push("begin::after_read_version=2%sleep(20)".into());
            fps.push("commit::before=1%sleep(30)".into());
        }
        // `fail` takes one action list per name: keep the first.
        let mut seen = BTreeSet::new();
        fps.retain(|f| seen.insert(f.split('=').next().unwrap_or("").to_string()));
        fps.join(";")
    };

    let py = cdylib.and_then(python_available);
    let py_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/history_check/worker.py");
    let spawn_python = |inc: u64| -> Option<Child> {
        let (lib, sqlite) = py.as_ref()?;
        Command::new("python3")
            .arg(&py_script)
            .args([
                lib.as_os_str(),
                sqlite.as_os_str(),
                root.join("store").as_os_str(),
                root.join("hist").join(format!("w{inc}.jsonl")).as_os_str(),
                root.join("stop").as_os_str(),
            ])
            .args([
                inc.to_string(),
                cfg.python_threads.to_string(),
                start_ns.to_string(),
            ])
            .env("FDBVFS_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log(&format!("python-{inc}.log")))
            .spawn()
            .ok()
    };

    let mut figures = Figures::default();
    let mut procs: Vec<Proc> = Vec::new();
    let mut kill_times: Vec<(u64, u64)> = Vec::new(); // (inc, ns)
    for slot in 0..cfg.rust_workers {
        let inc = next_inc;
        next_inc += 1;
        let fp = failpoints_for(&mut rng);
        procs.push(Proc {
            child: spawn_rust("worker", slot, inc, fp),
            slot,
            inc,
            python: false,
            started: Instant::now(),
        });
        figures.processes_started += 1;
        // The first worker opens the directory first and owns it.
        if slot == 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    for p in 0..cfg.python_workers {
        let inc = next_inc;
        next_inc += 1;
        if let Some(child) = spawn_python(inc) {
            procs.push(Proc {
                child,
                slot: cfg.rust_workers + p,
                inc,
                python: true,
                started: Instant::now(),
            });
            figures.processes_started += 1;
            figures.python_processes += 1;
        }
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(cfg.seconds);
    let mut next_kill = next_kill_at(cfg, &mut rng);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        // Kill one now and then (the directory's owner a third of the
        // time), and restart processes that died (failpoint aborts).
        let victim = if next_kill.is_some_and(|t| Instant::now() >= t) {
            let ready: Vec<usize> = (0..procs.len())
                .filter(|&i| procs[i].started.elapsed() > Duration::from_millis(500))
                .collect();
            let owner = ready
                .iter()
                .copied()
                .find(|&i| !procs[i].python && is_owner(&root, procs[i].inc));
            match owner {
                Some(o) if rng.random_bool(0.35) => Some(o),
                _ if ready.is_empty() => None,
                _ => Some(ready[rng.random_range(0..ready.len())]),
            }
        } else {
            None
        };
        let victim_inc = victim.map(|v| procs[v].inc);
        let mut i = 0;
        while i < procs.len() {
            let status = procs[i].child.try_wait().ok().flatten();
            let died = status.is_some();
            let kill_now = !died && victim_inc == Some(procs[i].inc);
            if !died && !kill_now {
                i += 1;
                continue;
            }
            let mut crashed = false;
            if let Some(st) = status {
                use std::os::unix::process::ExitStatusExt;
                // `return(abort)` at a failpoint is SIGABRT; anything else
                // is a worker that failed by itself.
                if st.signal() != Some(libc::SIGABRT) {
                    figures.crashes += 1;
                    let kind = if procs[i].python { "python" } else { "worker" };
                    let log = std::fs::read_to_string(
                        log_dir.join(format!("{kind}-{}.log", procs[i].inc)),
                    )
                    .unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(12)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    figures
                        .crash_notes
                        .push(format!("worker {} exited with {st}: {tail}", procs[i].inc));
                    crashed = true;
                }
            }
            let mut p = procs.swap_remove(i);
            if kill_now {
                if is_owner(&root, p.inc) {
                    figures.owner_kills += 1;
                }
                let _ = p.child.kill();
                let _ = p.child.wait();
                figures.kills += 1;
                next_kill = next_kill_at(cfg, &mut rng);
            } else if !crashed {
                figures.failpoint_aborts += 1;
            }
            kill_times.push((p.inc, now_ns()));
            let inc = next_inc;
            next_inc += 1;
            let child = if p.python {
                spawn_python(inc)
            } else {
                Some(spawn_rust("worker", p.slot, inc, failpoints_for(&mut rng)))
            };
            if let Some(child) = child {
                figures.processes_started += 1;
                figures.python_processes += u64::from(p.python);
                procs.push(Proc {
                    child,
                    slot: p.slot,
                    inc,
                    python: p.python,
                    started: Instant::now(),
                });
            }
        }
    }
    let workload_s = started.elapsed().as_secs_f64();
    let phase = Instant::now();
    std::fs::write(root.join("stop"), b"stop").unwrap_or_else(|e| panic!("stop file: {e}"));
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    for mut p in procs {
        loop {
            match p.child.try_wait() {
                Ok(Some(s)) => {
                    if !s.success() {
                        figures.failpoint_aborts += 1;
                        kill_times.push((p.inc, now_ns()));
                    }
                    break;
                }
                Ok(None) if Instant::now() > stop_deadline => {
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    kill_times.push((p.inc, now_ns()));
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
    }
    figures.seconds = workload_s;
    let stop_s = phase.elapsed().as_secs_f64();
    let phase = Instant::now();
    wait(spawn_rust("final", 0, 0, String::new()), "final");
    let final_s = phase.elapsed().as_secs_f64();
    let phase = Instant::now();
    let mut result = merge(&root, &kill_times, figures, cfg.staleness);
    result.figures.phases = vec![
        ("setup", setup_s),
        ("workload", workload_s),
        ("stop", stop_s),
        ("final read", final_s),
        ("check", phase.elapsed().as_secs_f64()),
    ];
    if std::env::var_os("HISTORY_CHECK_KEEP").is_some() {
        let kept = tmp.keep();
        eprintln!("history kept in {}", kept.display());
    }
    result
}

fn next_kill_at(cfg: &Config, rng: &mut StdRng) -> Option<Instant> {
    if cfg.kill_every.is_zero() {
        return None;
    }
    let ms = cfg.kill_every.as_millis() as u64;
    Some(Instant::now() + Duration::from_millis(rng.random_range(ms / 2..ms * 3 / 2)))
}

/// Whether worker `inc` owned the directory (its last stats line says
/// "embedded").
fn is_owner(root: &Path, inc: u64) -> bool {
    let Ok(f) = File::open(root.join("hist").join(format!("w{inc}.jsonl"))) else {
        return false;
    };
    let mut owner = false;
    for l in BufReader::new(f).lines().map_while(Result::ok) {
        if let Ok(v) = serde_json::from_str::<Value>(&l) {
            if v["t"] == "stats" {
                owner = v["backend"] == "embedded";
            }
        }
    }
    owner
}

fn ops_from(v: &Value) -> Vec<Op> {
    let mut out = Vec::new();
    for o in v.as_array().into_iter().flatten() {
        let key = o[1].as_str().unwrap_or("").to_string();
        match o[0].as_str() {
            Some("a") => out.push(Op::Append {
                key,
                value: o[2].as_u64().unwrap_or(0),
            }),
            Some("r") => out.push(Op::Read {
                key,
                values: o[2]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect(),
            }),
            _ => {}
        }
    }
    out
}

/// Reads every history file, builds the checker's histories (main keys;
/// `rs` keys separately), checks them and the workload's own invariants.
fn merge(
    root: &Path,
    kill_times: &[(u64, u64)],
    mut fig: Figures,
    staleness: Duration,
) -> RunResult {
    let mut txns: Vec<Txn> = Vec::new();
    let mut oracle: Vec<checker::Anomaly> = Vec::new();
    let mut restore_exempt = 0u64;
    let mut drops: BTreeMap<i64, u64> = BTreeMap::new(); // sc incarnation -> drop completed
    let _ = kill_times;
    let end_ns = now_ns();
    let dir = std::fs::read_dir(root.join("hist")).unwrap_or_else(|e| panic!("hist: {e}"));
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let inc: u64 = name
            .trim_start_matches('w')
            .trim_end_matches(".jsonl")
            .parse()
            .unwrap_or(0);
        let Ok(f) = File::open(entry.path()) else {
            continue;
        };
        let mut open: BTreeMap<String, (u64, Vec<Op>)> = BTreeMap::new();
        let mut last_stats = Value::Null;
        let mut restore_started: Option<u64> = None;
        let mut drop_started: Option<(i64, u64)> = None;
        for l in BufReader::new(f).lines().map_while(Result::ok) {
            // A line cut by a kill does not parse: skip it.
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            match v["t"].as_str() {
                Some("inv") => {
                    let appends = v["appends"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| Op::Append {
                            key: format!(
                                "{}/{}",
                                a[0].as_str().unwrap_or(""),
                                a[1].as_u64().unwrap_or(0)
                            ),
                            value: a[2].as_u64().unwrap_or(0),
                        })
                        .collect();
                    open.insert(
                        v["id"].as_str().unwrap_or("").to_string(),
                        (v["ns"].as_u64().unwrap_or(0), appends),
                    );
                }
                Some("done") => {
                    let id = v["id"].as_str().unwrap_or("").to_string();
                    for e in v["errors"].as_array().into_iter().flatten() {
                        if let Some(e) = e.as_str().filter(|e| e.starts_with(CORRUPT)) {
                            oracle.push(checker::Anomaly {
                                kind: Kind::Workload,
                                explanation: format!("{id} failed with {e}"),
                            });
                        }
                    }
                    let invoked = open.remove(&id);
                    let outcome = match v["out"].as_str() {
                        Some("ok") => Outcome::Ok,
                        Some("fail") => Outcome::Fail,
                        _ => Outcome::Unknown,
                    };
                    let mut ops = ops_from(&v["ops"]);
                    if outcome != Outcome::Ok {
                        // What it meant to append (sc keys: with the
                        // incarnation it read, when it got that far).
                        if ops.iter().all(|o| matches!(o, Op::Read { .. })) {
                            ops = invoked.map(|i| i.1).unwrap_or_default();
                        }
                    }
                    txns.push(Txn {
                        id,
                        outcome,
                        invoke_ns: v["ns0"].as_u64().unwrap_or(0),
                        complete_ns: (outcome != Outcome::Unknown)
                            .then(|| v["ns"].as_u64().unwrap_or(0)),
                        ops,
                    });
                }
                Some("stats") => last_stats = v,
                Some("restore-start") => restore_started = v["ns0"].as_u64(),
                Some("restore") => {
                    restore_started = None;
                    let t = if v["out"] == "ok" {
                        v["ns"].as_u64().unwrap_or(end_ns)
                    } else {
                        // May land any time: exempt everything.
                        end_ns
                    };
                    restore_exempt = restore_exempt.max(t);
                }
                Some("drop-start") => {
                    drop_started = Some((
                        v["inc"].as_i64().unwrap_or(0),
                        v["ns0"].as_u64().unwrap_or(0),
                    ))
                }
                Some("drop") => {
                    drop_started = None;
                    if v["out"] == "ok" {
                        drops.insert(
                            v["inc"].as_i64().unwrap_or(0),
                            v["ns"].as_u64().unwrap_or(0),
                        );
                    }
                }
                Some("anomaly") => oracle.push(checker::Anomaly {
                    kind: Kind::Workload,
                    explanation: v["what"].as_str().unwrap_or("").to_string(),
                }),
                _ => {}
            }
        }
        // A restore in flight at a kill may have landed then (or later).
        if restore_started.is_some() {
            restore_exempt = end_ns;
        }
        let _ = (drop_started, inc);
        // Transactions in flight at a kill: unknown.
        for (id, (ns, appends)) in open {
            txns.push(Txn {
                id,
                outcome: Outcome::Unknown,
                invoke_ns: ns,
                complete_ns: None,
                ops: appends,
            });
        }
        let g = |k: &str| last_stats[k].as_u64().unwrap_or(0);
        fig.attempts += g("attempts");
        fig.busy_aborts += g("busy");
        fig.gc_passes += g("gc_passes");
        fig.forks += g("forks");
        fig.restores += g("restores");
        fig.drops += g("drops");
        fig.large += g("large");
        fig.slow += g("slow");
        fig.groups += g("groups");
        fig.chained += g("chained");
        fig.kv_conflicts += g("kv_conflicts");
        fig.kv_unknown_results += g("kv_unknown_results");
        fig.late_held += g("late_held");
        fig.late_applied += g("late_applied");
        fig.batch_joins += g("batch_joins");
        if last_stats["lang"] == "python" {
            fig.python_txns_ok += g("ok");
        }
        if let Some(m) = last_stats["error_kinds"].as_object() {
            for (k, n) in m {
                *fig.error_kinds.entry(k.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
            }
        }
    }
    // Appends recorded before their transaction knew its `sc` incarnation
    // ("sc/k": failed or killed before reading `meta`) are named by the
    // key their (unique) value was read under, if it was.
    let seen_under: HashMap<u64, String> = txns
        .iter()
        .filter(|t| t.outcome == Outcome::Ok)
        .flat_map(|t| t.ops.iter())
        .filter_map(|o| match o {
            Op::Read { key, values } if key.starts_with("sc#") => Some((key, values)),
            _ => None,
        })
        .flat_map(|(k, vs)| vs.iter().map(move |v| (*v, k.clone())))
        .collect();
    for t in txns.iter_mut().filter(|t| t.outcome != Outcome::Ok) {
        for o in t.ops.iter_mut() {
            if let Op::Append { key, value } = o {
                if key.starts_with("sc/") {
                    if let Some(k) = seen_under.get(value) {
                        *key = k.clone();
                    }
                }
            }
        }
    }
    for t in &txns {
        match t.outcome {
            Outcome::Ok => fig.txns_ok += 1,
            Outcome::Fail => fig.txns_failed += 1,
            Outcome::Unknown => fig.txns_unknown += 1,
        }
    }

    // Drop oracle: no transaction on an incarnation of `sc` may be
    // acknowledged if it began after that incarnation was dropped.
    for t in &txns {
        if t.outcome != Outcome::Ok {
            continue;
        }
        let incs: BTreeSet<i64> = t
            .ops
            .iter()
            .filter_map(|o| match o {
                Op::Append { key, .. } => key
                    .strip_prefix("sc#")
                    .and_then(|r| r.split('/').next())
                    .and_then(|i| i.parse().ok()),
                Op::Read { .. } => None,
            })
            .collect();
        for i in incs {
            if let Some(d) = drops.get(&i) {
                if t.invoke_ns > *d {
                    oracle.push(checker::Anomaly {
                        kind: Kind::Workload,
                        explanation: format!(
                            "{} appended to sc incarnation {i} and was acknowledged, but began after that incarnation was dropped",
                            t.id
                        ),
                    });
                }
            }
        }
    }

    // The final state.
    let final_text = std::fs::read_to_string(root.join("final.json"))
        .unwrap_or_else(|e| panic!("final.json: {e}"));
    let fin: Value =
        serde_json::from_str(&final_text).unwrap_or_else(|e| panic!("final.json: {e}"));
    for (db, ic) in fin["integrity"].as_object().into_iter().flatten() {
        if ic != "ok" {
            oracle.push(checker::Anomaly {
                kind: Kind::Workload,
                explanation: format!("integrity_check of {db}: {ic}"),
            });
        }
    }
    let stale = History {
        staleness_ns: staleness.as_nanos() as u64,
        ..History::default()
    };
    let mut main = stale.clone();
    let mut rs = stale;
    for db in ["la", "lb", "sc", "rs"] {
        if let Some(e) = fin[db]["error"].as_str() {
            oracle.push(checker::Anomaly {
                kind: Kind::Workload,
                explanation: format!("the final read of {db} failed: {e}"),
            });
            continue;
        }
        let key_db = fin[db]["db"].as_str().unwrap_or(db).to_string();
        let h = if db == "rs" { &mut rs } else { &mut main };
        if key_db != "sc#-1" {
            h.final_dbs.insert(key_db.clone());
        }
        for (k, v) in fin[db]["lists"].as_object().into_iter().flatten() {
            h.final_state.insert(
                format!("{key_db}/{k}"),
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_u64)
                    .collect(),
            );
        }
    }
    rs.exempt_before_ns.insert("rs".into(), restore_exempt);
    for t in txns {
        let is_rs = t.ops.iter().any(|o| match o {
            Op::Append { key, .. } | Op::Read { key, .. } => key.starts_with("rs/"),
        });
        if is_rs {
            rs.txns.push(t);
        } else {
            main.txns.push(t);
        }
    }
    let rep = checker::check(&main);
    // `rs` is restored to earlier versions: its version order is not one
    // list, so only order-free checks apply to it.
    let rs_rep = checker::check(&rs);
    let rs_kinds = [
        Kind::Duplicate,
        Kind::GarbageRead,
        Kind::G1a,
        Kind::MissingAck,
        Kind::Internal,
    ];
    let mut anomalies = rep.anomalies.clone();
    anomalies.extend(
        rs_rep
            .anomalies
            .into_iter()
            .filter(|a| rs_kinds.contains(&a.kind)),
    );
    anomalies.extend(oracle);
    fig.graph_txns = rep.graph_txns;
    fig.dependency_edges = rep.dependency_edges;
    fig.keys = rep.keys;
    fig.anomalies = anomalies.len();
    RunResult {
        figures: fig,
        anomalies,
    }
}
