//! Durability under kill -9: a child process (this test binary, re-run on
//! an ignored helper test) commits in a loop and prints each acknowledged
//! commit; the parent kills it with SIGKILL at a random moment, reopens the
//! store and finds every acknowledged commit.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::kv::{Kv, KvError, RangeOption};
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
