"""A DB-API 2.0 (PEP 249) face for an ``apsw.Connection``.

apsw is not a DB-API module; :func:`fdbvfs.connect` wraps its connection
in :class:`Connection` so code written for :mod:`sqlite3` runs unchanged
when apsw is the binding. Transactions follow :mod:`sqlite3`'s default
(``isolation_level=""``): ``BEGIN`` is issued before ``INSERT``,
``UPDATE``, ``DELETE`` and ``REPLACE`` when no transaction is open, and
:meth:`Connection.commit` ends it. Exceptions are apsw's (``apsw.Error``
and subclasses; a write conflict is ``apsw.BusyError``). The wrapped
connection is :attr:`Connection.apsw`.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import apsw

Params = Union[Sequence[Any], "dict[str, Any]"]

#: Statements before which sqlite3 opens a transaction implicitly.
_DML = re.compile(
    r"^(?:\s|--[^\n]*\n?|/\*.*?\*/)*(INSERT|UPDATE|DELETE|REPLACE)\b",
    re.IGNORECASE | re.DOTALL,
)

apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"


class Cursor:
    """A DB-API cursor over an apsw cursor."""

    arraysize: int = 1

    def __init__(self, connection: "Connection") -> None:
        self.connection = connection
        self._cur = connection.apsw.cursor()
        self._rows: Optional[Iterator[Tuple[Any, ...]]] = None
        self.description: Optional[Tuple[Tuple[Any, ...], ...]] = None
        self.rowcount: int = -1
        self.lastrowid: Optional[int] = None

    def _begin_if_dml(self, sql: str) -> bool:
        dml = _DML.match(sql) is not None
        if dml and self.connection.apsw.getautocommit():
            self.connection.apsw.execute("BEGIN")
        return dml

    def _describe(self) -> None:
        try:
            self.description = tuple(tuple(d) for d in self._cur.description)
        except apsw.ExecutionCompleteError:
            self.description = None

    def execute(self, sql: str, parameters: Params = ()) -> "Cursor":
        """Runs ``sql`` (one or more statements) with ``parameters``."""
        dml = self._begin_if_dml(sql)
        self._rows = iter(self._cur.execute(sql, parameters))
        self._describe()
        self.rowcount = self.connection.apsw.changes() if dml else -1
        self.lastrowid = self.connection.apsw.last_insert_rowid()
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params]) -> "Cursor":
        """Runs ``sql`` once per parameter set (in one transaction for DML)."""
        dml = self._begin_if_dml(sql)
        total = 0
        for params in seq_of_parameters:
            for _ in self._cur.execute(sql, params):
                pass
            total += self.connection.apsw.changes()
        self._rows = iter(())
        self.description = None
        self.rowcount = total if dml else -1
        self.lastrowid = self.connection.apsw.last_insert_rowid()
        return self

    def executescript(self, script: str) -> "Cursor":
        """Commits any open transaction, then runs ``script`` as written."""
        self.connection.commit()
        for _ in self._cur.execute(script):
            pass
        self._rows = iter(())
        self.description = None
        return self

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        """The next row, or None."""
        if self._rows is None:
            return None
        return next(self._rows, None)

    def fetchmany(self, size: Optional[int] = None) -> List[Tuple[Any, ...]]:
        """Up to ``size`` (default :attr:`arraysize`) more rows."""
        n = self.arraysize if size is None else size
        out = []
        for _ in range(n):
            row = self.fetchone()
            if row is None:
                break
            out.append(row)
        return out

    def fetchall(self) -> List[Tuple[Any, ...]]:
        """All remaining rows."""
        return list(self._rows or ())

    def __iter__(self) -> Iterator[Tuple[Any, ...]]:
        return self._rows or iter(())

    def close(self) -> None:
        """Closes the cursor."""
        self._cur.close()
        self._rows = None

    def setinputsizes(self, sizes: Any) -> None:
        """Does nothing (DB-API)."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Does nothing (DB-API)."""


class Connection:
    """A DB-API connection over an ``apsw.Connection`` (see the module doc)."""

    def __init__(self, connection: "apsw.Connection") -> None:
        #: The wrapped apsw connection (for apsw-only features).
        self.apsw = connection

    def cursor(self) -> Cursor:
        """A new cursor."""
        return Cursor(self)

    def execute(self, sql: str, parameters: Params = ()) -> Cursor:
        """A new cursor that has run ``sql``."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Params]) -> Cursor:
        """A new cursor that has run ``sql`` once per parameter set."""
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, script: str) -> Cursor:
        """A new cursor that has run ``script``."""
        return self.cursor().executescript(script)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open."""
        return not self.apsw.getautocommit()

    @property
    def total_changes(self) -> int:
        """Rows changed since the connection was opened."""
        return self.apsw.total_changes()

    def commit(self) -> None:
        """Commits the open transaction, if any (a conflict raises
        ``apsw.BusyError``: roll back and run the transaction again)."""
        if not self.apsw.getautocommit():
            self.apsw.execute("COMMIT")

    def rollback(self) -> None:
        """Rolls the open transaction back, if any."""
        if not self.apsw.getautocommit():
            self.apsw.execute("ROLLBACK")

    def close(self) -> None:
        """Closes the connection; an open transaction is rolled back."""
        self.apsw.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Like sqlite3: commit on success, roll back on an exception; the
        # connection stays open.
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
