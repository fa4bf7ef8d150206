"""The official Python SDK (``mcp`` 2.x) as a client of the gateway, on the trio backend."""

from __future__ import annotations

import sniffio
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client

from tests.conftest import StartGateway


async def test_python_sdk_sse_client_initialize_list_call(start_gateway: StartGateway) -> None:
    assert sniffio.current_async_library() == "trio"
    gw = await start_gateway()
    async with sse_client(gw.sse_url(), headers=gw.auth()) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "mcp-orch-demo"
            tools = await session.list_tools()
            assert {"echo", "add"} <= {tool.name for tool in tools.tools}
            result = await session.call_tool("echo", {"text": "through the gateway"})
            assert result.is_error is not True
            assert result.content[0].text == "through the gateway"
            result = await session.call_tool("add", {"a": 1, "b": 2})
            assert result.content[0].text in ("3", "3.0")
            await session.send_ping()
