//! The bank workload, shared by `tests/vfs_bank.rs` (threads and processes
//! on one embedded directory, with injected faults) and `tests/fdb_process.rs`
//! (processes on the embedded backend or FoundationDB, the store paused).
//!
//! 100 accounts; workers do random transfers in `BEGIN … COMMIT` through
//! `fdbvfs::retry`, each logged by a unique id in `transfers`. Exactly once
//! under `commit_unknown_result`: a COMMIT that may have landed
//! (`SQLITE_IOERR_FSYNC`) is re-run with the *same* transfer id, and every
//! attempt first looks its id up in the log: a transfer that had landed is
//! acknowledged from its log row, not applied again. A log row found when no
//! uncertain commit preceded it is a bug (a commit reported as failed had
//! landed) and fails the test. [`check`] then verifies: every acknowledged
//! transfer logged once as committed, nothing unacknowledged logged, balances
//! = initial + logged transfers, total unchanged, no overdraft,
//! `PRAGMA integrity_check` ok.
//!
//! Child processes re-run the test binary (an ignored test) and report their
//! acknowledged transfers as `BANK-ACK` lines and their counters as one
//! `BANK-STATS` line on stdout ([`print_report`], [`parse_child`]).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fdbvfs::{RetryOptions, Store};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::{Connection, OptionalExtension};

pub const DB: &str = "bank";
pub const ACCOUNTS: i64 = 100;
pub const INITIAL: i64 = 1_000;
pub const ACK: &str = "BANK-ACK";
pub const STATS: &str = "BANK-STATS";
pub const READY: &str = "BANK-READY";

/// An acknowledged transfer, as its worker committed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub id: String,
    pub src: i64,
    pub dst: i64,
    pub amount: i64,
}

/// What one worker (or process) did.
#[derive(Debug, Default)]
pub struct Report {
    pub acks: Vec<Ack>,
    /// Transaction attempts (BUSY re-runs included).
    pub attempts: u64,
    /// COMMITs that failed with "maybe committed" (SQLITE_IOERR_FSYNC).
    pub uncertain: u64,
    /// Transfers acknowledged from their log row after an uncertain commit.
    pub found_after_uncertain: u64,
}

impl Report {
    pub fn merge(&mut self, o: Report) {
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

pub fn retry_options() -> RetryOptions {
    // Every transfer writes the accounts' pages and the log: with many
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

/// `transfers` random transfers by worker `tag`; panics on any error but
/// BUSY (retried by `retry`) and a maybe-committed COMMIT (re-run with the
/// same transfer id). `on_ack` is called after each acknowledged transfer.
pub fn worker(store: &Store, tag: &str, seed: u64, transfers: usize, on_ack: &dyn Fn()) -> Report {
    let mut conn = store
        .open(DB)
        .unwrap_or_else(|e| panic!("{tag}: open: {e}"));
    let mut rng = StdRng::seed_from_u64(seed);
    let opts = retry_options();
    let mut report = Report::default();
    for n in 0..transfers {
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
                    on_ack();
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
                    on_ack();
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

/// `threads` workers of process `proc_tag` (ids `<proc_tag>-t<i>-<n>`).
pub fn workers(
    store: &Store,
    proc_tag: &str,
    threads: usize,
    seed: u64,
    transfers: usize,
    on_ack: &(dyn Fn() + Sync),
) -> Report {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let tag = format!("{proc_tag}-t{t}");
                s.spawn(move || worker(store, &tag, seed * 1000 + t as u64, transfers, on_ack))
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

/// Creates the accounts and the log (retrying: faults may be on).
pub fn setup(store: &Store) -> Result<(), fdbvfs::Error> {
    let mut c = store.open(DB)?;
    // Padded accounts (~4 per 4 KiB page, so about 25 pages): transfers
    // between accounts on different pages need not conflict. The log is
    // keyed by transfer id WITHOUT ROWID, so workers (ids
    // "<proc>-t<thread>-<n>") mostly insert into different leaf pages
    // instead of all appending to the last one.
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

/// Prints a child's report for [`parse_child`] (`backend`: the store's
/// backend name; `stats`: pagestore's counters).
pub fn print_report(r: &Report, backend: &str, stats: &pagestore::StoreStats) {
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
        stats.commits,
        stats.conflicts,
        stats.recovered_unknown
    );
}

/// A child's report, parsed from its stdout.
#[derive(Debug, Default)]
pub struct ChildReport {
    pub report: Report,
    pub backend: String,
    pub commits: u64,
    pub conflicts: u64,
    pub recovered_unknown: u64,
}

pub fn parse_child(lines: &[String]) -> ChildReport {
    let mut c = ChildReport::default();
    let num = |s: &str| -> u64 {
        s.parse()
            .unwrap_or_else(|e| panic!("bad number {s:?}: {e}"))
    };
    let mut saw_stats = false;
    for l in lines {
        // libtest may print "test NAME ... " on the same line as the first
        // output.
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
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

/// Re-runs this test binary's ignored test `test` with `env` as a child
/// process (stdout piped for its report, stderr inherited).
pub fn spawn_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> Running {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn child: {e}"));
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
    /// Waits until the child printed `READY`; returns the lines before it.
    pub fn wait_ready(&self, timeout: Duration) -> Vec<String> {
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

    /// Waits for the child to exit successfully (no signal); returns its
    /// output lines.
    pub fn finish(mut self, timeout: Duration) -> Vec<String> {
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

/// Waits (at most two minutes) for `dir/<name>` to exist: the parent's go
/// signal to its children.
pub fn wait_for_file(dir: &Path, name: &str) {
    let go = dir.join(name);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !go.exists() {
        assert!(
            Instant::now() < deadline,
            "no {name} signal from the parent"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Verifies the bank on a fresh connection of `store` against every
/// acknowledged transfer in `all` (see the module documentation); returns
/// the logged transfers.
pub fn check(store: &Store, all: &Report) -> Result<BTreeMap<String, Ack>, fdbvfs::Error> {
    let ids: HashSet<&str> = all.acks.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids.len(), all.acks.len(), "transfer ids are unique");
    let conn = store.open(DB)?;
    crate::support::assert_integrity(&conn);
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
    Ok(logged)
}
