//! Durability under kill -9: a child process (this test binary, re-run on
//! an ignored helper test) commits in a loop and prints each acknowledged
//! commit; the parent kills it with SIGKILL at a random moment, reopens the
//! store and finds every acknowledged commit. The same with several
//! committing threads (commits in groups, see `kv::embedded` group commit)
//! and with relaxed commits (`Durability::Relaxed`: consistent after a
//! kill, on disk within `FLUSH_DELAY`, kept by a clean close).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions, FLUSH_DELAY};
use pagestore::kv::{Durability, Kv, KvError, RangeOption};
use rand::RngExt;

const DIR_ENV: &str = "PAGESTORE_DURABILITY_DIR";
const ROUND_ENV: &str = "PAGESTORE_DURABILITY_ROUND";

fn key(round: u32, i: u64) -> Vec<u8> {
    format!("r{round:02}/c{i:010}").into_bytes()
}

/// The child: commits forever, printing `ACK <n>` after each commit returns.
#[test]
#[ignore = "helper run as a child process by kill_9_loses_no_acknowledged_commit"]
fn durability_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir)).unwrap();
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "READY").unwrap();
    for i in 0u64.. {
        let mut t = kv.begin().unwrap();
        t.set(&key(round, i), &i.to_le_bytes());
        // A read-modify-write too, so commits have read-conflict ranges.
        let n = t
            .get(b"count", false)
            .unwrap()
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
        t.set(b"count", &(n + 1).to_le_bytes());
        t.commit().unwrap();
        let mut out = stdout.lock();
        writeln!(out, "ACK {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_loses_no_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut total_acked = 0u64;
    for round in 0..3u32 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "durability_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child holds the store (libtest may print its
        // "test ... " prefix on the same line).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).expect("child did not start");
            if line.ends_with("READY") {
                break;
            }
        }
        // While it does, a second open names the directory and the holder.
        let err = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap_err();
        assert_eq!(err.code, KvError::OPERATION_FAILED, "{err}");
        assert!(
            err.message.contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert!(
            err.message.contains(&format!("pid={}", child.id())),
            "{err}"
        );

        std::thread::sleep(Duration::from_millis(rand::rng().random_range(50..=300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked: Vec<u64> = rx
            .try_iter()
            .filter_map(|l| l.split("ACK ").nth(1).and_then(|n| n.trim().parse().ok()))
            .collect();

        println!(
            "round {round}: {} commits acknowledged before kill -9",
            acked.len()
        );
        let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap();
        let mut t = kv.begin().unwrap();
        for i in &acked {
            assert_eq!(
                t.get(&key(round, *i), false).unwrap(),
                Some(i.to_le_bytes().to_vec()),
                "round {round}: acknowledged commit {i} lost"
            );
        }
        // Nothing beyond the last acknowledged commit plus the one in flight.
        let prefix = format!("r{round:02}/").into_bytes();
        let end = pagestore::kv::strinc(&prefix).unwrap();
        let rows = t.get_range(&RangeOption::new(prefix, end), false).unwrap();
        assert!(!rows.more);
        assert!(rows.kvs.len() as u64 >= acked.len() as u64);
        assert!(rows.kvs.len() as u64 <= acked.len() as u64 + 1);
        total_acked += rows.kvs.len() as u64;
        let count = t
            .get(b"count", false)
            .unwrap()
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
        assert_eq!(count, total_acked, "count and rows disagree");
    }
    assert!(total_acked > 0, "the child never committed");
}

const MODE_ENV: &str = "PAGESTORE_DURABILITY_MODE";
const ACCOUNTS: u64 = 10;
const INITIAL: u64 = 100;
const THREADS: u64 = 4;
const RELAXED_BEFORE_FULL: u64 = 20;

fn account(i: u64) -> Vec<u8> {
    format!("bank/{i:02}").into_bytes()
}

fn ack_key(round: u32, thread: u64, seq: u64) -> Vec<u8> {
    format!("g{round:02}/t{thread}/{seq:010}").into_bytes()
}

fn number(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
}

/// One transfer between two accounts plus the key acknowledging it,
/// retried on conflicts.
fn transfer(kv: &EmbeddedKv, durability: Durability, round: u32, thread: u64, seq: u64) {
    let mut rng = rand::rng();
    loop {
        let (from, to) = (rng.random_range(0..ACCOUNTS), rng.random_range(0..ACCOUNTS));
        let mut t = kv.begin().unwrap();
        t.set_durability(durability);
        let a = number(t.get(&account(from), false).unwrap());
        let b = number(t.get(&account(to), false).unwrap());
        if from != to && a > 0 {
            t.set(&account(from), &(a - 1).to_le_bytes());
            t.set(&account(to), &(b + 1).to_le_bytes());
        }
        t.set(&ack_key(round, thread, seq), b"");
        match t.commit() {
            Ok(_) => return,
            Err(e) if e.code == KvError::NOT_COMMITTED => continue,
            Err(e) => panic!("commit: {e}"),
        }
    }
}

/// The child of the group-commit tests: `THREADS` threads transfer between
/// accounts and print `ACK <thread> <seq>` after each acknowledged commit;
/// with `MODE_ENV=relaxed` the commits are relaxed, with
/// `relaxed-idle-N` each thread stops after N of them (the child then
/// prints `IDLE`), and with `relaxed-then-full` each thread makes
/// `RELAXED_BEFORE_FULL` relaxed commits, one full one, and stops.
#[test]
#[ignore = "helper run as a child process by the group-commit kill -9 tests"]
fn group_commit_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let round: u32 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let relaxed = std::env::var(MODE_ENV).is_ok_and(|m| m.starts_with("relaxed"));
    let then_full = std::env::var(MODE_ENV).is_ok_and(|m| m == "relaxed-then-full");
    let idle_after: Option<u64> = std::env::var(MODE_ENV)
        .ok()
        .and_then(|m| m.strip_prefix("relaxed-idle-")?.parse().ok())
        .or(then_full.then_some(RELAXED_BEFORE_FULL + 1));
    let durability = move |seq: u64| {
        if relaxed && !(then_full && seq == RELAXED_BEFORE_FULL) {
            Durability::Relaxed
        } else {
            Durability::Full
        }
    };
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir)).unwrap();
    println!("READY");
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let kv = kv.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    if idle_after.is_some_and(|n| seq >= n) {
                        return;
                    }
                    transfer(&kv, durability(seq), round, thread, seq);
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {thread} {seq}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!("IDLE");
    std::thread::sleep(Duration::from_secs(3600));
}

/// Runs `group_commit_child` in `dir` and kills it with SIGKILL once
/// `kill_when` says so (given each line it printed); returns the
/// acknowledged commits, (thread, seq).
fn run_and_kill(
    dir: &std::path::Path,
    round: u32,
    mode: &str,
    kill_when: impl Fn(&str) -> bool,
) -> Vec<(u64, u64)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(&exe)
        .args([
            "--ignored",
            "--exact",
            "group_commit_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.split("ACK ").nth(1) {
            let mut it = rest.split_whitespace().map(|n| n.parse::<u64>().unwrap());
            acked.push((it.next().unwrap(), it.next().unwrap()));
        }
        if kill_when(&line) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    acked
}

/// Reopens the store: the bank's total is intact, every acknowledged
/// commit is there, and what each thread committed is a prefix of its
/// sequence (a crash loses the newest commits, never one in the middle).
/// Returns the commits found per thread.
fn check_after_kill(dir: &std::path::Path, round: u32, acked: &[(u64, u64)]) -> Vec<u64> {
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir)).unwrap();
    let mut t = kv.begin().unwrap();
    let total: u64 = (0..ACCOUNTS)
        .map(|i| number(t.get(&account(i), false).unwrap()))
        .sum();
    assert_eq!(
        total,
        ACCOUNTS * INITIAL,
        "round {round}: money created or lost"
    );
    let mut found = Vec::new();
    for thread in 0..THREADS {
        let prefix = format!("g{round:02}/t{thread}/").into_bytes();
        let end = pagestore::kv::strinc(&prefix).unwrap();
        let rows = t.get_range(&RangeOption::new(prefix, end), false).unwrap();
        assert!(!rows.more);
        for (i, row) in rows.kvs.iter().enumerate() {
            assert_eq!(
                row.key,
                ack_key(round, thread, i as u64),
                "round {round}: a gap"
            );
        }
        found.push(rows.kvs.len() as u64);
    }
    for (thread, seq) in acked {
        assert!(
            *seq < found[*thread as usize],
            "round {round}: acknowledged commit {seq} of thread {thread} lost"
        );
    }
    found
}

fn open_bank(dir: &std::path::Path) {
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir)).unwrap();
    let mut t = kv.begin().unwrap();
    for i in 0..ACCOUNTS {
        t.set(&account(i), &INITIAL.to_le_bytes());
    }
    t.commit().unwrap();
}

#[test]
fn kill_9_loses_no_commit_acknowledged_by_a_group() {
    let dir = tempfile::tempdir().unwrap();
    open_bank(dir.path());
    for round in 0..3u32 {
        let wait = Duration::from_millis(rand::rng().random_range(100..=400));
        let start = std::sync::Mutex::new(None::<std::time::Instant>);
        let acked = run_and_kill(dir.path(), round, "full", |line| {
            let mut s = start.lock().unwrap();
            let t0 = *s.get_or_insert_with(std::time::Instant::now);
            line.contains("ACK") && t0.elapsed() >= wait
        });
        let found = check_after_kill(dir.path(), round, &acked);
        println!(
            "round {round}: {} acknowledged, {found:?} found",
            acked.len()
        );
        assert!(!acked.is_empty(), "the child never committed");
    }
}

#[test]
fn relaxed_commits_keep_the_store_consistent_under_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    open_bank(dir.path());
    for round in 0..3u32 {
        let wait = Duration::from_millis(rand::rng().random_range(100..=400));
        let start = std::sync::Mutex::new(None::<std::time::Instant>);
        let acked = run_and_kill(dir.path(), round, "relaxed", |line| {
            let mut s = start.lock().unwrap();
            let t0 = *s.get_or_insert_with(std::time::Instant::now);
            line.contains("ACK") && t0.elapsed() >= wait
        });
        // Relaxed commits acknowledged within FLUSH_DELAY of the kill may
        // be lost; the store is consistent and loses only the newest.
        let found = check_after_kill(dir.path(), round, &[]);
        println!(
            "round {round}: {} acknowledged, {found:?} found",
            acked.len()
        );
    }
}

#[test]
fn relaxed_commits_are_on_disk_within_the_flush_delay() {
    let dir = tempfile::tempdir().unwrap();
    open_bank(dir.path());
    let acked = run_and_kill(dir.path(), 0, "relaxed-idle-20", |line| {
        if line.ends_with("IDLE") {
            std::thread::sleep(FLUSH_DELAY * 4);
            return true;
        }
        false
    });
    assert_eq!(acked.len() as u64, 20 * THREADS);
    let found = check_after_kill(dir.path(), 0, &acked);
    assert_eq!(found, vec![20; THREADS as usize]);
}

#[test]
fn a_full_commit_puts_the_relaxed_commits_before_it_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    open_bank(dir.path());
    // Killed as soon as one thread's full commit is acknowledged (well
    // within FLUSH_DELAY of its first relaxed commit, on a quiet machine).
    let full = format!("{RELAXED_BEFORE_FULL}");
    let acked = run_and_kill(dir.path(), 0, "relaxed-then-full", |line| {
        line.contains("ACK") && line.trim_end().ends_with(&format!(" {full}"))
    });
    let (thread, _) = *acked
        .iter()
        .find(|(_, seq)| *seq == RELAXED_BEFORE_FULL)
        .unwrap();
    let found = check_after_kill(dir.path(), 0, &[(thread, RELAXED_BEFORE_FULL)]);
    assert_eq!(found[thread as usize], RELAXED_BEFORE_FULL + 1);
}

#[test]
fn relaxed_commits_survive_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    open_bank(dir.path());
    {
        let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap();
        for seq in 0..10 {
            transfer(&kv, Durability::Relaxed, 0, 0, seq);
        }
    }
    let found = check_after_kill(dir.path(), 0, &[]);
    assert_eq!(found, vec![10, 0, 0, 0]);
}
