#!/usr/bin/env python3
"""fork() and the fdbvfs extension (run by tests/process_lifecycle.rs).

Debian's ``python3`` (its ``sqlite3`` module can load extensions) loads
LIB (target/release/libfdbvfs.so) and opens an embedded store directory DIR:

    fork_store.py os_fork  LIB DIR N   # parent writes, os.fork(), both write
    fork_store.py mp_fork  LIB DIR N   # the same with multiprocessing (fork)
    fork_store.py misuse   LIB DIR N   # the child uses the parent's connection
    fork_store.py takeover LIB DIR N   # the parent exits, the child goes on
    fork_store.py verify   LIB DIR     # a fresh process reads what is there

With FDBVFS_TEST_STALENESS set (e.g. ``5ms``), writers' connections have
that staleness bound (their reads may start at the process's view without
a round trip), and after every acknowledged insert a writer reads its own
rows back: it must see its own commit (``STALE-OWN-WRITE`` otherwise).

Each writer inserts (who, 0), (who, 1), ... one autocommit INSERT at a time,
re-running an insert that failed with SQLITE_BUSY (a conflict: nothing was
written), and prints ``ACKED who K`` when it stops: rows 0..K-1 were
acknowledged. Any other error ends the process with status 1. ``verify``
prints ``ROWS who count distinct min max`` per writer and the result of
``PRAGMA integrity_check``.
"""

import multiprocessing
import os
import sqlite3
import sys
import time

BUSY_RETRIES = 2000


def load(lib):
    mem = sqlite3.connect(":memory:")
    mem.enable_load_extension(True)
    mem.load_extension(lib)
    mem.close()


STALENESS = os.environ.get("FDBVFS_TEST_STALENESS")


def uri(directory):
    bound = f"&staleness={STALENESS}" if STALENESS else ""
    return f"file:forked?vfs=fdb&dir={directory}{bound}"


def connect(directory):
    # isolation_level=None: real autocommit, one store commit per INSERT.
    return sqlite3.connect(uri(directory), uri=True, isolation_level=None, timeout=10)


def is_busy(e):
    return getattr(e, "sqlite_errorcode", 0) & 0xFF == 5 or "locked" in str(e)


SQLITE_IOERR_FSYNC = 1034


def landed(con, who, n):
    """After a COMMIT whose outcome is unknown (the owner exited with the
    answer in flight): did row (who, n) land? Asked once the store answers."""
    for attempt in range(BUSY_RETRIES):
        try:
            (c,) = con.execute(
                "SELECT count(*) FROM t WHERE who = ? AND n = ?", (who, n)
            ).fetchone()
            return c > 0
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            time.sleep(0.001 * (attempt % 10))
    raise RuntimeError(f"{who}: cannot learn whether insert {n} landed")


def insert(con, who, n):
    for attempt in range(BUSY_RETRIES):
        try:
            con.execute("INSERT INTO t(who, n) VALUES (?, ?)", (who, n))
            return
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorcode", 0) == SQLITE_IOERR_FSYNC:
                # Maybe committed: insert again only if it did not land.
                if landed(con, who, n):
                    return
                continue
            if not is_busy(e):
                raise
            time.sleep(0.001 * (attempt % 10))
    raise RuntimeError(f"{who}: insert {n} stayed busy")


def own_rows(con, who):
    for attempt in range(BUSY_RETRIES):
        try:
            (c,) = con.execute("SELECT count(*) FROM t WHERE who = ?", (who,)).fetchone()
            return c
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            time.sleep(0.001 * (attempt % 10))
    raise RuntimeError(f"{who}: reading its own rows stayed busy")


def write(con, who, start, count, pause=0.0):
    n = start
    try:
        for n in range(start, start + count):
            insert(con, who, n)
            if STALENESS and own_rows(con, who) != n + 1:
                raise RuntimeError(f"STALE-OWN-WRITE {who} wrote row {n} and does not see it")
            if pause:
                time.sleep(pause)
        n = start + count
    finally:
        print(f"ACKED {who} {n}", flush=True)
    return n


def setup(lib, directory):
    load(lib)
    con = connect(directory)
    con.execute("CREATE TABLE IF NOT EXISTS t(who TEXT NOT NULL, n INTEGER NOT NULL)")
    return con


def child_writes(directory, who, count):
    """A child's own new connection (the extension is already loaded)."""
    con = connect(directory)
    write(con, who, 0, count, pause=0.001)
    con.close()


def exit_after(work):
    """Ends a forked child after `work`: a normal exit (status 0), or at once
    with status 1 after a CHILD-ERROR line when it raised."""
    try:
        work()
    except BaseException as e:  # noqa: BLE001 - report anything
        print(f"CHILD-ERROR {type(e).__name__}: {e}", flush=True)
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.exit(0)


def fork_while_writing(lib, directory, count, child):
    """The parent writes `count` rows, forks, and writes `count` more while
    the child runs `child(parent)` (which never returns); then it reports
    the child's exit status."""
    parent = setup(lib, directory)
    done = write(parent, "parent", 0, count)
    pid = os.fork()
    if pid == 0:
        child(parent)
    write(parent, "parent", done, count, pause=0.001)
    _, status = os.waitpid(pid, 0)
    print(f"CHILD-STATUS {status}", flush=True)
    parent.close()


def os_fork(lib, directory, count):
    def child(_parent):
        code = 0
        try:
            child_writes(directory, "child", count)
        except BaseException as e:  # noqa: BLE001 - report anything
            print(f"CHILD-ERROR {type(e).__name__}: {e}", flush=True)
            code = 1
        # A normal interpreter exit: finalizers run, the parent's connection
        # (inherited) is closed here too; it must not touch the store.
        sys.stdout.flush()
        sys.exit(code)

    fork_while_writing(lib, directory, count, child)


def mp_child(directory, who, count):
    child_writes(directory, who, count)


def mp_fork(lib, directory, count):
    parent = setup(lib, directory)
    done = write(parent, "parent", 0, count)
    ctx = multiprocessing.get_context("fork")
    kids = [
        ctx.Process(target=mp_child, args=(directory, f"mp{i}", count)) for i in range(2)
    ]
    for k in kids:
        k.start()
    write(parent, "parent", done, count, pause=0.001)
    for k in kids:
        k.join(120)
        print(f"CHILD-STATUS {k.exitcode}", flush=True)
    parent.close()


def misuse(lib, directory, count):
    def child(parent):
        # SQLite says a connection must not be carried across fork(): it must
        # fail here, clearly, and never write the parent's store.
        try:
            parent.execute("INSERT INTO t(who, n) VALUES ('misuse', 0)")
            print("MISUSE-ALLOWED", flush=True)
        except sqlite3.Error as e:
            print(f"MISUSE-REFUSED {type(e).__name__}: {e}", flush=True)
        exit_after(lambda: child_writes(directory, "child", count))

    fork_while_writing(lib, directory, count, child)


def takeover(lib, directory, count):
    parent = setup(lib, directory)
    done = write(parent, "parent", 0, count)
    me = os.getpid()
    pid = os.fork()
    if pid == 0:

        def child():
            con = connect(directory)
            n = write(con, "child", 0, count, pause=0.001)
            # The parent (the store's owner) exits meanwhile; this process
            # takes the store over and keeps writing.
            deadline = time.time() + 60
            while os.getppid() == me:
                if time.time() > deadline:
                    raise RuntimeError("the parent did not exit")
                time.sleep(0.01)
            write(con, "child", n, count)
            con.close()
            print("CHILD-DONE", flush=True)

        exit_after(child)
    write(parent, "parent", done, count // 2, pause=0.001)
    parent.close()
    print("PARENT-DONE", flush=True)
    # A normal exit while the child still writes: the child must take over.
    sys.exit(0)


def verify(lib, directory):
    load(lib)
    con = connect(directory)
    rows = con.execute(
        "SELECT who, count(*), count(DISTINCT n), min(n), max(n) FROM t GROUP BY who ORDER BY who"
    ).fetchall()
    for who, c, d, lo, hi in rows:
        print(f"ROWS {who} {c} {d} {lo} {hi}", flush=True)
    (ic,) = con.execute("PRAGMA integrity_check").fetchone()
    print(f"INTEGRITY {ic}", flush=True)
    con.close()


def main():
    mode, lib, directory = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "verify":
        verify(lib, directory)
        return
    count = int(sys.argv[4])
    modes = {"os_fork": os_fork, "mp_fork": mp_fork, "misuse": misuse, "takeover": takeover}
    modes[mode](lib, directory, count)
    print("PARENT-DONE", flush=True)


if __name__ == "__main__":
    main()
