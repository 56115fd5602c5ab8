//! Admin operations are not reachable from untrusted SQL (issue 11, part
//! 4): with `admin=0` (URI or `StoreBuilder::admin(false)`), or on a
//! connection the host put in SQLite's defensive mode, `PRAGMA fdb_fork`,
//! `fdb_restore`, setting `fdb_retention` / `fdb_cache_size`, and
//! attaching a database of another store are refused; reading settings
//! and ordinary SQL still work.

mod support;

use fdbvfs::Store;
use rusqlite::{Connection, OpenFlags};
use support::scalar;

/// The admin PRAGMAs and whether each must be refused.
fn admin_pragmas() -> Vec<&'static str> {
    vec![
        "PRAGMA fdb_retention = 0",
        "PRAGMA fdb_fork = 'stolen'",
        "PRAGMA fdb_restore = 'v:1'",
        "PRAGMA fdb_cache_size = 1",
    ]
}

fn assert_refused(conn: &Connection, why: &str) {
    for sql in admin_pragmas() {
        let e = conn
            .query_row(sql, [], |r| r.get::<_, String>(0))
            .map(|v| format!("answered {v}"))
            .unwrap_or_else(|e| e.to_string());
        assert!(
            e.contains("admin operation") && e.contains(why),
            "{sql}: {e}"
        );
    }
}

fn setup(conn: &Connection) {
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
}

/// What still works on a restricted connection.
fn assert_ordinary_sql_works(conn: &Connection) {
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let n: i64 = scalar(conn, "SELECT count(*) FROM t");
    assert_eq!(n, 2);
    for read in [
        "PRAGMA fdb_retention",
        "PRAGMA fdb_cache_size",
        "PRAGMA fdb_version",
    ] {
        scalar::<String>(conn, read);
    }
}

#[test]
fn builder_admin_false_refuses_admin_pragmas() {
    let store = Store::builder().in_memory().admin(false).build().unwrap();
    let name = support::name("adm-builder");
    let conn = store.open(&name).unwrap();
    setup(&conn);
    assert_refused(&conn, "admin=0");
    assert_ordinary_sql_works(&conn);
    // Nothing happened: no fork, retention unchanged.
    assert!(!store.list().unwrap().contains(&"stolen".to_string()));
    assert_ne!(store.retention(&name).unwrap().as_secs(), 0);
}

#[test]
fn uri_admin_0_refuses_admin_pragmas_and_admin_1_allows_them() {
    let store = support::store();
    let name = support::name("adm-uri");
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(format!("{}&admin=0", store.uri(&name)), flags).unwrap();
    setup(&conn);
    assert_refused(&conn, "admin=0");
    drop(conn);
    // The same database on a trusted connection: allowed.
    let conn = store.open(&name).unwrap();
    let fork = support::name("adm-fork");
    scalar::<String>(&conn, &format!("PRAGMA fdb_fork = '{fork}'"));
    assert!(store.list().unwrap().contains(&fork));
}

#[test]
fn defensive_mode_refuses_admin_pragmas() {
    let store = support::store();
    let name = support::name("adm-defensive");
    let conn = store.open(&name).unwrap();
    setup(&conn);
    // Trusted until the host turns defensive mode on.
    scalar::<String>(&conn, "PRAGMA fdb_cache_size = 300000000");
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .unwrap();
    assert_refused(&conn, "defensive mode");
    assert_ordinary_sql_works(&conn);
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, false)
        .unwrap();
    scalar::<String>(&conn, "PRAGMA fdb_retention = 3600");
}

#[test]
fn restricted_connections_cannot_attach_another_store() {
    let store = Store::builder().in_memory().admin(false).build().unwrap();
    let other = Store::in_memory().unwrap();
    let name = support::name("adm-attach");
    let conn = store.open(&name).unwrap();
    setup(&conn);
    let theirs = support::name("adm-theirs");
    other
        .open(&theirs)
        .unwrap()
        .execute_batch("CREATE TABLE secret(s); INSERT INTO secret VALUES ('x');")
        .unwrap();
    let e = conn
        .execute_batch(&format!(
            "ATTACH '{}' AS o; SELECT * FROM o.secret;",
            other.uri(&theirs)
        ))
        .unwrap_err()
        .to_string();
    eprintln!("attach refused: {e}");
    assert!(e.contains("authorization denied"), "{e}");
    // A database of its own store may be attached.
    let mine = support::name("adm-mine");
    store
        .open(&mine)
        .unwrap()
        .execute_batch("CREATE TABLE m(x)")
        .unwrap();
    conn.execute_batch(&format!(
        "ATTACH '{}' AS m; SELECT * FROM m.m;",
        store.uri(&mine)
    ))
    .unwrap();
}
