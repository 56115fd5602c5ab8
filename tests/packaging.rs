//! fdbvfs installed the way SQLite users install extensions, end to end:
//!
//! * **Python**: the wheel built from `python/` (its `setup.py` runs
//!   `cargo build --release --lib`) is installed into a fresh virtualenv of
//!   a Python whose `sqlite3` can load extensions (Debian's
//!   `/usr/bin/python3`); one process creates and fills a database by name
//!   through `fdbvfs.connect`, a second reads it back and writes — through
//!   `sqlite3`, and again through `apsw`. A Python whose `sqlite3` cannot
//!   load extensions (pyenv's, when there is one) gets apsw from
//!   `fdbvfs.connect` by itself, and without apsw an error naming both
//!   options. `fdbvfs stats --prometheus` is parsed by prometheus_client.
//! * **Node**: `npm pack` of `npm/` (its `prepack` runs cargo) is installed
//!   beside better-sqlite3 12 (built from source by node-gyp: only the npm
//!   registry is reachable, not its prebuilt binaries); one process writes a
//!   database by name, a second reads it.
//! * **cargo install**: `cargo install --path . --root TMP` (into the
//!   target directory this test was built in, so it relinks rather than
//!   rebuilds), then `TMP/bin/fdbvfs sql demo "SELECT 1"`, its shell
//!   completions and man pages.
//!
//! What is built or installed lives under `<target>/packaging/`; the
//! virtualenvs are made anew on every run (pip's cache keeps that quick),
//! better-sqlite3 once per target directory (its C++ build takes about a
//! minute and a half on 2 cores). A missing tool (python3-venv, node, npm)
//! or registry prints one SKIP line, except under `CI=true`, where the test
//! fails.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod support;
use support::{pip, target_dir, unavailable};

/// Longest a build or install step may take (cargo may first wait for
/// another build's lock on the shared target directory).
const BUILD_DEADLINE: Duration = Duration::from_secs(1200);
/// Longest a test script may run.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(180);

/// Pinned like tests/extension.rs: a release with CPython 3.11 wheels.
const APSW: &str = "apsw==3.54.1.0";
const PROMETHEUS_CLIENT: &str = "prometheus_client>=0.20,<1";
/// better-sqlite3 13 needs Node 22; 12 works with Debian 12's Node 20.
const BETTER_SQLITE3: &str = "better-sqlite3@12";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/packaging/NAME`.
fn work(name: &str) -> PathBuf {
    target_dir().join("packaging").join(name)
}

/// A finished process.
struct Output {
    /// Exit code; `None`: killed by a signal or at the deadline.
    code: Option<i32>,
    stdout: String,
    stderr: String,
    secs: f64,
}

impl Output {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    fn describe(&self) -> String {
        format!(
            "exit code {:?} after {:.1}s\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.secs, self.stdout, self.stderr
        )
    }

    /// The last non-empty line of stderr (skip lines stay one line).
    fn last_err_line(&self) -> String {
        self.stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    }
}

/// Runs `cmd` (its own process group, no stdin) to the end or to
/// `deadline`, when the whole group is killed.
fn exec(cmd: &mut Command, deadline: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if t0.elapsed() > deadline => {
                // The group: pip's or npm's children (cargo, make) too.
                let _ = Command::new("kill")
                    .args(["-KILL", &format!("-{}", child.id())])
                    .status();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    Output {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        secs: t0.elapsed().as_secs_f64(),
    }
}

/// Runs `cmd` and fails the test unless it exits 0.
fn must(cmd: &mut Command, deadline: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let out = exec(cmd, deadline);
    assert!(out.ok(), "{shown} failed: {}", out.describe());
    out
}

/// A fresh, empty directory (0700, like every store directory).
fn fresh_dir(path: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    if path.exists() {
        std::fs::remove_dir_all(path)
            .unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
}

// ------------------------------------------------------------------ Python

/// Whether `python`'s sqlite3 module can load extensions; `None`: no such
/// interpreter.
fn can_load_extensions(python: &Path) -> Option<bool> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys; sys.exit(0 if hasattr(sqlite3.Connection, 'enable_load_extension') else 3)",
        ])
        .stderr(Stdio::null())
        .status()
        .ok()?;
    match out.code() {
        Some(0) => Some(true),
        Some(3) => Some(false),
        _ => None,
    }
}

/// A virtualenv with the fdbvfs wheel (and apsw, prometheus_client).
struct Venv {
    python: PathBuf,
}

/// The fdbvfs wheel, built once per test process by `pip wheel ./python`
/// with `python` (whose setup.py runs cargo on this target directory).
fn wheel(python: &Path) -> &'static Path {
    static WHEEL: OnceLock<PathBuf> = OnceLock::new();
    WHEEL.get_or_init(|| {
        let dist = work("dist");
        fresh_dir(&dist);
        let out = must(
            pip(python, &["wheel", "--no-deps"])
                .arg("-w")
                .arg(&dist)
                .arg(repo().join("python"))
                .env("CARGO", env!("CARGO"))
                .env("CARGO_TARGET_DIR", target_dir()),
            BUILD_DEADLINE,
        );
        let wheel = std::fs::read_dir(&dist)
            .unwrap_or_else(|e| panic!("{}: {e}", dist.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .unwrap_or_else(|| panic!("no wheel in {}: {}", dist.display(), out.describe()));
        let name = wheel.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        assert!(
            name.starts_with(&format!("fdbvfs-{}-py3-none-", env!("CARGO_PKG_VERSION"))),
            "{name}"
        );
        let size = std::fs::metadata(&wheel).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "built {name} ({:.1} MB) in {:.1}s",
            size as f64 / 1e6,
            out.secs
        );
        wheel
    })
}

/// Makes a fresh virtualenv of `base` at `<target>/packaging/NAME` and
/// installs the wheel and `extra` into it; `None` after a skip line.
fn make_venv(base: &Path, name: &str, extra: &[&str]) -> Option<Venv> {
    let venv = work(name);
    let mk = exec(
        Command::new(base)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        BUILD_DEADLINE,
    );
    if !mk.ok() {
        unavailable(&format!(
            "`{} -m venv` failed (Debian: apt-get install python3-venv): {}",
            base.display(),
            mk.last_err_line()
        ));
        return None;
    }
    let python = venv.join("bin").join("python");
    let wheel = wheel(&python);
    let pip = exec(
        pip(&python, &["install", "--quiet", "--only-binary", ":all:"])
            .arg(wheel)
            .args(extra),
        BUILD_DEADLINE,
    );
    if !pip.ok() {
        unavailable(&format!(
            "pip install {} failed (offline?): {}",
            extra.join(" "),
            pip.last_err_line()
        ));
        return None;
    }
    eprintln!(
        "virtualenv {name}: made and filled in {:.1}s",
        mk.secs + pip.secs
    );
    Some(Venv { python })
}

/// A fresh virtualenv of a Python whose sqlite3 loads extensions
/// (Debian's), with the wheel, apsw and prometheus_client.
fn loading_venv() -> Option<&'static Venv> {
    static VENV: OnceLock<Option<Venv>> = OnceLock::new();
    VENV.get_or_init(|| {
        let candidates = [PathBuf::from("/usr/bin/python3"), PathBuf::from("python3")];
        let Some(base) = candidates
            .iter()
            .find(|p| can_load_extensions(p) == Some(true))
        else {
            unavailable(
                "no Python whose sqlite3 module can load extensions \
                 (Debian: apt-get install python3 python3-venv)",
            );
            return None;
        };
        make_venv(base, "py-loading", &[APSW, PROMETHEUS_CLIENT])
    })
    .as_ref()
}

/// A fresh virtualenv of `python3` on PATH when its sqlite3 cannot load
/// extensions (pyenv's default build), with the wheel and apsw.
fn non_loading_venv() -> Option<&'static Venv> {
    static VENV: OnceLock<Option<Venv>> = OnceLock::new();
    VENV.get_or_init(|| {
        let base = PathBuf::from("python3");
        if can_load_extensions(&base) != Some(false) {
            // Not a missing install: this machine simply has no such Python.
            eprintln!(
                "SKIP: python3 on PATH can load extensions (or is missing): \
                 no Python to check the apsw fallback with"
            );
            return None;
        }
        make_venv(&base, "py-non-loading", &[APSW])
    })
    .as_ref()
}

fn package_script() -> PathBuf {
    repo().join("tests/python/package_check.py")
}

/// Runs tests/python/package_check.py in `venv` and returns its stdout.
fn py(venv: &Venv, args: &[&str]) -> String {
    let out = must(
        Command::new(&venv.python)
            .arg(package_script())
            .args(args)
            .env_remove("FDBVFS_LIBRARY")
            .env_remove("FDBVFS_DIR"),
        SCRIPT_DEADLINE,
    );
    out.stdout
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

/// One process writes a database by name, a second reads it back and
/// writes, a third sees that write; `binding` is what connect() used.
fn write_then_read(venv: &Venv, driver: &str, binding: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    let name = format!("py-{driver}");
    let out = py(venv, &["write", d, &name, driver, "300"]);
    assert!(
        out.contains(&format!("ok write 300 via {binding}")),
        "{out}"
    );
    let out = py(venv, &["read", d, &name, driver, "300"]);
    assert!(out.contains(&format!("ok read 300 via {binding}")), "{out}");
}

#[test]
fn python_connect_uses_sqlite3_and_a_second_process_reads() {
    let Some(venv) = loading_venv() else { return };
    write_then_read(venv, "auto", "sqlite3");
}

#[test]
fn python_connect_through_apsw_and_a_second_process_reads() {
    let Some(venv) = loading_venv() else { return };
    write_then_read(venv, "apsw", "apsw");
}

#[test]
fn python_load_registers_the_vfs_in_sqlite3_and_apsw() {
    let Some(venv) = loading_venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = py(venv, &["load", path_str(dir.path()), "py-load"]);
    assert!(out.contains("ok load via sqlite3 and apsw"), "{out}");
}

#[test]
fn python_without_extension_loading_falls_back_to_apsw() {
    let Some(venv) = non_loading_venv() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = py(venv, &["noload", path_str(dir.path()), "py-noload"]);
    assert!(out.contains("ok noload via apsw"), "{out}");
}

/// The CLI's `--prometheus` output parses with prometheus_client, and
/// `Store::metrics()` has the same process counters.
#[test]
fn stats_prometheus_parses_with_prometheus_client() {
    let dir = tempfile::tempdir().unwrap();
    let d = path_str(dir.path());
    let cli = |args: &[&str]| {
        must(
            Command::new(env!("CARGO_BIN_EXE_fdbvfs"))
                .args(["--dir", d])
                .args(args)
                .env_remove("FDBVFS_DIR"),
            SCRIPT_DEADLINE,
        )
        .stdout
    };
    cli(&[
        "sql",
        "alpha",
        "CREATE TABLE t(x); INSERT INTO t VALUES (1)",
    ]);
    cli(&["sql", "beta", "CREATE TABLE t(x)"]);
    let text = cli(&["stats", "--prometheus"]);

    // The Rust API: the same process families, named the same.
    let store = fdbvfs::Store::in_memory().unwrap();
    store
        .open("m")
        .unwrap()
        .execute_batch("CREATE TABLE t(x)")
        .unwrap();
    let m = store.metrics();
    assert!(
        m.stats.commits >= 1 && m.stats.kv.round_trips() > 0,
        "{m:?}"
    );
    for f in m.families() {
        let header = format!("# TYPE {} ", f.name);
        assert!(
            text.contains(&header),
            "{} missing in the CLI's output",
            f.name
        );
    }
    assert!(
        text.contains("fdbvfs_database_size_bytes{database=\"alpha\"} 8192\n"),
        "{text}"
    );

    let Some(venv) = loading_venv() else { return };
    let file = dir.path().join("stats.prom");
    std::fs::write(&file, &text).unwrap();
    let out = py(venv, &["prometheus", path_str(&file)]);
    assert!(out.contains("databases ['alpha', 'beta']"), "{out}");
}

// -------------------------------------------------------------------- Node

/// A Node project under the target directory with better-sqlite3 12 and
/// the freshly packed fdbvfs package; `None` after a skip line.
fn node_project() -> Option<&'static Path> {
    static PROJECT: OnceLock<Option<PathBuf>> = OnceLock::new();
    PROJECT
        .get_or_init(|| {
            for tool in ["node", "npm"] {
                let ok = Command::new(tool)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    unavailable(&format!("no {tool} (Debian: apt-get install nodejs npm)"));
                    return None;
                }
            }
            let project = work("node");
            std::fs::create_dir_all(&project).unwrap();
            let manifest = project.join("package.json");
            if !manifest.exists() {
                std::fs::write(&manifest, "{ \"private\": true }\n").unwrap();
            }
            let has_driver = Command::new("node")
                .args(["-e", "require('better-sqlite3')"])
                .current_dir(&project)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !has_driver {
                // A build for another Node (ABI) would stay: start over.
                let _ = std::fs::remove_dir_all(project.join("node_modules"));
                // No prebuilt binary can be downloaded here: build from
                // source (node-gyp, the machine's Node headers, make, g++),
                // on every core.
                let out = exec(
                    Command::new("npm")
                        .args(["install", "--no-audit", "--no-fund", BETTER_SQLITE3])
                        .current_dir(&project)
                        .env("npm_config_build_from_source", "true")
                        .env("JOBS", "max"),
                    BUILD_DEADLINE,
                );
                if !out.ok() {
                    unavailable(&format!(
                        "npm install {BETTER_SQLITE3} failed: {}",
                        out.describe()
                    ));
                    return None;
                }
                eprintln!(
                    "installed {BETTER_SQLITE3} (source build) in {:.1}s",
                    out.secs
                );
            }
            let dist = work("npm-dist");
            fresh_dir(&dist);
            let pack = must(
                Command::new("npm")
                    .args(["pack", "--pack-destination"])
                    .arg(&dist)
                    .current_dir(repo().join("npm"))
                    .env("CARGO", env!("CARGO"))
                    .env("CARGO_TARGET_DIR", target_dir()),
                BUILD_DEADLINE,
            );
            let tgz = dist.join(format!("fdbvfs-{}.tgz", env!("CARGO_PKG_VERSION")));
            assert!(
                tgz.is_file(),
                "npm pack made no {}: {}",
                tgz.display(),
                pack.describe()
            );
            let install = must(
                Command::new("npm")
                    .args(["install", "--no-audit", "--no-fund"])
                    .arg(&tgz)
                    .current_dir(&project),
                BUILD_DEADLINE,
            );
            eprintln!(
                "packed and installed fdbvfs for Node in {:.1}s",
                pack.secs + install.secs
            );
            Some(project)
        })
        .as_deref()
}

#[test]
fn node_better_sqlite3_writes_and_a_second_process_reads() {
    let Some(project) = node_project() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = |mode: &str| {
        must(
            Command::new("node")
                .arg(repo().join("tests/node/package_check.js"))
                .args([mode, path_str(dir.path()), "node-orders", "500"])
                .env("NODE_PATH", project.join("node_modules"))
                .env_remove("FDBVFS_LIBRARY")
                .env_remove("FDBVFS_DEFAULT")
                .env_remove("FDBVFS_DIR"),
            SCRIPT_DEADLINE,
        )
        .stdout
    };
    let out = node("write");
    assert!(out.contains("ok write 500 via better-sqlite3"), "{out}");
    let out = node("read");
    assert!(out.contains("ok read 500 via better-sqlite3"), "{out}");
    // And the CLI sees what Node wrote: the same store, the same name.
    let out = must(
        Command::new(env!("CARGO_BIN_EXE_fdbvfs"))
            .args(["--dir", path_str(dir.path())])
            .args(["sql", "node-orders", "SELECT count(*) AS n FROM orders"]),
        SCRIPT_DEADLINE,
    );
    assert!(out.stdout.contains(" 501\n"), "{}", out.stdout);
}

// ----------------------------------------------------------- cargo install

#[test]
fn cargo_install_then_sql_completions_and_man_pages() {
    let root = tempfile::tempdir().unwrap();
    let out = must(
        Command::new(env!("CARGO"))
            .args(["install", "--locked", "--bin", "fdbvfs", "--path"])
            .arg(repo())
            .arg("--root")
            .arg(root.path())
            .env("CARGO_TARGET_DIR", target_dir()),
        BUILD_DEADLINE,
    );
    eprintln!("cargo install took {:.1}s", out.secs);
    let bin = root.path().join("bin").join("fdbvfs");
    assert!(
        bin.is_file(),
        "{} missing: {}",
        bin.display(),
        out.describe()
    );
    let data = root.path().join("data");
    let fdbvfs = |args: &[&str]| {
        must(
            Command::new(&bin)
                .arg("--dir")
                .arg(&data)
                .args(args)
                .env_remove("FDBVFS_DIR"),
            SCRIPT_DEADLINE,
        )
        .stdout
    };
    let out = fdbvfs(&["sql", "demo", "SELECT 1 AS one"]);
    assert_eq!(out, " one\n-----\n   1\n(1 row)\n");

    let bash = fdbvfs(&["completions", "bash"]);
    assert!(
        bash.contains("_fdbvfs()") && bash.contains("completions"),
        "{bash}"
    );
    let script = root.path().join("fdbvfs.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = exec(Command::new("bash").arg("-n").arg(&script), SCRIPT_DEADLINE);
    assert!(syntax.ok(), "bash -n: {}", syntax.describe());
    let zsh = fdbvfs(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef fdbvfs"), "{zsh}");
    let fish = fdbvfs(&["completions", "fish"]);
    assert!(fish.contains("complete -c fdbvfs"), "{fish}");
    let bad = exec(
        Command::new(&bin).args(["completions", "nosuchshell"]),
        SCRIPT_DEADLINE,
    );
    assert_eq!(bad.code, Some(2), "{}", bad.describe());

    let man = fdbvfs(&["man"]);
    assert!(man.contains(".TH fdbvfs 1"), "{man}");
    for word in ["stats", "completions", "\\-\\-dir"] {
        assert!(man.contains(word), "{word} missing in the man page");
    }
    let pages = root.path().join("man1");
    let listed = fdbvfs(&["man", "--out-dir", path_str(&pages)]);
    for page in [
        "fdbvfs.1",
        "fdbvfs-sql.1",
        "fdbvfs-stats.1",
        "fdbvfs-completions.1",
    ] {
        let p = pages.join(page);
        assert!(p.is_file(), "{page} not written; listed:\n{listed}");
        assert!(listed.contains(path_str(&p)), "{listed}");
    }
    // Where man(1) exists, the page renders without groff warnings.
    let has_man = Command::new("man")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_man {
        let shown = exec(
            Command::new("man")
                .args(["-l", "-P", "cat"])
                .arg(pages.join("fdbvfs-stats.1"))
                .env("MANWIDTH", "80"),
            SCRIPT_DEADLINE,
        );
        assert!(shown.ok(), "man -l: {}", shown.describe());
        assert!(shown.stdout.contains("--prometheus"), "{}", shown.stdout);
        assert!(!shown.stderr.contains("warning"), "{}", shown.stderr);
    }
}

// -------------------------------------------------------------- metadata

/// The Python and Node packages carry the crate's version.
#[test]
fn package_versions_agree() {
    let version = env!("CARGO_PKG_VERSION");
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).unwrap();
    assert!(
        read("python/pyproject.toml").contains(&format!("\nversion = \"{version}\"\n")),
        "python/pyproject.toml"
    );
    assert!(
        read("python/fdbvfs/__init__.py").contains(&format!("__version__ = \"{version}\"")),
        "python/fdbvfs/__init__.py"
    );
    let npm: serde_json::Value = serde_json::from_str(&read("npm/package.json")).unwrap();
    assert_eq!(npm["version"], version, "npm/package.json");
}

/// What `cargo package` would publish: the sources, README and both
/// licence files, and none of the tests, benches or other packages.
#[test]
fn crate_package_holds_sources_readme_and_licenses() {
    let out = must(
        Command::new(env!("CARGO"))
            .args([
                "package",
                "--list",
                "--allow-dirty",
                "--offline",
                "-p",
                "fdbvfs",
            ])
            .current_dir(repo()),
        BUILD_DEADLINE,
    );
    let files: Vec<&str> = out.stdout.lines().collect();
    for want in [
        "Cargo.toml",
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "src/main.rs",
        "src/lib.rs",
        "src/extension.rs",
        "src/cli/mod.rs",
    ] {
        assert!(files.contains(&want), "{want} not packaged: {files:?}");
    }
    for f in &files {
        for no in ["tests/", "benches/", "python/", "npm/", "target/", "docs/"] {
            assert!(!f.starts_with(no), "{f} would be published");
        }
    }
}
