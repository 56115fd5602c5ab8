#!/usr/bin/env python3
"""The installed ``fdbvfs`` wheel, used as a Python developer would (run by
tests/packaging.rs, in a fresh virtualenv where the wheel is installed).

    package_check.py write  DIR NAME DRIVER N  # create NAME, insert N rows
    package_check.py read   DIR NAME DRIVER N  # expect N rows, add one
    package_check.py load   DIR NAME           # fdbvfs.load() into sqlite3/apsw
    package_check.py noload DIR NAME           # this Python's sqlite3 cannot load
    package_check.py prometheus FILE           # parse `fdbvfs stats --prometheus`

DRIVER is ``auto`` (fdbvfs.connect picks), ``sqlite3`` or ``apsw``. Each
mode prints one ``ok …`` line naming the binding it used; every failure is
an exception (non-zero exit, traceback).
"""

import sqlite3
import sys

import fdbvfs


def driver_arg(arg):
    return None if arg == "auto" else arg


def binding(con):
    """``sqlite3`` or ``apsw``: which module the connection really is."""
    return type(con).__module__.split(".")[0].replace("fdbvfs", "apsw")


def write(directory, name, driver, n):
    con = fdbvfs.connect(name, dir=directory, driver=driver_arg(driver))
    con.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    con.commit()
    cur = con.executemany(
        "INSERT INTO orders(id, item, qty) VALUES (?, ?, ?)",
        [(i, f"item-{i}", i % 7) for i in range(1, n + 1)],
    )
    assert cur.rowcount == n, cur.rowcount
    assert con.in_transaction
    con.commit()
    assert not con.in_transaction
    # The database really is on the fdb VFS, under its name.
    files = [row[2] for row in con.execute("PRAGMA database_list").fetchall()]
    assert files and files[0].endswith(f":{name}"), files
    version = con.execute("PRAGMA fdb_version").fetchone()[0]
    assert int(version) > 0, version
    con.close()
    print(f"ok write {n} via {binding(con)}", flush=True)


def read(directory, name, driver, n):
    con = fdbvfs.connect(name, dir=directory, driver=driver_arg(driver))
    cur = con.execute("SELECT count(*), sum(qty) FROM orders")
    count, total = cur.fetchone()
    assert count == n, (count, n)
    assert total == sum(i % 7 for i in range(1, n + 1)), total
    assert cur.description[0][0] == "count(*)", cur.description
    row = con.execute("SELECT item FROM orders WHERE id = ?", (n // 2,)).fetchone()
    assert row == (f"item-{n // 2}",), row
    with con:  # commits on success
        con.execute("INSERT INTO orders(id, item, qty) VALUES (?, 'late', 0)", (n + 1,))
    con.close()
    again = fdbvfs.connect(name, dir=directory, driver=driver_arg(driver))
    assert again.execute("SELECT count(*) FROM orders").fetchone() == (n + 1,)
    again.close()
    print(f"ok read {n} via {binding(con)}", flush=True)


def load(directory, name):
    """fdbvfs.load() on plain connections of both bindings, then a URI."""
    import apsw

    uri = fdbvfs.uri(name, dir=directory)
    assert fdbvfs.loadable_path().endswith("libfdbvfs.so"), fdbvfs.loadable_path()

    boot = sqlite3.connect(":memory:")
    fdbvfs.load(boot)
    boot.close()
    con = sqlite3.connect(uri, uri=True)
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES ('from sqlite3')")
    con.commit()
    con.close()

    boot = apsw.Connection(":memory:")
    fdbvfs.load(boot)
    boot.close()
    assert "fdb" in apsw.vfs_names(), apsw.vfs_names()
    flags = apsw.SQLITE_OPEN_URI | apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
    con = apsw.Connection(uri, flags=flags)
    assert con.vfsname("main") == "fdb", con.vfsname("main")
    rows = list(con.execute("SELECT x FROM t"))
    assert rows == [("from sqlite3",)], rows
    con.close()

    try:
        fdbvfs.connect(name, dir=directory, driver="nosuch")
    except ValueError as e:
        assert "nosuch" in str(e), e
    else:
        raise AssertionError("driver='nosuch' was accepted")
    print("ok load via sqlite3 and apsw", flush=True)


def noload(directory, name):
    """A Python whose sqlite3 cannot load extensions: connect() picks apsw;
    without apsw, the error names both ways out."""
    assert not hasattr(sqlite3.Connection, "enable_load_extension")
    con = fdbvfs.connect(name, dir=directory)
    assert binding(con) == "apsw", type(con)
    con.execute("CREATE TABLE t(x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
    con.close()

    try:
        fdbvfs.load(sqlite3.connect(":memory:"))
    except fdbvfs.LoadError as e:
        assert "apsw" in str(e), e
    else:
        raise AssertionError("load() into a sqlite3 that cannot load succeeded")

    # Without apsw (importing it fails), nothing is left: one clear error.
    sys.modules["apsw"] = None
    try:
        fdbvfs.connect(name, dir=directory)
    except fdbvfs.LoadError as e:
        msg = str(e)
        assert "sqlite3" in msg and "pip install apsw" in msg, msg
        assert "enable-loadable-sqlite-extensions" in msg, msg
    else:
        raise AssertionError("connect() succeeded without a usable binding")
    print(f"ok noload via {binding(con)}", flush=True)


def prometheus(path):
    """The text must parse, with the families and types we promise."""
    from prometheus_client.parser import text_string_to_metric_families

    with open(path, encoding="utf-8") as f:
        text = f.read()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The parser strips `_total` from counter family names.
    expect = {
        "fdbvfs_store_round_trips": "counter",
        "fdbvfs_page_cache_hits": "counter",
        "fdbvfs_page_cache_misses": "counter",
        "fdbvfs_page_cache_size_bytes": "gauge",
        "fdbvfs_commits": "counter",
        "fdbvfs_commit_conflicts": "counter",
        "fdbvfs_store_unknown_results": "counter",
        "fdbvfs_database_size_bytes": "gauge",
        "fdbvfs_database_gc_horizon_version": "gauge",
        "fdbvfs_database_retention_seconds": "gauge",
    }
    for name, kind in expect.items():
        assert name in families, (name, sorted(families))
        assert families[name].type == kind, (name, families[name].type)
    kinds = {s.labels["kind"] for s in families["fdbvfs_store_round_trips"].samples}
    assert kinds == {"read_version", "read", "commit"}, kinds
    dbs = {s.labels["database"]: s.value for s in families["fdbvfs_database_size_bytes"].samples}
    print(f"ok prometheus {len(families)} families, databases {sorted(dbs)} "
          f"sizes {[int(dbs[k]) for k in sorted(dbs)]}", flush=True)


def main(argv):
    mode = argv[1]
    if mode == "write":
        write(argv[2], argv[3], argv[4], int(argv[5]))
    elif mode == "read":
        read(argv[2], argv[3], argv[4], int(argv[5]))
    elif mode == "load":
        load(argv[2], argv[3])
    elif mode == "noload":
        noload(argv[2], argv[3])
    elif mode == "prometheus":
        prometheus(argv[2])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv)
