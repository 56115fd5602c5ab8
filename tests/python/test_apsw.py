#!/usr/bin/env python3
"""The fdbvfs loadable extension through apsw (run by tests/extension.rs).

The machine's Python ``sqlite3`` module cannot load extensions; apsw can.

    test_apsw.py main   LIB DIR NAME            # the test (spawns readers)
    test_apsw.py reader LIB DIR NAME EXPECTED   # check EXPECTED rows, add one

LIB is target/release/libfdbvfs.so, DIR the embedded store directory.
Every failure is an exception: non-zero exit with a traceback.
"""

import subprocess
import sys

import apsw

FLAGS = apsw.SQLITE_OPEN_URI | apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE


def load(lib):
    """Loads the extension through a throwaway connection, then closes it:
    the VFS must stay registered (SQLITE_OK_LOAD_PERMANENTLY)."""
    mem = apsw.Connection(":memory:")
    mem.enable_load_extension(True)
    mem.load_extension(lib)
    mem.close()
    assert "fdb" in apsw.vfs_names(), apsw.vfs_names()


def uri(directory, name):
    return f"file:{name}?vfs=fdb&dir={directory}"


def one(con, sql, *args):
    rows = con.execute(sql, args).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, (sql, rows)
    return rows[0][0]


def reader(lib, directory, name, expected):
    load(lib)
    con = apsw.Connection(uri(directory, name), flags=FLAGS)
    count = one(con, "SELECT count(*) FROM orders")
    assert count == expected, (count, expected)
    assert one(con, "SELECT item FROM orders WHERE id = 1") == "item-1"
    with con:  # a transaction
        con.execute(
            "INSERT INTO orders VALUES (?, ?, ?)", (expected + 1, "from-reader", 1)
        )
    count = one(con, "SELECT count(*) FROM orders")
    assert count == expected + 1, count
    con.close()
    print(f"apsw reader ok {count}", flush=True)


def run_reader(lib, directory, name, expected):
    out = subprocess.run(
        [sys.executable, __file__, "reader", lib, directory, name, str(expected)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0 and f"apsw reader ok {expected + 1}" in out.stdout, (
        f"reader exited {out.returncode}\nstdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    )
    sys.stderr.write(out.stderr)


def main(lib, directory, name):
    load(lib)
    con = apsw.Connection(uri(directory, name), flags=FLAGS)
    assert con.vfsname("main") == "fdb", con.vfsname("main")
    con.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER)")
    with con:
        con.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            ((i, f"item-{i}", i % 7) for i in range(1, 201)),
        )
    assert one(con, "SELECT count(*) FROM orders") == 200
    assert one(con, "SELECT sum(qty) FROM orders") == sum(i % 7 for i in range(1, 201))

    version = int(one(con, "PRAGMA fdb_version"))
    assert version > 0, version
    stats = one(con, "PRAGMA fdb_stats")
    assert "commits=" in stats and "round_trips=" in stats, stats

    # Another process, while this connection is open (this process owns
    # the store directory): it sees the 200 rows and adds one.
    run_reader(lib, directory, name, 200)
    # A new transaction here sees that commit.
    assert one(con, "SELECT count(*) FROM orders") == 201
    assert one(con, "SELECT item FROM orders WHERE id = 201") == "from-reader"
    assert int(one(con, "PRAGMA fdb_version")) > version

    # journal_mode=WAL: refused with a message; the mode stays; no later
    # I/O error.
    try:
        con.execute("PRAGMA journal_mode=WAL").fetchall()
        raise AssertionError("journal_mode=WAL was accepted")
    except apsw.SQLError as e:
        assert "not supported" in str(e), e
    assert one(con, "PRAGMA journal_mode") == "delete"
    with con:
        con.execute("UPDATE orders SET qty = qty + 1 WHERE id = 1")
    con.execute("UPDATE orders SET qty = qty - 1 WHERE id = 1")
    assert one(con, "PRAGMA integrity_check") == "ok"

    # An unknown URI parameter: the open fails (the extension logs its
    # name on stderr, checked by the Rust side).
    try:
        apsw.Connection(uri(directory, name) + "&bogus=1", flags=FLAGS)
        raise AssertionError("bogus=1 was accepted")
    except apsw.CantOpenError:
        pass

    con.close()
    print("apsw main ok", flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "main":
        main(*args)
    elif cmd == "reader":
        reader(args[0], args[1], args[2], int(args[3]))
    else:
        sys.exit(f"unknown command {cmd!r}")
