"""The pure rules of ``actors/policy.py`` (globs, read_only, renames, token buckets under
``autojump_clock``), the config tables that feed them, and the store's schema 3."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import trio

from actors.policy import (
    Access,
    ConcurrencyGate,
    RateLimiter,
    TokenBucket,
    names_with_renames,
    override_tool,
)
from config import ConfigError, Store, declared_projects, projects_from_store
from config.loading import parse_config
from config.models import RateLimits, ToolOverride, ToolPolicy
from config.store import SCHEMA_VERSION, hash_key

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
RO = {"name": "x", "annotations": {"readOnlyHint": True}}
RW = {"name": "x", "annotations": {"readOnlyHint": False}}


def test_deny_wins_and_no_allow_list_allows_all() -> None:
    everything = Access()
    assert everything.permits("git__push", None)
    policy = Access(ToolPolicy(allow=("git__*",), deny=("git__push*",)))
    assert policy.permits("git__status", None)
    assert not policy.permits("git__push", None)
    assert not policy.permits("git__push_force", None)
    assert not policy.permits("fs__read", None)
    assert not Access(ToolPolicy(allow=())).permits("git__status", None)  # allow = []
    assert not Access(ToolPolicy(deny=("*",))).permits("anything", None)
    assert not Access(ToolPolicy(allow=("Git__*",))).permits("git__status", None)  # case


def test_read_only_and_the_key_allow_list_intersect() -> None:
    read_only = Access(ToolPolicy(read_only=True))
    assert read_only.permits("a", RO)
    assert not read_only.permits("a", RW)
    assert not read_only.permits("a", {"name": "x"})
    assert not read_only.permits("a", None)
    keyed = Access(ToolPolicy(allow=("git__*", "fs__*")), key_allow=("git__*",))
    assert keyed.permits("git__log", None)
    assert not keyed.permits("fs__read", None)  # the project allows it, the key does not
    assert not Access(ToolPolicy(deny=("git__log",)), key_allow=("git__*",)).permits(
        "git__log", None)  # the key cannot widen
    assert Access(key_prefix="mcpo_abcdefg").who == "key mcpo_abcdefg…"
    assert Access().who == "no key"


def test_overrides_and_renames() -> None:
    tool = {"name": "say", "description": "old", "inputSchema": {}}
    assert override_tool(tool, None) is tool
    changed = override_tool(tool, ToolOverride(description="new", title="Say"))
    assert changed == {"name": "say", "description": "new", "title": "Say", "inputSchema": {}}
    assert tool["description"] == "old"  # not mutated
    prefixes = {"git": "git", "demo": "demo"}
    pairs = [("git", "status"), ("demo", "echo"), ("demo", "add")]
    names = names_with_renames(pairs, prefixes, "__", 64, {("demo", "echo"): "say"})
    assert names == {("git", "status"): "git__status", ("demo", "echo"): "say",
                     ("demo", "add"): "demo__add"}
    # A rename colliding with a derived name: both get a hash, neither wins.
    names = names_with_renames(pairs, prefixes, "__", 64, {("demo", "echo"): "git__status"})
    assert names[("demo", "echo")] != names[("git", "status")]
    assert names[("demo", "echo")].startswith("git__status_")
    assert names[("git", "status")].startswith("git__status_")
    assert names[("demo", "add")] == "demo__add"


async def test_a_token_bucket_refills_at_its_rate(autojump_clock: trio.testing.MockClock) -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    now = trio.current_time
    assert [bucket.take(now()) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert bucket.take(now()) == pytest.approx(0.5)  # one token every 0.5 s
    assert bucket.take(now()) == pytest.approx(0.5)  # a refusal takes nothing
    await trio.sleep(0.5)
    assert bucket.take(now()) == 0.0
    assert bucket.take(now()) == pytest.approx(0.5)
    await trio.sleep(60)  # never more than the burst
    assert [bucket.take(now()) for _ in range(4)][-1] == pytest.approx(0.5)
    assert bucket.take(now(), 2) == pytest.approx(1.0)


async def test_the_limiter_keys_buckets_by_key_and_project(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = RateLimiter()
    limits = RateLimits(rate=1.0, burst=2, project_rate=10.0, project_burst=3)
    now = trio.current_time
    assert limiter.check("p", "k1", limits, now()) is None
    assert limiter.check("p", "k1", limits, now()) is None
    refused = limiter.check("p", "k1", limits, now())
    assert refused is not None and refused.scope == "key" and refused.retry_after_ms == 1000
    assert limiter.check("p", "k2", limits, now()) is None  # its own bucket
    refused = limiter.check("p", "k3", limits, now())  # the project's 3 are gone
    assert refused is not None and refused.scope == "project" and refused.retry_after_ms == 100
    assert limiter.check("q", "k1", limits, now()) is None  # another project
    await trio.sleep(1.0)
    assert limiter.check("p", "k1", limits, now()) is None
    assert limiter.check("p", None, RateLimits(rate=0.001, burst=1), now()) is None  # no key
    # A batch counts each request; a refusal takes nothing from any bucket.
    fresh = RateLimiter()
    assert fresh.check("p", "k", limits, now(), 3) is not None
    assert fresh.check("p", "k", limits, now(), 2) is None
    # More at once than a bucket ever holds: refused as such, never "retry in N ms".
    too_big = RateLimiter().check("p", "k", limits, now(), 3)
    assert too_big is not None and too_big.too_big and too_big.scope == "key"


def test_a_cursor_too_deep_or_too_long_is_invalid_not_a_crash() -> None:
    import base64

    from actors.project import InvalidCursor, decode_cursor
    deep = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    for cursor in (deep[:16_000], deep):
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor)


def test_the_concurrency_gate_counts_per_server() -> None:
    refusals: list[int] = []
    gate = ConcurrencyGate(1, lambda: refusals.append(1))
    assert gate.enter("a") is None
    limited = gate.enter("a")
    assert limited is not None and limited.scope == "server" and refusals == [1]
    assert gate.enter("b") is None
    gate.leave("a")
    assert gate.in_flight("a") == 0 and gate.enter("a") is None
    gate.limit = None
    assert gate.enter("a") is None and gate.in_flight("a") == 2


CONFIG = {
    "projects": {"demo": {
        "policy": {"allow": ["git__*"], "deny": ["git__push*"], "read_only": True},
        "limits": {"rate": 10.0, "burst": 20, "project_rate": 50.0, "max_concurrent": 4},
        "servers": {"git": {"command": "x", "tools": {
            "push": {"rename": "publish", "description": "push it", "title": "Publish"}}}},
    }},
}


def test_policy_limits_and_tools_load_and_survive_the_store(tmp_path: Path) -> None:
    config = parse_config(json.loads(json.dumps(CONFIG)), "t.toml", tmp_path)
    project = config.projects["demo"]
    assert project.policy == ToolPolicy(("git__*",), ("git__push*",), True)
    assert project.limits == RateLimits(10.0, 20, 50.0, None, 4)
    assert project.servers["git"].tools == {"push": ToolOverride("publish", "push it", "Publish")}
    store = Store.open(tmp_path / "state")
    try:
        assert store.apply_declared(declared_projects(config), actor="t") == [
            "created project demo", "created server demo/git"]
        loaded = projects_from_store(store.projects(), store.servers(), "store")
        assert loaded["demo"] == project  # policy, limits and tools came back whole
        changed = json.loads(json.dumps(CONFIG))
        changed["projects"]["demo"]["policy"] = {"deny": ["*"]}
        config = parse_config(changed, "t.toml", tmp_path)
        applied = store.apply_declared(declared_projects(config), actor="t")
        assert len(applied) == 1 and applied[0].startswith("updated project demo (policy")
        assert store.apply_declared(declared_projects(config), actor="t") == []
        assert projects_from_store(store.projects(), store.servers(), "s")[
            "demo"].policy == ToolPolicy(deny=("*",))
    finally:
        store.close()


@pytest.mark.parametrize(("patch", "field"), [
    ({"policy": {"allow": "git__*"}}, "projects.demo.policy.allow"),
    ({"policy": {"alow": ["x"]}}, "projects.demo.policy"),
    ({"limits": {"rate": 0}}, "projects.demo.limits.rate"),
    ({"limits": {"burst": 5}}, "projects.demo.limits.burst"),
    ({"limits": {"rate": 1.0, "burst": 0}}, "projects.demo.limits.burst"),
    ({"limits": {"max_concurrent": 0}}, "projects.demo.limits.max_concurrent"),
    ({"servers": {"git": {"command": "x", "tools": {"push": {"rename": "a b"}}}}},
     "projects.demo.servers.git.tools.push.rename"),
    ({"servers": {"git": {"command": "x", "tools": {"push": {"rename": "x" * 65}}}}},
     "projects.demo.servers.git.tools.push.rename"),
    ({"servers": {"git": {"command": "x", "tools": {"push": "p"}}}},
     "projects.demo.servers.git.tools"),
    ({"servers": {"git": {"command": "x", "tools": {"a": {"rename": "r"}}},
                  "fs": {"command": "x", "tools": {"b": {"rename": "r"}}}}},
     "projects.demo.servers."),
])
def test_bad_policy_tables_name_the_field(tmp_path: Path, patch: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"projects": {"demo": {"servers": {"git": {"command": "x"}}, **patch}}},
                     "t.toml", tmp_path)
    assert field in str(info.value)


@pytest.mark.parametrize("version", [1, 2])
def test_older_store_files_migrate_to_the_current_schema(tmp_path: Path, version: int) -> None:
    fixture = json.loads((FIXTURES / f"store-v{version}.json").read_text())
    shutil.copy(FIXTURES / f"store-v{version}.sqlite3", tmp_path / "mcp-orch.sqlite3")
    store = Store.open(tmp_path)
    try:
        assert store.project_for_key(fixture["active_key"]) == "demo"  # keys survive
        assert store.project_for_key(fixture["revoked_key"]) is None
        assert all(k.allow is None for k in store.list_keys())  # old keys: not narrowed
        if version == 2:
            assert [(p.name, p.settings) for p in store.projects()] == [("demo", {})]
            assert [s.name for s in store.servers("demo")] == ["demo"]
        else:
            store.create_project("demo", "api-key", actor="t")
        key = store.create_key("demo", "narrow", allow=["git__*"], actor="t")
        assert store.key_allow(hash_key(key)) == ("git__*",)
        assert store.key_allow(hash_key(fixture["active_key"])) is None
        assert [k.allow for k in store.list_keys("demo")][-1] == ("git__*",)
        audit = store.audit_log(1)[0]
        assert audit.action == "key.create" and 'allow=["git__*"]' in audit.detail
        assert key not in audit.detail
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "mcp-orch.sqlite3") as db:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert SCHEMA_VERSION == 5
