"""The Python SDK 1.x WebSocket client (``mcp.client.websocket.websocket_client``) as a peer of the gateway.

Run with ``.venv-mcp1/bin/python`` (``mcp[ws]`` 1.x: the client was removed in
2.x, and it runs on asyncio through the ``websockets`` library)::

    python ws_client_py1.py <ws url> <tool> '<arguments as JSON>'

It initializes, lists the tools, calls one and prints one JSON object on
stdout — ``{"server": serverInfo, "tools": [names], "result": the call's
result}``; any failure (a refused upgrade, an error result, a timeout) exits
non-zero. The client offers subprotocol ``mcp`` and sends no headers, so the
project must be ``auth = "none"``.
"""

from __future__ import annotations

import json
import sys
import warnings
from datetime import timedelta

import anyio
from mcp import ClientSession
from mcp.client.websocket import websocket_client

TIMEOUT_S = 30


async def main(url: str, tool: str, arguments: dict) -> None:
    with anyio.fail_after(TIMEOUT_S * 3):
        async with websocket_client(url) as (read, write):
            async with ClientSession(read, write,
                                     read_timeout_seconds=timedelta(seconds=TIMEOUT_S)) as session:
                init = await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool(tool, arguments)
    if result.isError:
        raise SystemExit(f"the call failed: {result.model_dump_json()}")
    print(json.dumps({
        "server": init.serverInfo.model_dump(mode="json", exclude_none=True),
        "tools": [t.name for t in tools.tools],
        "result": result.model_dump(mode="json", by_alias=True, exclude_none=True),
    }))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit("usage: ws_client_py1.py <ws url> <tool> '<arguments as JSON>'")
    # websocket_client is deprecated in its last 1.x releases; that is why it is tested here.
    warnings.simplefilter("ignore", DeprecationWarning)
    anyio.run(main, sys.argv[1], sys.argv[2], json.loads(sys.argv[3] if len(sys.argv) == 4 else "{}"))
