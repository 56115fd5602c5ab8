//! Helpers for tests that run other processes against the loadable
//! extension: building `target/release/libfdbvfs.so`, finding a Python whose
//! `sqlite3` module can load extensions, running a child to completion with
//! a deadline, and the FoundationDB switch (`FDB_CLUSTER_FILE` with the
//! `fdb` feature).
#![allow(dead_code)]

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest a child process may run before it is killed and the test fails.
pub const DEADLINE: Duration = Duration::from_secs(240);

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Outside CI a missing tool skips the test (one line); in CI it fails.
pub fn unavailable(what: &str) {
    if in_ci() {
        panic!("CI=true but {what}");
    }
    eprintln!("SKIP: {what}");
}

/// The FoundationDB cluster file the FDB variants use: `FDB_CLUSTER_FILE`
/// in a build with the `fdb` feature. Otherwise prints one skip line naming
/// `test` and returns `None`.
pub fn fdb_cluster(test: &str) -> Option<PathBuf> {
    let file = std::env::var_os("FDB_CLUSTER_FILE").filter(|c| !c.is_empty());
    match file {
        Some(f) if cfg!(feature = "fdb") => Some(PathBuf::from(f)),
        Some(_) => {
            eprintln!("SKIP (FoundationDB): {test}: FDB_CLUSTER_FILE is set but this build has no `fdb` feature");
            None
        }
        None => {
            eprintln!(
                "SKIP (FoundationDB): {test}: set FDB_CLUSTER_FILE and build with --features fdb"
            );
            None
        }
    }
}

/// `<target>` of this test binary (`<target>/<profile>/deps/<test>-…`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    exe.ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("unexpected test binary path {}", exe.display()))
        .to_path_buf()
}

/// `target/release/libfdbvfs.so` with this build's features, built once per
/// test process by `cargo build --release --lib` unless newer than every
/// source file (see `tests/extension.rs`, which does the same).
pub fn cdylib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = target_dir();
        let lib = target.join("release").join("libfdbvfs.so");
        let built = std::fs::metadata(&lib).and_then(|m| m.modified()).ok();
        if built.is_some_and(|b| newest_source().is_some_and(|s| s <= b)) && !cfg!(feature = "fdb")
        {
            return lib;
        }
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--release", "--lib", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .stdin(Stdio::null());
        if cfg!(feature = "fdb") {
            // The extension must be the fdb-built one (issue 14's crash).
            cmd.args(["--features", "fdb"]);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running cargo build: {e}"));
        assert!(
            out.status.success(),
            "cargo build --release --lib failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(lib.is_file(), "{} was not built", lib.display());
        lib
    })
}

pub fn newest_source() -> Option<std::time::SystemTime> {
    fn walk(p: &Path, newest: &mut std::time::SystemTime) -> std::io::Result<()> {
        let m = std::fs::metadata(p)?;
        if m.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), newest)?;
            }
        } else {
            *newest = (*newest).max(m.modified()?);
        }
        Ok(())
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    walk(&root.join("Cargo.lock"), &mut newest).ok()?;
    for pkg in [".", "vfs", "pagestore"] {
        walk(&root.join(pkg).join("Cargo.toml"), &mut newest).ok()?;
        walk(&root.join(pkg).join("src"), &mut newest).ok()?;
    }
    Some(newest)
}

/// A Python whose `sqlite3` module can load extensions (Debian's
/// `/usr/bin/python3` can; pyenv builds often cannot), or `None` after a
/// skip line (a failure in CI).
pub fn python() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        for p in ["/usr/bin/python3", "python3"] {
            let ok = Command::new(p)
                .args([
                    "-c",
                    "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)",
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Some(PathBuf::from(p));
            }
        }
        unavailable(
            "no python3 whose sqlite3 module can load extensions (Debian: apt-get install python3)",
        );
        None
    })
    .clone()
}

/// A finished process.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn describe(&self) -> String {
        format!(
            "status: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// Exited by itself (no signal: a crash fails here) with status 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.signal().is_none(),
            "killed by signal {:?}\n{}",
            self.status.signal(),
            self.describe()
        );
        assert_eq!(self.status.code(), Some(0), "{}", self.describe());
    }

    /// Lines of stdout starting with `tag ` (the rest, split on spaces).
    pub fn tagged(&self, tag: &str) -> Vec<Vec<String>> {
        self.stdout
            .lines()
            .filter_map(|l| l.find(tag).map(|i| &l[i..]))
            .filter_map(|l| l.strip_prefix(tag))
            .filter(|rest| rest.is_empty() || rest.starts_with(' '))
            .map(|rest| rest.split_whitespace().map(str::to_string).collect())
            .collect()
    }
}

/// Runs `cmd` to completion (killed past [`DEADLINE`]), with the fdbvfs
/// environment made hermetic (`warn` logs, no default store).
pub fn run(cmd: &mut Command) -> Output {
    cmd.env("FDBVFS_LOG", "warn")
        .env_remove("FDBVFS_DIR")
        .env_remove("FDBVFS_DEFAULT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut err = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let s = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
                eprintln!("child ran past {DEADLINE:?}; killed");
                break s;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait: {e}"),
        }
    };
    Output {
        status,
        stdout: o.join().unwrap_or_default(),
        stderr: e.join().unwrap_or_default(),
    }
}
