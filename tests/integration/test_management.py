"""Management end to end: the CLI and the admin API against a running gateway and a real store."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from config import Store
from gateway.cli import build_parser
from tests.conftest import StartGateway
from tests.support import (
    REPO,
    alive,
    demo_projects,
    gateway_process,
    open_sse_session,
    write_config,
)
from tests.support.postgres import StoreTarget

FIXTURES = REPO / "tests" / "fixtures"
ADMIN = "admin-token-for-tests-0123456789"


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    words = list(args)
    at = words.index("--") if "--" in words else len(words)  # options go before `--`
    words[at:at] = ["--config", str(config)]
    return subprocess.run([sys.executable, "-m", "gateway", *words],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def cli_ok(config: Path, *args: str) -> str:
    result = cli(config, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


async def eventually(check: Any, timeout: float = 2.0) -> None:
    with trio.fail_after(timeout):
        while not await check():
            await trio.sleep(0.05)


def test_every_command_has_help() -> None:
    parser = build_parser()
    commands = [["serve"], ["reload"], ["check-config"], ["apply"], ["keys", "create"],
                ["keys", "list"], ["keys", "revoke"], ["projects", "create"], ["projects", "list"],
                ["projects", "show"], ["projects", "delete"], ["servers", "add"],
                ["servers", "list"], ["servers", "show"], ["servers", "remove"],
                ["servers", "enable"], ["servers", "disable"], ["servers", "import"]]
    for words in commands:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*words, "--help"])
        assert exit_info.value.code == 0, words


async def test_cli_manages_a_running_gateway(tmp_path: Path, store_target: StoreTarget) -> None:
    """On both backends: the CLI's writes reach the gateway (NOTIFY on PostgreSQL,
    ``data_version`` on SQLite)."""
    config = write_config(tmp_path, demo_projects(), **store_target.settings())
    async with gateway_process(config) as gw:
        health = gw.health

        async def server_state(project: str, name: str) -> str | None:
            return health()["projects"].get(project, {}).get("servers", {}).get(
                name, {}).get("state")

        # Projects.
        cli_ok(config, "projects", "create", "ops")
        assert json.loads(cli_ok(config, "projects", "list", "--json"))[1]["name"] == "ops"
        key = cli_ok(config, "keys", "create", "--project", "ops").strip().splitlines()[-1]
        auth = {"Authorization": f"Bearer {key}"}
        # A server added with the CLI is served within 2 s.
        cli_ok(config, "servers", "add", "--project", "ops", "tools", "--env", "SECRET=hunter2",
               "--", "python", "-m", "upstream.demo_server")

        async def running() -> bool:
            return await server_state("ops", "tools") == "running"

        await eventually(running)
        url = f"{gw.url}/projects/ops/servers/tools/sse"
        async with open_sse_session(url, auth) as s:
            assert (await s.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
                    )["content"][0]["text"] == "hi"
            # Disabling it ends its sessions.
            cli_ok(config, "servers", "disable", "--project", "ops", "tools")
            with trio.fail_after(3):
                await s.ended.wait()
        assert await server_state("ops", "tools") == "disabled"
        cli_ok(config, "servers", "enable", "--project", "ops", "tools")
        await eventually(running)
        # Secrets are never printed back.
        shown = cli_ok(config, "servers", "show", "--project", "ops", "tools")
        assert "hunter2" not in shown and "[redacted]" in shown
        listed = json.loads(cli_ok(config, "servers", "list", "--json"))
        assert {(s["project"], s["name"]) for s in listed} >= {("ops", "tools"), ("demo", "demo")}
        assert "hunter2" not in json.dumps(listed)
        # Import: all of a real-world file, or none of a malformed one.
        imported = json.loads(cli_ok(config, "servers", "import", "--project", "ops",
                                     str(FIXTURES / "mcpServers.json"), "--json"))
        assert set(imported) == {"filesystem", "git", "brave-search", "github", "linear",
                                 "remote-http"}
        bad = cli(config, "servers", "import", "--project", "ops",
                  str(FIXTURES / "mcpServers-malformed.json"))
        assert bad.returncode == 2
        assert "mcpServers.broken.args" in bad.stderr and "array of strings" in bad.stderr
        names = {s["name"] for s in json.loads(cli_ok(config, "servers", "list", "--project",
                                                      "ops", "--json"))}
        assert "fine" not in names  # nothing half-imported
        shown = json.loads(cli_ok(config, "servers", "show", "--project", "ops", "github",
                                  "--json"))
        assert shown["enabled"] is False and shown["env"] == {
            "GITHUB_PERSONAL_ACCESS_TOKEN": "${GITHUB_TOKEN}"}
        remote = json.loads(cli_ok(config, "servers", "show", "--project", "ops", "linear",
                                   "--json"))
        assert remote["url"] == "https://mcp.linear.app/sse" and remote["transport"] == "sse"
        assert "BSA-literal-secret-value" not in cli_ok(config, "projects", "show", "ops")
        # Removing a server ends its sessions, and a request in flight gets a clear error.
        async with open_sse_session(url, auth) as s:
            async with trio.open_nursery() as nursery:
                pending: dict[str, Any] = {}

                async def slow() -> None:
                    pending["reply"] = await s.request(
                        "tools/call", {"name": "sleep", "arguments": {"seconds": 30}})

                nursery.start_soon(slow)
                await trio.sleep(0.3)
                await trio.to_thread.run_sync(
                    cli_ok, config, "servers", "remove", "--project", "ops", "tools")
            assert "removed" in pending["reply"]["error"]["message"]
            with trio.fail_after(3):
                await s.ended.wait()
        cli_ok(config, "servers", "add", "--project", "ops", "tools", "--", "python", "-m",
               "upstream.demo_server")
        await eventually(running)
        # Revoking the key with the CLI ends the session opened with it.
        second = cli_ok(config, "keys", "create", "--project", "ops", "--name", "second",
                        "--expires-in", "3600").strip().splitlines()[-1]
        async with open_sse_session(url, {"Authorization": f"Bearer {second}"}) as s:
            cli_ok(config, "keys", "revoke", second[:12])
            with trio.fail_after(5):
                await s.ended.wait()
        # Deleting a project ends all of its sessions.
        async with open_sse_session(url, auth) as s:
            cli_ok(config, "projects", "delete", "ops")
            with trio.fail_after(3):
                await s.ended.wait()
        async with httpx.AsyncClient() as http:  # its keys went with it
            assert (await http.get(url, headers=auth)).status_code == 401
        # Errors are clear and non-zero.
        missing = cli(config, "servers", "remove", "--project", "nope", "x")
        assert missing.returncode == 1 and "no project 'nope'" in missing.stderr
        dup = cli(config, "projects", "create", "demo")
        assert dup.returncode == 1 and "already exists" in dup.stderr
        # apply / check-config against the running gateway's file.
        assert "already matches" in cli_ok(config, "apply")
        assert "OK" in cli_ok(config, "check-config")
        keys = json.loads(cli_ok(config, "keys", "list", "--json"))
        assert all("hash" not in json.dumps(k) for k in keys)


async def test_admin_api_end_to_end(start_gateway: StartGateway,
                                    store_target: StoreTarget) -> None:
    gw = await start_gateway(admin_token=ADMIN, **store_target.settings())
    admin = {"Authorization": f"Bearer {ADMIN}"}
    base = gw.url + "/admin"
    async with httpx.AsyncClient(timeout=20) as http:
        assert (await http.get(base + "/projects")).status_code == 401
        assert (await http.get(base + "/projects", headers=gw.auth())).status_code == 401
        spec = (await http.get(base + "/openapi.json")).json()
        assert spec["openapi"].startswith("3.") and "/admin/projects/{ref}/servers" in spec["paths"]
        r = await http.post(base + "/projects", headers=admin, json={"name": "team", "auth": "x"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "auth"
        r = await http.post(base + "/projects", headers=admin, json={"name": "team"})
        assert r.status_code == 201
        project_id = r.json()["id"]
        assert (await http.post(base + "/projects", headers=admin,
                                json={"name": "team"})).status_code == 409
        r = await http.post(base + f"/projects/{project_id}/keys", headers=admin,
                            json={"name": "ci", "expires_in_s": 3600})
        assert r.status_code == 201
        key = r.json()["key"]
        r = await http.post(base + "/projects/team/servers", headers=admin,
                            json={"name": "t", "command": "python", "args": "-m"})
        assert r.status_code == 422 and r.json()["error"]["field"] == "projects.team.servers.t.args"
        r = await http.post(base + "/projects/team/servers", headers=admin, json={
            "name": "t", "command": "python", "args": ["-m", "upstream.demo_server"],
            "env": {"TOKEN": "s3cret"}})
        assert r.status_code == 201 and r.json()["env"] == {"TOKEN": "[redacted]"}
        # Reachable at once: the gateway applied it before answering.
        url = f"{gw.url}/projects/team/servers/t/sse"
        auth = {"Authorization": f"Bearer {key}"}
        with trio.fail_after(2):
            async with open_sse_session(url, auth) as s:
                await s.initialize()
                r = await http.post(base + "/projects/team/servers/t/disable", headers=admin)
                assert r.status_code == 200
                with trio.fail_after(3):
                    await s.ended.wait()
        assert (await http.post(base + "/projects/team/servers/t/enable",
                                headers=admin)).status_code == 200
        r = await http.put(base + "/projects/team/servers/t", headers=admin, json={
            "command": "python", "args": ["-m", "upstream.demo_server"], "request_timeout_s": 5})
        assert r.status_code == 200 and r.json()["request_timeout_s"] == 5
        assert (await http.get(base + "/projects/team/servers/t", headers=admin)).status_code == 200
        listed = (await http.get(base + f"/projects/{project_id}/servers", headers=admin)).json()
        assert [s["name"] for s in listed] == ["t"]
        body = json.loads((FIXTURES / "mcpServers.json").read_text())
        r = await http.post(base + "/projects/team/import", headers=admin, json=body)
        assert r.status_code == 200 and r.json()["linear"] == "created"
        bad = json.loads((FIXTURES / "mcpServers-malformed.json").read_text())
        r = await http.post(base + "/projects/team/import", headers=admin, json=bad)
        assert r.status_code == 422 and r.json()["error"]["field"] == "mcpServers.broken.args"
        shown = (await http.get(base + "/projects/team", headers=admin)).json()
        assert "fine" not in {s["name"] for s in shown["servers"]}
        assert "BSA-literal-secret-value" not in json.dumps(shown)
        assert [k["name"] for k in shown["keys"]] == ["ci"]
        assert key not in json.dumps(shown)
        r = await http.delete(base + "/projects/team/servers/t", headers=admin)
        assert r.status_code == 200
        assert (await http.delete(base + "/projects/team/servers/t",
                                  headers=admin)).status_code == 404
        assert (await http.delete(base + f"/keys/{key[:12]}", headers=admin)).status_code == 200
        assert (await http.post(base + "/apply", headers=admin)).status_code == 200
        audit = (await http.get(base + "/audit?limit=50", headers=admin)).json()
        assert {"project.create", "server.put", "server.disable", "server.import",
                "server.remove"} <= {e["action"] for e in audit}
        assert (await http.delete(base + "/projects/team", headers=admin)).status_code == 200
        assert (await http.get(base + "/projects/team", headers=admin)).status_code == 404


async def test_sigkill_during_management_writes_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, demo_projects(), admin_token=ADMIN)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    acknowledged: list[str] = []
    async with gateway_process(config) as gw:
        async with httpx.AsyncClient(timeout=10) as http:

            async def writes() -> None:
                for n in range(100):
                    try:
                        r = await http.post(
                            f"{gw.url}/admin/projects/demo/servers", headers=admin,
                            json={"name": f"s{n}", "url": "http://127.0.0.1:9/mcp",
                                  "enabled": False})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 201:
                        acknowledged.append(f"s{n}")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writes)
                with trio.fail_after(30):
                    while len(acknowledged) < 30:
                        await trio.sleep(0.005)
                gw.process.send_signal(signal.SIGKILL)
        await gw.wait_exit(5)
    assert 30 <= len(acknowledged) < 100
    db = sqlite3.connect(tmp_path / "state" / "mcp-orch.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()
    store = Store.open(tmp_path / "state")
    try:
        stored = {s.name for s in store.servers("demo")}
    finally:
        store.close()
    assert set(acknowledged) <= stored
    assert not any(alive(p) for p in [gw.process.pid])
