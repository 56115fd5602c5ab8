//! Errors, not crashes: bad URIs, bad stores, bad names, WAL, and random
//! bytes through the VFS file API.

mod support;

use proptest::prelude::*;

use support::{open_uri, scalar};

#[test]
fn unknown_uri_parameter_is_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (r, msg) = open_uri(&format!(
        "file:x?vfs=fdb&dir={}&colour=blue&shape=",
        dir.path().display()
    ));
    let e = r.err().and_then(|e| e.sqlite_error_code());
    assert_eq!(e, Some(rusqlite::ErrorCode::CannotOpen));
    let msg = msg.unwrap_or_default();
    assert!(
        msg.contains("\"colour\"") && msg.contains("\"shape\""),
        "{msg}"
    );
}

#[test]
fn cluster_without_fdb_feature_is_clear() {
    if cfg!(feature = "fdb") {
        return;
    }
    let (r, msg) = open_uri("file:x?vfs=fdb&cluster=/etc/foundationdb/fdb.cluster");
    assert!(r.is_err());
    let msg = msg.unwrap_or_default();
    assert!(msg.contains("`fdb` cargo feature"), "{msg}");
}

#[test]
fn unusable_store_directory() {
    // A regular file where the directory should be (running as root makes
    // permission bits meaningless, so use a path that cannot be a directory).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let (r, msg) = open_uri(&format!("file:x?vfs=fdb&dir={}/sub", file.display()));
    assert_eq!(
        r.err().and_then(|e| e.sqlite_error_code()),
        Some(rusqlite::ErrorCode::CannotOpen)
    );
    let msg = msg.unwrap_or_default();
    assert!(msg.contains("cannot open store directory"), "{msg}");
    // Through the Rust API.
    let e = fdbvfs::Store::embedded(file.join("sub"))
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|m| m.contains("cannot open store")));
}

#[test]
fn oversize_and_empty_names() {
    let store = support::store();
    let long = "n".repeat(256);
    let e = store
        .open(&long)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("256 bytes") && e.contains("255"), "{e}");
    assert!(store.open(&"n".repeat(255)).is_ok());
    // Through a raw URI too: SQLite's error, our message.
    let (r, msg) = open_uri(&format!(
        "file:{long}?vfs=fdb&dir={}",
        tempfile::tempdir()
            .map(|d| d.keep())
            .unwrap_or_default()
            .display()
    ));
    assert!(r.is_err());
    assert!(msg.unwrap_or_default().contains("at most 255 bytes"));
}

#[test]
fn journal_mode_wal_is_refused_clearly_and_nothing_breaks() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let name = support::name("wal");
    let c = store.open(&name)?;
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    let e = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0));
    let msg = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        msg.contains("journal_mode=WAL is not supported by the fdb VFS"),
        "{msg}"
    );
    let mode: String = scalar(&c, "PRAGMA journal_mode");
    assert_eq!(mode, "delete");
    c.execute("INSERT INTO t VALUES (2)", [])?;
    let e = c
        .execute_batch("PRAGMA locking_mode=EXCLUSIVE")
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|m| m.contains("EXCLUSIVE is not supported")));
    let n: i64 = scalar(&c, "SELECT count(*) FROM t");
    assert_eq!(n, 2);
    Ok(())
}

#[test]
fn open_missing_database_read_only() -> Result<(), fdbvfs::Error> {
    let store = support::store();
    let e = store
        .open_at(
            "never-created",
            fdbvfs::At::Version(fdbvfs::Version::new(1)),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("no database named"), "{e}");
    Ok(())
}

/// Encodes `name` plus `store=<id>` the way SQLite lays out a filename.
fn raw_name(store: &fdbvfs::Store, name: &str) -> Vec<u8> {
    let uri = store.uri(name);
    let id = uri.rsplit("store=").next().unwrap_or("0").to_string();
    let mut v = name.as_bytes().to_vec();
    v.extend_from_slice(b"\0store\0");
    v.extend_from_slice(id.as_bytes());
    v.push(0);
    v
}

#[derive(Debug, Clone)]
enum IoOp {
    Lock(i32),
    Unlock(i32),
    Read(u16, i64),
    Write(Vec<u8>, i64),
    WritePage(u8, u32, u8),
    Truncate(i64),
    Sync,
    Size,
    Pragma(String, Option<String>),
}

fn io_op() -> impl Strategy<Value = IoOp> {
    let offset = prop_oneof![
        0i64..70_000,
        Just(1 << 30),
        Just((1i64 << 32) + 4096),
        any::<i64>(),
    ];
    prop_oneof![
        (0i32..6).prop_map(IoOp::Lock),
        (0i32..6).prop_map(IoOp::Unlock),
        (any::<u16>(), offset.clone()).prop_map(|(n, o)| IoOp::Read(n, o)),
        (
            proptest::collection::vec(any::<u8>(), 0..1200),
            offset.clone()
        )
            .prop_map(|(b, o)| IoOp::Write(b, o)),
        (9u8..13, 0u32..40, any::<u8>()).prop_map(|(s, p, b)| IoOp::WritePage(s, p, b)),
        offset.prop_map(IoOp::Truncate),
        Just(IoOp::Sync),
        Just(IoOp::Size),
        (
            "(fdb_version|fdb_stats|fdb_cache_size|journal_mode|page_size|x)",
            proptest::option::of("[a-z0-9=-]{0,8}")
        )
            .prop_map(|(n, a)| IoOp::Pragma(n, a)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random operations straight into the VFS's I/O methods: every call
    /// returns a code, none panics.
    #[test]
    fn random_io_never_panics(ops in proptest::collection::vec(io_op(), 1..40)) {
        let store = support::store();
        let name = support::name("fuzz");
        let mut f = match vfs::testing::RawFile::open(&raw_name(&store, &name)) {
            Ok(f) => f,
            Err(rc) => return Err(TestCaseError::fail(format!("open failed: {rc}"))),
        };
        for op in ops {
            match op {
                IoOp::Lock(l) => { f.lock(l); }
                IoOp::Unlock(l) => { f.unlock(l); }
                IoOp::Read(n, o) => { let mut b = vec![0u8; n as usize]; f.read(&mut b, o); }
                IoOp::Write(b, o) => { f.write(&b, o); }
                IoOp::WritePage(shift, p, byte) => {
                    let ps = 1usize << shift;
                    f.write(&vec![byte; ps], p as i64 * ps as i64);
                }
                IoOp::Truncate(s) => { f.truncate(s); }
                IoOp::Sync => { f.sync(); }
                IoOp::Size => { f.size(); }
                IoOp::Pragma(n, a) => { f.pragma(&n, a.as_deref()); }
            }
        }
        f.unlock(0);
        prop_assert_eq!(vfs::panics_caught(), 0);
    }

    /// Random bytes as database pages, then SQL over them: SQLite reports
    /// corruption, nothing panics or crashes.
    #[test]
    fn random_pages_then_sql(pages in proptest::collection::vec((0u32..6, proptest::collection::vec(any::<u8>(), 4096)), 1..6), keep_header in any::<bool>()) {
        let store = support::store();
        let name = support::name("garbage");
        if keep_header {
            // Start from a real database so some structure survives.
            let c = store.open(&name).map_err(|e| TestCaseError::fail(e.to_string()))?;
            c.execute_batch("CREATE TABLE t(x, y); INSERT INTO t VALUES (1, randomblob(3000)), (2, 'b');")
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        {
            let mut f = vfs::testing::RawFile::open(&raw_name(&store, &name))
                .map_err(|rc| TestCaseError::fail(format!("open failed: {rc}")))?;
            f.lock(1);
            f.lock(2);
            f.lock(4);
            for (p, bytes) in &pages {
                let mut bytes = bytes.clone();
                if *p == 0 && keep_header {
                    bytes[..16].copy_from_slice(b"SQLite format 3\0");
                    bytes[16] = 0x10; bytes[17] = 0; // page size 4096
                }
                f.write(&bytes, *p as i64 * 4096);
            }
            // Page 1 with a new change counter marks this as a commit.
            let mut b = [0u8; 4096];
            f.read(&mut b, 0);
            b[24] = b[24].wrapping_add(1);
            f.write(&b, 0);
            f.sync();
            f.unlock(0);
        }
        if let Ok(c) = store.open(&name) {
            let _ = c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0));
            let _ = c.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0));
            let _ = c.execute_batch("SELECT * FROM t; INSERT INTO t VALUES (3, 'c');");
        }
        prop_assert_eq!(vfs::panics_caught(), 0);
    }
}
