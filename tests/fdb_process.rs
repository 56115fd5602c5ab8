//! Whole processes on a store (issue 14): each test runs on the embedded
//! backend (a shared directory) always, and again on FoundationDB when built
//! with `--features fdb` and `FDB_CLUSTER_FILE` is set (otherwise it prints
//! one `SKIP (FoundationDB)` line for that part).
//!
//! * `extension_threads_then_exit`: a child process (this test binary, with
//!   rusqlite's bundled SQLite) loads `target/release/libfdbvfs.so` as an
//!   extension, opens `file:NAME?vfs=fdb&…` on 4 threads, commits, joins the
//!   threads and returns from the test: it must exit with status 0 (issue
//!   14's SIGSEGV at exit). A second mode calls `exit()` from one thread
//!   while the others are still committing.
//! * `bank_across_two_processes`: the bank workload (`tests/bank/mod.rs`)
//!   in 2 child processes × 2 threads; every invariant holds afterwards.
//! * `store_paused_mid_workload`: the store stops answering for 3 s in the
//!   middle of the bank workload (embedded: SIGSTOP of the shared-mode
//!   owner process; FDB: SIGSTOP of the `fdbserver` whose pid is in
//!   `FDBSERVER_PID`, else skipped). Clients wait or get retryable errors;
//!   nothing acknowledged is lost and the workload goes on after SIGCONT.

mod bank;
mod support;

use std::ffi::{CString, OsStr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fdbvfs::Store;
use rusqlite::{Connection, OpenFlags};

use bank::{parse_child, spawn_child, workers, Report, DB, READY};
use support::{assert_integrity, cdylib, run, scalar, TestBackend};

fn env_refs<'a>(env: &'a [(&'static str, std::ffi::OsString)]) -> Vec<(&'static str, &'a OsStr)> {
    env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
}

// ------------------------------------------------- extension, threads, exit

const EXIT_THREADS: usize = 4;
const EXIT_TXNS: usize = 60;

/// Loads the extension into `conn` (rusqlite's bundled SQLite).
fn load_extension(conn: &Connection, lib: &str) {
    let path = CString::new(lib).unwrap_or_else(|e| panic!("{e}"));
    let mut err: *mut std::ffi::c_char = std::ptr::null_mut();
    // SAFETY: a valid open connection; SQLite copies the path.
    let rc = unsafe {
        let db = conn.handle();
        libsqlite3_sys::sqlite3_enable_load_extension(db, 1);
        libsqlite3_sys::sqlite3_load_extension(db, path.as_ptr(), std::ptr::null(), &mut err)
    };
    assert_eq!(
        rc,
        libsqlite3_sys::SQLITE_OK,
        "load_extension({lib}) failed"
    );
}

fn insert_rows(uri: &str, thread: usize, stop_at: Option<usize>) -> usize {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let mut c =
        Connection::open_with_flags(uri, flags).unwrap_or_else(|e| panic!("open {uri}: {e}"));
    for n in 0..EXIT_TXNS {
        if stop_at == Some(n) {
            println!("EXIT-CHILD-EXITING thread={thread} n={n}");
            // exit() from this thread while the others are committing.
            std::process::exit(0);
        }
        fdbvfs::retry(&mut c, |tx| {
            tx.execute(
                "INSERT INTO t(th, n) VALUES (?1, ?2)",
                [thread as i64, n as i64],
            )
        })
        .unwrap_or_else(|e| panic!("thread {thread} insert {n}: {e}"));
    }
    EXIT_TXNS
}

/// The child side of `extension_threads_then_exit`.
#[test]
#[ignore = "run as a child process by extension_threads_then_exit"]
fn exit_child() {
    let (Ok(uri), Ok(lib)) = (std::env::var("EXIT_URI"), std::env::var("EXIT_LIB")) else {
        return;
    };
    let midway = std::env::var("EXIT_MODE").is_ok_and(|m| m == "midway");
    let mem = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
    load_extension(&mem, &lib);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let c = Connection::open_with_flags(&uri, flags).unwrap_or_else(|e| panic!("open {uri}: {e}"));
    c.execute_batch("CREATE TABLE IF NOT EXISTS t(th INTEGER, n INTEGER)")
        .unwrap_or_else(|e| panic!("create: {e}"));
    drop(c);
    let rows: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..EXIT_THREADS)
            .map(|t| {
                let uri = uri.as_str();
                let stop = (midway && t == 0).then_some(EXIT_TXNS / 2);
                s.spawn(move || insert_rows(uri, t, stop))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .sum()
    });
    println!("EXIT-CHILD-DONE rows={rows}");
    // Returns: the test harness then exits the process (main thread).
}

fn run_exit_child(uri: &str, mode: &str) -> support::Output {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    run(Command::new(exe)
        .args([
            "exit_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EXIT_URI", uri)
        .env("EXIT_LIB", cdylib())
        .env("EXIT_MODE", mode))
}

fn count_rows(store: &Store, name: &str) -> i64 {
    let c = store
        .open(name)
        .unwrap_or_else(|e| panic!("open {name}: {e}"));
    scalar(&c, "SELECT count(*) FROM t")
}

fn exit_cases(uri_of: &dyn Fn(&str) -> String, store_after: &dyn Fn() -> Store) {
    let name = format!("exit-{}-{:x}", std::process::id(), rand::random::<u32>());
    let out = run_exit_child(&uri_of(&name), "return");
    out.assert_success();
    let want = format!("EXIT-CHILD-DONE rows={}", EXIT_THREADS * EXIT_TXNS);
    assert!(out.stdout.contains(&want), "{}", out.describe());
    let store = store_after();
    assert_eq!(count_rows(&store, &name), (EXIT_THREADS * EXIT_TXNS) as i64);
    drop(store);

    let midway = format!("{name}-midway");
    let out = run_exit_child(&uri_of(&midway), "midway");
    out.assert_success();
    assert!(
        out.stdout.contains("EXIT-CHILD-EXITING"),
        "{}",
        out.describe()
    );
    let store = store_after();
    // Whatever was committed before the exit is there, and the database
    // opens and checks clean.
    let c = store.open(&midway).unwrap_or_else(|e| panic!("open: {e}"));
    assert_integrity(&c);
    let n = count_rows(&store, &midway);
    assert!(n >= (EXIT_TXNS / 2) as i64, "{n} rows");
    let _ = store.drop_database(&name);
    let _ = store.drop_database(&midway);
}

#[test]
fn extension_threads_then_exit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let d = dir.path().to_path_buf();
    exit_cases(
        &|name| format!("file:{name}?vfs=fdb&dir={}", d.display()),
        &|| TestBackend::Dir(d.clone()).open(),
    );
    if let Some(TestBackend::Fdb { cluster, .. }) =
        TestBackend::fdb("extension_threads_then_exit", "fdbvfs-proc")
    {
        // `cluster=` opens the default key prefix; the databases are
        // dropped afterwards.
        exit_cases(
            &|name| format!("file:{name}?vfs=fdb&cluster={}", cluster.display()),
            &|| {
                let default_prefix = Some(b"fv".to_vec());
                TestBackend::Fdb {
                    cluster: cluster.clone(),
                    prefix: default_prefix,
                }
                .open()
            },
        );
    }
}

// ------------------------------------------------------------------ bank

const BANK_THREADS: usize = 2;
const BANK_TRANSFERS: usize = 150;
const GO_FILE: &str = "bank-go";

/// The child side of the bank tests: `BANK_THREADS` workers on the store
/// from the environment, started by the go file in `FDBP_SIGNALS`.
#[test]
#[ignore = "run as a child process by the bank tests"]
fn bank_process_child() {
    let Some(place) = TestBackend::from_env() else {
        return;
    };
    let Some(signals) = std::env::var_os("FDBP_SIGNALS") else {
        return;
    };
    let tag = std::env::var("BANK_CHILD_TAG").unwrap_or_else(|_| "c".into());
    let store = place.open();
    let backend = store.page_store().kv().backend_name().to_string();
    drop(store.open(DB).unwrap_or_else(|e| panic!("child open: {e}")));
    println!("\n{READY}");
    bank::wait_for_file(Path::new(&signals), GO_FILE);
    let seed = tag.bytes().map(u64::from).sum::<u64>();
    let r = workers(&store, &tag, BANK_THREADS, seed, BANK_TRANSFERS, &|| {});
    bank::print_report(&r, &backend, &store.page_store().stats());
}

/// Runs the bank in 2 child processes on `place`; `store` is this
/// process's handle on it (set up here); returns everything acknowledged.
fn bank_in_children(place: &TestBackend, store: &Store) -> Report {
    bank::setup(store).unwrap_or_else(|e| panic!("setup: {e}"));
    let signals = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let env = place.env();
    let children: Vec<_> = ["q1", "q2"]
        .iter()
        .map(|tag| {
            let mut e = env_refs(&env);
            e.push(("FDBP_SIGNALS", signals.path().as_os_str()));
            e.push(("BANK_CHILD_TAG", OsStr::new(tag)));
            spawn_child("bank_process_child", &e)
        })
        .collect();
    for c in &children {
        c.wait_ready(Duration::from_secs(120));
    }
    std::fs::write(signals.path().join(GO_FILE), b"go").unwrap_or_else(|e| panic!("{e}"));
    let mut all = Report::default();
    for c in children {
        let r = parse_child(&c.finish(Duration::from_secs(600)));
        assert_eq!(r.report.acks.len(), BANK_THREADS * BANK_TRANSFERS);
        all.merge(r.report);
    }
    all
}

#[test]
fn bank_across_two_processes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let place = TestBackend::Dir(dir.path().to_path_buf());
    let store = place.open();
    let all = bank_in_children(&place, &store);
    bank::check(&store, &all).unwrap_or_else(|e| panic!("check: {e}"));
    drop(store);
    if let Some(place) = TestBackend::fdb("bank_across_two_processes", "fdbvfs-proc") {
        let store = place.open();
        let all = bank_in_children(&place, &store);
        bank::check(&store, &all).unwrap_or_else(|e| panic!("check: {e}"));
        drop(store);
        place.clear();
    }
}

// ------------------------------------------------------------- pause

const PAUSE: Duration = Duration::from_secs(3);
const PAUSE_THREADS: usize = 4;

/// The owner of an embedded store directory: opens it first (so it serves
/// it to the others), sets the bank up, and stays until the done file.
#[test]
#[ignore = "run as a child process by store_paused_mid_workload"]
fn store_owner_child() {
    let (Some(TestBackend::Dir(dir)), Some(signals)) =
        (TestBackend::from_env(), std::env::var_os("FDBP_SIGNALS"))
    else {
        return;
    };
    let store = TestBackend::Dir(dir).open();
    assert_eq!(store.page_store().kv().backend_name(), "embedded");
    bank::setup(&store).unwrap_or_else(|e| panic!("setup: {e}"));
    println!("\n{READY}");
    bank::wait_for_file(Path::new(&signals), "done");
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: sends a signal to a process this test started (or was told of).
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Runs the bank in this process while `pid` is stopped for [`PAUSE`] once
/// 100 transfers were acknowledged; returns the report and the transfers
/// acknowledged after the process was resumed.
fn bank_with_pause(store: &Store, pid: u32) -> (Report, usize) {
    let acks = AtomicUsize::new(0);
    let resumed_at = AtomicUsize::new(usize::MAX);
    let report = std::thread::scope(|s| {
        let pauser = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(300);
            while acks.load(Ordering::SeqCst) < 100 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            signal(pid, libc::SIGSTOP);
            std::thread::sleep(PAUSE);
            resumed_at.store(acks.load(Ordering::SeqCst), Ordering::SeqCst);
            signal(pid, libc::SIGCONT);
        });
        let r = workers(store, "pz", PAUSE_THREADS, 42, BANK_TRANSFERS, &|| {
            acks.fetch_add(1, Ordering::SeqCst);
        });
        pauser
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        r
    });
    let total = acks.load(Ordering::SeqCst);
    let resumed = resumed_at.load(Ordering::SeqCst);
    let after = total.saturating_sub(resumed);
    eprintln!(
        "paused pid {pid} for {PAUSE:?}: {resumed} transfers acknowledged before the \
         resume, {after} after; {} attempts, {} uncertain commits",
        report.attempts, report.uncertain
    );
    (report, after)
}

#[test]
fn store_paused_mid_workload() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let signals = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let place = TestBackend::Dir(dir.path().to_path_buf());
    let env = place.env();
    let mut e = env_refs(&env);
    e.push(("FDBP_SIGNALS", signals.path().as_os_str()));
    let owner = spawn_child("store_owner_child", &e);
    owner.wait_ready(Duration::from_secs(120));
    // This process is a client of the owner.
    let store = place.open();
    assert_eq!(store.page_store().kv().backend_name(), "remote");
    let (all, after) = bank_with_pause(&store, owner.child.id());
    assert_eq!(all.acks.len(), PAUSE_THREADS * BANK_TRANSFERS);
    assert!(after > 0, "no transfer after the owner was resumed");
    // The owner's data, checked through it (then it exits and this
    // process takes the store over).
    bank::check(&store, &all).unwrap_or_else(|e| panic!("check: {e}"));
    std::fs::write(signals.path().join("done"), b"done").unwrap_or_else(|e| panic!("{e}"));
    owner.finish(Duration::from_secs(60));
    bank::check(&store, &all).unwrap_or_else(|e| panic!("check after takeover: {e}"));
    drop(store);

    if let Some(place) = TestBackend::fdb("store_paused_mid_workload", "fdbvfs-proc") {
        let Some(pid) = std::env::var("FDBSERVER_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            eprintln!(
                "SKIP (FoundationDB): store_paused_mid_workload: set FDBSERVER_PID to the pid \
                 of the (single) fdbserver to pause"
            );
            return;
        };
        let store = place.open();
        bank::setup(&store).unwrap_or_else(|e| panic!("setup: {e}"));
        let (all, after) = bank_with_pause(&store, pid);
        assert!(after > 0, "no transfer after fdbserver was resumed");
        bank::check(&store, &all).unwrap_or_else(|e| panic!("check: {e}"));
        drop(store);
        place.clear();
    }
}
