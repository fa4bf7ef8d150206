"""Tool policy and rate limits of the project endpoint, through real HTTP: what the client
is shown and what the upstreams actually received (``actors/policy.py``)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from config import Store, load_config
from gateway.serve import run_gateway
from tests.support import (
    DEMO_SERVER,
    REPO,
    Recording,
    RunningGateway,
    StreamableClient,
    open_sse_session,
    write_config,
)
from tests.support import stateless as stateless_wire
from tests.support.sse import SseReader
from tests.support.websocket import ConnectionRejected, open_ws_client

POLICY_SERVER: dict[str, Any] = {
    "command": "python", "args": ["-m", "tests.servers.policy_server"], "cwd": str(REPO),
}
ADMIN = "test-admin-token-policy"
Start = Callable[..., Awaitable[RunningGateway]]


def _toml(table: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())


def write(tmp_path: Path, projects: dict[str, Any], extra: dict[str, dict[str, Any]],
          **gateway: Any) -> Path:
    """A config file: ``projects`` as ``write_config`` writes it, then the ``extra``
    tables (``{"projects.demo.policy": {...}}``)."""
    path = write_config(tmp_path, projects, **gateway)
    text = path.read_text() + "".join(f"\n[{name}]\n{_toml(t)}\n" for name, t in extra.items())
    path.write_text(text)
    return path


@pytest.fixture
def start(nursery: trio.Nursery, tmp_path: Path) -> Start:
    async def start(projects: dict[str, Any], extra: dict[str, dict[str, Any]],
                    **gateway: Any) -> RunningGateway:
        path = write(tmp_path, projects, extra, **gateway)
        config = load_config(path)
        store = Store.open(config.gateway.state_dir)
        try:
            keys = {name: store.create_key(name) for name in config.projects}
        finally:
            store.close()
        gw = await nursery.start(run_gateway, config)
        return RunningGateway(gw, gw.url, keys, path)

    return start


def servers(tmp_path: Path, **demo: Any) -> tuple[dict[str, Any], Recording, Recording]:
    git_rec = Recording(tmp_path / "git.jsonl")
    demo_rec = Recording(tmp_path / "demo.jsonl")
    projects = {"demo": {"servers": {
        "git": git_rec.server(POLICY_SERVER),
        "demo": demo_rec.server({**DEMO_SERVER, **demo}),
    }}}
    return projects, git_rec, demo_rec


def url(gw: RunningGateway, route: str = "mcp") -> str:
    return f"{gw.url}/projects/demo/{route}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def listed(client: StreamableClient) -> dict[str, dict[str, Any]]:
    reply = await client.request("tools/list")
    return {tool["name"]: tool for tool in reply["result"]["tools"]}


async def call(client: StreamableClient, name: str) -> dict[str, Any]:
    return await client.request("tools/call", {"name": name, "arguments": {"text": "hi"}})


def new_key(gw: RunningGateway, allow: list[str] | None) -> str:
    store = Store.open(gw.gateway.config.gateway.state_dir)
    try:
        return store.create_key("demo", "narrow", allow=allow)
    finally:
        store.close()


OVERRIDES = {"echo": {"rename": "say", "description": "says it back", "title": "Say"}}
POLICY = {"allow": ["git__*", "say"], "deny": ["git__push*"]}


async def test_policy_and_overrides_on_list_and_call(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    projects, git_rec, demo_rec = servers(tmp_path, tools=OVERRIDES)
    gw = await start(projects, {"projects.demo.policy": POLICY})
    caplog.set_level(logging.INFO, logger="actors.project")
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, url(gw), gw.auth())
        await client.connect("2025-06-18")
        tools = await listed(client)
        assert set(tools) == {"git__status", "git__log", "say"}
        assert tools["say"]["description"] == "says it back" and tools["say"]["title"] == "Say"
        assert tools["git__status"]["description"] == "show the status"  # no override

        reply = await call(client, "say")
        assert reply["result"]["content"][0]["text"] == "hi"
        assert [m["params"]["name"] for m in demo_rec.tool_calls()] == ["echo"]  # original
        reply = await call(client, "git__status")
        assert reply["result"]["content"][0]["text"] == "called status"

        # Denied, not allowed, and the original name of a renamed tool: as if absent.
        for name in ("git__push", "git__push_force", "demo__add", "demo__echo", "nope"):
            reply = await call(client, name)
            assert reply["error"] == {"code": -32602, "message": f"unknown tool: {name}"}, reply
        assert [m["params"]["name"] for m in git_rec.tool_calls()] == ["status"]
        assert [m["params"]["name"] for m in demo_rec.tool_calls()] == ["echo"]

        # A key narrowed to git__* sees and calls only what both allow.
        narrow = StreamableClient(http, url(gw), auth(new_key(gw, ["git__*", "demo__*"])))
        await narrow.connect("2025-06-18")
        assert set(await listed(narrow)) == {"git__status", "git__log"}
        reply = await call(narrow, "say")
        assert reply["error"]["code"] == -32602
        assert [m["params"]["name"] for m in demo_rec.tool_calls()] == ["echo"]
    refused = [r.getMessage() for r in caplog.records if "refused by the tool policy" in r.getMessage()]
    assert len(refused) == 4  # push, push_force, add (hidden, existing), say for the narrow key
    assert all("key mcpo_" in line for line in refused)
    assert not any(gw.keys["demo"] in r.getMessage() for r in caplog.records)


async def test_policy_changes_apply_live(start: Start, tmp_path: Path) -> None:
    projects, git_rec, _ = servers(tmp_path, tools=OVERRIDES)
    gw = await start(projects, {"projects.demo.policy": POLICY})
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, url(gw), gw.auth())
        await client.connect("2025-06-18")
        assert set(await listed(client)) == {"git__status", "git__log", "say"}
        # read_only: only tools annotated readOnlyHint: true remain (echo is not).
        write(tmp_path, projects, {"projects.demo.policy": {**POLICY, "read_only": True}})
        changes = await gw.gateway.reload()
        assert "demo (policy and limits)" in changes["changed"]
        assert set(await listed(client)) == {"git__status", "git__log"}
        reply = await call(client, "say")
        assert reply["error"]["code"] == -32602
        # No policy at all: everything, under the overrides.
        write(tmp_path, projects, {})
        await gw.gateway.reload()
        tools = await listed(client)
        assert {"git__push", "git__push_force", "say", "demo__add"} <= set(tools)
        assert "demo__echo" not in tools
        reply = await call(client, "git__push")
        assert reply["result"]["content"][0]["text"] == "called push"
    assert [m["params"]["name"] for m in git_rec.tool_calls()] == ["push"]


async def test_key_allow_from_the_cli_and_the_admin_api(start: Start, tmp_path: Path) -> None:
    projects, git_rec, _ = servers(tmp_path)
    gw = await start(projects, {}, admin_token=ADMIN)
    done = await trio.run_process(
        [sys.executable, "-m", "gateway", "keys", "create", "--config", str(gw.config_path),
         "--project", "demo", "--name", "ci", "--allow", "git__s*", "--allow", "git__log"],
        capture_stdout=True, capture_stderr=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr
    cli_key = done.stdout.decode().strip().splitlines()[-1]
    listing = await trio.run_process(
        [sys.executable, "-m", "gateway", "keys", "list", "--config", str(gw.config_path),
         "--project", "demo"], capture_stdout=True, cwd=REPO)
    line = next(x for x in listing.stdout.decode().splitlines() if " ci " in x)
    assert cli_key[:12] in line and "allow=git__s*,git__log" in line
    assert cli_key not in listing.stdout.decode()

    async with httpx.AsyncClient(timeout=30) as http:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = await http.post(f"{gw.url}/admin/projects/demo/keys", headers=admin,
                            json={"name": "bot", "allow": ["git__push"]})
        assert r.status_code == 201, r.text
        api_key = r.json()["key"]
        assert r.json()["allow"] == ["git__push"]
        r = await http.post(f"{gw.url}/admin/projects/demo/keys", headers=admin,
                            json={"name": "bad", "allow": "git__*"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "allow"
        r = await http.get(f"{gw.url}/admin/projects/demo/keys", headers=admin)
        assert {k["name"]: k["allow"] for k in r.json()} == {
            "default": None, "ci": ["git__s*", "git__log"], "bot": ["git__push"]}
        spec = (await http.get(f"{gw.url}/admin/openapi.json")).json()
        assert "allow" in spec["components"]["schemas"]["NewKey"]["properties"]

        ci = StreamableClient(http, url(gw), auth(cli_key))
        await ci.connect("2025-06-18")
        assert set(await listed(ci)) == {"git__status", "git__log"}
        bot = StreamableClient(http, url(gw), auth(api_key))
        await bot.connect("2025-06-18")
        assert set(await listed(bot)) == {"git__push"}
        assert (await call(bot, "git__push"))["result"]["content"][0]["text"] == "called push"
        assert (await call(bot, "git__status"))["error"]["code"] == -32602
    assert [m["params"]["name"] for m in git_rec.tool_calls()] == ["push"]
    # Both policy changes are audit rows naming the key by prefix, with its allow list.
    store = Store.open(gw.gateway.config.gateway.state_dir)
    try:
        created = {e.target: e for e in store.audit_log() if e.action == "key.create"}
    finally:
        store.close()
    assert 'allow=["git__s*", "git__log"]' in created[cli_key[:12]].detail
    assert created[api_key[:12]].detail.endswith('allow=["git__push"]')
    assert all(cli_key not in e.detail and api_key not in e.detail for e in created.values())


LIMITS = {"rate": 0.2, "burst": 2}


async def test_a_key_rate_limit_follows_the_key_across_sessions(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    projects, _, demo_rec = servers(tmp_path)
    gw = await start(projects, {"projects.demo.limits": LIMITS})
    caplog.set_level(logging.INFO, logger="gateway.transports.front")
    async with httpx.AsyncClient(timeout=30) as http:
        first = StreamableClient(http, url(gw), gw.auth())
        await first.connect("2025-06-18")
        for _ in range(2):
            reply = await call(first, "demo__echo")
            assert reply["result"]["content"][0]["text"] == "hi"
        second = StreamableClient(http, url(gw), gw.auth())
        await second.connect("2025-06-18")  # initialize is not counted
        r = await second.post({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                               "params": {"name": "demo__echo", "arguments": {"text": "x"}}})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= 1
        error = r.json()["error"]
        assert r.json()["id"] == 7 and error["code"] == -32056
        assert 0 < error["data"]["retryAfterMs"] <= 5000 and error["data"]["scope"] == "key"
        # Another key of the same project has a bucket of its own.
        other = StreamableClient(http, url(gw), auth(new_key(gw, None)))
        await other.connect("2025-06-18")
        assert "result" in await call(other, "demo__echo")

        # Legacy SSE and WebSocket answer on the stream: 202, then the error.
        async with open_sse_session(url(gw, "sse"), gw.auth(), http=http) as sse:
            await sse.initialize()
            reply = await sse.request("tools/call", {"name": "demo__echo",
                                                     "arguments": {"text": "x"}})
            assert reply["error"]["code"] == -32056 and reply["error"]["data"]["retryAfterMs"] > 0
        ws_url = f"ws{gw.url.removeprefix('http')}/projects/demo/ws"
        async with open_ws_client(ws_url, key=gw.keys["demo"]) as ws:
            reply = await ws.request("tools/call", {"name": "demo__echo",
                                                    "arguments": {"text": "x"}})
            assert reply["error"]["code"] == -32056
        metrics = (await http.get(f"{gw.url}/metrics")).text
    assert 'mcp_orch_rate_limited_total{project="demo",scope="key"} 3.0' in metrics
    assert [m["params"]["arguments"]["text"] for m in demo_rec.tool_calls()] == ["hi"] * 3
    refused = [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()]
    assert len(refused) == 3
    assert all(f"key {gw.keys['demo'][:12]}…" in line for line in refused)
    assert not any(gw.keys["demo"] in r.getMessage() for r in caplog.records)


async def test_a_key_rate_limit_holds_for_2026_07_28_requests_too(
    start: Start, tmp_path: Path,
) -> None:
    # Regression: stateless requests skipped the limit, so a client could dodge it
    # by speaking the newest revision.
    projects, _, demo_rec = servers(tmp_path)
    gw = await start(projects, {"projects.demo.limits": LIMITS})
    call_echo = stateless_wire.request(
        "s1", "tools/call", {"name": "demo__echo", "arguments": {"text": "hi"}})
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(2):
            r = await stateless_wire.post(http, url(gw), gw.auth(), call_echo)
            assert r.status_code == 200 and "result" in r.json(), r.text
        r = await stateless_wire.post(http, url(gw), gw.auth(), call_echo)
        assert r.status_code == 429, r.text
        assert r.json()["id"] == "s1" and r.json()["error"]["code"] == -32056
        assert int(r.headers["retry-after"]) >= 1
        # A stateful session of the same key shares the bucket.
        client = StreamableClient(http, url(gw), gw.auth())
        await client.connect("2025-06-18")
        r = await client.post({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                               "params": {"name": "demo__echo", "arguments": {"text": "x"}}})
        assert r.status_code == 429 and r.json()["error"]["code"] == -32056
    assert len(demo_rec.tool_calls()) == 2
    assert not [s for s in gw.gateway.registry.sessions.values() if s.transport == "stateless"]


async def test_a_project_rate_limit_spans_its_keys(start: Start, tmp_path: Path) -> None:
    projects, _, demo_rec = servers(tmp_path)
    gw = await start(projects, {"projects.demo.limits": {"project_rate": 0.2,
                                                         "project_burst": 1}})
    async with httpx.AsyncClient(timeout=30) as http:
        one = StreamableClient(http, url(gw), gw.auth())
        await one.connect("2025-06-18")
        assert "result" in await call(one, "demo__echo")
        two = StreamableClient(http, url(gw), auth(new_key(gw, None)))
        await two.connect("2025-06-18")
        r = await two.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                            "params": {"name": "demo__echo", "arguments": {"text": "x"}}})
        assert r.status_code == 429 and r.json()["error"]["data"]["scope"] == "project"
        metrics = (await http.get(f"{gw.url}/metrics")).text
    assert 'mcp_orch_rate_limited_total{project="demo",scope="project"} 1.0' in metrics
    assert len(demo_rec.tool_calls()) == 1


async def test_max_concurrent_calls_per_server_across_sessions(
    start: Start, tmp_path: Path,
) -> None:
    projects, git_rec, demo_rec = servers(tmp_path)
    gw = await start(projects, {"projects.demo.limits": {"max_concurrent": 1}})
    async with httpx.AsyncClient(timeout=30) as http:
        slow = StreamableClient(http, url(gw), gw.auth())
        await slow.connect("2025-06-18")
        other = StreamableClient(http, url(gw), gw.auth())
        await other.connect("2025-06-18")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: slow.request(
                "tools/call", {"name": "demo__sleep", "arguments": {"seconds": 3}}))
            await demo_rec.wait_for(lambda r: r.tool_calls("sleep"), timeout=10)
            reply = await call(other, "demo__echo")
            assert reply["error"]["code"] == -32056, reply
            assert reply["error"]["data"] == {"retryAfterMs": 100, "scope": "server"}
            # Another server of the project has its own slot.
            assert "result" in await call(other, "git__status")
            nursery.cancel_scope.cancel()
        metrics = (await http.get(f"{gw.url}/metrics")).text
    assert 'mcp_orch_rate_limited_total{project="demo",scope="server"} 1.0' in metrics
    assert demo_rec.tool_calls("echo") == []
    assert len(git_rec.tool_calls("status")) == 1


def test_a_bad_policy_is_a_config_error(tmp_path: Path) -> None:
    projects, _, _ = servers(tmp_path, tools={"echo": {"rename": "has space"}})
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--config",
         str(write(tmp_path, projects, {"projects.demo.limits": {"rate": 0}}))],
        capture_output=True, text=True, cwd=REPO)
    assert done.returncode != 0
    assert "projects.demo.servers.demo.tools.echo.rename" in done.stderr


# -- policy and limits set through the CLI and the admin API ---------------------------

def cli(gw: RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args[:2], "--config", str(gw.config_path), *args[2:]],
        capture_output=True, text=True, cwd=REPO)


async def run_cli(gw: RunningGateway, *args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: cli(gw, *args))


def audit_rows(gw: RunningGateway, action: str) -> list[Any]:
    store = Store.open(gw.gateway.config.gateway.state_dir)
    try:
        return [e for e in store.audit_log() if e.action == action]
    finally:
        store.close()


async def tools_changed(reader: SseReader, seen: int, timeout: float) -> int:
    """Wait (at most ``timeout`` s) for one more ``notifications/tools/list_changed`` on the
    GET stream than ``seen``; the new count."""
    with trio.fail_after(timeout):
        while True:
            count = sum(1 for m in reader.events
                        if m.get("method") == "notifications/tools/list_changed")
            if count > seen:
                return count
            await reader.until(len(reader.events) + 1, timeout)


async def test_a_cli_policy_change_reaches_a_live_session_within_a_second(
    start: Start, tmp_path: Path,
) -> None:
    projects, git_rec, _ = servers(tmp_path)
    gw = await start(projects, {})
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, url(gw), gw.auth())
        await client.connect("2025-06-18")
        assert {"git__push", "git__push_force", "git__status"} <= set(await listed(client))
        async with client.get_stream() as stream:
            assert stream.status_code == 200
            reader = SseReader(stream)
            done = await run_cli(gw, "projects", "policy", "demo", "--deny", "git__push*")
            assert done.returncode == 0, done.stderr
            assert 'deny=["git__push*"]' in done.stdout and "(set by api)" in done.stdout
            # The gateway polls the store once a second; the slack is for a busy machine.
            await tools_changed(reader, 0, timeout=2.0)
        tools = await listed(client)
        assert "git__push" not in tools and "git__push_force" not in tools
        assert "git__status" in tools
        reply = await call(client, "git__push")
        assert reply["error"] == {"code": -32602, "message": "unknown tool: git__push"}, reply

        # Limits: one field at a time keeps the others; a bad value names the field.
        bad = await run_cli(gw, "projects", "limits", "demo", "--rate", "0")
        assert bad.returncode == 2
        assert "projects.demo.limits.rate: expected a number > 0" in bad.stderr
        bad = await run_cli(gw, "projects", "limits", "demo", "--burst", "2")
        assert bad.returncode == 2
        assert "projects.demo.limits.burst: expected rate to be set as well" in bad.stderr
        done = await run_cli(gw, "projects", "limits", "demo", "--rate", "0.2")
        assert done.returncode == 0, done.stderr
        done = await run_cli(gw, "projects", "limits", "demo", "--burst", "1", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["limits"]["rate"] == 0.2
        with trio.fail_after(3):  # the CLI's limit is live too: the second call is refused
            while gw.gateway.project("demo").limits.burst != 1:
                await trio.sleep(0.05)
        assert "result" in await call(client, "git__status")
        r = await client.post({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                               "params": {"name": "git__status", "arguments": {}}})
        assert r.status_code == 429 and r.json()["error"]["code"] == -32056

    shown = await run_cli(gw, "projects", "show", "demo", "--json")
    data = json.loads(shown.stdout)
    assert data["policy"] == {"allow": None, "deny": ["git__push*"], "read_only": False}
    assert data["limits"]["rate"] == 0.2 and data["limits"]["burst"] == 1
    assert data["set_by"] == {"policy": "api", "limits": "api"}
    assert [m["params"]["name"] for m in git_rec.tool_calls()] == ["status"]
    (policy,) = audit_rows(gw, "project.policy")
    assert policy.actor.startswith("cli:") and policy.target == "demo"
    assert json.loads(policy.detail) == {"deny": ["git__push*"]}
    limits = audit_rows(gw, "project.limits")  # the two refused changes wrote nothing
    assert [json.loads(e.detail) for e in limits] == [{"burst": 1, "rate": 0.2}, {"rate": 0.2}]


async def test_admin_api_policy_and_limits_apply_at_once(start: Start, tmp_path: Path) -> None:
    projects, git_rec, demo_rec = servers(tmp_path)
    gw = await start(projects, {}, admin_token=ADMIN)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    base = f"{gw.url}/admin/projects"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{base}/demo/policy", headers=admin)
        assert r.json() == {"allow": None, "deny": [], "read_only": False, "set_by": None}
        client = StreamableClient(http, url(gw), gw.auth())
        await client.connect("2025-06-18")
        assert "demo__echo" in await listed(client)
        async with client.get_stream() as stream:
            reader = SseReader(stream)
            r = await http.put(f"{base}/demo/policy", headers=admin,
                               json={"allow": ["git__*"], "deny": ["git__push*"]})
            assert r.status_code == 200, r.text
            assert r.json() == {"allow": ["git__*"], "deny": ["git__push*"],
                                "read_only": False, "set_by": "api"}
            # Applied before the answer: the very next list follows it.
            assert set(await listed(client)) == {"git__status", "git__log"}
            await tools_changed(reader, 0, timeout=1.0)
        reply = await call(client, "demo__echo")
        assert reply["error"]["code"] == -32602

        # Addressed by id; a GET answer may be PUT back as it is.
        project_id = (await http.get(f"{base}/demo", headers=admin)).json()["id"]
        r = await http.put(f"{base}/{project_id}/limits", headers=admin,
                           json={"rate": 0.2, "burst": 1, "set_by": None})
        assert r.status_code == 200, r.text
        assert r.json()["rate"] == 0.2 and r.json()["set_by"] == "api"
        assert "result" in await call(client, "git__status")
        r = await client.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                               "params": {"name": "git__status", "arguments": {}}})
        assert r.status_code == 429 and r.json()["error"]["data"]["scope"] == "key"

        # Bad bodies: 422 naming the field, and nothing stored.
        for path, body, field in (
            ("limits", {"rate": "fast"}, "projects.demo.limits.rate"),
            ("limits", {"rate": 1, "burst": 0}, "projects.demo.limits.burst"),
            ("limits", {"max_concurrent": True}, "projects.demo.limits.max_concurrent"),
            ("policy", {"deny": "git__*"}, "projects.demo.policy.deny"),
            ("policy", {"alow": ["x"]}, "projects.demo.policy"),
            ("policy", ["git__*"], "body"),
        ):
            r = await http.put(f"{base}/demo/{path}", headers=admin, json=body)
            assert r.status_code == 422, (body, r.text)
            assert r.json()["error"]["field"] == field, (body, r.json())
        assert "did you mean 'allow'" in (await http.put(
            f"{base}/demo/policy", headers=admin, json={"alow": []})).json()["error"]["message"]
        r = await http.get(f"{base}/demo/limits", headers=admin)
        assert (r.json()["rate"], r.json()["burst"]) == (0.2, 1)
        assert (await http.put(f"{base}/nope/policy", headers=admin, json={})).status_code == 404
        assert (await http.get(f"{base}/demo/policy")).status_code == 401

        spec = (await http.get(f"{gw.url}/admin/openapi.json")).json()
        for path, schema in (("policy", "Policy"), ("limits", "Limits")):
            ops = spec["paths"][f"/admin/projects/{{ref}}/{path}"]
            assert set(ops) == {"parameters", "get", "put"}
            assert ops["put"]["requestBody"]["content"]["application/json"]["schema"] == {
                "$ref": f"#/components/schemas/{schema}"}
        assert set(spec["components"]["schemas"]["Limits"]["properties"]) >= {
            "rate", "burst", "project_rate", "project_burst", "max_concurrent"}

        # The file is declarative for what it declares: a policy it declares is set back
        # by an apply; the limits it does not declare stay as the admin API set them.
        r = await http.put(f"{base}/demo/limits", headers=admin, json={"rate": 100})
        assert r.status_code == 200 and r.json()["burst"] is None
        write(tmp_path, projects, {"projects.demo.policy": {"deny": ["git__status"]}},
              admin_token=ADMIN)
        r = await http.post(f"{gw.url}/admin/apply", headers=admin)
        assert r.status_code == 200, r.text
        r = await http.get(f"{base}/demo/policy", headers=admin)
        assert r.json() == {"allow": None, "deny": ["git__status"], "read_only": False,
                            "set_by": "config"}
        r = await http.get(f"{base}/demo/limits", headers=admin)
        assert (r.json()["rate"], r.json()["set_by"]) == (100, "api")
        assert "git__status" not in await listed(client)
        assert "demo__echo" in await listed(client)
    assert [m["params"]["name"] for m in git_rec.tool_calls()] == ["status"]
    assert demo_rec.tool_calls() == []
    (policy,) = audit_rows(gw, "project.policy")
    assert (policy.actor, policy.target) == ("admin-api", "demo")
    assert json.loads(policy.detail) == {"allow": ["git__*"], "deny": ["git__push*"]}
    limits = audit_rows(gw, "project.limits")  # newest first; the refused bodies wrote nothing
    assert [(e.actor, e.target) for e in limits] == [("admin-api", "demo")] * 2
    assert [json.loads(e.detail) for e in limits] == [{"rate": 100}, {"rate": 0.2, "burst": 1}]


async def test_per_server_routes_are_closed_to_a_narrowed_key(
    start: Start, tmp_path: Path,
) -> None:
    # Regression (review): a narrowed key could reach a server raw through
    # /projects/P/servers/S/… and call what the project endpoint hides from it.
    projects, git_rec, _ = servers(tmp_path)
    gw = await start(projects, {})
    narrowed = new_key(gw, ["demo__*"])
    raw = f"{gw.url}/projects/demo/servers/git/mcp"
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.get(f"{gw.url}/projects/demo/servers/git/sse", headers=auth(narrowed))
        assert r.status_code == 403 and r.json()["error"]["code"] == -32057, r.text
        r = await StreamableClient(http, raw, auth(narrowed)).initialize("2025-06-18")
        assert r.status_code == 403
        # An unnarrowed key of a project without a policy still has the raw routes.
        plain = StreamableClient(http, raw, gw.auth())
        await plain.connect("2025-06-18")
        assert "result" in await plain.request("tools/list")
    ws = f"ws{gw.url.removeprefix('http')}/projects/demo/servers/git/ws"
    with pytest.raises(ConnectionRejected) as refused:
        async with open_ws_client(ws, key=narrowed):
            pass
    assert refused.value.status_code == 403
    assert git_rec.tool_calls() == []


async def test_per_server_routes_are_closed_by_a_project_policy(
    start: Start, tmp_path: Path,
) -> None:
    projects, git_rec, _ = servers(tmp_path)
    gw = await start(projects, {"projects.demo.policy": POLICY})
    async with httpx.AsyncClient(timeout=30) as http:
        raw = f"{gw.url}/projects/demo/servers/git/mcp"
        r = await StreamableClient(http, raw, gw.auth()).initialize("2025-06-18")
        assert r.status_code == 403 and "/projects/demo/mcp" in r.json()["error"]["message"]
    assert git_rec.tool_calls() == []


async def test_a_restart_hands_project_sessions_the_new_server(
    start: Start, tmp_path: Path,
) -> None:
    # Regression (review): the console's restart left live project sessions on the
    # stopped supervisor ("server 'git' is stopped" until the client reconnected).
    projects, git_rec, _ = servers(tmp_path)
    gw = await start(projects, {})
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, url(gw), gw.auth())
        await client.connect("2025-06-18")
        assert "git__status" in await listed(client)
        assert await gw.gateway.restart_server("demo", "git", "the test")
        with trio.fail_after(15):
            while True:
                reply = await client.request("tools/call", {"name": "git__status",
                                                            "arguments": {}})
                if "result" in reply:
                    break
                await trio.sleep(0.2)  # the new process is still starting
    assert len(git_rec.requests("initialize")) == 2
