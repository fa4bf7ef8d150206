"""The project endpoint (``/projects/{p}/mcp``, ``…/sse``, ``…/ws``): one session for all
servers of a project, through real HTTP, asserting what the upstreams received."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from config import ProjectConfig, ServerConfig, Store
from tests.conftest import StartGateway
from tests.support import (
    DEMO_SERVER,
    REPO,
    Recording,
    StreamableClient,
    cancelled,
    open_sse_session,
    rpc,
    sse_messages,
)
from tests.support.websocket import open_ws_client

PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NAMES_SERVER: dict[str, Any] = {
    "command": "python", "args": ["-m", "tests.servers.names_server"], "cwd": str(REPO),
}
ORIGINALS = ["a.b", "a/b", "a b", "a_b", "x" * 100, "x" * 99 + "y", "ok",
             "dotted.name/with space"]


def project_url(gw: Any, project: str = "demo", route: str = "mcp") -> str:
    return f"{gw.url}/projects/{project}/{route}"


def two_servers(tmp_path: Path, **names: Any) -> tuple[dict[str, Any], Recording, Recording]:
    demo_rec = Recording(tmp_path / "demo.jsonl")
    names_rec = Recording(tmp_path / "names.jsonl")
    projects = {"demo": {"servers": {
        "demo": demo_rec.server(DEMO_SERVER),
        "names": names_rec.server({**NAMES_SERVER, **names}),
    }}}
    return projects, demo_rec, names_rec


async def tool_names(client: StreamableClient) -> dict[str, dict[str, Any]]:
    reply = await client.request("tools/list")
    return {tool["name"]: tool for tool in reply["result"]["tools"]}


async def test_one_session_spans_the_project(start_gateway: StartGateway, tmp_path: Path) -> None:
    projects, demo_rec, names_rec = two_servers(tmp_path)
    gw = await start_gateway(projects)
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, project_url(gw), gw.auth())
        r = await client.initialize("2025-11-25")
        assert r.status_code == 200, r.text
        init = r.json()["result"]
        assert init["serverInfo"]["name"] == "mcp-orch project demo"
        assert "## demo\n\nA demo server" in init["instructions"]
        assert "## names\n\nTools with awkward names." in init["instructions"]
        assert init["capabilities"]["tools"]["listChanged"] is True
        assert "resources" in init["capabilities"] and "prompts" in init["capabilities"]
        await client.initialized()

        tools = await tool_names(client)
        assert all(PATTERN.match(name) for name in tools), sorted(tools)
        assert {"demo__echo", "demo__add", "names__ok", "names__dotted_name_with_space"} <= set(
            tools)
        names_tools = [t for t in tools if t.startswith("names__")]
        assert len(names_tools) == len(ORIGINALS)  # every one exposed, none merged
        # Each exposed name reaches its server under the original name.
        by_description = {tools[t]["description"]: t for t in names_tools}
        for original in ORIGINALS:
            exposed = by_description[f"tool {original!r}"]
            reply = await client.request("tools/call", {"name": exposed, "arguments": {}})
            assert reply["result"]["content"][0]["text"] == f"called {original}", reply
        called = [m["params"]["name"] for m in names_rec.tool_calls()]
        assert called == ORIGINALS
        reply = await client.request("tools/call", {"name": "demo__add",
                                                    "arguments": {"a": 2, "b": 3}})
        assert reply["result"]["content"][0]["text"] == "5"
        assert [m["params"]["name"] for m in demo_rec.tool_calls()] == ["add"]

        # Unknown, and a name the server has but not under that exposed form.
        for name in ("nope", "demo__nope", "add"):
            reply = await client.request("tools/call", {"name": name, "arguments": {}})
            assert reply["error"]["code"] == -32602
            assert reply["error"]["message"] == f"unknown tool: {name}"
        assert [m["params"]["name"] for m in demo_rec.tool_calls()] == ["add"]

        prompts = (await client.request("prompts/list"))["result"]["prompts"]
        assert {p["name"] for p in prompts} == {"demo__greet", "names__p_q"}
        reply = await client.request("prompts/get", {"name": "names__p_q"})
        assert reply["result"]["messages"][0]["content"]["text"] == "prompt p.q"

        resources = (await client.request("resources/list"))["result"]["resources"]
        assert [r["uri"] for r in resources] == ["demo://greeting"]  # unique: unchanged
        reply = await client.request("resources/read", {"uri": "demo://greeting"})
        assert reply["result"]["contents"][0]["text"] == "Hello from mcp-orch-demo"
        reply = await client.request("resources/read", {"uri": "other://thing"})
        assert reply["error"]["code"] == -32602

        # Pagination is one opaque cursor; a forged one is -32602.
        reply = await client.request("tools/list", {"cursor": "not-a-cursor!"})
        assert reply["error"]["code"] == -32602

    # The registry and the views report the project session as server "*".
    assert {k for k in gw.gateway.registry.counts()} == {("demo", "*", "http")}
    health = gw.gateway.health()
    assert health["projects"]["demo"]["project_sessions_by_transport"] == {"http": 1}


async def test_a_session_is_bound_to_the_key_that_opened_it(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    projects, _, _ = two_servers(tmp_path)
    gw = await start_gateway(projects)

    def second_key() -> str:
        store = Store.open(gw.gateway.config.gateway.state_dir)
        try:
            return store.create_key("demo", "second")
        finally:
            store.close()

    other = {"Authorization": f"Bearer {await trio.to_thread.run_sync(second_key)}"}
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, project_url(gw), gw.auth())
        await client.connect("2025-11-25")
        assert "result" in await client.request("ping")
        thief = StreamableClient(http, project_url(gw), other, session_id=client.session_id,
                                 version="2025-11-25")
        r = await thief.post(rpc(9, "tools/list"))
        assert r.status_code == 404, r.text
        # The same key on the per-server route cannot drive it either.
        per_server = StreamableClient(http, gw.mcp_url(), gw.auth(),
                                      session_id=client.session_id, version="2025-11-25")
        assert (await per_server.post(rpc(10, "ping"))).status_code == 404
        # Without a key: 401; with the right one it still works.
        r = await http.post(project_url(gw), json=rpc(1, "ping"), headers={
            "Accept": "application/json, text/event-stream", "Content-Type": "application/json"})
        assert r.status_code == 401
        assert "result" in await client.request("ping")
        # Another project's endpoint that does not exist: 404.
        r = await http.post(project_url(gw, "nope"), json=rpc(1, "ping"), headers=client.headers())
        assert r.status_code == 404


async def test_names_stay_the_same_after_a_restart_and_an_added_server(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    projects, _, _ = two_servers(tmp_path)
    gw = await start_gateway(projects)
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, project_url(gw), gw.auth())
        await client.connect("2025-11-25")
        before = {name: tool["description"] for name, tool in (await tool_names(client)).items()}
        assert len(before) == len(set(before.values()))

        # Restart the names server (a changed definition) and add another server.
        current = gw.gateway.config.projects["demo"]
        names = current.servers["names"]
        changed = {
            **current.servers,
            "names": attrs.evolve(names, env={**names.env, "UNUSED": "1"}),
            "more": ServerConfig(name="more", command="python",
                                 args=("-m", "tests.servers.names_server"), cwd=str(REPO)),
        }
        applied = await gw.gateway.apply_projects(
            {"demo": ProjectConfig(name="demo", auth=current.auth, servers=changed)}, "a test")
        assert applied["changed"] == ["demo/names"] and applied["added"] == ["demo/more"]
        with trio.fail_after(20):
            while True:
                after = {n: t["description"] for n, t in (await tool_names(client)).items()}
                if any(n.startswith("more__") for n in after) and any(
                        n.startswith("names__") for n in after):
                    break
                await trio.sleep(0.1)
        assert {n: d for n, d in after.items() if not n.startswith("more__")} == before
        assert all(PATTERN.match(n) for n in after)
        assert len(after) == len(before) + len(ORIGINALS)
        # A new session, later, sees the same names too.
        fresh = StreamableClient(http, project_url(gw), gw.auth())
        await fresh.connect("2025-11-25")
        assert {n: t["description"] for n, t in (await tool_names(fresh)).items()} == after


async def test_a_server_that_never_lists_does_not_delay_the_list(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    projects, _, names_rec = two_servers(tmp_path, env={"NAMES_SERVER_HANG_LIST": "1"})
    list_timeout_s = 1.0
    gw = await start_gateway(projects, list_timeout_s=list_timeout_s)
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, project_url(gw), gw.auth())
        await client.connect("2025-11-25")
        started = trio.current_time()
        r = await client.post(rpc(7, "tools/list"))
        elapsed = trio.current_time() - started
        assert elapsed < list_timeout_s + 1.5, elapsed
        messages = [m for _, m in sse_messages(r.text)]
        warnings = [m for m in messages if m.get("method") == "notifications/message"]
        assert len(warnings) == 1, messages
        assert warnings[0]["params"]["level"] == "warning"
        assert warnings[0]["params"]["logger"] == "mcp-orch"
        assert "'names'" in warnings[0]["params"]["data"]
        (reply,) = [m for m in messages if m.get("id") == 7]
        assert {t["name"] for t in reply["result"]["tools"]} >= {"demo__echo", "demo__add"}
        assert not any(t["name"].startswith("names__") for t in reply["result"]["tools"])
        # The stuck server was asked, and told to stop when its deadline passed.
        listed = await names_rec.wait_for(lambda r: r.requests("tools/list"))
        await names_rec.wait_cancelled(listed[-1]["id"])


async def test_a_crashed_servers_tools_vanish_and_come_back(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    projects, _, _ = two_servers(tmp_path)
    projects["demo"]["servers"]["demo"]["restart"] = {"backoff_initial_s": 2.0}
    gw = await start_gateway(projects)
    async with open_sse_session(project_url(gw, route="sse"), gw.auth()) as s:
        assert s.endpoint.startswith("/projects/demo/messages?sessionId=")
        await s.initialize("2024-11-05")
        tools = {t["name"] for t in (await s.call("tools/list"))["tools"]}
        assert "demo__echo" in tools and "names__ok" in tools
        reply = await s.request("tools/call", {"name": "demo__crash", "arguments": {}})
        assert "error" in reply

        def changes() -> int:
            return sum(n["method"] == "notifications/tools/list_changed" for n in s.notifications)

        with trio.fail_after(5):
            while changes() < 1:
                await trio.sleep(0.02)
        tools = {t["name"] for t in (await s.call("tools/list"))["tools"]}
        assert "demo__echo" not in tools and "names__ok" in tools
        with trio.fail_after(15):
            while changes() < 2:
                await trio.sleep(0.05)
        tools = {t["name"] for t in (await s.call("tools/list"))["tools"]}
        assert "demo__echo" in tools


async def test_legacy_sse_project_session_lists_calls_and_cancels(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    projects, demo_rec, _ = two_servers(tmp_path)
    gw = await start_gateway(projects)
    async with open_sse_session(project_url(gw, route="sse"), gw.auth()) as s:
        await s.initialize("2024-11-05")
        tools = {t["name"] for t in (await s.call("tools/list"))["tools"]}
        assert {"demo__sleep", "names__ok"} <= tools
        assert (await s.call("tools/call", {"name": "names__ok", "arguments": {}})
                )["content"][0]["text"] == "called ok"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: s.request(
                "tools/call", {"name": "demo__sleep", "arguments": {"seconds": 10}},
                msg_id="slow", timeout=15))
            upstream_id = await demo_rec.upstream_id_of_call("sleep")
            assert (await s.post(cancelled("slow"))).status_code == 202
            await demo_rec.wait_cancelled(upstream_id)
            nursery.cancel_scope.cancel()


async def test_websocket_project_session_lists_calls_and_cancels(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    projects, demo_rec, names_rec = two_servers(tmp_path)
    gw = await start_gateway(projects)
    url = f"ws{gw.url.removeprefix('http')}/projects/demo/ws"
    async with open_ws_client(url, key=gw.keys["demo"], via="subprotocol") as ws:
        init = await ws.request("initialize", {"protocolVersion": "2025-11-25",
                                               "capabilities": {},
                                               "clientInfo": {"name": "t", "version": "0"}})
        assert init["result"]["serverInfo"]["name"] == "mcp-orch project demo"
        tools = {t["name"] for t in (await ws.request("tools/list"))["result"]["tools"]}
        assert {"demo__sleep", "names__a_b"} <= tools or any(
            t.startswith("names__a_b_") for t in tools)
        reply = await ws.request("tools/call", {"name": "demo__echo",
                                                "arguments": {"text": "over ws"}})
        assert reply["result"]["content"][0]["text"] == "over ws"
        await ws.send(rpc(99, "tools/call", {"name": "demo__sleep",
                                             "arguments": {"seconds": 10}}))
        upstream_id = await demo_rec.upstream_id_of_call("sleep")
        await ws.send(cancelled(99))
        await demo_rec.wait_cancelled(upstream_id)
    assert not names_rec.tool_calls()


async def test_stateless_2026_07_28_through_the_project(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    projects, demo_rec, _ = two_servers(tmp_path)
    gw = await start_gateway(projects)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"}}

    async def post(http: httpx.AsyncClient, method: str, params: dict[str, Any],
                   name: str | None = None) -> dict[str, Any]:
        headers = {**gw.auth(), "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28",
                   "Mcp-Method": method}
        if name is not None:
            headers["Mcp-Name"] = name
        r = await http.post(project_url(gw), headers=headers,
                            json=rpc(1, method, {**params, "_meta": meta}))
        assert r.status_code == 200, r.text
        if r.headers["content-type"].startswith("text/event-stream"):
            return [m for _, m in sse_messages(r.text) if m.get("id") == 1][0]
        return json.loads(r.content)

    async with httpx.AsyncClient(timeout=30) as http:
        discover = (await post(http, "server/discover", {}))["result"]
        assert discover["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == (
            "mcp-orch project demo")
        assert "tools" in discover["capabilities"]
        tools = (await post(http, "tools/list", {}))["result"]["tools"]
        assert "demo__echo" in {t["name"] for t in tools}
        reply = await post(http, "tools/call", {"name": "demo__echo",
                                                "arguments": {"text": "stateless"}},
                           name="demo__echo")
        assert reply["result"]["content"][0]["text"] == "stateless"
        assert [m["params"]["name"] for m in demo_rec.tool_calls()] == ["echo"]
