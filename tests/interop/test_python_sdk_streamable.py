"""The official Python SDK's Streamable HTTP clients through the gateway, on trio: the
stateful ``ClientSession`` (initialize handshake) and the 2026-07-28 stateless ``Client``."""

from __future__ import annotations

from typing import Any

import httpx2
from mcp import types
from mcp.client.client import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import StartGateway
from tests.support import DEMO_SERVER, REPO


async def test_python_sdk_streamable_http_tools_resources_prompts(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway()
    url = f"{gw.url}/projects/demo/servers/demo/mcp"
    async with httpx2.AsyncClient(headers=gw.auth(), timeout=30) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.server_info.name == "mcp-orch-demo"
                assert init.protocol_version in ("2025-06-18", "2025-11-25")
                tools = await session.list_tools()
                assert {"echo", "add", "sleep"} <= {t.name for t in tools.tools}
                result = await session.call_tool("echo", {"text": "over streamable http"})
                assert result.content[0].text == "over streamable http"
                # A call that reports progress is answered over SSE, progress first.
                seen: list[float] = []

                async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                    seen.append(progress)

                result = await session.call_tool(
                    "sleep", {"seconds": 0.3}, progress_callback=on_progress
                )
                assert result.content[0].text == "slept 0.3 s"
                assert seen, "no progress notification reached the client"
                resources = await session.list_resources()
                assert str(resources.resources[0].uri) == "demo://greeting"
                read_result = await session.read_resource("demo://greeting")
                assert read_result.contents[0].text == "Hello from mcp-orch-demo"
                prompt = await session.get_prompt("greet", {"name": "Ada"})
                assert prompt.messages[0].content.text == "Say hello to Ada"
    # terminate_on_close sent DELETE: the session is gone.
    assert not [
        s for s in gw.gateway.registry.sessions.values() if s.transport == "http" and not s.closing
    ]


async def test_python_sdk_stateless_2026_07_28_client(start_gateway: StartGateway) -> None:
    """The SDK's ``Client`` probes ``server/discover`` and speaks 2026-07-28 through the gateway,
    its elicitation callback answering the upstream's question by a multi-round-trip request."""
    projects = {"demo": {"servers": {
        "demo": DEMO_SERVER,
        "conf": {"command": "python", "args": ["-m", "tests.servers.conformance_server"],
                 "cwd": str(REPO)},
    }}}
    gw = await start_gateway(projects)
    asked: list[str] = []

    async def elicit(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async with httpx2.AsyncClient(headers=gw.auth(), timeout=30) as http:
        demo = streamable_http_client(f"{gw.url}/projects/demo/servers/demo/mcp", http_client=http)
        async with Client(demo, mode="auto") as client:
            assert client.session.protocol_version == "2026-07-28"
            tools = await client.list_tools()
            assert {"echo", "add", "sleep"} <= {t.name for t in tools.tools}
            result = await client.call_tool("echo", {"text": "stateless"})
            assert result.content[0].text == "stateless"
            read_result = await client.read_resource("demo://greeting")
            assert read_result.contents[0].text == "Hello from mcp-orch-demo"
            prompt = await client.get_prompt("greet", {"name": "Ada"})
            assert prompt.messages[0].content.text == "Say hello to Ada"
        conf = streamable_http_client(f"{gw.url}/projects/demo/servers/conf/mcp", http_client=http)
        async with Client(conf, mode="2026-07-28", elicitation_callback=elicit) as client:
            result = await client.call_tool("test_input_required_result_elicitation", {})
            assert result.content[0].text == "Hello, Ada!"
    assert asked == ["What is your name?"]
    # No session outlives its request (the stateless revision keeps none).
    assert not [s for s in gw.gateway.registry.sessions.values() if not s.closing]
