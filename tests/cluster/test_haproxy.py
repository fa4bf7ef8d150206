"""Three instances behind HAProxy round-robin, no stickiness: every client works, because
each request for a session another instance owns is forwarded to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import trio
from mcp import types
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.cluster.conftest import running_cluster
from tests.interop.test_inspector_cli import inspector
from tests.support import CONFORMANCE_SERVER, DEMO_SERVER
from tests.support.haproxy import haproxy

SESSIONS = 50


def projects() -> dict[str, Any]:
    return {"demo": {"servers": {"demo": DEMO_SERVER, "conf": CONFORMANCE_SERVER}}}


async def test_sdk_sessions_through_haproxy(tmp_path: Path, pg_dsn: str) -> None:
    """50 sequential Streamable HTTP and 50 legacy SSE sessions of the Python SDK, and
    2026-07-28 multi-round-trip requests, through the load balancer: all succeed, they
    are spread over the instances, and requests were forwarded to their owners."""
    async with running_cluster(tmp_path, 3, store=pg_dsn, projects=projects()) as cluster, \
            haproxy(tmp_path, [i.url.removeprefix("http://") for i in cluster.instances]) as lb:
        base = f"{lb.url}/projects/demo/servers/demo"
        owners: set[str] = set()

        async def note_owner(response: Any) -> None:
            sid = response.headers.get("mcp-session-id")
            if sid:
                owners.add(sid.split(".")[0])

        async with httpx2.AsyncClient(headers=cluster.auth(), timeout=30,
                                      event_hooks={"response": [note_owner]}) as http:
            for n in range(SESSIONS):
                async with streamable_http_client(f"{base}/mcp", http_client=http) as (r, w):
                    async with ClientSession(r, w) as session:
                        await session.initialize()
                        tools = await session.list_tools()
                        assert "echo" in {t.name for t in tools.tools}
                        for i in range(2):
                            result = await session.call_tool("echo", {"text": f"{n}/{i}"})
                            assert result.content[0].text == f"{n}/{i}"
        assert len(owners) == 3, owners
        relayed = await cluster.forwarded()
        assert relayed >= SESSIONS  # most requests of a session land on another instance

        for n in range(SESSIONS):
            async with sse_client(f"{base}/sse", headers=cluster.auth()) as (r, w):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    result = await session.call_tool("add", {"a": n, "b": 1})
                    assert result.content[0].text in (str(n + 1), f"{n + 1}.0")
        assert await cluster.forwarded() >= relayed + SESSIONS

        asked: list[str] = []

        async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked.append(params.message)
            return types.ElicitResult(action="accept", content={"name": "Ada"})

        before = await cluster.forwarded()
        async with httpx2.AsyncClient(headers=cluster.auth(), timeout=30) as http:
            conf = streamable_http_client(f"{lb.url}/projects/demo/servers/conf/mcp",
                                          http_client=http)
            async with Client(conf, mode="2026-07-28", elicitation_callback=elicit) as client:
                for _ in range(6):
                    result = await client.call_tool("test_input_required_result_elicitation", {})
                    assert result.content[0].text == "Hello, Ada!"
        assert asked == ["What is your name?"] * 6
        # Round robin sends some retries (their requestState names the parked call's
        # instance) elsewhere: those were forwarded.
        assert await cluster.forwarded() > before


async def test_inspector_cli_through_haproxy(tmp_path: Path, pg_dsn: str) -> None:
    async with running_cluster(tmp_path, 3, store=pg_dsn) as cluster, \
            haproxy(tmp_path, [i.url.removeprefix("http://") for i in cluster.instances]) as lb:
        auth = f"Authorization: Bearer {cluster.key}"
        base = f"{lb.url}/projects/demo/servers/demo"
        for _ in range(3):
            with trio.fail_after(120):
                code, out, err = await inspector(
                    "--cli", f"{base}/sse", "--transport", "sse", "--header", auth,
                    "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=via lb")
            assert code == 0, (out, err)
            assert json.loads(out)["content"][0]["text"] == "via lb"
            with trio.fail_after(120):
                code, out, err = await inspector(
                    "--cli", f"{base}/mcp", "--transport", "http", "--header", auth,
                    "--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=2", "b=3")
            assert code == 0, (out, err)
            assert json.loads(out)["content"][0]["text"] == "5"
        assert await cluster.forwarded() > 0


async def test_a_forged_session_id_is_not_forwarded(tmp_path: Path, pg_dsn: str) -> None:
    """A session id whose owner part was edited fails its MAC: the instance that gets it
    answers 404 itself, and no instance relays it."""
    async with running_cluster(tmp_path, 2, store=pg_dsn) as cluster:
        a, b = cluster.instances
        b_id = (await cluster.instance_ids())[1]
        url = f"{a.url}/projects/demo/servers/demo/mcp"
        headers = {**cluster.auth(), "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
        async with httpx.AsyncClient(timeout=10) as http:
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}}
            r = await http.post(url, json=init, headers=headers)
            sid = r.headers["mcp-session-id"]
            owner, token, mac = sid.split(".")
            forged = f"{b_id}.{token}.{mac}"
            ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
            r = await http.post(url, json=ping, headers={**headers, "Mcp-Session-Id": forged})
            assert r.status_code == 404
        assert await cluster.forwarded() == 0


async def test_a_relayed_json_answer_arrives_whole_with_its_length(
    tmp_path: Path, pg_dsn: str,
) -> None:
    """An instance relaying a JSON answer sends it only once it has all of it, with a
    Content-Length: if the relaying instance dies first, the load balancer sees no
    answer at all (and may resend the request) rather than a body cut halfway."""
    async with running_cluster(tmp_path, 2, store=pg_dsn) as cluster:
        a, b = cluster.instances
        headers = {**cluster.auth(), "Accept": "application/json, text/event-stream",
                   "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
        async with httpx.AsyncClient(timeout=10) as http:
            init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"}}}
            r = await http.post(f"{b.url}/projects/demo/servers/demo/mcp", json=init,
                                headers=headers)
            headers["Mcp-Session-Id"] = r.headers["mcp-session-id"]
            via_a = f"{a.url}/projects/demo/servers/demo/mcp"
            r = await http.post(via_a, headers=headers,
                                json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            assert r.status_code == 202
            r = await http.post(via_a, json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
                                headers=headers)
            assert r.status_code == 200 and r.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}
            assert r.headers["content-type"].startswith("application/json")
            assert r.headers["content-length"] == str(len(r.content))
            assert "transfer-encoding" not in r.headers
        assert await cluster.forwarded() == 2
