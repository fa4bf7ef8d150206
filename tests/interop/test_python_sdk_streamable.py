"""The official Python SDK's Streamable HTTP client through the gateway, on trio (stateful era)."""

from __future__ import annotations

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import StartGateway


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
