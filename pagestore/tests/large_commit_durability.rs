//! A large commit's upload chunks (content nobody sees until the final
//! commit refers to it) are relaxed store commits: they do not wait for the
//! disk. Safe because the embedded store writes commits in order (the final
//! full commit makes everything before it durable). The page index written
//! after the commit is visible to other processes at once, so it stays
//! durable. Checked here by kill -9 of a process committing large
//! transactions in a loop: every acknowledged commit is there whole, and
//! the database reads as exactly one commit's pages.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pagestore::kv::embedded::{EmbeddedKv, EmbeddedOptions};
use pagestore::{PageNo, PageStore, StoreOptions};
use rand::RngExt;

const DIR_ENV: &str = "PAGESTORE_LARGE_DURABILITY_DIR";
const PAGE: usize = 4096;
/// Pages per commit: 1.2 MB, several upload chunks under `opts()`.
const PAGES: u32 = 300;

/// Small limits: every commit here is large (uploaded in chunks ahead).
fn opts() -> StoreOptions {
    StoreOptions {
        inline_commit_bytes: 64 << 10,
        chunk_bytes: 64 << 10,
        spill_bytes: 256 << 10,
        ..StoreOptions::default()
    }
}

fn page(v: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAGE];
    p[..8].copy_from_slice(&v.to_le_bytes());
    p[PAGE - 8..].copy_from_slice(&v.to_le_bytes());
    p
}

/// Commits pages `0..PAGES` holding `v`, as one transaction.
fn commit_all(store: &PageStore, v: u64) {
    let db = store.open("big").unwrap();
    let mut t = db.begin().unwrap();
    for p in 0..PAGES {
        t.write_page(PageNo::new(p), &page(v)).unwrap();
    }
    t.commit().unwrap();
}

/// One large commit syncs the disk for its final commit and its page index
/// only (one index chunk and its end here), not for its upload chunks.
#[test]
fn a_large_commit_syncs_once() {
    let kv = EmbeddedKv::open(EmbeddedOptions::in_memory()).unwrap();
    let store = PageStore::new(kv.clone(), opts());
    store.create("big").unwrap();
    commit_all(&store, 1);
    let before = kv.model_counts();
    commit_all(&store, 2);
    let after = kv.model_counts();
    let groups = after.groups - before.groups;
    let relaxed = after.relaxed_commits - before.relaxed_commits;
    assert!(
        groups >= 4,
        "uploads, commit, index: {groups} store commits"
    );
    assert_eq!(
        groups - relaxed,
        3,
        "store commits waiting for the disk ({groups} in all, {relaxed} relaxed)"
    );
}

/// The child: large commits forever, printing `ACK <v>` after each.
#[test]
#[ignore = "helper run as a child process by kill_9_keeps_every_acknowledged_large_commit"]
fn large_commit_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir)).unwrap();
    let store = PageStore::new(kv, opts());
    let last = match store.open("big") {
        Ok(db) => {
            let mut t = db.begin().unwrap();
            value(&t.read_page(PageNo::FIRST).unwrap().unwrap())
        }
        Err(_) => {
            store.create("big").unwrap();
            0
        }
    };
    let stdout = std::io::stdout();
    writeln!(stdout.lock(), "READY").unwrap();
    for v in last + 1.. {
        commit_all(&store, v);
        let mut out = stdout.lock();
        writeln!(out, "ACK {v}").unwrap();
        out.flush().unwrap();
    }
}

fn value(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[..8].try_into().unwrap())
}

#[test]
fn kill_9_keeps_every_acknowledged_large_commit() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = 0;
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "large_commit_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_ENV, dir.path())
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
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if rx
                .recv_timeout(left)
                .expect("child did not start")
                .ends_with("READY")
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rand::rng().random_range(100..=600)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = rx
            .try_iter()
            .filter_map(|l| l.split("ACK ").nth(1).and_then(|n| n.trim().parse().ok()))
            .max();
        // Reopen: the database is one commit's pages, at or past the last
        // acknowledged one (the one in flight may have landed too).
        let kv = EmbeddedKv::open(EmbeddedOptions::dir(dir.path())).unwrap();
        let store = PageStore::new(kv, opts());
        let Ok(db) = store.open("big") else {
            assert_eq!(acked, None, "round {round}: acknowledged, yet no database");
            continue;
        };
        let mut t = db.begin().unwrap();
        let v = value(&t.read_page(PageNo::FIRST).unwrap().unwrap());
        for p in 0..PAGES {
            let got = t.read_page(PageNo::new(p)).unwrap().unwrap();
            assert_eq!(
                &got[..],
                &page(v)[..],
                "round {round}: page {p} is not commit {v}'s"
            );
        }
        if let Some(a) = acked {
            assert!(
                v == a || v == a + 1,
                "round {round}: acknowledged {a}, found {v}"
            );
            acked_total += 1;
        }
        println!("round {round}: last acknowledged {acked:?}, found {v}");
    }
    assert!(acked_total > 0, "the child never acknowledged a commit");
}
