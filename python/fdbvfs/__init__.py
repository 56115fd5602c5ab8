"""fdbvfs for Python: SQLite databases kept in FoundationDB, opened by name.

The package carries the fdbvfs loadable extension (``libfdbvfs.so``), which
registers the SQLite VFS ``fdb``. Three entry points::

    import fdbvfs

    con = fdbvfs.connect("orders", dir="./fdbvfs-data")  # DB-API connection
    con.execute("CREATE TABLE IF NOT EXISTS t(x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()

    fdbvfs.load(sqlite3_or_apsw_connection)  # register the VFS, then open
    # "file:orders?vfs=fdb&dir=./fdbvfs-data" with uri=True yourself
    fdbvfs.loadable_path()                   # the library, for other hosts

:func:`connect` uses the standard :mod:`sqlite3` module when this Python's
can load extensions (Debian's and most distributions' can; pyenv's and
python.org's macOS builds often cannot), and otherwise ``apsw``
(``pip install apsw``), wrapped in a small DB-API 2.0 adapter.

The store is the embedded one in ``dir`` (default ``$FDBVFS_DIR``, else
``./fdbvfs-data``), shared safely by every process that opens it, or a
FoundationDB cluster (``cluster=``, in builds with the ``fdb`` feature).
Commits are optimistic: a conflict with a concurrent writer fails the
``COMMIT`` with ``SQLITE_BUSY`` (``sqlite3.OperationalError`` or
``apsw.BusyError``); roll back and run the transaction again.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Literal, Mapping, Optional, Set, Union
from urllib.parse import quote


if TYPE_CHECKING:
    import sqlite3

    from fdbvfs.dbapi import Connection as ApswDbapiConnection

__all__ = [
    "VFS_NAME",
    "Driver",
    "LoadError",
    "__version__",
    "connect",
    "load",
    "loadable_path",
    "uri",
]

__version__ = "0.1.0"

#: The name of the SQLite VFS the extension registers (``?vfs=fdb``).
VFS_NAME = "fdb"

#: Which SQLite binding :func:`connect` uses.
Driver = Literal["sqlite3", "apsw"]

_LIBRARY_ENV = "FDBVFS_LIBRARY"


class LoadError(RuntimeError):
    """The extension cannot be loaded into this Python's SQLite."""


def loadable_path() -> str:
    """The path of the loadable extension shipped in this package.

    Usable wherever SQLite loads extensions: ``conn.load_extension(path)``,
    the ``sqlite3`` shell's ``.load``, ``sqlite3_load_extension()``. SQLite
    derives the entry point (``sqlite3_fdbvfs_init``) from the file name.
    ``$FDBVFS_LIBRARY``, when set, names another build of the library to
    use instead (e.g. ``target/release/libfdbvfs.so`` while developing).
    """
    override = os.environ.get(_LIBRARY_ENV)
    if override:
        return override
    here = Path(__file__).resolve().parent
    for suffix in (".so", ".dylib", ".dll"):
        lib = here / ("libfdbvfs" + suffix)
        if lib.is_file():
            return str(lib)
    raise LoadError(
        f"the fdbvfs library is missing from {here}: this package was not "
        "built as a wheel (pip wheel ./python runs cargo), or set "
        f"{_LIBRARY_ENV} to a built libfdbvfs.so"
    )


def _is_apsw(conn: Any) -> bool:
    return type(conn).__module__.split(".")[0] == "apsw"


def load(conn: Any) -> None:
    """Loads the extension into ``conn``'s SQLite and registers the ``fdb`` VFS.

    ``conn`` is a :class:`sqlite3.Connection` (or one of ``pysqlite3``), an
    ``apsw.Connection``, or a connection returned by :func:`connect`. The
    VFS then stays registered in that SQLite library for the life of the
    process, for every connection (open databases with a URI such as
    ``file:orders?vfs=fdb&dir=./fdbvfs-data``). Extension loading is
    switched off again on ``conn`` afterwards, so SQL cannot load others.

    Raises :class:`LoadError` when this binding cannot load extensions.
    """
    inner = getattr(conn, "apsw", conn)
    enable = getattr(inner, "enable_load_extension", None)
    if enable is None:
        raise LoadError(
            f"{type(inner).__module__}.{type(inner).__name__} cannot load "
            "extensions: this Python's sqlite3 module was built without "
            "extension loading (pyenv and python.org builds often are); "
            "install apsw (pip install apsw) and pass an apsw.Connection, "
            "or use fdbvfs.connect(), which picks apsw by itself"
        )
    path = loadable_path()
    enable(True)
    try:
        inner.load_extension(path)
    finally:
        enable(False)


# Bindings (by driver name) whose SQLite library has the VFS registered in
# this process; loading is needed once per library, not per connection.
_loaded: Set[str] = set()
_load_lock = threading.Lock()


def _sqlite3_ready() -> Optional[str]:
    """Registers the VFS with the :mod:`sqlite3` module's SQLite; returns
    why that is impossible, or None on success."""
    import sqlite3

    with _load_lock:
        if "sqlite3" in _loaded:
            return None
        if not hasattr(sqlite3.Connection, "enable_load_extension"):
            return (
                "this Python's sqlite3 module was built without extension "
                "loading"
            )
        boot = sqlite3.connect(":memory:")
        try:
            load(boot)
        except (sqlite3.Error, LoadError) as e:
            return f"sqlite3 could not load the extension: {e}"
        finally:
            boot.close()
        _loaded.add("sqlite3")
        return None


def _apsw_ready() -> Optional[str]:
    """Like :func:`_sqlite3_ready`, for apsw."""
    try:
        import apsw
    except ImportError:
        return "apsw is not installed (pip install apsw)"
    with _load_lock:
        if "apsw" in _loaded:
            return None
        boot = apsw.Connection(":memory:")
        try:
            load(boot)
        except (apsw.Error, LoadError) as e:
            return f"apsw could not load the extension: {e}"
        finally:
            boot.close()
        _loaded.add("apsw")
        return None


def uri(
    name: str,
    dir: Union[str, "os.PathLike[str]", None] = None,
    cluster: Union[str, "os.PathLike[str]", None] = None,
    **uri_params: Any,
) -> str:
    """The SQLite URI of database ``name`` on the ``fdb`` VFS.

    Values are percent-encoded; booleans become ``1``/``0``. Example:
    ``uri("orders", dir="/var/lib/fdbvfs", at="2026-11-21T10:00:00Z")``.
    """
    params: Dict[str, Any] = {"vfs": VFS_NAME}
    if dir is not None:
        params["dir"] = os.fspath(dir)
    if cluster is not None:
        params["cluster"] = os.fspath(cluster)
    params.update(uri_params)
    query = "&".join(
        f"{quote(str(k), safe='')}={quote(_param(v), safe='/:')}"
        for k, v in params.items()
    )
    return f"file:{quote(name, safe='')}?{query}"


def _param(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def connect(
    name: str,
    dir: Union[str, "os.PathLike[str]", None] = None,
    cluster: Union[str, "os.PathLike[str]", None] = None,
    *,
    driver: Optional[Driver] = None,
    connect_args: Optional[Mapping[str, Any]] = None,
    **uri_params: Any,
) -> Union["sqlite3.Connection", "ApswDbapiConnection"]:
    """Opens database ``name`` (created on first use) on the ``fdb`` VFS.

    :param name: the database name in the store (not a file path).
    :param dir: the embedded store's directory (default ``$FDBVFS_DIR``,
        else ``./fdbvfs-data``); several processes may share it.
    :param cluster: a FoundationDB cluster file (builds with ``fdb`` only).
    :param driver: ``"sqlite3"`` or ``"apsw"`` to insist on one; by
        default :mod:`sqlite3` when it can load extensions, else apsw.
    :param connect_args: keyword arguments for :func:`sqlite3.connect`
        (``timeout``, ``isolation_level``, ``check_same_thread`` …);
        ignored by apsw.
    :param uri_params: further URI parameters of the VFS, e.g.
        ``at="2026-11-21T10:00:00Z"`` or ``version=123`` (read-only time
        travel), ``mode="ro"``; an unknown one fails with an error naming it.
    :returns: a DB-API 2.0 connection: a :class:`sqlite3.Connection`, or
        a :class:`fdbvfs.dbapi.Connection` wrapping an ``apsw.Connection``
        (same methods; exceptions are apsw's).
    :raises LoadError: when neither binding can load the extension; the
        message names both options.
    """
    if driver not in (None, "sqlite3", "apsw"):
        raise ValueError(f"driver must be 'sqlite3' or 'apsw', not {driver!r}")
    target = uri(name, dir, cluster, **uri_params)
    reasons = []
    if driver in (None, "sqlite3"):
        why = _sqlite3_ready()
        if why is None:
            import sqlite3

            con: sqlite3.Connection = sqlite3.connect(
                target, uri=True, **dict(connect_args or {})
            )
            return con
        reasons.append(f"sqlite3: {why}")
    if driver in (None, "apsw"):
        why = _apsw_ready()
        if why is None:
            import apsw

            from fdbvfs.dbapi import Connection

            flags = (
                apsw.SQLITE_OPEN_URI
                | apsw.SQLITE_OPEN_READWRITE
                | apsw.SQLITE_OPEN_CREATE
            )
            return Connection(apsw.Connection(target, flags=flags))
        reasons.append(f"apsw: {why}")
    raise LoadError(
        "fdbvfs cannot load its SQLite extension in this Python ("
        + "; ".join(reasons)
        + "). Either use a Python whose sqlite3 module can load extensions "
        "(Debian/Ubuntu's python3, or pyenv with "
        'PYTHON_CONFIGURE_OPTS="--enable-loadable-sqlite-extensions"), '
        "or install apsw: pip install apsw"
    )
