//! Runs the sqllogictest corpus through the `fdb` VFS and, as a control,
//! through plain SQLite (in memory), and requires both to give exactly the
//! results recorded in the files — and the same transcript as each other.
//!
//! The corpus is read from `../shared/sqllogictest` beside the repository (or
//! from `$SQLLOGICTEST_DIR`), recursively: every `*.test` file. Each file runs
//! in its own database; files run in parallel threads. A per-file table of
//! records passed / failed / skipped is printed to stderr (not captured by the
//! test harness), and the test fails if any record fails on either engine.
//!
//! The runner is our own (see `sqllogictest/runner.rs`): it follows the
//! classic C runner exactly (value formatting, hash threshold, sort modes,
//! labels, `skipif`/`onlyif`/`halt`), which the `sqllogictest` crate does not
//! by default.

#[path = "sqllogictest/runner.rs"]
mod runner;
#[path = "sqllogictest/script.rs"]
mod script;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use runner::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Engine {
    /// The `fdb` VFS over an in-memory embedded store.
    Fdb,
    /// Plain SQLite, in memory: the control.
    Sqlite,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Fdb => "fdb vfs",
            Engine::Sqlite => "sqlite",
        }
    }
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("SQLLOGICTEST_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sqllogictest"),
    }
}

fn find_tests(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            find_tests(&path, out);
        } else if path.extension().is_some_and(|e| e == "test") {
            out.push(path);
        }
    }
}

/// Writes to the real stderr, bypassing the test harness's capture.
fn report(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

struct FileRun {
    outcome: Outcome,
    elapsed: Duration,
}

fn open(engine: Engine, store: &fdbvfs::Store, name: &str) -> Connection {
    match engine {
        Engine::Sqlite => Connection::open_in_memory().unwrap(),
        Engine::Fdb => store
            .open(name)
            .unwrap_or_else(|e| panic!("opening {name} on the fdb VFS: {e}")),
    }
}

#[test]
fn sqllogictest_corpus() {
    let dir = corpus_dir();
    assert!(
        dir.is_dir(),
        "sqllogictest corpus not found at {} (set SQLLOGICTEST_DIR)",
        dir.display()
    );
    let mut files = Vec::new();
    find_tests(&dir, &mut files);
    assert!(!files.is_empty(), "no .test files under {}", dir.display());

    let scripts: Vec<(String, u64, Vec<script::Record>)> = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let records =
                script::parse(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
            let rel = path
                .strip_prefix(&dir)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            (rel, text.len() as u64, records)
        })
        .collect();

    let store = fdbvfs::Store::in_memory().expect("in-memory store");
    let engines = [Engine::Fdb, Engine::Sqlite];

    // Biggest files first, so that the longest jobs start early.
    let mut jobs: Vec<(usize, Engine)> = (0..scripts.len())
        .flat_map(|i| engines.iter().map(move |&e| (i, e)))
        .collect();
    jobs.sort_by_key(|&(i, e)| (std::cmp::Reverse(scripts[i].1), e));

    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2);
    let next = AtomicUsize::new(0);
    let results: Mutex<BTreeMap<(usize, Engine), FileRun>> = Mutex::new(BTreeMap::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::SeqCst);
                let Some(&(i, engine)) = jobs.get(j) else {
                    break;
                };
                let (name, _, records) = &scripts[i];
                let t = Instant::now();
                let conn = open(engine, &store, name);
                let outcome = runner::run(&conn, name, records);
                drop(conn);
                let run = FileRun {
                    outcome,
                    elapsed: t.elapsed(),
                };
                results.lock().unwrap().insert((i, engine), run);
            });
        }
    });
    let total = started.elapsed();
    let results = results.into_inner().unwrap();

    let mut text = format!(
        "\nsqllogictest: {} files from {} ({threads} threads, {:.1}s)\n",
        scripts.len(),
        dir.display(),
        total.as_secs_f64()
    );
    text += &format!(
        "{:<44} {:>8} | {:>7} {:>6} {:>7} {:>7} | {:>7} {:>6} {:>7} {:>7} | same\n",
        "file", "bytes", "sqlite", "failed", "skipped", "secs", "fdb", "failed", "skipped", "secs"
    );
    let mut problems = Vec::new();
    let mut totals = BTreeMap::<Engine, (usize, usize, usize)>::new();
    for (i, (name, size, _)) in scripts.iter().enumerate() {
        text += &format!("{name:<44} {size:>8}");
        for engine in [Engine::Sqlite, Engine::Fdb] {
            let r = &results[&(i, engine)];
            let o = &r.outcome;
            text += &format!(
                " | {:>7} {:>6} {:>7} {:>7.2}",
                o.passed,
                o.failed,
                o.skipped,
                r.elapsed.as_secs_f64()
            );
            let t = totals.entry(engine).or_default();
            t.0 += o.passed;
            t.1 += o.failed;
            t.2 += o.skipped;
            for f in &o.failures {
                problems.push(format!("[{}] {f}", engine.name()));
            }
            if o.failed > o.failures.len() {
                problems.push(format!(
                    "[{}] {name}: … and {} more failures",
                    engine.name(),
                    o.failed - o.failures.len()
                ));
            }
        }
        let same = match (
            results.get(&(i, Engine::Sqlite)),
            results.get(&(i, Engine::Fdb)),
        ) {
            (Some(a), Some(b)) => a.outcome.digest == b.outcome.digest,
            _ => true,
        };
        if !same {
            problems.push(format!(
                "{name}: the fdb VFS and plain SQLite produced different transcripts"
            ));
        }
        text += if same { " | yes\n" } else { " | NO\n" };
    }
    for (engine, (p, f, s)) in &totals {
        text += &format!(
            "total {:<8}: {p} passed, {f} failed, {s} skipped\n",
            engine.name()
        );
    }
    for p in &problems {
        text += &format!("{p}\n");
    }
    report(&text);
    assert!(
        problems.is_empty(),
        "{} sqllogictest problems (see the report above)",
        problems.len()
    );
}
