//! Shared mode: the KV contract over the store socket, exact round-trip
//! accounting on the client, and several processes on one store directory.
//!
//! The multi-process tests re-run this test binary as child processes
//! (the ignored test `helper_process`, driven by environment variables).
#![cfg(unix)]

mod contract;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagestore::clock::ManualClock;
use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::remote::{
    open_shared, owned, RemoteKv, RemoteServer, LOST_CONNECTION, SOCKET_FILE,
};
use pagestore::kv::{
    ConflictKind, Kv, KvError, KvResult, MutationType, RangeOption, ReadRequest,
    INCOMPLETE_VERSIONSTAMP,
};

/// An in-memory store served on a socket in `dir`, and a client of it.
fn served(dir: &Path, clock: Arc<ManualClock>) -> (Arc<EmbeddedKv>, RemoteServer, Arc<RemoteKv>) {
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory().with_clock(clock)).unwrap();
    let server = RemoteServer::start(kv.clone(), dir.join(SOCKET_FILE)).unwrap();
    let remote = RemoteKv::connect(server.path()).unwrap();
    (kv, server, remote)
}

#[test]
fn contract_over_remote() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let servers = RefCell::new(Vec::new());
    let make = || -> Arc<dyn Kv> {
        let dir = root.path().join(format!("s{}", servers.borrow().len()));
        std::fs::create_dir(&dir).unwrap();
        let (_, server, remote) = served(&dir, clock.clone());
        assert_eq!(remote.backend_name(), "remote");
        assert_eq!(remote.server_backend(), "embedded");
        servers.borrow_mut().push(server);
        remote
    };
    let advance = |secs: u64| clock.advance_secs(secs);
    contract::run_all(&make, Some(&advance));
}

#[test]
fn contract_over_one_remote_store_from_threads() {
    let root = tempfile::tempdir().unwrap();
    let (_, _server, remote) = served(root.path(), ManualClock::new());
    std::thread::scope(|s| {
        for (i, (name, property)) in contract::PROPERTIES.iter().enumerate() {
            let remote = remote.clone();
            if *name == "round_trips_are_counted" {
                continue; // counts the whole client, so not concurrently
            }
            s.spawn(move || {
                let prefix = format!("threads/{i}/{name}/");
                property(remote.as_ref(), prefix.as_bytes());
            });
        }
    });
}

fn le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A workload touching every path of the client's accounting; returns what
/// it observed (sizes, values, error codes) apart from versions.
fn workload(kv: &dyn Kv) -> Vec<String> {
    let mut seen = Vec::new();
    let mut note = |what: &str, v: &dyn std::fmt::Debug| seen.push(format!("{what}: {v:?}"));
    let code = |r: KvResult<Option<Vec<u8>>>| r.map_err(|e| e.code);

    let mut t = kv.begin().unwrap();
    for c in b'a'..=b'j' {
        t.set(&[b'w', c], &[c; 3]);
    }
    t.set(b"n", &le(5));
    note("setup", &t.commit().map(|c| c.versionstamp.is_some()));

    let mut t = kv.begin().unwrap();
    note("get a", &t.get(b"wa", false));
    t.set(b"wa", b"A");
    note("ryw a", &t.get(b"wa", false));
    t.atomic_op(b"wb", &le(1), MutationType::Add);
    note("ops b", &t.get(b"wb", false));
    t.set(b"wc", &le(1));
    t.atomic_op(b"wc", &le(2), MutationType::Add);
    note("derived c", &t.get(b"wc", false));
    t.clear_range(b"wd", b"wf");
    t.atomic_op(b"we", &le(9), MutationType::Max);
    note("cleared d", &t.get(b"wd", false));
    note("cleared+op e", &t.get(b"we", true));
    note(
        "range",
        &t.get_range(
            &RangeOption::new(b"w".to_vec(), b"x".to_vec()).limit(3),
            false,
        ),
    );
    note(
        "reverse",
        &t.get_range(
            &RangeOption::new(b"w".to_vec(), b"x".to_vec()).reverse(),
            true,
        ),
    );
    note(
        "empty range",
        &t.get_range(&RangeOption::new(b"x", b"w"), false),
    );
    note(
        "batch",
        &t.get_batch(
            &[
                ReadRequest::Get(b"wa".to_vec()),
                ReadRequest::Get(b"wz".to_vec()),
                ReadRequest::Get(b"wc".to_vec()),
                ReadRequest::Range(RangeOption::new(b"wg".to_vec(), b"wz".to_vec()).limit(2)),
                ReadRequest::Range(RangeOption::new(b"z".to_vec(), b"a".to_vec())),
            ],
            false,
        ),
    );
    note("empty batch", &t.get_batch(&[], false));
    let mut param = INCOMPLETE_VERSIONSTAMP.to_vec();
    param.extend_from_slice(&0u32.to_le_bytes());
    t.atomic_op(b"vv", &param, MutationType::SetVersionstampedValue);
    note("unreadable", &code(t.get(b"vv", false)));
    note("key too large", &code(t.get(&vec![1u8; 10_001], false)));
    t.add_conflict_range(b"r1", b"r2", ConflictKind::Read);
    t.add_conflict_range(b"q1", b"q2", ConflictKind::Write);
    t.add_conflict_range(b"q2", b"q1", ConflictKind::Write);
    note("size", &t.approximate_size());
    let info = t.commit().unwrap();
    note(
        "stamp",
        &info.versionstamp.map(|s| s.version() == info.version),
    );

    // Read at a version set explicitly; read-only commit returns it.
    let mut t = kv.begin().unwrap();
    let rv = t.read_version().unwrap();
    let mut u = kv.begin().unwrap();
    u.set_read_version(rv);
    note("rv set", &(u.read_version().unwrap() == rv));
    note("read at set", &u.get(b"wa", false));
    note("read-only", &(u.commit().unwrap().version == rv));
    note("nothing", &kv.begin().unwrap().commit().map(|c| c.version));
    drop(t);

    // A conflict.
    let mut t1 = kv.begin().unwrap();
    note("t1 read", &t1.get(b"n", false));
    let mut t2 = kv.begin().unwrap();
    t2.set(b"n", &le(6));
    t2.commit().unwrap();
    t1.set(b"n", &le(7));
    note("conflict", &t1.commit().map_err(|e| e.code).map(|_| ()));

    // Only an explicit read conflict: the commit fetches a read version.
    let mut t = kv.begin().unwrap();
    t.add_conflict_range(b"a", b"b", ConflictKind::Read);
    t.set(b"x", b"1");
    note("explicit read", &t.commit().map(|_| ()));

    // Size errors at commit cost no round trip.
    let mut t = kv.begin().unwrap();
    t.set(b"big", &vec![0u8; 100_001]);
    note(
        "value too large",
        &t.commit().map_err(|e| e.code).map(|_| ()),
    );
    let mut t = kv.begin().unwrap();
    t.atomic_op(b"bad", b"", MutationType::SetVersionstampedKey);
    note("bad stamp", &t.commit().map_err(|e| e.code).map(|_| ()));
    let mut t = kv.begin().unwrap();
    t.add_conflict_range(&vec![0; 6_000_000], &vec![1; 6_000_000], ConflictKind::Read);
    note(
        "too large read-only",
        &t.commit().map_err(|e| e.code).map(|_| ()),
    );

    // Snapshot reads add no conflicts; a dropped transaction is forgotten.
    let mut t = kv.begin().unwrap();
    note("snapshot", &t.get(b"n", true));
    note("snapshot size", &t.approximate_size());
    t.set(b"dropped", b"1");
    note("dropped ryw", &t.get(b"dropped", false));
    drop(t);
    let mut t = kv.begin().unwrap();
    note("not applied", &t.get(b"dropped", false));
    seen
}

#[test]
fn client_metrics_match_the_embedded_backend() {
    let root = tempfile::tempdir().unwrap();
    let local = EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap();
    let (served_kv, _server, remote) = served(root.path(), ManualClock::new());

    let m0 = local.metrics();
    let local_seen = workload(local.as_ref());
    let local_m = local.metrics().since(&m0);

    let m0 = remote.metrics();
    let s0 = served_kv.metrics();
    let remote_seen = workload(remote.as_ref());
    let remote_m = remote.metrics().since(&m0);
    let server_m = served_kv.metrics().since(&s0);

    assert_eq!(remote_seen, local_seen);
    assert_eq!(remote_m, local_m);
    // What the client counted is what the store counted.
    assert_eq!(remote_m, server_m);
    assert!(local_m.conflicts == 1 && local_m.reads > 5, "{local_m:?}");
}

#[test]
fn writes_ride_with_the_next_request() {
    let root = tempfile::tempdir().unwrap();
    let (_, _server, remote) = served(root.path(), ManualClock::new());
    let m0 = remote.metrics();
    let mut t = remote.begin().unwrap();
    for i in 0..100u32 {
        t.set(&i.to_be_bytes(), &[7; 100]);
    }
    let r = t
        .get_range(&RangeOption::new(vec![0u8], vec![0xffu8]), false)
        .unwrap();
    assert_eq!(r.kvs.len(), 100);
    t.commit().unwrap();
    let m = remote.metrics().since(&m0);
    assert_eq!(
        (m.read_versions, m.reads, m.commits),
        (1, 1, 1),
        "100 writes cost no round trip: {m:?}"
    );
    assert_eq!(m.bytes_written, 100 * 104);
}

#[test]
fn server_gone_gives_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let (_, server, remote) = served(root.path(), ManualClock::new());
    let socket = server.path().to_path_buf();
    let mut t = remote.begin().unwrap();
    assert_eq!(t.get(b"a", false).unwrap(), None);
    t.set(b"a", b"1");
    assert_eq!(server.connections(), 1);
    server.shutdown();
    let err = t.get(b"b", false).unwrap_err();
    assert_eq!(err.code, KvError::IO_ERROR, "{err}");
    assert!(err.message.contains(&socket.display().to_string()), "{err}");
    // The transaction stays failed; new ones cannot connect.
    assert_eq!(t.commit().unwrap_err().code, KvError::IO_ERROR);
    let mut t = remote.begin().unwrap();
    let err = t.get(b"a", false).unwrap_err();
    assert_eq!(err.code, KvError::IO_ERROR);
    assert!(err.message.contains("not running"), "{err}");
    assert!(RemoteKv::connect(&socket).is_err());
}

#[test]
fn open_shared_in_one_process_returns_the_owner() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let a = open_shared(EmbeddedOptions::dir(&dir)).unwrap();
    let b = open_shared(EmbeddedOptions::dir(&dir)).unwrap();
    assert_eq!(a.backend_name(), "embedded");
    assert!(Arc::ptr_eq(&a, &b));
    assert!(dir.join(SOCKET_FILE).exists());
    // Another handle in this process talks to the same store over the socket.
    let remote = RemoteKv::connect(dir.join(SOCKET_FILE)).unwrap();
    let mut t = a.begin().unwrap();
    t.set(b"k", b"v");
    t.commit().unwrap();
    let mut t = remote.begin().unwrap();
    assert_eq!(t.get(b"k", false).unwrap(), Some(b"v".to_vec()));
}

#[test]
fn unshared_holder_is_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let _held = EmbeddedKv::open(EmbeddedOptions::dir(&dir)).unwrap();
    let start = Instant::now();
    let err = match open_shared(EmbeddedOptions::dir(&dir)) {
        Ok(_) => panic!("opened a directory held unshared"),
        Err(e) => e,
    };
    assert_eq!(err.code, KvError::OPERATION_FAILED);
    assert!(
        err.message.contains(&format!("pid={}", std::process::id())),
        "{err}"
    );
    assert!(err.message.contains(SOCKET_FILE), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

// ---------------------------------------------------------------------------
// Several processes.

const HELPER: &str = "helper_process";
const COUNTER: &[u8] = b"counter";

fn counter(kv: &dyn Kv) -> u64 {
    let mut t = kv.begin().unwrap();
    t.get(COUNTER, false)
        .unwrap()
        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
}

/// `n` read-modify-write increments with retries; returns how many commits
/// were acknowledged.
fn increment(kv: &dyn Kv, n: usize) -> u64 {
    let mut acked = 0;
    for _ in 0..n {
        loop {
            let mut t = kv.begin().unwrap();
            let v = t
                .get(COUNTER, false)
                .unwrap()
                .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
            t.set(COUNTER, &(v + 1).to_le_bytes());
            match t.commit() {
                Ok(_) => {
                    acked += 1;
                    break;
                }
                Err(e) if e.is_retryable_not_committed() => continue,
                Err(e) => panic!("increment failed: {e}"),
            }
        }
    }
    acked
}

fn increment_threads(kv: &Arc<dyn Kv>, threads: usize, n: usize) -> u64 {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| increment(kv.as_ref(), n)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

/// A temporary root (kept alive by the guard) holding the store directory
/// and an empty directory the helpers and the test signal each other in.
fn store_and_sync_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let sync = root.path().join("sync");
    std::fs::create_dir(&sync).unwrap();
    (root, store, sync)
}

/// The environment of `increment` helpers: `threads` threads of `n`
/// increments each; each helper stays (serving, if it owns the store)
/// until `expect` helpers have reported.
fn increment_vars(threads: u32, n: u32, expect: u32) -> [(&'static str, String); 3] {
    [
        ("SHARED_HELPER_THREADS", threads.to_string()),
        ("SHARED_HELPER_N", n.to_string()),
        ("SHARED_HELPER_EXPECT", expect.to_string()),
    ]
}

/// Runs this test binary's helper as a child process.
fn spawn_helper(mode: &str, store: &Path, sync: &Path, vars: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    // --nocapture: a failing helper's panic message reaches stderr.
    cmd.args([
        HELPER,
        "--exact",
        "--ignored",
        "--test-threads=1",
        "--nocapture",
    ])
    .env("SHARED_HELPER_MODE", mode)
    .env("SHARED_HELPER_STORE", store)
    .env("SHARED_HELPER_SYNC", sync);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null());
    cmd.spawn().unwrap()
}

fn wait_child(mut child: Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "helper process failed: {status}");
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("helper process hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the reports `<sync>/done-*`: (backend, acknowledged increments).
fn reports(sync: &Path) -> Vec<(String, u64)> {
    files_in(sync)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("done-"))
        })
        .map(|p| {
            let s = std::fs::read_to_string(&p).unwrap();
            let (backend, n) = s.trim().split_once(' ').unwrap();
            (backend.to_string(), n.parse().unwrap())
        })
        .collect()
}

fn env_num(name: &str) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The child side of the multi-process tests (does nothing when run
/// without the variables the parent sets).
#[test]
#[ignore = "run by the multi-process tests as a child process"]
fn helper_process() {
    let Ok(mode) = std::env::var("SHARED_HELPER_MODE") else {
        return;
    };
    let store = PathBuf::from(std::env::var("SHARED_HELPER_STORE").unwrap());
    let sync = PathBuf::from(std::env::var("SHARED_HELPER_SYNC").unwrap());
    let kv = open_shared(EmbeddedOptions::dir(&store)).unwrap();
    let me = std::process::id();
    match mode.as_str() {
        "increment" => {
            let acked = increment_threads(
                &kv,
                env_num("SHARED_HELPER_THREADS"),
                env_num("SHARED_HELPER_N"),
            );
            let tmp = sync.join(format!("tmp-{me}"));
            std::fs::write(&tmp, format!("{} {acked}", kv.backend_name())).unwrap();
            std::fs::rename(&tmp, sync.join(format!("done-{me}"))).unwrap();
            // Whoever owns the store keeps serving until everyone is done.
            let expect = env_num("SHARED_HELPER_EXPECT");
            wait_for("the other processes", Duration::from_secs(120), || {
                reports(&sync).len() >= expect
            });
        }
        "hold" => {
            let mut t = kv.begin().unwrap();
            t.get(COUNTER, false).unwrap();
            for i in 0..100u32 {
                t.set(
                    &[b"held/".as_slice(), &i.to_be_bytes()].concat(),
                    &[1; 1000],
                );
            }
            t.set(COUNTER, &u64::MAX.to_le_bytes());
            // Ships the writes to the owner, which now holds them.
            assert_eq!(t.get(b"held/zzz", false).unwrap(), None);
            std::fs::write(sync.join("ready"), kv.backend_name()).unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        "first" | "survivor" | "late" => node(&mode, kv, &store, &sync),
        other => panic!("unknown helper mode {other}"),
    }
}

#[test]
fn processes_share_one_store() {
    let (_root, store, sync) = store_and_sync_dirs();
    let kv = open_shared(EmbeddedOptions::dir(&store)).unwrap();
    assert_eq!(kv.backend_name(), "embedded", "the first opener owns it");
    let vars = increment_vars(2, 40, 2);
    let children: Vec<Child> = (0..2)
        .map(|_| spawn_helper("increment", &store, &sync, &vars))
        .collect();
    let mine = increment_threads(&kv, 4, 40);
    for c in children {
        wait_child(c, Duration::from_secs(180));
    }
    let reports = reports(&sync);
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|(backend, _)| backend == "remote"));
    let theirs: u64 = reports.iter().map(|(_, n)| n).sum();
    assert_eq!(mine, 160);
    assert_eq!(theirs, 160);
    assert_eq!(counter(kv.as_ref()), mine + theirs);
}

#[test]
fn processes_racing_to_open_agree_on_one_owner() {
    let (_root, store, sync) = store_and_sync_dirs();
    let vars = increment_vars(2, 25, 3);
    let children: Vec<Child> = (0..3)
        .map(|_| spawn_helper("increment", &store, &sync, &vars))
        .collect();
    for c in children {
        wait_child(c, Duration::from_secs(180));
    }
    let reports = reports(&sync);
    assert_eq!(reports.len(), 3);
    let owners = reports.iter().filter(|(b, _)| b == "embedded").count();
    assert_eq!(owners, 1, "{reports:?}");
    let total: u64 = reports.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 150);
    // The owner has exited: this process takes over, past its stale socket.
    assert!(store.join(SOCKET_FILE).exists());
    let kv = open_shared(EmbeddedOptions::dir(&store)).unwrap();
    assert_eq!(kv.backend_name(), "embedded");
    assert_eq!(counter(kv.as_ref()), total);
}

#[test]
fn killed_client_leaves_the_owner_intact() {
    let (_root, store, sync) = store_and_sync_dirs();
    let kv = open_shared(EmbeddedOptions::dir(&store)).unwrap();
    increment(kv.as_ref(), 3);

    let mut holder = spawn_helper("hold", &store, &sync, &[]);
    let ready = sync.join("ready");
    wait_for("the holder", Duration::from_secs(60), || ready.exists());
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), "remote");
    holder.kill().unwrap();
    holder.wait().unwrap();

    // Nothing of its transaction was applied, and it blocks nobody.
    let mut t = kv.begin().unwrap();
    let held = t
        .get_range(
            &RangeOption::new(b"held/".to_vec(), b"held0".to_vec()),
            false,
        )
        .unwrap();
    assert!(held.kvs.is_empty());
    drop(t);
    assert_eq!(counter(kv.as_ref()), 3);
    assert_eq!(increment(kv.as_ref(), 2), 2);

    // Other processes are still served.
    let vars = increment_vars(1, 5, 1);
    let child = spawn_helper("increment", &store, &sync, &vars);
    wait_child(child, Duration::from_secs(120));
    assert_eq!(reports(&sync), vec![("remote".to_string(), 5)]);
    assert_eq!(counter(kv.as_ref()), 10);
}

// ---------------------------------------------------------------------------
// Failover: the owner exits while clients are connected.

const LOG: &[u8] = b"log/";

/// One increment of [`COUNTER`], logged as `entry` under `log/<stamp>`
/// (a versionstamped key, so the log is in commit-version order).
fn logged_increment(kv: &dyn Kv, entry: &str) -> KvResult<u64> {
    let mut t = kv.begin()?;
    let v = t
        .get(COUNTER, false)?
        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
    t.set(COUNTER, &(v + 1).to_le_bytes());
    let mut key = LOG.to_vec();
    key.extend_from_slice(&INCOMPLETE_VERSIONSTAMP);
    key.extend_from_slice(&(LOG.len() as u32).to_le_bytes());
    t.atomic_op(&key, entry.as_bytes(), MutationType::SetVersionstampedKey);
    Ok(t.commit()?.version.get())
}

/// Logged increments number `seqs` in phase `phase`, retrying conflicts only; each
/// commit version is above `last`.
fn logged_increments(
    kv: &dyn Kv,
    tag: &str,
    phase: &str,
    seqs: std::ops::Range<usize>,
    last: &mut u64,
) {
    for i in seqs {
        loop {
            match logged_increment(kv, &format!("{tag} {phase} {i}")) {
                Ok(v) => {
                    assert!(v > *last, "version {v} after {last}");
                    *last = v;
                    break;
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("{tag}: {phase} increment {i} failed: {e}"),
            }
        }
    }
}

/// The roles of the failover tests (`SHARED_HELPER_TAG` names the process):
///
/// * `first`: owns the store, commits, then waits for `<sync>/release` and
///   exits normally (or is killed);
/// * `survivor`: a client; commits, leaves a transaction open, waits for
///   `<sync>/owner-gone`, checks that the open transaction fails retryably
///   and that its next transactions succeed (after at most one retryable
///   failure), reports `recovered-<tag>` ("<backend> <owned>"), commits
///   more, and reports `done-<tag>`;
/// * `late`: a client started after the takeover; commits and reports.
///
/// Every process but `first` keeps running until `SHARED_HELPER_EXPECT`
/// processes have reported `done-*` (whoever owns the store serves it).
fn node(mode: &str, kv: Arc<dyn Kv>, store: &Path, sync: &Path) {
    let tag = std::env::var("SHARED_HELPER_TAG").unwrap();
    let n = env_num("SHARED_HELPER_N");
    let mut last = 0;
    let report = |name: &str, text: String| {
        let tmp = sync.join(format!("tmp-{name}"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, sync.join(name)).unwrap();
    };
    match mode {
        "first" => {
            assert_eq!(kv.backend_name(), "embedded");
            logged_increments(kv.as_ref(), &tag, "before", 0..n, &mut last);
            report(&format!("ready-{tag}"), String::new());
            let release = sync.join("release");
            wait_for("release", Duration::from_secs(120), || release.exists());
            return;
        }
        "survivor" => {
            assert_eq!(kv.backend_name(), "remote");
            assert!(owned(store).is_none());
            logged_increments(kv.as_ref(), &tag, "before", 0..n - 1, &mut last);
            // A read version from the old owner, older than a later commit.
            let old_rv = kv.begin().unwrap().read_version().unwrap();
            logged_increments(kv.as_ref(), &tag, "before", n - 1..n, &mut last);
            let m0 = kv.metrics();
            assert!(m0.commits >= n as u64, "{m0:?}");
            // A transaction in flight when the owner goes.
            let mut pending = kv.begin().unwrap();
            pending.get(COUNTER, false).unwrap();
            pending.set(format!("pending/{tag}").as_bytes(), b"1");
            report(&format!("ready-{tag}"), String::new());
            let gone = sync.join("owner-gone");
            wait_for("the owner to go", Duration::from_secs(120), || {
                gone.exists()
            });

            let err = pending.get(b"other", false).unwrap_err();
            assert_eq!(err.code, LOST_CONNECTION, "{err}");
            assert!(err.is_retryable_not_committed(), "{err}");
            let err = pending.commit().unwrap_err();
            assert_eq!(err.code, LOST_CONNECTION, "{err}");

            let mut failures = Vec::new();
            loop {
                match logged_increment(kv.as_ref(), &format!("{tag} recover 0")) {
                    Ok(v) => {
                        assert!(v > last, "version {v} after {last}");
                        last = v;
                        break;
                    }
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => {
                        assert!(e.is_retryable_not_committed(), "{e}");
                        failures.push(e.to_string());
                        assert!(failures.len() <= 1, "{failures:?}");
                    }
                }
            }
            // The new owner cannot serve a read version from before the
            // takeover exactly: refused, retryably, and nothing applied.
            let mut t = kv.begin().unwrap();
            t.set_read_version(old_rv);
            let err = t.get(COUNTER, false).unwrap_err();
            assert_eq!(err.code, KvError::TRANSACTION_TOO_OLD, "{err}");
            let mut t = kv.begin().unwrap();
            t.set_read_version(old_rv);
            t.set(format!("pending/{tag}/stale").as_bytes(), b"1");
            let err = t.commit().unwrap_err();
            assert!(err.is_retryable_not_committed(), "{err}");

            let backend = kv.backend_name();
            let is_owner = owned(store).is_some();
            assert_eq!(is_owner, backend == "embedded");
            logged_increments(kv.as_ref(), &tag, "after", 0..n, &mut last);
            // Metrics are cumulative across the failover.
            let m = kv.metrics();
            assert!(m.commits > 2 * n as u64, "{m:?}");
            assert!(m.reads > m0.reads + n as u64, "{m:?}");
            report(
                &format!("recovered-{tag}"),
                format!("{backend} {is_owner} {}", failures.len()),
            );
        }
        "late" => {
            assert_eq!(kv.backend_name(), "remote");
            logged_increments(kv.as_ref(), &tag, "after", 0..n, &mut last);
        }
        other => panic!("unknown node mode {other}"),
    }
    report(&format!("done-{tag}"), format!("{} {n}", kv.backend_name()));
    let expect = env_num("SHARED_HELPER_EXPECT");
    wait_for("the other processes", Duration::from_secs(120), || {
        reports(sync).len() >= expect
    });
}

fn node_vars(tag: &str, n: usize, expect: usize) -> Vec<(&'static str, String)> {
    vec![
        ("SHARED_HELPER_TAG", tag.to_string()),
        ("SHARED_HELPER_N", n.to_string()),
        ("SHARED_HELPER_EXPECT", expect.to_string()),
    ]
}

fn wait_file(sync: &Path, name: &str) -> String {
    let path = sync.join(name);
    wait_for(name, Duration::from_secs(120), || path.exists());
    std::fs::read_to_string(path).unwrap()
}

/// Ends the owner process: a normal exit, or SIGKILL.
fn end_owner(mut owner: Child, sync: &Path, kill: bool) {
    if kill {
        owner.kill().unwrap();
        owner.wait().unwrap();
    } else {
        std::fs::write(sync.join("release"), "").unwrap();
        wait_child(owner, Duration::from_secs(60));
    }
    std::fs::write(sync.join("owner-gone"), "").unwrap();
}

/// Checks the store after every process exited: the log has one entry per
/// acknowledged increment, in strictly increasing versions, each process's
/// entries in its own order, every entry committed before the owner went
/// below every entry committed after; no stray transaction was applied.
/// Returns the entries (tag, phase) in version order.
fn check_log(store: &Path) -> Vec<(String, String)> {
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(store)).unwrap();
    let mut t = kv.begin().unwrap();
    let counter = t
        .get(COUNTER, false)
        .unwrap()
        .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
    let log = t
        .get_range(&RangeOption::new(LOG.to_vec(), b"log0".to_vec()), false)
        .unwrap();
    assert!(!log.more);
    let pending = t
        .get_range(
            &RangeOption::new(b"pending/".to_vec(), b"pending0".to_vec()),
            false,
        )
        .unwrap();
    assert!(pending.kvs.is_empty(), "{pending:?}");
    assert_eq!(log.kvs.len() as u64, counter);
    let mut entries = Vec::new();
    let mut last_version = 0;
    let mut seen: std::collections::HashMap<String, (usize, usize)> = Default::default();
    let mut after_started = false;
    for kv in &log.kvs {
        let version = u64::from_be_bytes(kv.key[LOG.len()..LOG.len() + 8].try_into().unwrap());
        assert!(version > last_version, "{version} after {last_version}");
        last_version = version;
        let text = String::from_utf8(kv.value.clone()).unwrap();
        let mut parts = text.split(' ');
        let (tag, phase, i) = (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse::<usize>().unwrap(),
        );
        let rank = ["before", "recover", "after"]
            .iter()
            .position(|p| *p == phase)
            .unwrap();
        if rank > 0 {
            after_started = true;
        } else {
            assert!(!after_started, "{text} committed after the takeover");
        }
        if let Some(prev) = seen.insert(tag.clone(), (rank, i)) {
            assert!(prev < (rank, i), "{text} after {prev:?}");
        }
        entries.push((tag, phase));
    }
    entries
}

fn count(entries: &[(String, String)], tag: &str, phase: &str) -> usize {
    entries
        .iter()
        .filter(|(t, p)| t == tag && p == phase)
        .count()
}

/// Owner A and client B; A exits; B takes over; C then connects to B.
fn survivor_takes_over(kill: bool) {
    let (_root, store, sync) = store_and_sync_dirs();
    let n = 5;
    let a = spawn_helper("first", &store, &sync, &node_vars("A", n, 0));
    wait_file(&sync, "ready-A");
    let b = spawn_helper("survivor", &store, &sync, &node_vars("B", n, 2));
    wait_file(&sync, "ready-B");
    end_owner(a, &sync, kill);
    let recovered = wait_file(&sync, "recovered-B");
    assert!(recovered.starts_with("embedded true "), "{recovered}");
    let c = spawn_helper("late", &store, &sync, &node_vars("C", n, 2));
    wait_child(c, Duration::from_secs(120));
    wait_child(b, Duration::from_secs(120));
    let mut reports = reports(&sync);
    reports.sort();
    assert_eq!(
        reports,
        vec![
            ("embedded".to_string(), n as u64),
            ("remote".to_string(), n as u64)
        ]
    );
    let entries = check_log(&store);
    assert_eq!(entries.len(), 4 * n + 1);
    assert_eq!(count(&entries, "A", "before"), n);
    assert_eq!(count(&entries, "B", "before"), n);
    assert_eq!(count(&entries, "B", "recover"), 1);
    assert_eq!(count(&entries, "B", "after"), n);
    assert_eq!(count(&entries, "C", "after"), n);
}

#[test]
fn survivor_takes_over_when_the_owner_exits() {
    survivor_takes_over(false);
}

#[test]
fn survivor_takes_over_when_the_owner_is_killed() {
    survivor_takes_over(true);
}

/// Owner A is killed while B and C are connected: exactly one of them
/// becomes the owner, the other connects to it, and both carry on.
#[test]
fn two_survivors_agree_on_one_new_owner() {
    let (_root, store, sync) = store_and_sync_dirs();
    let n = 5;
    let a = spawn_helper("first", &store, &sync, &node_vars("A", n, 0));
    wait_file(&sync, "ready-A");
    let survivors: Vec<Child> = ["B", "C"]
        .iter()
        .map(|tag| spawn_helper("survivor", &store, &sync, &node_vars(tag, n, 2)))
        .collect();
    wait_file(&sync, "ready-B");
    wait_file(&sync, "ready-C");
    end_owner(a, &sync, true);
    for c in survivors {
        wait_child(c, Duration::from_secs(120));
    }
    let mut recovered = vec![
        wait_file(&sync, "recovered-B"),
        wait_file(&sync, "recovered-C"),
    ];
    recovered.sort();
    assert!(recovered[0].starts_with("embedded true "), "{recovered:?}");
    assert!(recovered[1].starts_with("remote false "), "{recovered:?}");
    let entries = check_log(&store);
    assert_eq!(entries.len(), 5 * n + 2);
    for tag in ["B", "C"] {
        assert_eq!(count(&entries, tag, "before"), n);
        assert_eq!(count(&entries, tag, "recover"), 1);
        assert_eq!(count(&entries, tag, "after"), n);
    }
}
