"""How the store reaches its database: SQLite or PostgreSQL, the only place they differ.

:class:`~config.store.Store` writes one SQL text for both (``?`` placeholders,
``ON CONFLICT``, SQLite's type names) and one table of migrations; a backend
gives it connections (:meth:`connection`), opens a write transaction the way
its engine serialises writers (:meth:`begin`), translates DDL
(:meth:`translate`), announces a committed change (:meth:`notify`) and waits
for other processes' changes (:meth:`changes`).

- **SQLite** (the embedded default): one connection behind a lock; ``BEGIN
  IMMEDIATE`` serialises writers; no cross-process event exists, so a change
  is noticed by polling ``PRAGMA data_version`` (cheap) and, when it moved,
  the newest audit row (every operator change writes one) and the instance
  rows.
- **PostgreSQL** (``[gateway] store = "postgresql://…"``): psycopg 3's sync
  API, a small pool of autocommit connections; a write is ``BEGIN`` plus a
  transaction-scoped advisory lock, so writers are serialised across
  instances as SQLite's are; a change is ``pg_notify`` in the committing
  transaction, received on a LISTEN connection of its own.

Error handling: a PostgreSQL server that cannot be reached, or a connection
that broke, raises :class:`~config.errors.StoreUnavailableError` (HTTP 503);
the broken connection — and every idle one, which shared its fate — is
dropped, so the next call connects afresh once the server is back. The
LISTEN connection reconnects with backoff, and reports every channel as
changed once it listens again (what happened meanwhile was not heard).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import select
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from .errors import StoreUnavailableError

log = logging.getLogger(__name__)

#: The channel a committed operator change is announced on (projects, servers, keys…).
CHANGES = "mcp_orch_changes"
#: The channel an instance joining or leaving the registry is announced on.
INSTANCES = "mcp_orch_instances"
CHANNELS = (CHANGES, INSTANCES)

#: Advisory lock keys (PostgreSQL): one serialises writes, one migrations.
_WRITE_LOCK = 0x6D63706F01
_MIGRATE_LOCK = 0x6D63706F02
#: Pooled PostgreSQL connections at most; a caller waits this long for a free one.
POOL_SIZE = 8
POOL_WAIT_S = 10.0
#: An idle pooled connection unused this long is checked (``SELECT 1``) before reuse.
CHECK_AFTER_S = 2.0
CONNECT_TIMEOUT_S = 5
#: The LISTEN connection's reconnect backoff: ``min(MAX, INITIAL * 2**failures)``.
LISTEN_BACKOFF_INITIAL_S = 0.1
LISTEN_BACKOFF_MAX_S = 2.0


class Db(Protocol):
    """A connection as the store uses it: ``execute(sql, args)`` → a cursor
    (``fetchone``, ``fetchall``, ``rowcount``)."""

    def execute(self, sql: str, args: Sequence[Any] = ...) -> Any: ...


class Backend(Protocol):
    """What :class:`~config.store.Store` needs of a database engine."""

    #: The file or server, as messages name it (never a password).
    where: str
    #: How often :meth:`changes` looks when it polls (SQLite) or wakes (PostgreSQL).
    poll_s: float

    def connection(self) -> contextlib.AbstractContextManager[Db]: ...
    def begin(self, db: Db, *, migration: bool = False) -> None: ...
    def rollback(self, db: Db) -> None: ...
    def notify(self, db: Db, channel: str) -> None: ...
    def translate(self, ddl: str) -> str: ...
    def changes(self, wait_s: float) -> set[str]: ...
    def close(self) -> None: ...


# -- SQLite ------------------------------------------------------------------------


@attrs.define(eq=False)
class SQLiteBackend:
    """One SQLite file: one connection, used under a lock from any thread."""

    path: Path
    _db: sqlite3.Connection
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _closing: threading.Event = attrs.field(factory=threading.Event)
    #: What :meth:`changes` saw last: data_version, newest audit id, instance rows.
    _marks: tuple[Any, Any, Any] | None = None
    poll_s: float = 0.1

    @classmethod
    def open(cls, path: Path) -> SQLiteBackend:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        return cls(path, db)

    @property
    def where(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Db]:
        with self._lock:
            yield self._db

    def begin(self, db: Db, *, migration: bool = False) -> None:
        db.execute("BEGIN IMMEDIATE")

    def rollback(self, db: Db) -> None:
        db.execute("ROLLBACK")

    def notify(self, db: Db, channel: str) -> None:
        """Nothing to send: other processes notice the commit (:meth:`changes`)."""

    def translate(self, ddl: str) -> str:
        return ddl

    def data_version(self) -> int:
        with self._lock:
            return self._db.execute("PRAGMA data_version").fetchone()[0]

    def _read_marks(self) -> tuple[Any, Any, Any]:
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if self._marks is not None and self._marks[0] == version:
                return self._marks
            audit = self._db.execute("SELECT MAX(id) FROM audit").fetchone()[0]
            instances = self._db.execute(
                "SELECT id, started_at FROM instances ORDER BY id").fetchall()
        return version, audit, instances

    def changes(self, wait_s: float) -> set[str]:
        """After ``wait_s``: the channels another connection committed a change on."""
        if self._marks is None:
            self._marks = self._read_marks()
        if self._closing.wait(wait_s):
            return set()
        marks = self._read_marks()
        before, self._marks = self._marks, marks
        changed = set()
        if marks[1] != before[1]:
            changed.add(CHANGES)
        if marks[2] != before[2]:
            changed.add(INSTANCES)
        return changed

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            self._db.close()


# -- PostgreSQL --------------------------------------------------------------------


def describe_dsn(dsn: str) -> str:
    """``postgresql://user@host:port/db`` of a DSN, without its password (for messages)."""
    import psycopg.conninfo

    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - a malformed DSN is reported when connecting
        return "postgresql://(unparsable DSN)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


@attrs.define(eq=False)
class _PgDb:
    """A pooled psycopg connection speaking the store's SQL."""

    conn: Any

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        if not args:
            return self.conn.execute(sql)
        return self.conn.execute(_pg_sql(sql), tuple(args))


_DDL_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    # SQLite's REAL is 8 bytes; PostgreSQL's is 4 (a timestamp would lose minutes).
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
)


@attrs.define(eq=False)
class PostgresBackend:
    """A PostgreSQL database: a small pool of connections, and one that LISTENs."""

    dsn: str
    where: str
    size: int = POOL_SIZE
    poll_s: float = 0.1
    _idle: list[tuple[Any, float]] = attrs.field(factory=list)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _slots: threading.BoundedSemaphore = attrs.field(
        default=attrs.Factory(lambda self: threading.BoundedSemaphore(self.size), takes_self=True))
    _closing: threading.Event = attrs.field(factory=threading.Event)
    _listen_lock: threading.Lock = attrs.field(factory=threading.Lock)
    _listener: Any = None
    _listen_failures: int = 0
    _listen_retry_at: float = 0.0

    @classmethod
    def open(cls, dsn: str) -> PostgresBackend:
        import psycopg  # noqa: F401 - fail here, at open, when the driver is missing

        backend = cls(dsn, describe_dsn(dsn))
        # Connect once now: a wrong DSN or an unreachable server fails at start-up.
        with backend.connection():
            pass
        return backend

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailableError(f"the PostgreSQL store {self.where} is unreachable: {reason}")

    def _connect(self) -> Any:
        import psycopg

        if self._closing.is_set():
            raise StoreUnavailableError(f"the store {self.where} is closed")
        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                                   application_name="mcp-orch")
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    @staticmethod
    def _alive(conn: Any, used_at: float) -> bool:
        """Whether an idle connection may be reused: not known broken, nothing unasked
        for waiting on its socket (a server that stops or restarts says goodbye to
        idle sessions), and — when idle a while — answering ``SELECT 1``."""
        if conn.closed or conn.broken:
            return False
        try:
            if select.select([conn.fileno()], [], [], 0)[0]:
                return False
            if time.monotonic() - used_at > CHECK_AFTER_S:
                conn.execute("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure: not reusable
            return False
        return True

    def _take(self) -> Any:
        while True:
            with self._lock:
                if not self._idle:
                    break
                conn, used_at = self._idle.pop()
            if self._alive(conn, used_at):
                return conn
            self._drop(conn)
        return self._connect()

    @staticmethod
    def _drop(conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            self._drop(conn)

    def _give_back(self, conn: Any) -> None:
        import psycopg.pq

        if not (conn.closed or conn.broken) and (
                conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE):
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - then it is not reused
                self._drop(conn)
                return
        if conn.closed or conn.broken or self._closing.is_set():
            self._drop(conn)
            return
        with self._lock:
            self._idle.append((conn, time.monotonic()))

    @contextlib.contextmanager
    def connection(self) -> Iterator[Db]:
        """A pooled connection for one call (autocommit; a write opens its transaction).

        Error handling: no free connection within :data:`POOL_WAIT_S`, a server
        that does not answer, or a connection that breaks while in use raise
        :class:`StoreUnavailableError`; other errors pass through and the
        connection goes back to the pool (its transaction rolled back).
        """
        import psycopg

        if not self._slots.acquire(timeout=POOL_WAIT_S):
            raise StoreUnavailableError(
                f"the PostgreSQL store {self.where}: all {self.size} connections busy "
                f"for {POOL_WAIT_S:g} s")
        try:
            conn = self._take()
            try:
                yield _PgDb(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not (conn.closed or conn.broken):
                    self._give_back(conn)
                    raise
                self._drop(conn)
                self._drop_idle()  # they were connected to the same server
                raise self._unavailable(exc) from exc
            except BaseException:
                self._give_back(conn)
                raise
            self._give_back(conn)
        finally:
            self._slots.release()

    def begin(self, db: Db, *, migration: bool = False) -> None:
        db.execute("BEGIN")
        db.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATE_LOCK if migration else _WRITE_LOCK,))

    def rollback(self, db: Db) -> None:
        import psycopg

        # A broken connection has no transaction left to roll back: its error is
        # the one that propagates (``connection`` turns it into "unavailable").
        with contextlib.suppress(psycopg.OperationalError, psycopg.InterfaceError):
            db.execute("ROLLBACK")

    def notify(self, db: Db, channel: str) -> None:
        """Announce the change on ``channel``, delivered when (and only if) it commits."""
        db.execute("SELECT pg_notify(?, '')", (channel,))

    def translate(self, ddl: str) -> str:
        for pattern, replacement in _DDL_TYPES:
            ddl = pattern.sub(replacement, ddl)
        return ddl

    def changes(self, wait_s: float) -> set[str]:
        """Wait up to ``wait_s`` on the LISTEN connection; the channels notified.

        (Re)connecting reports every channel: changes made while nobody listened
        were not heard. A failure drops the connection and backs off (the wait
        returns nothing meanwhile).
        """
        import psycopg

        with self._listen_lock:
            if self._closing.is_set():
                return set()
            if self._listener is None:
                delay = self._listen_retry_at - time.monotonic()
                if delay > 0:
                    self._closing.wait(min(delay, wait_s))
                    return set()
                conn = None
                try:
                    conn = self._connect()
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                except (StoreUnavailableError, psycopg.Error) as exc:
                    if self._listen_failures == 0:
                        log.warning("store notifications lost, reconnecting: %s", exc)
                    backoff = min(LISTEN_BACKOFF_MAX_S,
                                  LISTEN_BACKOFF_INITIAL_S * 2 ** self._listen_failures)
                    self._listen_failures += 1
                    self._listen_retry_at = time.monotonic() + backoff
                    if conn is not None:
                        self._drop(conn)
                    return set()
                if self._listen_failures:
                    log.info("store notifications heard again (%s)", self.where)
                self._listener, self._listen_failures = conn, 0
                return set(CHANNELS)
            try:
                got = {n.channel for n in self._listener.notifies(timeout=wait_s, stop_after=1)}
                if got:  # and whatever else has arrived already
                    got |= {n.channel for n in self._listener.notifies(timeout=0)}
            except psycopg.Error as exc:
                log.warning("store notifications lost, reconnecting: %s", exc)
                self._drop(self._listener)
                self._listener = None
                self._listen_failures = 1
                self._listen_retry_at = time.monotonic() + LISTEN_BACKOFF_INITIAL_S
                return set()
            return got

    def close(self) -> None:
        """Close every connection; a thread waiting in :meth:`changes` returns first."""
        self._closing.set()
        self._drop_idle()
        with self._listen_lock:
            if self._listener is not None:
                self._drop(self._listener)
                self._listener = None
