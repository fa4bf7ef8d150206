"""Key store: keys work until revoked or expired, only hashes reach disk, data survives reopening.

Tests taking ``store`` or ``store_target`` run on both backends (SQLite and a
real PostgreSQL, ``tests/support/postgres.py``); those reading the SQLite file
itself run on SQLite only.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

from config import AlreadyExistsError, NotFoundError, SchemaVersionError, Store, StoreError
from config.store import MIGRATIONS, SCHEMA_VERSION, KeyInfo
from tests.support.postgres import StoreTarget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Store]:
    s = store_target.open()
    yield s
    s.close()


def raw_execute(target: StoreTarget, sql: str) -> None:
    """Run ``sql`` on the target's database behind the store's back."""
    if target.dsn is None:
        with sqlite3.connect(target.state_dir / "mcp-orch.sqlite3") as db:
            db.execute(sql)
    else:
        with psycopg.connect(target.dsn, autocommit=True) as db:
            db.execute(sql)


#: What a NOT NULL violation raises, by backend (the driver's own error passes through).
INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


def test_create_lookup_revoke(store: Store) -> None:
    key = store.create_key("demo", name="ci")
    assert re.fullmatch(r"mcpo_[A-Za-z0-9_-]{43}", key), key  # 32 random bytes = 256 bits
    assert store.project_for_key(key) == "demo"
    assert store.project_for_key(key + "x") is None
    assert store.project_for_key("mcpo_" + "A" * 43) is None
    assert store.project_for_key("") is None

    assert store.revoke_key(key[:12]) is True
    assert store.project_for_key(key) is None
    assert store.revoke_key(key[:12]) is False  # already revoked
    assert store.revoke_key("mcpo_nothing") is False


def test_keys_are_distinct_and_per_project(store: Store) -> None:
    a = store.create_key("alpha")
    b = store.create_key("beta")
    assert a != b
    assert store.project_for_key(a) == "alpha"
    assert store.project_for_key(b) == "beta"


def test_expired_key_is_refused(store: Store) -> None:
    expired = store.create_key("demo", expires_at=time.time() - 1)
    valid = store.create_key("demo", expires_at=time.time() + 3600)
    assert store.project_for_key(expired) is None
    assert store.project_for_key(valid) == "demo"


def test_only_the_hash_is_stored(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.open(state)
    key = store.create_key("demo")
    with sqlite3.connect(state / "mcp-orch.sqlite3") as db:
        rows = db.execute("SELECT project, prefix, key_hash FROM api_keys").fetchall()
    assert rows == [("demo", key[:12], hashlib.sha256(key.encode()).hexdigest())]

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in state.iterdir() if p.is_file())

    secret = key[12:].encode()  # the part not shown as the prefix
    assert secret not in on_disk()  # while open (WAL file included)
    store.close()
    data = on_disk()
    assert hashlib.sha256(key.encode()).hexdigest().encode() in data
    assert key.encode() not in data
    assert secret not in data


def test_reopening_keeps_keys_and_revocations(store_target: StoreTarget) -> None:
    store = store_target.open()
    kept = store.create_key("demo")
    revoked = store.create_key("demo", name="old")
    store.revoke_key(revoked[:12])
    store.close()

    again = store_target.open()
    try:
        assert again.project_for_key(kept) == "demo"
        assert again.project_for_key(revoked) is None
        assert [k.name for k in again.list_keys()] == ["default", "old"]
    finally:
        again.close()


def test_schema_wal_and_version(tmp_path: Path) -> None:
    Store.open(tmp_path / "new" / "nested").close()  # creates missing directories
    path = tmp_path / "new" / "nested" / "mcp-orch.sqlite3"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        columns = [row[1] for row in db.execute("PRAGMA table_info(api_keys)")]
    assert columns == [
        "id",
        "project",
        "name",
        "prefix",
        "key_hash",
        "created_at",
        "expires_at",
        "revoked_at",
        "allow",
    ]
    Store.open(tmp_path / "new" / "nested").close()  # reopening does not add a version row
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(store_target: StoreTarget) -> None:
    store_target.open().close()
    raw_execute(store_target, "UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        store_target.open()


def test_list_keys_never_shows_secrets(store: Store) -> None:
    before = time.time()
    key = store.create_key("alpha", name="laptop")
    store.create_key("beta", name="ci", expires_at=before + 60)
    infos = store.list_keys()
    assert [(k.project, k.name, k.prefix) for k in infos] == [
        ("alpha", "laptop", key[:12]),
        ("beta", "ci", infos[1].prefix),
    ]
    assert infos[0].created_at >= before
    assert infos[0].expires_at is None and infos[0].revoked_at is None
    assert infos[1].expires_at == before + 60
    assert [k.name for k in store.list_keys("beta")] == ["ci"]
    assert store.list_keys("nobody") == []
    fields = {f.name for f in attrs.fields(KeyInfo)}
    assert fields == {"prefix", "name", "project", "created_at", "expires_at", "revoked_at",
                      "allow"}
    store.revoke_key(key[:12])
    assert store.list_keys("alpha")[0].revoked_at is not None


def test_admin_token_created_once(store: Store) -> None:
    token = store.ensure_admin_token()
    assert token is not None
    assert store.ensure_admin_token() is None
    assert store.is_admin_token(token)
    assert not store.is_admin_token(token + "x")
    assert store.project_for_key(token) is None  # not an API key


async def test_usable_from_trio_worker_threads(store: Store) -> None:
    keys: list[str] = []

    async def create(i: int) -> None:
        keys.append(await trio.to_thread.run_sync(store.create_key, f"p{i}"))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(create, i)
    assert len(set(keys)) == 20
    projects = [await trio.to_thread.run_sync(store.project_for_key, k) for k in keys]
    assert sorted(projects) == sorted(f"p{i}" for i in range(20))


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    fixture = json.loads((FIXTURES / "store-v1.json").read_text())
    shutil.copy(FIXTURES / "store-v1.sqlite3", tmp_path / "mcp-orch.sqlite3")
    store = Store.open(tmp_path)
    try:
        assert store.project_for_key(fixture["active_key"]) == "demo"  # keys survive
        assert store.project_for_key(fixture["revoked_key"]) is None
        store.create_project("demo", "api-key", actor="test")  # the new tables exist
        store.put_server("demo", "s", {"command": "x"}, actor="test")
        assert [r.name for r in store.servers("demo")] == ["s"]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "mcp-orch.sqlite3") as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_projects_servers_and_audit(store: Store) -> None:
    store.create_project("p", "api-key", actor="alice")
    with pytest.raises(StoreError, match="already exists"):
        store.create_project("p", "none", actor="alice")
    assert store.put_server("p", "a", {"command": "x"}, actor="alice") == "created"
    assert store.put_server("p", "a", {"command": "x"}, actor="alice") == "unchanged"
    assert store.put_server("p", "a", {"command": "y"}, actor="bob") == "updated"
    store.set_enabled("p", "a", False, actor="bob")
    assert store.servers("p")[0].spec == {"command": "y", "enabled": False}
    with pytest.raises(StoreError, match="no server"):
        store.remove_server("p", "zzz", actor="bob")
    key = store.create_key("p")
    store.delete_project("p", actor="carol")
    assert store.servers() == [] and store.projects() == []
    assert store.project_for_key(key) is None  # a deleted project's keys are revoked
    actions = [(e.actor, e.action, e.target) for e in store.audit_log()]
    assert actions[0] == ("carol", "project.delete", "p")
    assert ("alice", "project.create", "p") in actions


def test_import_is_all_or_nothing(store: Store) -> None:
    store.create_project("p", "api-key", actor="t")
    with pytest.raises(StoreError):
        store.import_servers("nope", {"a": {"command": "x"}}, actor="t")
    assert store.import_servers("p", {"a": {"command": "x"}, "b": {"url": "http://h/mcp"}},
                                actor="t") == {"a": "created", "b": "created"}


def test_apply_declared_leaves_api_servers_alone(store: Store) -> None:
    declared = {"p": ("api-key", {"from-file": {"command": "x"}})}
    assert store.apply_declared(declared, actor="t") == [
        "created project p", "created server p/from-file"]
    store.put_server("p", "from-cli", {"command": "y"}, actor="t")
    assert store.apply_declared(declared, actor="t") == []
    assert store.apply_declared({"p": ("api-key", {})}, actor="t") == [
        "removed server p/from-file"]
    assert [s.name for s in store.servers("p")] == ["from-cli"]


def _audit_rows(state: Path) -> list[tuple[Any, ...]]:
    """Every audit row as stored on disk, every column."""
    with sqlite3.connect(state / "mcp-orch.sqlite3") as db:
        return db.execute("SELECT * FROM audit ORDER BY id").fetchall()


def test_key_create_and_revoke_are_audited_by_prefix_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.open(state)
    try:
        key = store.create_key("demo", "ci", actor="alice")
        assert store.revoke_key(key[:12], actor="bob") is True
        assert store.revoke_key(key[:12], actor="bob") is False  # nothing to revoke: no row
        assert store.revoke_key("mcpo_nothing", actor="bob") is False
        entries = [(e.actor, e.action, e.target, e.detail) for e in store.audit_log()]
    finally:
        store.close()
    assert entries == [
        ("bob", "key.revoke", key[:12], "project=demo name=ci"),
        ("alice", "key.create", key[:12], "project=demo name=ci"),
    ]
    rows = _audit_rows(state)
    assert len(rows) == 2
    secret_parts = (key, key[12:], hashlib.sha256(key.encode()).hexdigest())
    for row in rows:
        for column in row:
            assert not any(part in str(column) for part in secret_parts), row


def test_admin_token_creation_is_audited_without_the_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.open(state)
    try:
        token = store.ensure_admin_token()
        assert token is not None
        assert store.ensure_admin_token() is None  # already there: no second row
        assert [(e.actor, e.action, e.target) for e in store.audit_log()] == [
            ("gateway", "admin_token.create", "admin")]
    finally:
        store.close()
    rows = _audit_rows(state)
    assert not any(token in str(c) or hashlib.sha256(token.encode()).hexdigest() in str(c)
                   for row in rows for c in row)


def test_a_failing_write_leaves_neither_change_nor_audit_row(store: Store) -> None:
    store.create_project("p", "api-key", actor="t")
    before = store.audit_log()
    # "a" is written first, then "b" cannot be serialised: the whole import is undone.
    with pytest.raises(TypeError):
        store.import_servers("p", {"a": {"command": "x"}, "b": {"command": {1, 2}}}, actor="t")
    assert store.servers("p") == []
    assert store.audit_log() == before
    # The change succeeds but its audit row cannot be written (actor is NOT NULL):
    # the change is undone with it.
    with pytest.raises(INTEGRITY_ERRORS):
        store.create_project("q", "api-key", actor=None)  # type: ignore[arg-type]
    assert [p.name for p in store.projects()] == ["p"]
    assert store.audit_log() == before
    with pytest.raises(INTEGRITY_ERRORS):
        store.create_key("p", actor=None)  # type: ignore[arg-type]
    assert store.list_keys() == []
    assert store.audit_log() == before


def test_store_errors_carry_kind_and_status(store: Store) -> None:
    store.create_project("p", "api-key", actor="t")
    with pytest.raises(AlreadyExistsError) as exists:
        store.create_project("p", "none", actor="t")
    assert (exists.value.kind, exists.value.status) == ("already_exists", 409)
    store.put_server("p", "a", {"command": "x"}, actor="t")
    with pytest.raises(AlreadyExistsError):
        store.put_server("p", "a", {"command": "x"}, actor="t", create_only=True)
    for write in (
        lambda: store.remove_server("p", "zzz", actor="t"),
        lambda: store.set_enabled("p", "zzz", False, actor="t"),
        lambda: store.delete_project("nope", actor="t"),
        lambda: store.put_server("nope", "a", {"command": "x"}, actor="t"),
    ):
        with pytest.raises(NotFoundError) as missing:
            write()
        assert (missing.value.kind, missing.value.status) == ("not_found", 404)
        assert isinstance(missing.value, StoreError)


def test_a_newer_schema_is_a_schema_version_error(store_target: StoreTarget) -> None:
    store_target.open().close()
    raw_execute(store_target, "UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaVersionError):
        store_target.open()


def test_a_version_3_file_is_migrated_to_the_instance_registry(tmp_path: Path) -> None:
    """A file of the release before the registry: its keys and projects stay, the
    instance table and the cluster secret appear."""
    path = tmp_path / "mcp-orch.sqlite3"
    with sqlite3.connect(path) as db:
        for version in (1, 2, 3):
            db.executescript(MIGRATIONS[version])
        db.execute("INSERT INTO schema_version (version) VALUES (3)")
        db.execute("INSERT INTO projects (name, auth, source, created_at, settings) "
                   "VALUES ('demo', 'api-key', 'api', 1.0, '{\"limits\": {\"rate\": 5}}')")
        db.execute("INSERT INTO api_keys (project, name, prefix, key_hash, created_at) "
                   "VALUES ('demo', 'k', 'mcpo_abcdefg', ?, 1.0)", (hashlib.sha256(b"K").hexdigest(),))
    store = Store.open(tmp_path)
    try:
        assert store.project_for_key("K") == "demo"
        assert store.projects()[0].settings == {"limits": {"rate": 5}}
        store.register_instance("aaaa", "http://127.0.0.1:1")
        assert [r.id for r in store.instances()] == ["aaaa"]
        assert len(store.cluster_secret()) == 32
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_postgres_timestamps_keep_their_precision(store_target: StoreTarget) -> None:
    """REAL is 8 bytes in SQLite, 4 in PostgreSQL: the migration writes DOUBLE PRECISION
    there, or an expiry would be rounded by minutes."""
    store = store_target.open()
    try:
        expires = time.time() + 0.5
        store.create_key("demo", expires_at=expires)
        assert store.list_keys()[0].expires_at == expires
    finally:
        store.close()
