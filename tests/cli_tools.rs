//! The CLI's tools end to end, through the `fdbvfs` binary: import and
//! export of a 200 MB SQLite file (dumps equal, integrity_check ok), a
//! killed import (no visible NAME, a second import succeeds), the shell
//! driven by a stdin script and through a pseudo-terminal, and
//! `stats --json`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rusqlite::Connection;
use support::assert_integrity;

const BIN: &str = env!("CARGO_BIN_EXE_fdbvfs");

fn fdbvfs(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--dir").arg(dir).env_remove("FDB_CLUSTER_FILE");
    c.env("RUST_LOG", "warn");
    c
}

/// Runs the binary; panics with its stderr unless it succeeds.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = fdbvfs(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    assert!(
        out.status.success(),
        "fdbvfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("stdout not UTF-8: {e}"))
}

fn with_stdin(dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = fdbvfs(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    stdin
        .write_all(input.as_bytes())
        .unwrap_or_else(|e| panic!("write stdin: {e}"));
    drop(stdin);
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait: {e}"))
}

/// A SQLite file of about `mb` MB: a table of big random blobs (overflow
/// pages) and a table of small random rows, both indexed.
fn make_source(path: &Path, mb: u64) {
    let c = Connection::open(path).unwrap_or_else(|e| panic!("open source: {e}"));
    let blobs = mb * 1_000_000 * 9 / 10 / 8_000;
    let small = mb * 1_000;
    c.execute_batch(&format!(
        "PRAGMA journal_mode=DELETE;
         BEGIN;
         CREATE TABLE big(id INTEGER PRIMARY KEY, k TEXT, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {blobs})
           INSERT INTO big SELECT i, hex(randomblob(12)), randomblob(8000) FROM n;
         CREATE INDEX big_k ON big(k);
         CREATE TABLE small(id INTEGER PRIMARY KEY, a INTEGER, b TEXT, c REAL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {small})
           INSERT INTO small SELECT i, random() % 1000, hex(randomblob(20)), i * 0.5 FROM n;
         CREATE INDEX small_a ON small(a, b);
         CREATE VIEW v AS SELECT a, count(*) AS n FROM small GROUP BY a;
         COMMIT;"
    ))
    .unwrap_or_else(|e| panic!("fill source: {e}"));
}

/// MD5 of `sqlite3 FILE .dump`, streamed (the dump of 200 MB of blobs is
/// 400 MB of text); with no `sqlite3` on the PATH, MD5 of a dump made with
/// rusqlite (schema, then every row of every table in rowid order).
fn dump_digest(path: &Path) -> String {
    let spawned = Command::new("sqlite3")
        .arg(path)
        .arg(".dump")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut h = Md5::new();
    match spawned {
        Ok(mut child) => {
            let mut so = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = so
                    .read(&mut buf)
                    .unwrap_or_else(|e| panic!("read dump: {e}"));
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let out = child
                .wait_with_output()
                .unwrap_or_else(|e| panic!("sqlite3: {e}"));
            assert!(
                out.status.success(),
                "sqlite3 .dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => {
            eprintln!("no sqlite3 on the PATH: comparing dumps made with rusqlite");
            let c = Connection::open(path).unwrap_or_else(|e| panic!("open: {e}"));
            let mut s = c
                .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name")
                .unwrap_or_else(|e| panic!("{e}"));
            let schema: Vec<(String, String, Option<String>)> = s
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(3)?)))
                .unwrap_or_else(|e| panic!("{e}"))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{e}"));
            for (ty, name, sql) in &schema {
                h.update(format!("{ty}|{name}|{sql:?}\n").as_bytes());
                if ty == "table" {
                    let mut q = c
                        .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
                        .unwrap_or_else(|e| panic!("{e}"));
                    let n = q.column_count();
                    let mut rows = q.query([]).unwrap_or_else(|e| panic!("{e}"));
                    while let Some(row) = rows.next().unwrap_or_else(|e| panic!("{e}")) {
                        for i in 0..n {
                            let v = row.get_ref(i).unwrap_or_else(|e| panic!("{e}"));
                            h.update(format!("{v:?}|").as_bytes());
                        }
                        h.update(b"\n");
                    }
                }
            }
        }
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_digest(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path:?}: {e}"));
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap_or_else(|e| panic!("read: {e}"));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

#[test]
fn import_export_round_trip_200mb() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = tmp.path().join("store");
    let src = tmp.path().join("source.db");
    let dst = tmp.path().join("exported.db");

    let t = Instant::now();
    make_source(&src, 200);
    let size = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    assert!(size > 190_000_000, "source is only {size} bytes");
    eprintln!("generated {size} bytes in {:.1?}", t.elapsed());

    let t = Instant::now();
    let out = ok(&store, &["import", "big", src.to_str().unwrap_or("")]);
    eprintln!("import: {:.1?}: {out}", t.elapsed());
    assert!(out.contains("integrity_check ok"), "{out}");
    assert_eq!(ok(&store, &["list"]), "big\n");

    let t = Instant::now();
    let out = ok(&store, &["export", "big", dst.to_str().unwrap_or("")]);
    eprintln!("export: {:.1?}: {out}", t.elapsed());
    assert!(!tmp.path().join("exported.db.part").exists());

    assert_integrity(&Connection::open(&dst).unwrap_or_else(|e| panic!("open {dst:?}: {e}")));
    let t = Instant::now();
    assert_eq!(dump_digest(&src), dump_digest(&dst), "dumps differ");
    eprintln!("dumps compared in {:.1?}", t.elapsed());
    // Page for page the same file: nothing was lost or reordered.
    assert_eq!(file_digest(&src), file_digest(&dst), "files differ");

    // Re-import refuses without --force, replaces with it.
    let err = fdbvfs(&store)
        .args(["import", "big", src.to_str().unwrap_or("")])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!err.status.success());
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(
        msg.starts_with("error: ") && msg.contains("--force") && msg.lines().count() == 1,
        "{msg}"
    );
}

#[test]
fn killed_import_leaves_no_visible_name() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = tmp.path().join("store");
    let src = tmp.path().join("source.db");
    make_source(&src, 20);

    // Slow store round trips make the import last long enough to be killed
    // in the middle; the log line of the temporary's creation says when.
    let t = Instant::now();
    let (mut child, rest) = spawn_slow_import(&store, "victim", &src);
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap_or_else(|e| panic!("kill: {e}"));
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert!(!status.success(), "the import finished before the kill");
    let rest = rest.join().unwrap_or_default();
    assert!(
        !rest.iter().any(|l| l.contains("renamed database")),
        "killed after the rename: {rest:?}"
    );
    eprintln!("killed the import after {:.1?}", t.elapsed());

    assert_eq!(ok(&store, &["list"]), "", "a killed import is visible");
    let err = fdbvfs(&store)
        .args(["sql", "victim", "SELECT count(*) FROM big"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    // `sql` creates an empty database: no table from the killed import.
    assert!(String::from_utf8_lossy(&err.stderr).contains("no such table"));
    ok(&store, &["drop", "victim"]);

    let t = Instant::now();
    let out = ok(&store, &["import", "victim", src.to_str().unwrap_or("")]);
    eprintln!("second import: {:.1?}", t.elapsed());
    assert!(out.contains("integrity_check ok"), "{out}");
    assert_eq!(ok(&store, &["list"]), "victim\n");
    let n = ok(
        &store,
        &["sql", "victim", "SELECT count(*) AS n FROM small"],
    );
    assert!(n.contains("20000"), "{n}");

    // The killed import's temporary is still in the store (younger than an
    // hour: it might be alive), hidden from `list`.
    let lib = support::TestBackend::Dir(store.clone()).open();
    let all = lib.list().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter().any(|n| n.starts_with(".import/victim/")),
        "{all:?}"
    );
}

/// Spawns a slow import (20 ms per store round trip) and returns once its
/// hidden temporary exists (the log line of its creation), with a thread
/// that reads the rest of its log (so the child never blocks on stderr)
/// and returns it once the child is gone.
fn spawn_slow_import(
    store: &Path,
    name: &str,
    src: &Path,
) -> (std::process::Child, std::thread::JoinHandle<Vec<String>>) {
    let mut child = fdbvfs(store)
        .args(["import", name, src.to_str().unwrap_or("")])
        .env("FDBVFS_IMPORT_TEST_LATENCY_MS", "20")
        .env("RUST_LOG", "pagestore=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap_or_default();
        seen.push(line.clone());
        if line.contains("created database") && line.contains(&format!(".import/{name}/")) {
            let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect());
            return (child, rest);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("no temporary created: {seen:?}");
}

#[test]
fn ctrl_c_stops_an_import_and_drops_its_temporary() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = tmp.path().join("store");
    let src = tmp.path().join("source.db");
    make_source(&src, 10);
    let (mut child, _log) = spawn_slow_import(&store, "stopped", &src);
    std::thread::sleep(Duration::from_millis(300));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(kill.success());
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert_eq!(ok(&store, &["list"]), "");
    // Cleaned up at once, not an hour later.
    let lib = support::TestBackend::Dir(store.clone()).open();
    assert_eq!(
        lib.list().unwrap_or_else(|e| panic!("{e}")),
        Vec::<String>::new()
    );
}

#[test]
fn shell_runs_a_stdin_script() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = tmp.path();
    let script = "\
CREATE TABLE acct(id INTEGER PRIMARY KEY, owner TEXT, balance INTEGER);
INSERT INTO acct(owner, balance)
  VALUES ('ann', 10),
         ('bob', 32);
SELECT owner, balance FROM acct
 ORDER BY id;
.tables
.databases
.fork copy
UPDATE acct SET balance = 0;
SELECT sum(balance) AS total FROM acct;
.open copy
SELECT sum(balance) AS total FROM acct;
.quit
SELECT 'not reached';
";
    let out = with_stdin(store, &["shell", "bank"], script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let expected = [
        " owner | balance",
        "-------+---------",
        " ann   |      10",
        " bob   |      32",
        "(2 rows)",
        "acct",
        "bank (current)\n",
    ]
    .join("\n");
    assert!(stdout.starts_with(&expected), "{stdout}");
    assert!(stdout.contains("into \"copy\""), "{stdout}");
    assert!(
        stdout.ends_with(" total\n-------\n     0\n(1 row)\n total\n-------\n    42\n(1 row)\n"),
        "{stdout}"
    );
    assert!(!stdout.contains("not reached"), "{stdout}");

    // Errors: one line each on stderr, the script goes on, exit code 1.
    let out = with_stdin(
        store,
        &["shell", "bank"],
        "SELEC 1;\n.nope\nSELECT count(*) AS n FROM acct;\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    assert!(errors[0].contains("syntax error"), "{stderr}");
    assert!(errors[1].contains("unknown command .nope"), "{stderr}");
    assert_eq!(errors[2], "error: 2 errors in the script");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        " n\n---\n 2\n(1 row)\n"
    );
}

/// The interactive path (rustyline on a terminal), through a pseudo-terminal
/// made by util-linux's `script`; skipped without it.
#[test]
fn shell_on_a_pseudo_terminal() {
    let Ok(probe) = Command::new("script").arg("--version").output() else {
        eprintln!("skipped: no `script` (util-linux) for a pseudo-terminal");
        return;
    };
    if !probe.status.success() {
        eprintln!("skipped: `script` is not util-linux's");
        return;
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cmd = format!(
        "{BIN} --dir {} shell tty",
        tmp.path().join("store").display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env("FDBVFS_HISTORY", tmp.path().join("history"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn script: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("no stdin"));
    let mut stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = screen.lock() {
                    s.extend_from_slice(&buf[..n]);
                }
            }
        })
    };
    let prompts = || {
        let s = screen.lock().map(|s| s.clone()).unwrap_or_default();
        String::from_utf8_lossy(&s).matches("> ").count()
    };
    // Type each line once the shell prompts for it (typing ahead of the
    // terminal's switch to raw mode would be echoed by the tty instead).
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, line) in [
        "CREATE TABLE t(x);",
        "INSERT INTO t VALUES (40),",
        "(2);",
        "SELECT sum(x) AS answer FROM t;",
        ".quit",
    ]
    .iter()
    .enumerate()
    {
        while prompts() <= i {
            assert!(Instant::now() < deadline, "no prompt {i}");
            std::thread::sleep(Duration::from_millis(20));
        }
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"));
        stdin.flush().unwrap_or_else(|e| panic!("flush: {e}"));
    }
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the shell on a pseudo-terminal did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    let _ = reader.join();
    let raw = screen.lock().map(|s| s.clone()).unwrap_or_default();
    let screen = String::from_utf8_lossy(&raw).replace('\r', "");
    assert!(status.success(), "{screen}");
    assert!(screen.contains("shell on \"tty\""), "{screen}");
    assert!(screen.contains("tty> "), "{screen}");
    assert!(screen.contains("...> "), "{screen}");
    assert!(
        screen.contains(" answer\n--------\n     42\n(1 row)"),
        "{screen}"
    );
    let history = std::fs::read_to_string(tmp.path().join("history")).unwrap_or_default();
    assert!(
        history.contains("SELECT sum(x) AS answer FROM t;"),
        "{history}"
    );
}

#[test]
fn stats_json_parses() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = tmp.path();
    ok(
        store,
        &[
            "sql",
            "s",
            "CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
        ],
    );
    ok(store, &["sql", "other", "CREATE TABLE u(y)"]);
    let doc: serde_json::Value = serde_json::from_str(&ok(store, &["stats", "s", "--json"]))
        .unwrap_or_else(|e| panic!("stats --json: {e}"));
    let s = &doc["databases"][0];
    assert_eq!(s["name"], "s");
    assert_eq!(s["pages"], 2);
    assert_eq!(s["page_size"], 4096);
    assert_eq!(s["bytes"], 8192);
    assert_eq!(s["commits"], 3);
    assert!(s["oldest_readable"].is_string());
    assert!(doc["process"]["round_trips"].as_u64().unwrap_or(0) > 0);
    assert!(doc["process"]["cache"]["hit_rate"].as_f64().is_some());
    assert!(doc["process"]["conflicts"].as_u64().is_some());

    let all: serde_json::Value = serde_json::from_str(&ok(store, &["stats", "--json"]))
        .unwrap_or_else(|e| panic!("stats --json: {e}"));
    assert_eq!(all["databases"].as_array().map(Vec::len), Some(2));
    let text = ok(store, &["stats"]);
    assert!(
        text.contains("(2 rows)") && text.contains("this process"),
        "{text}"
    );
}
