"""History-check worker through the loadable extension.

Debian's python3 `sqlite3` module cannot load extensions, so this worker
drives the system libsqlite3 through ctypes: it loads
target/release/libfdbvfs.so with sqlite3_load_extension, opens
`file:la?vfs=fdb&dir=STORE` (and attaches `lb` for group transactions), and
runs list-append transactions in several threads, recording them as JSON
lines in the same format as the Rust workers (tests/history_check/workload.rs).

Usage: worker.py LIBFDBVFS LIBSQLITE3 STORE_DIR HIST_FILE STOP_FILE INC THREADS START_NS
"""

import ctypes
import json
import os
import random
import sys
import threading
import time

LIB, SQLITE, STORE, HIST, STOP = sys.argv[1:6]
INC, THREADS, START_NS = (int(x) for x in sys.argv[6:9])

WINDOW_NS, STRIDE, ACTIVE, ATTEMPTS = 4_000_000_000, 3, 5, 4
SQLITE_OK, SQLITE_ROW, SQLITE_DONE, SQLITE_BUSY = 0, 100, 101, 5
OPEN_FLAGS = 0x2 | 0x4 | 0x40 | 0x8000  # READWRITE | CREATE | URI | NOMUTEX

lib = ctypes.CDLL(SQLITE)
vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
lib.sqlite3_open_v2.argtypes = [cp, ctypes.POINTER(vp), ci, cp]
lib.sqlite3_close_v2.argtypes = [vp]
lib.sqlite3_exec.argtypes = [vp, cp, vp, vp, ctypes.POINTER(cp)]
lib.sqlite3_errmsg.argtypes = [vp]
lib.sqlite3_errmsg.restype = cp
lib.sqlite3_extended_errcode.argtypes = [vp]
lib.sqlite3_enable_load_extension.argtypes = [vp, ci]
lib.sqlite3_load_extension.argtypes = [vp, cp, cp, ctypes.POINTER(cp)]
lib.sqlite3_prepare_v2.argtypes = [vp, cp, ci, ctypes.POINTER(vp), vp]
lib.sqlite3_bind_int64.argtypes = [vp, ci, ctypes.c_int64]
lib.sqlite3_bind_text.argtypes = [vp, ci, cp, ci, vp]
lib.sqlite3_step.argtypes = [vp]
lib.sqlite3_column_text.argtypes = [vp, ci]
lib.sqlite3_column_text.restype = cp
lib.sqlite3_finalize.argtypes = [vp]
lib.sqlite3_get_autocommit.argtypes = [vp]
lib.sqlite3_busy_timeout.argtypes = [vp, ci]
SQLITE_TRANSIENT = vp(-1)


class SqlError(Exception):
    def __init__(self, code, msg):
        super().__init__(f"{code}: {msg}")
        self.code = code

    @property
    def busy(self):
        return self.code & 0xFF == SQLITE_BUSY

    def describe(self, when):
        # SQLITE_CORRUPT is never right on a healthy store: the parent
        # reports errors with this prefix as anomalies.
        prefix = "SQLITE_CORRUPT " if self.code & 0xFF == 11 else ""
        return f"{prefix}{when}: {self}"


class Conn:
    def __init__(self, uri):
        self.db = vp()
        rc = lib.sqlite3_open_v2(uri.encode(), ctypes.byref(self.db), OPEN_FLAGS, None)
        if rc != SQLITE_OK:
            err = self.error(rc)
            lib.sqlite3_close_v2(self.db)
            raise err
        lib.sqlite3_busy_timeout(self.db, 5000)

    def error(self, rc):
        code = lib.sqlite3_extended_errcode(self.db) if self.db else rc
        msg = lib.sqlite3_errmsg(self.db) if self.db else b""
        return SqlError(code, (msg or b"").decode(errors="replace"))

    def exec(self, sql):
        rc = lib.sqlite3_exec(self.db, sql.encode(), None, None, None)
        if rc != SQLITE_OK:
            raise self.error(rc)

    def query(self, sql, *params):
        """Runs one statement; returns its rows' first column as strings."""
        st = vp()
        rc = lib.sqlite3_prepare_v2(self.db, sql.encode(), -1, ctypes.byref(st), None)
        if rc != SQLITE_OK:
            raise self.error(rc)
        try:
            for i, p in enumerate(params, 1):
                if isinstance(p, int):
                    lib.sqlite3_bind_int64(st, i, p)
                else:
                    lib.sqlite3_bind_text(st, i, p.encode(), -1, SQLITE_TRANSIENT)
            rows = []
            while True:
                rc = lib.sqlite3_step(st)
                if rc == SQLITE_ROW:
                    v = lib.sqlite3_column_text(st, 0)
                    rows.append(None if v is None else v.decode())
                elif rc == SQLITE_DONE:
                    return rows
                else:
                    raise self.error(rc)
        finally:
            lib.sqlite3_finalize(st)

    def in_txn(self):
        return lib.sqlite3_get_autocommit(self.db) == 0

    def rollback(self):
        if self.in_txn():
            try:
                self.exec("ROLLBACK")
            except SqlError:
                pass


def load_extension():
    boot = Conn(":memory:")
    lib.sqlite3_enable_load_extension(boot.db, 1)
    err = cp()
    rc = lib.sqlite3_load_extension(boot.db, LIB.encode(), None, ctypes.byref(err))
    # SQLITE_OK_LOAD_PERMANENTLY is reported as SQLITE_OK to the caller.
    if rc != SQLITE_OK:
        raise SystemExit(f"load_extension failed: {rc} {err.value}")
    return boot


def uri(name):
    return f"file:{name}?vfs=fdb&dir={STORE}"


lock = threading.Lock()
hist = open(HIST, "a", buffering=1)
counters = {"ok": 0, "failed": 0, "unknown": 0, "attempts": 0, "busy": 0, "groups": 0}
errors = {}


def record(obj):
    line = json.dumps(obj) + "\n"
    with lock:
        hist.write(line)
        hist.flush()


def bump(name, by=1):
    with lock:
        counters[name] += by


def note_error(e):
    with lock:
        key = str(e)[:60]
        errors[key] = errors.get(key, 0) + 1


def stats():
    with lock:
        obj = dict(counters, t="stats", lang="python", backend="python", error_kinds=dict(errors))
    record(obj)


def parse_list(s):
    return [int(x) for x in s.split()] if s else []


def attempt(conn, plan):
    ops = []
    try:
        conn.exec("BEGIN")
        for op in plan:
            if op[0] == "r":
                _, schema, db, k = op
                rows = conn.query(f"SELECT vals FROM {schema}.lists WHERE k = ?1", k)
                ops.append(["r", f"{db}/{k}", parse_list(rows[0] if rows else "")])
            else:
                _, schema, db, k, v = op
                conn.query(
                    f"INSERT INTO {schema}.lists(k, vals) VALUES (?1, ?2) "
                    "ON CONFLICT(k) DO UPDATE SET vals = vals || ' ' || excluded.vals",
                    k,
                    str(v),
                )
                ops.append(["a", f"{db}/{k}", v])
    except SqlError as e:
        conn.rollback()
        note_error(e)
        return ("fail", e.busy, [], e.describe("before COMMIT"))
    try:
        conn.exec("COMMIT")
        return ("ok", False, ops, None)
    except SqlError as e:
        conn.rollback()
        note_error(e)
        if e.busy:
            return ("fail", True, [], e.describe("COMMIT"))
        return ("unknown", False, ops, e.describe("COMMIT"))


def worker(thread):
    rng = random.Random(INC * 1000 + thread)
    conns = {}
    n = 0
    while not os.path.exists(STOP):
        n += 1
        group = rng.random() < 0.3
        name = "group" if group else "la"
        dbs = [("main", "la"), ("lb", "lb")] if group else [("main", "la")]
        window = max(0, time.monotonic_ns() - START_NS) // WINDOW_NS
        plan, value = [], 0
        for _ in range(rng.randint(1, 3)):
            schema, db = rng.choice(dbs)
            k = window * STRIDE + rng.randrange(ACTIVE)
            kind = rng.randrange(3)
            if kind in (0, 2):
                plan.append(("r", schema, db, k))
            if kind in (1, 2):
                value += 1
                plan.append(("a", schema, db, k, INC * 1_000_000_000 + thread * 10_000_000 + n * 10 + value))
        if group:
            bump("groups")
        tid = f"w{INC}-t{thread}-{n}"
        appends = [[p[2], p[3], p[4]] for p in plan if p[0] == "a"]
        record({"t": "inv", "id": tid, "ns": time.monotonic_ns(), "appends": appends})
        whys = []
        for i in range(ATTEMPTS):
            bump("attempts")
            t0 = time.monotonic_ns()
            if name not in conns:
                try:
                    c = Conn(uri("la"))
                    c.exec("PRAGMA journal_mode=DELETE")
                    if group:
                        c.exec(f"ATTACH DATABASE '{uri('lb')}' AS lb")
                    conns[name] = c
                except SqlError as e:
                    note_error(e)
                    whys.append(e.describe("open"))
                    time.sleep(0.05)
                    out, busy, ops = "fail", False, []
                    break
            out, busy, ops, why = attempt(conns[name], plan)
            if why:
                whys.append(why)
            if out == "fail" and busy:
                bump("busy")
                if i + 1 < ATTEMPTS:
                    time.sleep(rng.uniform(0.0001, 0.003))
                    continue
            if out != "ok" and not busy:
                conns.pop(name, None)
            break
        bump({"ok": "ok", "fail": "failed", "unknown": "unknown"}[out])
        record({"t": "done", "id": tid, "ns0": t0, "ns": time.monotonic_ns(), "out": out, "ops": ops, "errors": whys})


def main():
    load_extension()
    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        stats()
        time.sleep(0.5)
    stats()


main()
