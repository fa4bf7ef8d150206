"""The store: projects, servers, API keys, audit log, the instance registry.

SQLite in ``state_dir`` by default (embedded); PostgreSQL when ``[gateway]
store`` names one (several instances then share it). One API, one schema and
one table of migrations for both; what differs between the engines lives in
``config/store_backends.py``.

Projects and servers live here at run time; the TOML file is applied into
the store declaratively (``apply_declared``: what it declares is created or
updated, what it no longer declares and had created is removed, and what the
CLI or admin API created is left alone). A running gateway notices any
committed change (``data_version``) and applies it.

The schema is versioned; opening a file made by an older version migrates it
in place, in one transaction. WAL journal, foreign keys on, every write a
transaction with an audit row (who, what, when) committed with it: every
write method goes through ``Store._write``, so a change and its audit row
are stored together or not at all. Audit rows name a key by its prefix,
never the key or its hash.

Schema 3 gives a key an optional ``allow`` list (JSON array of globs on the
project endpoint's tool names, narrowing what that key may see and call) and
a project its ``settings`` (JSON: the config file's ``policy`` and ``limits``
tables); keys and projects of older files get none (no narrowing). Inside
``settings``, ``sources`` records which tables the CLI or admin API set
(``Store.update_project_settings``); a table without an entry came from the
config file. The file is declarative for the tables it declares, as for its
servers: ``apply_declared`` sets a declared table back to the file's, removes
a table the file declared before and no longer declares, and leaves a table
the CLI or admin API set alone while the file does not declare it.

Keys are 256-bit random strings (``mcpo_`` + 43 URL-safe characters), shown
once at creation. Only their SHA-256 is stored — a fast hash is right for
high-entropy secrets, and lets every request be checked with one indexed
lookup. A short prefix and a name identify a key afterwards.

Schema 4 adds the instance registry (``instances``: each gateway's id, the
internal address peers forward to, pid, host, start and last heartbeat) and
``meta.cluster_secret`` (signs session ids); neither is audited, nor
announced as a config change.

A committed operator change reaches every instance: on PostgreSQL as a
``NOTIFY`` on ``mcp_orch_changes`` sent by the committing transaction
(instances joining or leaving on ``mcp_orch_instances``), on SQLite by
polling ``data_version``; :meth:`Store.wait_for_change` waits for either.

The API is synchronous (sqlite3, psycopg 3's sync API); async code calls it
through ``trio.to_thread.run_sync``. SQLite: one connection under a lock;
PostgreSQL: a small pool (see ``store_backends``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .errors import AlreadyExistsError as AlreadyExistsError
from .errors import ConfigError
from .errors import NotFoundError as NotFoundError
from .errors import SchemaVersionError as SchemaVersionError
from .errors import StoreError as StoreError
from .errors import StoreUnavailableError as StoreUnavailableError
from .models import env_refs, expand_env
from .store_backends import CHANGES as CHANGES
from .store_backends import INSTANCES as INSTANCES
from .store_backends import Backend, Db, PostgresBackend, SQLiteBackend

if TYPE_CHECKING:
    from .models import GatewaySettings

KEY_PREFIX = "mcpo_"
#: The audit actor of a key write whose caller names none (tests, scripts).
UNATTRIBUTED = "unattributed"
SCHEMA_VERSION = 5
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS api_keys_project ON api_keys(project);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_SCHEMA_V2 = """
CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    auth TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE servers (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    source TEXT NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""
_SCHEMA_V3 = """
ALTER TABLE api_keys ADD COLUMN allow TEXT;
ALTER TABLE projects ADD COLUMN settings TEXT NOT NULL DEFAULT '{}'
"""
_SCHEMA_V4 = """
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    pid INTEGER,
    host TEXT,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL
)
"""
#: The cluster's shared token buckets (``Store.take_tokens``): a rate limit of the
#: project endpoint holds across instances, not once per instance.
_SCHEMA_V5 = """
CREATE TABLE rate_buckets (
    name TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    stamp REAL NOT NULL
)
"""
#: Migration scripts by the version they lead to; version 1 is the first schema.
#: One table for both backends: written in SQLite's dialect, the PostgreSQL
#: backend translates the few type names that differ (``store_backends``).
MIGRATIONS = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5}


def _migrate(backend: Backend) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION` in one transaction (serialised
    against other processes migrating the same database)."""
    with backend.connection() as db:
        backend.begin(db, migration=True)
        try:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > SCHEMA_VERSION:
                # A database from a newer release: refuse rather than read or write
                # tables whose meaning may have changed.
                raise SchemaVersionError(
                    f"{backend.where}: schema version {current}, this mcp-orch understands "
                    f"up to {SCHEMA_VERSION}"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version].strip().split(";"):
                    if statement.strip():
                        db.execute(backend.translate(statement))
                db.execute("DELETE FROM schema_version")
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        except BaseException:
            backend.rollback(db)
            raise
        db.execute("COMMIT")


def open_store(settings: GatewaySettings, source: str | None = None) -> Store:
    """The store the ``[gateway]`` settings name: ``store`` (a ``postgresql://``
    DSN, ``${VAR}`` expanded from the environment) or SQLite in ``state_dir``.

    Error handling: an unset variable or a value that is not a PostgreSQL URL
    raises ``ConfigError`` naming ``source`` and ``gateway.store``; an
    unreachable server :class:`StoreUnavailableError`.
    """
    if settings.store is None:
        return Store.open(settings.state_dir)
    return Store.open(settings.state_dir,
                      dsn=store_dsn(settings.store, os.environ, source or "config"))


#: The DSN schemes ``[gateway] store`` accepts.
DSN_SCHEMES = ("postgresql://", "postgres://")


def store_dsn(value: str, environ: Any, source: str = "config") -> str:
    """``[gateway] store`` with ``${VAR}`` expanded, checked to be a PostgreSQL URL."""
    try:
        names = env_refs(value)
    except ValueError as exc:
        raise ConfigError.at(source, "gateway.store", str(exc)) from None
    missing = [name for name in names if name not in environ]
    if missing:
        raise ConfigError.at(source, "gateway.store", f"refers to ${{{missing[0]}}}, which is "
                             "not set in the gateway's environment")
    dsn = expand_env({"store": value}, environ, "gateway")["store"]
    if not dsn.startswith(DSN_SCHEMES):
        raise ConfigError.at(source, "gateway.store",
                             "expected a postgresql:// URL (or unset for SQLite in state_dir), "
                             f"got {dsn.partition('://')[0] or 'no scheme'}://…")
    return dsn


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for a key (or token) instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


@attrs.frozen
class KeyInfo:
    """What may be shown of a key after creation: never the secret or its hash."""

    prefix: str
    name: str
    project: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    #: Globs on exposed tool names this key is narrowed to; ``None``: not narrowed.
    allow: tuple[str, ...] | None = None


def _allow_from(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


@attrs.frozen
class ServerRow:
    """A server as stored: its table in the config-file format (``spec``) and where it came from."""

    project: str
    name: str
    spec: dict[str, Any]
    source: str


@attrs.frozen
class ProjectRow:
    """A project as stored."""

    id: int
    name: str
    auth: str
    source: str
    #: The project's ``policy`` and ``limits`` tables (``config.loading.project_settings``).
    settings: dict[str, Any] = attrs.field(factory=dict)
    #: Who set each table of ``settings``: ``"config"`` (the file) or ``"api"`` (the CLI
    #: or the admin API).
    settings_source: dict[str, str] = attrs.field(factory=dict)


#: The tables of a project's ``settings``.
SETTINGS_TABLES = ("policy", "limits")


def _split_settings(text: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A ``settings`` column: its tables, and who set each (absent from ``sources``: the file)."""
    settings = json.loads(text)
    sources = settings.pop("sources", {})
    return settings, {table: sources.get(table, "config") for table in settings}


def _join_settings(settings: dict[str, Any], source: dict[str, str]) -> str:
    """The inverse of :func:`_split_settings` (only non-file sources are written)."""
    data = dict(settings)
    sources = {t: s for t, s in source.items() if t in settings and s != "config"}
    if sources:
        data["sources"] = sources
    return json.dumps(data, sort_keys=True)


@attrs.frozen
class AuditEntry:
    """One management action: who did what to which target, when."""

    at: float
    actor: str
    action: str
    target: str
    detail: str


@attrs.frozen
class InstanceRow:
    """A gateway instance in the registry: where peers forward to, and when it was heard of
    (``time.time()`` of the instance's own clock)."""

    id: str
    address: str
    pid: int | None
    host: str | None
    started_at: float
    last_seen: float


@attrs.define(eq=False)
class _Change:
    """A write in progress (see :meth:`Store._write`): the connection, and the audit detail."""

    db: Db
    detail: str
    audited: bool = True

    def nothing_changed(self) -> None:
        """The write turned out to change nothing: no audit row."""
        self.audited = False


@attrs.define(eq=False)
class Store:
    """The store on one database (SQLite file or PostgreSQL); every write is a transaction.

    Open it with :func:`open_store` (from the ``[gateway]`` settings) or
    :meth:`open`. Blocking: async code calls it through ``trio.to_thread``.
    """

    #: The SQLite file, or the PostgreSQL server and database (no password).
    path: Path | str
    _backend: Backend
    _cond: threading.Condition = attrs.field(factory=threading.Condition)
    #: Channels notified and not yet reported by :meth:`wait_for_change`.
    _pending: set[str] = attrs.field(factory=set)
    _reading: bool = False
    _closed: bool = False

    @classmethod
    def open(cls, state_dir: str | Path, dsn: str | None = None) -> Store:
        """Open the store, creating and migrating its schema as needed.

        Without ``dsn``: ``state_dir/mcp-orch.sqlite3`` (directory and file created
        if missing). With a ``postgresql://`` DSN: that database (it must exist;
        ``state_dir`` is still made, for the pid file).

        Error handling: a PostgreSQL server that cannot be reached raises
        :class:`StoreUnavailableError`; a schema newer than this release
        :class:`SchemaVersionError`.
        """
        backend: Backend
        directory = Path(state_dir)
        # Made with either backend: the pid file lives there too.
        directory.mkdir(parents=True, exist_ok=True)
        if dsn is not None:
            backend = PostgresBackend.open(dsn)
            path: Path | str = backend.where
        else:
            path = directory / "mcp-orch.sqlite3"
            backend = SQLiteBackend.open(path)
        try:
            _migrate(backend)
        except BaseException:
            backend.close()
            raise
        return cls(path, backend)

    @contextlib.contextmanager
    def _write(self, actor: str, action: str, target: str, detail: str = "") -> Iterator[_Change]:
        """The one way to write: a transaction whose audit row is part of the same commit.

        Opens a write transaction (``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL
        one holding the store's advisory lock, so writers are serialised
        across instances alike), runs the body with a :class:`_Change` (its
        ``db`` to write through), then inserts the audit row (``actor``,
        ``action``, ``target``, and the change's ``detail``, which the body
        may refine), announces the change to other instances (PostgreSQL
        ``NOTIFY``, sent at commit) and commits.

        Error handling: any exception from the body — or from the audit
        insert — rolls everything back and propagates, so a failed write
        leaves neither its change nor an audit row. A body that finds
        nothing to do calls :meth:`_Change.nothing_changed`: it commits
        without an audit row (and announces nothing).
        """
        with self._backend.connection() as db:
            self._backend.begin(db)
            try:
                change = _Change(db, detail)
                yield change
                if change.audited:
                    db.execute(
                        "INSERT INTO audit (at, actor, action, target, detail) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (time.time(), actor, action, target, change.detail),
                    )
                    self._backend.notify(db, CHANGES)
            except BaseException:
                self._backend.rollback(db)
                raise
            db.execute("COMMIT")

    @contextlib.contextmanager
    def _transaction(self, notify: str | None = None) -> Iterator[Db]:
        """An unaudited write (the instance registry): a transaction, ``notify``
        announced on commit when given."""
        with self._backend.connection() as db:
            self._backend.begin(db)
            try:
                yield db
                if notify is not None:
                    self._backend.notify(db, notify)
            except BaseException:
                self._backend.rollback(db)
                raise
            db.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite ``PRAGMA data_version``).

        SQLite only; :meth:`wait_for_change` works on both backends.
        """
        if not isinstance(self._backend, SQLiteBackend):
            raise StoreError(f"{self.path}: data_version is SQLite's; use wait_for_change")
        return self._backend.data_version()

    def wait_for_change(self, timeout_s: float, channel: str = CHANGES) -> bool:
        """Block up to ``timeout_s`` for a change committed by anyone; ``True`` if one came.

        ``channel``: :data:`CHANGES` (projects, servers, keys, settings — every
        audited write) or :data:`INSTANCES` (an instance registered or removed).
        On PostgreSQL a change arrives by ``NOTIFY`` at once, from every
        instance and the CLI (this process's writes included); on SQLite by
        polling ``data_version`` every 0.1 s (other connections' commits only).
        A change is reported once, to one waiter: use one waiter per channel.
        ``True`` also when the notification connection came back after a loss
        (what happened meanwhile was not heard: re-read).

        Resource handling: returns within about 0.1 s of :meth:`close`, so a
        thread left waiting (``abandon_on_cancel``) ends with the store.
        Error handling: never raises for an unreachable server; it waits and
        reconnects with backoff (and returns ``False`` meanwhile).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cond:
                if channel in self._pending:
                    self._pending.discard(channel)
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                if self._reading:
                    self._cond.wait(remaining)
                    continue
                self._reading = True
            got: set[str] = set()
            try:
                got = self._backend.changes(min(remaining, self._backend.poll_s))
            finally:
                with self._cond:
                    self._reading = False
                    self._pending |= got
                    self._cond.notify_all()

    # -- projects and servers --------------------------------------------------
    def projects(self) -> list[ProjectRow]:
        with self._backend.connection() as db:
            rows = db.execute(
                "SELECT id, name, auth, source, settings FROM projects ORDER BY name")
            return [ProjectRow(*row[:4], *_split_settings(row[4])) for row in rows.fetchall()]

    def update_project_settings(
        self, project: str, table: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None], *, actor: str,
        source: str = "api",
    ) -> dict[str, Any] | None:
        """Replace one table (``policy`` or ``limits``) of a project's settings; returns it.

        ``change`` gets the table as stored (``None``: not set) and returns the
        new one (``None`` or empty: remove it); it runs inside the transaction,
        so a read-modify-write (the CLI changing one field) cannot interleave
        with another writer. The audit row is ``project.policy`` or
        ``project.limits``, its target the project, its detail the new table.
        A table written here is marked as set by ``source`` (see the module
        docstring for how a config apply treats it).

        Error handling: an unknown project raises :class:`NotFoundError`; an
        exception from ``change`` (a ``ConfigError`` from validation) rolls the
        transaction back and propagates. A change that leaves the table as
        it was commits no audit row.
        """
        if table not in SETTINGS_TABLES:
            raise ValueError(f"no settings table {table!r}")
        with self._write(actor, f"project.{table}", project) as write:
            row = write.db.execute(
                "SELECT settings FROM projects WHERE name = ?", (project,)).fetchone()
            if row is None:
                raise NotFoundError(f"no project {project!r}")
            settings, sources = _split_settings(row[0])
            after = change(settings.get(table)) or None
            if after is None:
                settings.pop(table, None)
            else:
                settings[table] = after
                sources[table] = source
            text = _join_settings(settings, sources)
            write.detail = json.dumps(after or {}, sort_keys=True)
            if text == row[0]:
                write.nothing_changed()
            else:
                write.db.execute("UPDATE projects SET settings = ? WHERE name = ?",
                                 (text, project))
        return after

    def servers(self, project: str | None = None) -> list[ServerRow]:
        query = ("SELECT p.name, s.name, s.spec, s.source FROM servers s "
                 "JOIN projects p ON p.id = s.project_id")
        args: tuple[str, ...] = ()
        if project is not None:
            query += " WHERE p.name = ?"
            args = (project,)
        with self._backend.connection() as db:
            rows = db.execute(query + " ORDER BY p.name, s.name", args).fetchall()
        return [ServerRow(p, n, json.loads(spec), src) for p, n, spec, src in rows]

    @staticmethod
    def _upsert_server(
        db: Db, project_id: int, name: str, text: str, source: str
    ) -> None:
        db.execute(
            "INSERT INTO servers (project_id, name, spec, source, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (project_id, name) DO UPDATE SET "
            "spec = excluded.spec, source = excluded.source, updated_at = excluded.updated_at",
            (project_id, name, text, source, time.time()),
        )

    def _project_id(self, db: Db, name: str) -> int:
        row = db.execute("SELECT id FROM projects WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no project {name!r}")
        return row[0]

    def create_project(self, name: str, auth: str, *, actor: str, source: str = "api") -> None:
        with self._write(actor, "project.create", name, f"auth={auth}") as change:
            db = change.db
            if db.execute("SELECT 1 FROM projects WHERE name = ?", (name,)).fetchone():
                raise AlreadyExistsError(f"project {name!r} already exists")
            db.execute(
                "INSERT INTO projects (name, auth, source, created_at) VALUES (?, ?, ?, ?)",
                (name, auth, source, time.time()),
            )

    def delete_project(self, name: str, *, actor: str) -> None:
        """Delete a project, its servers, and revoke its keys."""
        with self._write(actor, "project.delete", name) as change:
            db = change.db
            self._project_id(db, name)
            db.execute("DELETE FROM projects WHERE name = ?", (name,))
            db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE project = ? AND revoked_at IS NULL",
                (time.time(), name),
            )

    def put_server(
        self, project: str, name: str, spec: dict[str, Any], *, actor: str, source: str = "api",
        create_only: bool = False,
    ) -> str:
        """Create or replace a server's spec; returns ``created``, ``updated`` or ``unchanged``."""
        text = json.dumps(spec, sort_keys=True)
        with self._write(actor, "server.put", f"{project}/{name}", text) as change:
            db = change.db
            project_id = self._project_id(db, project)
            row = db.execute(
                "SELECT spec FROM servers WHERE project_id = ? AND name = ?", (project_id, name)
            ).fetchone()
            if row is not None and create_only:
                raise AlreadyExistsError(f"server {project}/{name} already exists")
            if row is not None and row[0] == text:
                return "unchanged"
            self._upsert_server(db, project_id, name, text, source)
            return "created" if row is None else "updated"

    def remove_server(self, project: str, name: str, *, actor: str) -> None:
        with self._write(actor, "server.remove", f"{project}/{name}") as change:
            db = change.db
            project_id = self._project_id(db, project)
            cursor = db.execute(
                "DELETE FROM servers WHERE project_id = ? AND name = ?", (project_id, name)
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no server {project}/{name}")

    def set_enabled(self, project: str, name: str, enabled: bool, *, actor: str) -> None:
        action = "server.enable" if enabled else "server.disable"
        with self._write(actor, action, f"{project}/{name}") as change:
            db = change.db
            project_id = self._project_id(db, project)
            row = db.execute(
                "SELECT spec FROM servers WHERE project_id = ? AND name = ?", (project_id, name)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no server {project}/{name}")
            spec = json.loads(row[0])
            spec["enabled"] = enabled
            db.execute(
                "UPDATE servers SET spec = ?, updated_at = ? WHERE project_id = ? AND name = ?",
                (json.dumps(spec, sort_keys=True), time.time(), project_id, name),
            )

    def import_servers(
        self, project: str, specs: dict[str, dict[str, Any]], *, actor: str
    ) -> dict[str, str]:
        """Create or update several servers in one transaction: all of them or none."""
        result: dict[str, str] = {}
        with self._write(actor, "server.import", project, ", ".join(sorted(specs))) as change:
            db = change.db
            project_id = self._project_id(db, project)
            for name, spec in specs.items():
                text = json.dumps(spec, sort_keys=True)
                row = db.execute(
                    "SELECT spec FROM servers WHERE project_id = ? AND name = ?",
                    (project_id, name),
                ).fetchone()
                if row is not None and row[0] == text:
                    result[name] = "unchanged"
                    continue
                self._upsert_server(db, project_id, name, text, "api")
                result[name] = "created" if row is None else "updated"
        return result

    def apply_declared(
        self, projects: dict[str, tuple[Any, ...]], *, actor: str
    ) -> list[str]:
        """Make the store hold what a config file declares; returns the changes made.

        ``projects`` maps a name to (auth, {server name: spec}) or (auth, {server
        name: spec}, settings) — settings being the ``policy`` and ``limits``
        tables (``config.loading.project_settings``; absent: none). What the file
        declares is created or updated; what it created before and no longer
        declares is removed; what the CLI or admin API created is left alone.
        The same goes for each settings table: one the file declares is set back
        to the file's even when the CLI or admin API changed it since.
        """
        changes: list[str] = []
        with self._write(actor, "apply", "config") as change:
            db = change.db
            existing = {name: (pid, auth, source, settings)
                        for pid, name, auth, source, settings in db.execute(
                            "SELECT id, name, auth, source, settings FROM projects").fetchall()}
            for name, declared in projects.items():
                auth, servers = declared[0], declared[1]
                declared_settings = declared[2] if len(declared) > 2 else {}
                if name not in existing:
                    db.execute(
                        "INSERT INTO projects (name, auth, source, created_at, settings) "
                        "VALUES (?, ?, 'config', ?, ?)",
                        (name, auth, time.time(), _join_settings(declared_settings, {})))
                    changes.append(f"created project {name}")
                else:
                    if existing[name][1] != auth:
                        db.execute("UPDATE projects SET auth = ? WHERE name = ?", (auth, name))
                        changes.append(f"updated project {name} (auth = {auth})")
                    settings, sources = _split_settings(existing[name][3])
                    for table in SETTINGS_TABLES:
                        if table in declared_settings:  # the file's, whoever set it since
                            settings[table] = declared_settings[table]
                            sources[table] = "config"
                        elif sources.get(table) == "config":  # the file's, no longer declared
                            del settings[table]
                    text = _join_settings(settings, sources)
                    if existing[name][3] != text:
                        db.execute("UPDATE projects SET settings = ? WHERE name = ?",
                                   (text, name))
                        shown = json.dumps(settings, sort_keys=True)
                        changes.append(f"updated project {name} (policy and limits: {shown})")
                project_id = self._project_id(db, name)
                stored = {n: (spec, src) for n, spec, src in db.execute(
                    "SELECT name, spec, source FROM servers WHERE project_id = ?",
                    (project_id,)).fetchall()}
                for server, spec in servers.items():
                    text = json.dumps(spec, sort_keys=True)
                    if server in stored and stored[server][0] == text:
                        continue
                    self._upsert_server(db, project_id, server, text, "config")
                    verb = "updated" if server in stored else "created"
                    changes.append(f"{verb} server {name}/{server}")
                for server, (_, source) in stored.items():
                    if source == "config" and server not in servers:
                        db.execute("DELETE FROM servers WHERE project_id = ? AND name = ?",
                                   (project_id, server))
                        changes.append(f"removed server {name}/{server}")
            for name, (_, _, source, _) in existing.items():
                if source == "config" and name not in projects:
                    db.execute("DELETE FROM projects WHERE name = ?", (name,))
                    changes.append(f"removed project {name}")
        return changes

    def record(self, actor: str, action: str, target: str, detail: str = "") -> None:
        """An audit row for an action that changes no table (a restart, a session ended,
        a console sign-in)."""
        with self._write(actor, action, target, detail):
            pass

    def prefixes_of(self, hashes: set[str]) -> dict[str, str]:
        """The prefix of each key whose hash is in ``hashes`` (to show which key a session uses)."""
        if not hashes:
            return {}
        marks = ",".join("?" * len(hashes))
        with self._backend.connection() as db:
            rows = db.execute(
                f"SELECT key_hash, prefix FROM api_keys WHERE key_hash IN ({marks})", (*hashes,)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        with self._backend.connection() as db:
            rows = db.execute(
                "SELECT at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [AuditEntry(*row) for row in rows]

    def close(self) -> None:
        """Close the connections; the store must not be used afterwards. A thread
        waiting in :meth:`wait_for_change` returns (``False``) first."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._backend.close()

    def create_key(
        self, project: str, name: str = "default", expires_at: float | None = None, *,
        actor: str = UNATTRIBUTED, allow: tuple[str, ...] | list[str] | None = None,
    ) -> str:
        """Create a key for ``project`` and return it; it is not retrievable later.

        ``allow`` narrows the key to tools whose exposed names match one of
        these globs (within the project's own policy); ``None`` does not narrow.
        The audit row (``key.create``) names the key by its prefix, never more,
        and records its ``allow`` list (a policy change).
        """
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        prefix = key[:12]
        detail = f"project={project} name={name}"
        if expires_at is not None:
            detail += f" expires_at={expires_at:.0f}"
        allow_text = None if allow is None else json.dumps(list(allow))
        if allow_text is not None:
            detail += f" allow={allow_text}"
        with self._write(actor, "key.create", prefix, detail) as change:
            change.db.execute(
                "INSERT INTO api_keys (project, name, prefix, key_hash, created_at, expires_at,"
                " allow) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (project, name, prefix, hash_key(key), time.time(), expires_at, allow_text),
            )
        return key

    def key_allow(self, key_hash: str) -> tuple[str, ...] | None:
        """The ``allow`` list of the key with this hash (``None``: not narrowed, or no key)."""
        with self._backend.connection() as db:
            row = db.execute(
                "SELECT allow FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
        return None if row is None else _allow_from(row[0])

    def project_for_key(self, key: str) -> str | None:
        """The project of an active key, or ``None`` (unknown, revoked or expired)."""
        with self._backend.connection() as db:
            row = db.execute(
                "SELECT project, expires_at, revoked_at FROM api_keys WHERE key_hash = ?",
                (hash_key(key),),
            ).fetchone()
        if row is None:
            return None
        project, expires_at, revoked_at = row
        if revoked_at is not None or (expires_at is not None and expires_at <= time.time()):
            return None
        return project

    def ensure_admin_token(self, *, actor: str = "gateway") -> str | None:
        """Create the admin token on first use; return it then (only then), else ``None``.

        Its creation is audited (``admin_token.create``), without the token.
        """
        token = None
        with self._write(actor, "admin_token.create", "admin") as change:
            row = change.db.execute(
                "SELECT value FROM meta WHERE key = 'admin_token_hash'"
            ).fetchone()
            if row is not None:
                change.nothing_changed()
            else:
                token = "mcpo_admin_" + secrets.token_urlsafe(32)
                change.db.execute(
                    "INSERT INTO meta (key, value) VALUES ('admin_token_hash', ?)",
                    (hash_key(token),),
                )
        return token

    def is_admin_token(self, token: str) -> bool:
        """Whether ``token`` is the admin token (constant-time comparison of hashes)."""
        with self._backend.connection() as db:
            row = db.execute(
                "SELECT value FROM meta WHERE key = 'admin_token_hash'"
            ).fetchone()
        return row is not None and hmac.compare_digest(row[0], hash_key(token))

    def active_hashes(self, hashes: set[str]) -> set[str]:
        """Which of these key hashes still belong to active (unrevoked, unexpired) keys."""
        if not hashes:
            return set()
        marks = ",".join("?" * len(hashes))
        with self._backend.connection() as db:
            rows = db.execute(
                f"SELECT key_hash FROM api_keys WHERE key_hash IN ({marks}) "
                "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                (*hashes, time.time()),
            ).fetchall()
        return {row[0] for row in rows}

    def list_keys(self, project: str | None = None) -> list[KeyInfo]:
        """Every key (of ``project``, if given), oldest first, without secrets."""
        query = ("SELECT prefix, name, project, created_at, expires_at, revoked_at, allow "
                 "FROM api_keys")
        args: tuple[str, ...] = ()
        if project is not None:
            query += " WHERE project = ?"
            args = (project,)
        with self._backend.connection() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [KeyInfo(*row[:6], _allow_from(row[6])) for row in rows]

    def revoke_key(self, prefix: str, *, actor: str = UNATTRIBUTED) -> bool:
        """Revoke the active key(s) with this prefix; ``True`` if one was revoked.

        The audit row (``key.revoke``, target the prefix) names the project
        and name of each key revoked; revoking nothing writes no row.
        """
        with self._write(actor, "key.revoke", prefix) as change:
            revoked = change.db.execute(
                "SELECT project, name FROM api_keys WHERE prefix = ? AND revoked_at IS NULL "
                "ORDER BY id", (prefix,),
            ).fetchall()
            if not revoked:
                change.nothing_changed()
            else:
                change.db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                    (time.time(), prefix),
                )
                change.detail = ", ".join(f"project={p} name={n}" for p, n in revoked)
        return bool(revoked)

    # -- the instance registry (unaudited: instances, not operators, write it) ---------
    def register_instance(self, instance_id: str, address: str) -> None:
        """Enter (or re-enter) this instance: its id, the internal base URL peers
        forward to, pid and host name; ``started_at`` and ``last_seen`` now.
        Announced on :data:`INSTANCES` (peers learn of it at once)."""
        now = time.time()
        with self._transaction(notify=INSTANCES) as db:
            db.execute(
                "INSERT INTO instances (id, address, pid, host, started_at, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "address = excluded.address, pid = excluded.pid, host = excluded.host, "
                "started_at = excluded.started_at, last_seen = excluded.last_seen",
                (instance_id, address, os.getpid(), socket.gethostname(), now, now),
            )

    def heartbeat_instance(self, instance_id: str, address: str) -> None:
        """``last_seen`` = now; a row that vanished (pruned while this instance was
        cut off) is registered again at ``address``. Not announced."""
        with self._backend.connection() as db:
            updated = db.execute(
                "UPDATE instances SET last_seen = ? WHERE id = ?", (time.time(), instance_id),
            ).rowcount
        if not updated:
            self.register_instance(instance_id, address)

    def instances(self) -> list[InstanceRow]:
        """Every registered instance, by id (the dead too, until pruned or removed)."""
        with self._backend.connection() as db:
            rows = db.execute(
                "SELECT id, address, pid, host, started_at, last_seen FROM instances "
                "ORDER BY id").fetchall()
        return [InstanceRow(*row) for row in rows]

    def remove_instance(self, instance_id: str) -> None:
        """Leave the registry (a clean shutdown); announced on :data:`INSTANCES`."""
        with self._transaction(notify=INSTANCES) as db:
            db.execute("DELETE FROM instances WHERE id = ?", (instance_id,))

    def prune_instances(self, older_than_s: float) -> int:
        """Remove the instances not heard of for ``older_than_s``; how many were."""
        with self._transaction() as db:
            return db.execute("DELETE FROM instances WHERE last_seen < ?",
                              (time.time() - older_than_s,)).rowcount

    def take_tokens(self, buckets: Sequence[tuple[str, float, float]], n: int
                    ) -> tuple[int, float] | None:
        """Take ``n`` tokens from every bucket (name, tokens per second, burst), or none.

        ``None`` when taken; else (the index of a bucket short of tokens, the
        seconds until it has them) and nothing taken. A bucket starts full and
        refills at its rate up to its burst (as ``actors.policy.TokenBucket``);
        one transaction (serialised with every other writer), so instances
        sharing the store share the buckets. Time is the caller's ``time.time()``.
        """
        now = time.time()
        with self._transaction() as db:
            state: list[tuple[float, bool]] = []
            for name, rate, burst in buckets:
                row = db.execute("SELECT tokens, stamp FROM rate_buckets WHERE name = ?",
                                 (name,)).fetchone()
                if row is None:
                    state.append((float(burst), False))
                else:
                    tokens, stamp = row
                    state.append((min(burst, tokens + max(0.0, now - stamp) * rate), True))
            for index, ((_, rate, _), (tokens, _)) in enumerate(zip(buckets, state, strict=True)):
                if tokens < n:
                    return index, (n - tokens) / rate
            for (name, _, _), (tokens, known) in zip(buckets, state, strict=True):
                if known:
                    db.execute("UPDATE rate_buckets SET tokens = ?, stamp = ? WHERE name = ?",
                               (tokens - n, now, name))
                else:
                    db.execute("INSERT INTO rate_buckets (name, tokens, stamp) VALUES (?, ?, ?)",
                               (name, tokens - n, now))
        return None

    def cluster_secret(self) -> bytes:
        """The cluster's 32-byte secret (it signs session ids), made by the first caller.

        Race-safe across processes and instances: every caller offers a fresh
        random value (``ON CONFLICT DO NOTHING``) and then reads the one stored,
        so all of them get the first writer's.
        """
        with self._transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('cluster_secret', ?) "
                       "ON CONFLICT (key) DO NOTHING", (secrets.token_hex(32),))
            row = db.execute("SELECT value FROM meta WHERE key = 'cluster_secret'").fetchone()
        return bytes.fromhex(row[0])
