//! Access control seen from SQLite and the `Store` API (issue 11): a store
//! directory is its owner's alone. The socket protocol's own tests are in
//! `pagestore/tests/security.rs`.
#![cfg(unix)]

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use support::open_uri;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o777
}

#[test]
fn new_store_is_private() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("store");
    let (r, msg) = open_uri(&format!("file:db?vfs=fdb&dir={}", dir.display()));
    let con = r.unwrap_or_else(|e| panic!("{e}: {msg:?}"));
    con.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    assert_eq!(mode(&dir), 0o700);
    for f in ["data.redb", "LOCK", "kv.sock"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
}

#[test]
fn directory_of_another_user_is_a_clear_sqlite_error() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: not root: cannot give a directory to another uid");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("planted");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    assert_refused(&dir, &["belongs to uid 65534", "chown"]);
}

#[test]
fn directory_writable_by_others_is_a_clear_sqlite_error() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("open");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("data.redb"), b"").unwrap();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o777)).unwrap();
    assert_refused(&dir, &["writable by other users", "chmod 700"]);
}

/// Opening a database in `dir` fails with SQLITE_CANTOPEN and a message
/// holding every one of `says`.
fn assert_refused(dir: &std::path::Path, says: &[&str]) {
    let (r, msg) = open_uri(&format!("file:db?vfs=fdb&dir={}", dir.display()));
    let code = r.err().and_then(|e| e.sqlite_error_code());
    assert_eq!(code, Some(rusqlite::ErrorCode::CannotOpen));
    let msg = msg.unwrap_or_default();
    println!("{msg}");
    for s in says {
        assert!(msg.contains(s), "{msg}");
    }
}
