"""Third-party clients through the project endpoint (``/projects/{p}/mcp``, ``…/sse``): the
conformance suite, MCP Inspector's CLI and the Python SDK, in front of a project holding
the conformance fixture server (``prefix = ""``: its fixture tools keep their names), the
demo server and server-everything."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
import trio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import StartGateway
from tests.interop.peers import NODE_MODULES, node_env, peer
from tests.interop.test_conformance import TOTAL_LINE, not_scored, parse_summary, run_suite
from tests.interop.test_inspector_cli import inspector
from tests.support import CONFORMANCE_SERVER, DEMO_SERVER

pytestmark = pytest.mark.interop


def project(auth: str = "none") -> dict[str, Any]:
    everything = NODE_MODULES / ".bin" / "mcp-server-everything"
    servers: dict[str, Any] = {
        "conf": {**CONFORMANCE_SERVER, "prefix": "", "isolation": "session"},
        "demo": DEMO_SERVER,
    }
    if everything.exists():
        servers["everything"] = {"command": str(everything), "env": {"PATH": node_env()["PATH"]}}
    return {"conf": {"auth": auth, "servers": servers}}


async def test_conformance_2025_11_25_through_the_project(start_gateway: StartGateway) -> None:
    peer("conformance")
    gw = await start_gateway(project(), sse_poll_s=0.1)
    output = await run_suite(f"{gw.url}/projects/conf/mcp", "2025-11-25")
    summary = parse_summary(output)
    failed = {name: counts for name, counts in summary.items() if counts[1]}
    assert len(summary) >= 30, output[-3000:]
    assert not failed, f"failed scenarios: {failed}\n{output[-5000:]}"
    total = TOTAL_LINE.search(output)
    assert total is not None and total.group(2) == "0", output[-3000:]


async def test_conformance_2026_07_28_through_the_project(start_gateway: StartGateway) -> None:
    peer("conformance")
    gw = await start_gateway(project())
    output = await run_suite(f"{gw.url}/projects/conf/mcp", "2026-07-28")
    summary = parse_summary(output)
    unscored = not_scored(output)
    failed = {n: c for n, c in summary.items() if n not in unscored and c[1]}
    assert len(summary) - len(unscored) >= 37, output[-3000:]
    assert not failed, f"failed scenarios: {failed}\n{output[-5000:]}"


async def test_inspector_cli_over_sse_and_http_through_the_project(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(project("api-key"))
    auth = f"Authorization: Bearer {gw.keys['conf']}"
    with trio.fail_after(180):
        for url, transport in ((f"{gw.url}/projects/conf/sse", "sse"),
                               (f"{gw.url}/projects/conf/mcp", "http")):
            base = ["--cli", url, "--transport", transport, "--header", auth]
            code, out, err = await inspector(*base, "--method", "tools/list")
            assert code == 0, (out, err)
            names = {tool["name"] for tool in json.loads(out)["tools"]}
            assert {"test_simple_text", "demo__echo", "demo__add"} <= names
            code, out, err = await inspector(*base, "--method", "tools/call", "--tool-name",
                                             "demo__add", "--tool-arg", "a=2", "b=3")
            assert code == 0, (out, err)
            assert json.loads(out)["content"][0]["text"] == "5"


async def test_python_sdk_through_the_project(start_gateway: StartGateway) -> None:
    gw = await start_gateway(project("api-key"))
    async with httpx2.AsyncClient(headers=gw.auth("conf"), timeout=30) as http:
        async with streamable_http_client(f"{gw.url}/projects/conf/mcp",
                                          http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.server_info.name == "mcp-orch project conf"
                tools = await session.list_tools()
                names = {t.name for t in tools.tools}
                assert {"test_simple_text", "demo__echo"} <= names
                if "everything" in project()["conf"]["servers"]:
                    assert any(n.startswith("everything__") for n in names)
                result = await session.call_tool("demo__echo", {"text": "through the project"})
                assert result.content[0].text == "through the project"
                result = await session.call_tool("test_simple_text", {})
                assert result.content[0].text
                read_result = await session.read_resource("demo://greeting")
                assert read_result.contents[0].text == "Hello from mcp-orch-demo"
