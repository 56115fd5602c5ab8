//! The loadable extension from outside: `target/release/libfdbvfs.so` is
//! loaded into Debian's `sqlite3` shell (`.load`, then
//! `.open file:NAME?vfs=fdb&dir=…`) and into Python through `apsw` (the
//! machine's own Python `sqlite3` module cannot load extensions). Several
//! processes share one store directory: the first owns it and serves
//! `<dir>/kv.sock`, the others connect.
//!
//! Both tests build the cdylib with `cargo build --release --lib` first (a
//! no-op when it is fresh). When `sqlite3` or `apsw` is unavailable they
//! print one skip line, except under `CI=true`, where they fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod support;
use support::{cdylib, pip, target_dir, unavailable};

/// Longest a child process may run before the test kills it and fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// apsw pinned to a release with CPython 3.11 x86_64 manylinux wheels.
const APSW: &str = "apsw==3.54.1.0";

/// The library path as `.load` takes it: without the `.so`, so SQLite
/// derives the entry point `sqlite3_fdbvfs_init` from the name.
fn load_arg() -> String {
    cdylib().with_extension("").display().to_string()
}

/// A process's collected output.
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// Exited (no signal: a crash fails here) with `code`.
    fn assert_exit(&self, code: i32) {
        assert!(
            self.status.signal().is_none(),
            "killed by signal {:?}\n{}",
            self.status.signal(),
            self.describe()
        );
        assert_eq!(self.status.code(), Some(code), "{}", self.describe());
    }

    /// Exit 0 and nothing on stderr (no error, no warning logged).
    fn assert_clean(&self) {
        self.assert_exit(0);
        assert!(self.stderr.trim().is_empty(), "{}", self.describe());
    }
}

/// A running child whose stdout lines arrive on a channel; stderr is
/// collected in the background; killed if dropped unfinished.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    started: Instant,
}

impl Running {
    fn spawn(cmd: &mut Command) -> Running {
        // Hermetic logging and store selection, whatever the caller's env.
        cmd.env("FDBVFS_LOG", "warn")
            .env_remove("FDBVFS_DIR")
            .env_remove("FDBVFS_DEFAULT")
            .env_remove("FDB_CLUSTER_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Running {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
            started: Instant::now(),
        }
    }

    fn send(&mut self, text: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("stdin closed"));
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("writing to child: {e}"));
    }

    /// Waits for a stdout line equal to `want` (the shell flushes after
    /// each statement), keeping every line for the final output.
    fn wait_line(&mut self, want: &str) {
        loop {
            let left = DEADLINE.saturating_sub(self.started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l == want;
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let out = self.finish();
                    panic!("waiting for line {want:?}: {e}\n{}", out.describe());
                }
            }
        }
    }

    /// Closes stdin and collects the output (killing the child past the
    /// deadline).
    fn finish(&mut self) -> Output {
        drop(self.stdin.take());
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if self.started.elapsed() > DEADLINE => {
                    let _ = self.child.kill();
                    let s = self.child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
                    eprintln!("child ran past {DEADLINE:?}; killed");
                    break s;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("wait: {e}"),
            }
        };
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        // The reader thread ends at EOF, closing the channel.
        let mut lines = std::mem::take(&mut self.seen);
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            lines.push(l);
        }
        let mut stdout = lines.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stderr.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- sqlite3

/// Whether Debian's `sqlite3` shell can run here.
fn have_sqlite3() -> bool {
    match Command::new("sqlite3").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            unavailable(&format!("`sqlite3 --version` failed: {}", o.status));
            false
        }
        Err(e) => {
            unavailable(&format!(
                "no `sqlite3` shell on PATH ({e}); apt-get install sqlite3"
            ));
            false
        }
    }
}

/// `.load` the extension, then `.open` the URI.
fn preamble(uri: &str) -> String {
    format!(".load {}\n.open {uri}\n", load_arg())
}

fn uri(name: &str, dir: &Path) -> String {
    format!("file:{name}?vfs=fdb&dir={}", dir.display())
}

fn shell() -> Running {
    Running::spawn(Command::new("sqlite3").arg("-batch"))
}

/// Runs one `sqlite3` process over `script` to completion.
fn run_shell(script: &str) -> Output {
    let mut s = shell();
    s.send(script);
    s.finish()
}

#[test]
fn sqlite3_shell_loads_extension_and_processes_share_a_store() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let uri = uri("orders", dir.path());

    // First process: creates and fills the table, then stays open (it owns
    // the store directory and serves it to the others).
    let mut first = shell();
    first.send(&preamble(&uri));
    first.send(
        "CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER);\n\
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)\n\
         INSERT INTO orders SELECT i, 'item-' || i, i % 7 FROM n;\n\
         SELECT 'first:' || count(*) || ':' || sum(qty) FROM orders;\n",
    );
    let expected = format!("first:500:{}", (1..=500).map(|i| i % 7).sum::<i64>());
    first.wait_line(&expected);

    // Second process, concurrently: reads the rows and adds one.
    let second = run_shell(&format!(
        "{}SELECT 'second:' || count(*) || ':' || max(item) FROM orders;\n\
         INSERT INTO orders VALUES (501, 'from-second', 1);\n\
         SELECT item FROM orders WHERE id = 501;\n",
        preamble(&uri)
    ));
    second.assert_clean();
    assert_eq!(
        second.stdout,
        "second:500:item-99\nfrom-second\n",
        "{}",
        second.describe()
    );

    // The first process sees the second's commit in its next transaction.
    first.send("SELECT 'first-again:' || count(*) FROM orders;\n");
    first.wait_line("first-again:501");
    let first = first.finish();
    first.assert_clean();

    // After the owner exited: a new process takes the directory over.
    let third = run_shell(&format!(
        "{}SELECT count(*), sum(id) FROM orders;\nPRAGMA integrity_check;\n",
        preamble(&uri)
    ));
    third.assert_clean();
    assert_eq!(
        third.stdout,
        format!("501|{}\nok\n", (1..=501).sum::<i64>()),
        "{}",
        third.describe()
    );
}

/// The owner of a shared directory exits while another shell is connected
/// to it. Today the survivor cannot take the directory over: its statements
/// fail with SQLITE_IOERR and a message saying the owner exited (a new
/// process can open the directory again). Whatever the outcome, it must be
/// an error or success, never a crash or a hang.
#[test]
fn sqlite3_shell_survives_owner_exit() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let uri = uri("orders", dir.path());
    let mut owner = shell();
    owner.send(&format!(
        "{}CREATE TABLE t(x);\nINSERT INTO t VALUES (1);\nSELECT 'owner-ready';\n",
        preamble(&uri)
    ));
    owner.wait_line("owner-ready");
    let mut client = shell();
    client.send(&format!(
        "{}SELECT 'client:' || count(*) FROM t;\n",
        preamble(&uri)
    ));
    client.wait_line("client:1");
    owner.finish().assert_clean();

    client.send(&format!(
        "SELECT 'after:' || count(*) FROM t;\n\
         INSERT INTO t VALUES (2);\n\
         .open {uri}\n\
         SELECT 'reopened:' || count(*) FROM t;\n"
    ));
    let out = client.finish();
    assert!(
        out.status.signal().is_none(),
        "killed by signal {:?}\n{}",
        out.status.signal(),
        out.describe()
    );
    if out.status.success() {
        assert!(out.stdout.contains("after:1"), "{}", out.describe());
    } else {
        assert!(
            out.stderr.contains("owned the store directory")
                || out.stderr.contains("owns the store directory"),
            "the error should say the owner exited\n{}",
            out.describe()
        );
    }

    // A new process can use the directory (and sees the committed row).
    let fresh = run_shell(&format!("{}SELECT count(*) >= 1 FROM t;\n", preamble(&uri)));
    fresh.assert_clean();
    assert_eq!(fresh.stdout, "1\n", "{}", fresh.describe());
}

#[test]
fn sqlite3_shell_errors_and_pragmas() {
    if !have_sqlite3() {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));

    // An unknown URI parameter: the open fails and the message names it.
    let bad = run_shell(&preamble(&format!("{}&bogus=1", uri("orders", dir.path()))));
    assert!(bad.status.signal().is_none(), "{}", bad.describe());
    assert!(
        bad.stderr.contains("unable to open database")
            && bad.stderr.contains("unknown URI parameter")
            && bad.stderr.contains("\"bogus\""),
        "{}",
        bad.describe()
    );

    // journal_mode=WAL is refused with a clear message, the mode stays, and
    // the connection keeps working (no later I/O error).
    let out = run_shell(&format!(
        "{}CREATE TABLE t(x);\n\
         INSERT INTO t VALUES (1);\n\
         PRAGMA journal_mode=WAL;\n\
         SELECT 'mode:' || journal_mode FROM pragma_journal_mode;\n\
         INSERT INTO t VALUES (2);\n\
         BEGIN; INSERT INTO t VALUES (3); COMMIT;\n\
         SELECT 'sum:' || sum(x) FROM t;\n\
         PRAGMA fdb_version;\n\
         PRAGMA fdb_stats;\n\
         PRAGMA integrity_check;\n",
        preamble(&uri("walled", dir.path()))
    ));
    // The refused pragma is the one error: exit code 1, not a signal.
    out.assert_exit(1);
    assert!(
        out.stderr.contains("journal_mode=WAL is not supported")
            && out.stderr.contains("unchanged")
            && !out.stderr.contains("I/O error")
            && !out.stderr.contains("disk I/O"),
        "{}",
        out.describe()
    );
    assert_eq!(
        out.stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "exactly one error expected\n{}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"mode:delete"), "{}", out.describe());
    assert_eq!(lines.get(1), Some(&"sum:6"), "{}", out.describe());
    // A positive store version, then one line of counters.
    let version = lines
        .iter()
        .filter_map(|l| l.parse::<u64>().ok())
        .next()
        .unwrap_or_else(|| panic!("no fdb_version number\n{}", out.describe()));
    assert!(version > 0, "{}", out.describe());
    let stats = lines
        .iter()
        .find(|l| l.contains("commits="))
        .unwrap_or_else(|| panic!("no fdb_stats line\n{}", out.describe()));
    for key in [
        "cache_hits=",
        "cache_misses=",
        "round_trips=",
        "conflicts=",
        "bytes_written=",
    ] {
        assert!(stats.contains(key), "{key} missing in {stats}");
    }
    assert_eq!(lines.last(), Some(&"ok"), "{}", out.describe());
}

// ------------------------------------------------------------------- apsw

/// A virtualenv under the target directory with apsw installed; `None`
/// (after a skip line) when that cannot be made outside CI.
fn apsw_python() -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target_dir().join("apsw-venv");
    let python = venv.join("bin").join("python");
    let has_apsw = |py: &Path| {
        Command::new(py)
            .args(["-c", "import apsw"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if has_apsw(&python) {
        return Some(python);
    }
    let mk = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output();
    match mk {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            unavailable(&format!(
                "`python3 -m venv` failed (Debian: apt-get install python3-venv): {}",
                last_line(&o.stderr)
            ));
            return None;
        }
        Err(e) => {
            unavailable(&format!("no python3 ({e})"));
            return None;
        }
    }
    let pip = pip(
        &python,
        &["install", "--quiet", "--only-binary", ":all:", APSW],
    )
    .stdin(Stdio::null())
    .output();
    match pip {
        Ok(o) if o.status.success() && has_apsw(&python) => Some(python),
        Ok(o) => {
            unavailable(&format!(
                "pip install {APSW} failed (offline?): {}",
                last_line(&o.stderr)
            ));
            None
        }
        Err(e) => {
            unavailable(&format!("running pip: {e}"));
            None
        }
    }
}

/// The last non-empty line of a tool's stderr (the skip line stays one line).
fn last_line(stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr);
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

fn apsw_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_apsw.py")
}

#[test]
fn apsw_loads_extension_and_processes_share_a_store() {
    let Some(python) = apsw_python() else {
        return;
    };
    let lib = cdylib().display().to_string();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let dir_s = dir.path().display().to_string();

    // The script: load into a :memory: connection and close it (the VFS
    // stays: SQLITE_OK_LOAD_PERMANENTLY), open by URI, write, a reader
    // subprocess while open, WAL refused, bad parameter refused.
    let mut main = Running::spawn(Command::new(&python).arg(apsw_script()).args([
        "main",
        lib.as_str(),
        dir_s.as_str(),
        "orders",
    ]));
    let out = main.finish();
    out.assert_exit(0);
    assert!(out.stdout.contains("apsw main ok"), "{}", out.describe());
    // The bad-parameter open is logged by the extension, naming it.
    assert!(
        out.stderr.contains("unknown URI parameter") && out.stderr.contains("\"bogus\""),
        "{}",
        out.describe()
    );

    // After the owning process exited: another reads everything.
    let mut after = Running::spawn(Command::new(&python).arg(apsw_script()).args([
        "reader",
        lib.as_str(),
        dir_s.as_str(),
        "orders",
        "201",
    ]));
    let out = after.finish();
    out.assert_clean();
    assert!(
        out.stdout.contains("apsw reader ok 202"),
        "{}",
        out.describe()
    );
}
