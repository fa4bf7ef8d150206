"""The embedded store: SQLite in ``state_dir``, holding API keys as hashes only.

Keys are 256-bit random strings (``mcpo_`` + 43 URL-safe characters), shown
once at creation. Only their SHA-256 is stored — a fast hash is right for
high-entropy secrets, and lets every request be checked with one indexed
lookup. A short prefix and a name identify a key afterwards.

The API is synchronous (sqlite3); async code calls it through
``trio.to_thread.run_sync``. A lock serialises use of the one connection,
which is opened with ``check_same_thread=False`` for that reason.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import attrs

KEY_PREFIX = "mcpo_"
SCHEMA_VERSION = 1
_SCHEMA = """
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


@attrs.define(eq=False)
class Store:
    """One SQLite database file; every write is a transaction."""

    path: Path
    _db: sqlite3.Connection
    _lock: threading.Lock = attrs.field(factory=threading.Lock)

    @classmethod
    def open(cls, state_dir: str | Path) -> Store:
        """Open (creating directory, file and schema if needed) ``state_dir/mcp-orch.sqlite3``."""
        directory = Path(state_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "mcp-orch.sqlite3"
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row[0] is None:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                # A database from a newer (or unknown) release: refuse rather than
                # read or write tables whose meaning may have changed.
                raise RuntimeError(
                    f"{path}: schema version {row[0]}, this mcp-orch understands {SCHEMA_VERSION}"
                )
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        db.execute("COMMIT")
        return cls(path, db)

    def close(self) -> None:
        """Close the connection; the store must not be used afterwards."""
        with self._lock:
            self._db.close()

    def create_key(self, project: str, name: str = "default", expires_at: float | None = None) -> str:
        """Create a key for ``project`` and return it; it is not retrievable later."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO api_keys (project, name, prefix, key_hash, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (project, name, key[:12], hash_key(key), time.time(), expires_at),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return key

    def project_for_key(self, key: str) -> str | None:
        """The project of an active key, or ``None`` (unknown, revoked or expired)."""
        with self._lock:
            row = self._db.execute(
                "SELECT project, expires_at, revoked_at FROM api_keys WHERE key_hash = ?",
                (hash_key(key),),
            ).fetchone()
        if row is None:
            return None
        project, expires_at, revoked_at = row
        if revoked_at is not None or (expires_at is not None and expires_at <= time.time()):
            return None
        return project

    def ensure_admin_token(self) -> str | None:
        """Create the admin token on first use; return it then (only then), else ``None``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'admin_token_hash'"
                ).fetchone()
                token = None
                if row is None:
                    token = "mcpo_admin_" + secrets.token_urlsafe(32)
                    self._db.execute(
                        "INSERT INTO meta (key, value) VALUES ('admin_token_hash', ?)",
                        (hash_key(token),),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return token

    def is_admin_token(self, token: str) -> bool:
        """Whether ``token`` is the admin token (constant-time comparison of hashes)."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM meta WHERE key = 'admin_token_hash'"
            ).fetchone()
        return row is not None and hmac.compare_digest(row[0], hash_key(token))

    def active_hashes(self, hashes: set[str]) -> set[str]:
        """Which of these key hashes still belong to active (unrevoked, unexpired) keys."""
        if not hashes:
            return set()
        marks = ",".join("?" * len(hashes))
        with self._lock:
            rows = self._db.execute(
                f"SELECT key_hash FROM api_keys WHERE key_hash IN ({marks}) "
                "AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                (*hashes, time.time()),
            ).fetchall()
        return {row[0] for row in rows}

    def list_keys(self, project: str | None = None) -> list[KeyInfo]:
        """Every key (of ``project``, if given), oldest first, without secrets."""
        query = "SELECT prefix, name, project, created_at, expires_at, revoked_at FROM api_keys"
        args: tuple[str, ...] = ()
        if project is not None:
            query += " WHERE project = ?"
            args = (project,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [KeyInfo(*row) for row in rows]

    def revoke_key(self, prefix: str) -> bool:
        """Revoke the active key(s) with this prefix; ``True`` if one was revoked."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE prefix = ? AND revoked_at IS NULL",
                    (time.time(), prefix),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return cursor.rowcount > 0
