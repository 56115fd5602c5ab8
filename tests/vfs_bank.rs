//! The bank invariant (issue 3): 100 accounts, 8 threads in this process
//! plus 2 child processes (2 threads each) on ONE embedded directory store,
//! each doing random transfers in `BEGIN … COMMIT` through `fdbvfs::retry`,
//! while the store injects spurious conflicts, unknown commit results and
//! latency. At the end: the total is unchanged, no balance is negative,
//! every acknowledged transfer is in the log exactly once with what its
//! worker committed, nothing unacknowledged is in the log, every balance
//! equals its initial value plus the logged transfers, and
//! `PRAGMA integrity_check` is `ok`.
//!
//! The child processes re-run this test binary (the ignored test
//! `bank_child_process`, selected by `BANK_CHILD_DIR`); the directory is
//! shared through `<dir>/kv.sock` (this process opened it first, so it owns
//! it and its faults apply to every process). Children report their
//! acknowledged transfers as `BANK-ACK` lines on stdout.
//!
//! Exactly once under `commit_unknown_result`: pagestore retries a commit
//! that got 1021 and reads the commit's token to learn whether it landed, so
//! the application normally never sees it. If pagestore gave up, the VFS
//! reports `SQLITE_IOERR_FSYNC` for the COMMIT (not BUSY: re-running blindly
//! could apply twice). Workers then re-run the *same* transfer id, and every
//! attempt first looks its id up in the log: a transfer that had landed is
//! acknowledged from its log row, not applied again. A log row found when no
//! uncertain commit preceded it is a bug (a commit reported as failed had
//! landed) and fails the test.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fdbvfs::{Faults, RetryOptions, Store};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::{Connection, OptionalExtension};

const DB: &str = "bank";
const ACCOUNTS: i64 = 100;
const INITIAL: i64 = 1_000;
const THREADS: usize = 8;
const CHILDREN: usize = 2;
const CHILD_THREADS: usize = 2;
const TRANSFERS: usize = 300; // per worker
const CHILD_ENV: &str = "BANK_CHILD_DIR";
const ACK: &str = "BANK-ACK";
const STATS: &str = "BANK-STATS";
const READY: &str = "BANK-READY";
const GO_FILE: &str = "bank-go";

fn faults() -> Faults {
    Faults {
        conflict_probability: 0.05,
        unknown_result_probability: 0.05,
        latency: Duration::from_micros(200),
        ..Faults::default()
    }
}

/// An acknowledged transfer, as its worker committed it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ack {
    id: String,
    src: i64,
    dst: i64,
    amount: i64,
}

/// What one worker did.
#[derive(Debug, Default)]
struct Report {
    acks: Vec<Ack>,
    /// Transaction attempts (BUSY re-runs included).
    attempts: u64,
    /// COMMITs that failed with "maybe committed" (SQLITE_IOERR_FSYNC).
    uncertain: u64,
    /// Transfers acknowledged from their log row after an uncertain commit.
    found_after_uncertain: u64,
}

impl Report {
    fn merge(&mut self, o: Report) {
        self.acks.extend(o.acks);
        self.attempts += o.attempts;
        self.uncertain += o.uncertain;
        self.found_after_uncertain += o.found_after_uncertain;
    }
}

enum Outcome {
    Applied(i64),
    /// The id was already in the log: (src, dst, amount) as logged.
    Found(i64, i64, i64),
}

fn retry_options() -> RetryOptions {
    // Every transfer writes the accounts' pages and the log: with 12
    // workers, many attempts conflict; the limit only guards against a
    // livelock.
    RetryOptions {
        max_attempts: 10_000,
        initial_backoff: Duration::from_micros(500),
        max_backoff: Duration::from_millis(20),
        ..RetryOptions::default()
    }
}

fn balance(tx: &Connection, id: i64) -> rusqlite::Result<i64> {
    tx.query_row("SELECT balance FROM accounts WHERE id = ?1", [id], |r| {
        r.get(0)
    })
}

/// `TRANSFERS` random transfers by worker `tag`; panics on any error but
/// BUSY (retried by `retry`) and a maybe-committed COMMIT (re-run with the
/// same transfer id).
fn worker(store: &Store, tag: &str, seed: u64) -> Report {
    let mut conn = store
        .open(DB)
        .unwrap_or_else(|e| panic!("{tag}: open: {e}"));
    let mut rng = StdRng::seed_from_u64(seed);
    let opts = retry_options();
    let mut report = Report::default();
    for n in 0..TRANSFERS {
        let id = format!("{tag}-{n}");
        let src = rng.random_range(1..=ACCOUNTS);
        let dst = (src + rng.random_range(1..ACCOUNTS) - 1) % ACCOUNTS + 1;
        let want: i64 = rng.random_range(1..=200);
        let mut uncertain = false;
        loop {
            let out = fdbvfs::retry_with(&mut conn, &opts, |tx| {
                report.attempts += 1;
                let logged = tx
                    .query_row(
                        "SELECT src, dst, amount FROM transfers WHERE id = ?1",
                        [&id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .optional()?;
                if let Some((s, d, a)) = logged {
                    return Ok(Outcome::Found(s, d, a));
                }
                let (sb, db) = (balance(tx, src)?, balance(tx, dst)?);
                // No overdrafts: a stale read of `sb` (a serializability
                // bug) would show up as a negative balance or a wrong total.
                let amount = want.min(sb);
                tx.execute(
                    "UPDATE accounts SET balance = ?2 WHERE id = ?1",
                    [src, sb - amount],
                )?;
                tx.execute(
                    "UPDATE accounts SET balance = ?2 WHERE id = ?1",
                    [dst, db + amount],
                )?;
                tx.execute(
                    "INSERT INTO transfers(id, src, dst, amount) VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![id, src, dst, amount],
                )?;
                Ok(Outcome::Applied(amount))
            });
            match out {
                Ok(Outcome::Applied(amount)) => {
                    report.acks.push(Ack {
                        id: id.clone(),
                        src,
                        dst,
                        amount,
                    });
                    break;
                }
                Ok(Outcome::Found(s, d, a)) => {
                    assert!(
                        uncertain,
                        "{tag}: transfer {id} is in the log although every earlier \
                         attempt was reported as not committed"
                    );
                    assert_eq!((s, d), (src, dst), "{tag}: transfer {id} logged wrongly");
                    report.found_after_uncertain += 1;
                    report.acks.push(Ack {
                        id: id.clone(),
                        src,
                        dst,
                        amount: a,
                    });
                    break;
                }
                Err(fdbvfs::Error::Sqlite(rusqlite::Error::SqliteFailure(f, msg)))
                    if f.extended_code == libsqlite3_sys::SQLITE_IOERR_FSYNC =>
                {
                    // The commit may or may not have landed: re-run the same
                    // transfer id; the log lookup decides.
                    eprintln!("{tag}: transfer {id}: commit result unknown ({msg:?}); re-running");
                    uncertain = true;
                    report.uncertain += 1;
                }
                Err(e) => panic!("{tag}: transfer {id} failed: {e}"),
            }
        }
    }
    report
}

fn workers(store: &Store, proc_tag: &str, threads: usize, seed: u64) -> Report {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let tag = format!("{proc_tag}-t{t}");
                s.spawn(move || worker(store, &tag, seed * 1000 + t as u64))
            })
            .collect();
        let mut all = Report::default();
        for h in handles {
            match h.join() {
                Ok(r) => all.merge(r),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        all
    })
}

/// The child side (does nothing unless run by `bank_invariant`).
#[test]
#[ignore = "run by bank_invariant as a child process"]
fn bank_child_process() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let tag = std::env::var("BANK_CHILD_TAG").unwrap_or_else(|_| "c".into());
    let seed: u64 = std::env::var("BANK_CHILD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let store = Store::embedded(Path::new(&dir)).unwrap_or_else(|e| panic!("child store: {e}"));
    let backend = store.page_store().kv().backend_name().to_string();
    drop(store.open(DB).unwrap_or_else(|e| panic!("child open: {e}")));
    // The parent starts its workers when every child is ready, and lets
    // the children go at the same moment: all processes overlap.
    println!("\n{READY}");
    let go = Path::new(&dir).join(GO_FILE);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !go.exists() {
        assert!(Instant::now() < deadline, "no go signal from the parent");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = workers(&store, &tag, CHILD_THREADS, seed);
    let st = store.page_store().stats();
    // println! is captured by the test harness unless --nocapture: the
    // parent passes --nocapture.
    for a in &r.acks {
        println!("{ACK} {} {} {} {}", a.id, a.src, a.dst, a.amount);
    }
    println!(
        "{STATS} {backend} {} {} {} {} {} {}",
        r.attempts,
        r.uncertain,
        r.found_after_uncertain,
        st.commits,
        st.conflicts,
        st.recovered_unknown
    );
}

/// A child's report, parsed from its stdout.
#[derive(Debug, Default)]
struct ChildReport {
    report: Report,
    backend: String,
    commits: u64,
    conflicts: u64,
    recovered_unknown: u64,
}

fn parse_child(lines: &[String]) -> ChildReport {
    let mut c = ChildReport::default();
    let num = |s: &str| -> u64 {
        s.parse()
            .unwrap_or_else(|e| panic!("bad number {s:?}: {e}"))
    };
    let mut saw_stats = false;
    for l in lines {
        // libtest may print "test bank_child_process ... " on the same line
        // as the first output.
        let l = match (l.find(ACK), l.find(STATS)) {
            (Some(i), _) | (None, Some(i)) => &l[i..],
            (None, None) => continue,
        };
        let f: Vec<&str> = l.split_whitespace().collect();
        match f.first().copied() {
            Some(ACK) if f.len() == 5 => c.report.acks.push(Ack {
                id: f[1].to_string(),
                src: num(f[2]) as i64,
                dst: num(f[3]) as i64,
                amount: f[4]
                    .parse()
                    .unwrap_or_else(|e| panic!("bad amount {l:?}: {e}")),
            }),
            Some(STATS) if f.len() == 8 => {
                saw_stats = true;
                c.backend = f[1].to_string();
                c.report.attempts = num(f[2]);
                c.report.uncertain = num(f[3]);
                c.report.found_after_uncertain = num(f[4]);
                c.commits = num(f[5]);
                c.conflicts = num(f[6]);
                c.recovered_unknown = num(f[7]);
            }
            _ => panic!("malformed child line {l:?}"),
        }
    }
    assert!(saw_stats, "child reported no stats: {lines:?}");
    c
}

/// A running child: its process and its stdout lines, read by a thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

fn spawn_child(dir: &Path, tag: &str, seed: u64) -> Running {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut child = Command::new(exe)
        .args([
            "bank_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env("BANK_CHILD_TAG", tag)
        .env("BANK_CHILD_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn child: {e}"));
    let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running { child, lines }
}

impl Running {
    /// Waits until the child printed `READY` (store open, connections
    /// open); returns the lines before it.
    fn wait_ready(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(READY) => return before,
                Ok(l) => before.push(l),
                Err(e) => panic!("child {} never got ready: {e}", self.child.id()),
            }
        }
    }

    /// Waits for the child to exit successfully; returns its output lines.
    fn finish(mut self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("child process {} hung", self.child.id());
                }
                Err(e) => panic!("wait for child: {e}"),
            }
        };
        assert!(status.success(), "child process failed: {status}");
        // The reader thread ends at EOF, closing the channel.
        self.lines.iter().collect()
    }
}

fn setup(store: &Store) -> Result<(), fdbvfs::Error> {
    let mut c = store.open(DB)?;
    // Padded accounts (~4 per 4 KiB page, so about 25 pages): transfers
    // between accounts on different pages need not conflict. The log is
    // keyed by transfer id WITHOUT ROWID, so workers (ids
    // "<proc>-t<thread>-<n>") mostly insert into different leaf pages
    // instead of all appending to the last one.
    // Faults are on already: setup retries too (a spurious conflict fails
    // an autocommit statement with BUSY like any other).
    fdbvfs::retry(&mut c, |tx| {
        tx.execute_batch(
            "CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, pad BLOB);
             CREATE TABLE transfers(id TEXT PRIMARY KEY, src INTEGER NOT NULL,
                                    dst INTEGER NOT NULL, amount INTEGER NOT NULL) WITHOUT ROWID;",
        )?;
        for id in 1..=ACCOUNTS {
            tx.execute(
                "INSERT INTO accounts VALUES (?1, ?2, zeroblob(900))",
                [id, INITIAL],
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

#[test]
fn bank_invariant() -> Result<(), fdbvfs::Error> {
    common::init_tracing();
    let started = Instant::now();
    let dir = tempfile::tempdir().map_err(|e| fdbvfs::Error::Config(e.to_string()))?;
    let store = Store::builder().dir(dir.path()).faults(faults()).build()?;
    assert_eq!(
        store.page_store().kv().backend_name(),
        "embedded",
        "this process opened the directory first and owns it"
    );
    setup(&store)?;
    let before = store.page_store().kv().metrics();

    let children: Vec<Running> = (0..CHILDREN)
        .map(|i| spawn_child(dir.path(), &format!("p{}", i + 1), 100 + i as u64))
        .collect();
    for c in &children {
        c.wait_ready(Duration::from_secs(120));
    }
    std::fs::write(dir.path().join(GO_FILE), b"go")
        .map_err(|e| fdbvfs::Error::Config(e.to_string()))?;
    let mut all = workers(&store, "p0", THREADS, 7);
    let mut child_conflicts = 0;
    let mut child_recovered = 0;
    for c in children {
        let r = parse_child(&c.finish(Duration::from_secs(300)));
        assert_eq!(r.backend, "remote", "children are clients of this process");
        assert_eq!(r.report.acks.len(), CHILD_THREADS * TRANSFERS);
        assert!(r.commits > 0);
        child_conflicts += r.conflicts;
        child_recovered += r.recovered_unknown;
        all.merge(r.report);
    }
    let workload = started.elapsed();
    let m = store.page_store().kv().metrics().since(&before);
    let st = store.page_store().stats();

    // Every worker acknowledged all its transfers, each id once.
    let expected = THREADS * TRANSFERS + CHILDREN * CHILD_THREADS * TRANSFERS;
    assert_eq!(all.acks.len(), expected);
    let ids: HashSet<&str> = all.acks.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), expected, "transfer ids are unique");

    // Check on a fresh connection (and with faults off: verification is
    // not under test).
    store.set_faults(Faults::default())?;
    let conn = store.open(DB)?;
    let ic: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    assert_eq!(ic, "ok");
    let mut logged: BTreeMap<String, Ack> = BTreeMap::new();
    {
        let mut s = conn.prepare("SELECT id, src, dst, amount FROM transfers")?;
        let rows = s.query_map([], |r| {
            Ok(Ack {
                id: r.get(0)?,
                src: r.get(1)?,
                dst: r.get(2)?,
                amount: r.get(3)?,
            })
        })?;
        for a in rows {
            let a = a?;
            assert!(
                logged.insert(a.id.clone(), a.clone()).is_none(),
                "transfer {} logged twice",
                a.id
            );
        }
    }
    // Acknowledged ⇒ logged exactly once, as committed; logged ⇒ acknowledged.
    for a in &all.acks {
        assert_eq!(
            logged.get(&a.id),
            Some(a),
            "acknowledged transfer missing or different"
        );
    }
    assert_eq!(
        logged.len(),
        all.acks.len(),
        "unacknowledged transfers logged"
    );

    // Balances = initial + logged transfers; total unchanged; no overdraft.
    let mut expect: BTreeMap<i64, i64> = (1..=ACCOUNTS).map(|a| (a, INITIAL)).collect();
    for a in logged.values() {
        *expect.entry(a.src).or_default() -= a.amount;
        *expect.entry(a.dst).or_default() += a.amount;
        assert!(a.amount >= 0);
    }
    let mut actual: BTreeMap<i64, i64> = BTreeMap::new();
    {
        let mut s = conn.prepare("SELECT id, balance FROM accounts")?;
        for r in s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (id, b) = r?;
            actual.insert(id, b);
        }
    }
    assert_eq!(actual, expect, "balances = initial + logged transfers");
    assert_eq!(actual.values().sum::<i64>(), ACCOUNTS * INITIAL);
    assert!(actual.values().all(|b| *b >= 0), "overdraft: {actual:?}");
    let moved: i64 = logged.values().map(|a| a.amount).sum();
    assert!(moved > 0, "transfers moved money");

    // The faults fired (the owner's counters cover every process), and the
    // application saw conflicts it had to retry.
    assert!(m.unknown_results > 0, "no unknown results injected: {m:?}");
    assert!(m.conflicts > 0, "no conflicts: {m:?}");
    let recovered = st.recovered_unknown + child_recovered;
    assert!(
        recovered > 0,
        "no commit learned from its token that it had landed"
    );
    assert!(
        all.attempts > expected as u64,
        "no transaction was re-run: {}",
        all.attempts
    );
    eprintln!(
        "bank: {expected} transfers in {:.1} s; attempts {} (re-runs {}), kv commits {} \
         conflicts {} unknown_results {}; pagestore conflicts {} (+{child_conflicts} in children), \
         recovered_unknown {recovered}; uncertain COMMITs surfaced {} (found in log after: {}); \
         max_commit_bytes {}",
        workload.as_secs_f64(),
        all.attempts,
        all.attempts - expected as u64,
        m.commits,
        m.conflicts,
        m.unknown_results,
        st.conflicts,
        all.uncertain,
        all.found_after_uncertain,
        m.max_commit_bytes,
    );
    Ok(())
}
