"""The tests' WebSocket MCP client (tests/support/websocket.py) against a local trio-websocket server.

The gateway's ``…/ws`` endpoint is tested with this client; here the client
itself is checked: what it offers on the upgrade (subprotocols, the key as a
header or as ``mcp-orch.bearer.<key>``) and how it matches responses.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from tests.support.websocket import ConnectionClosed, ConnectionRejected, open_ws_client


async def start_server(nursery: trio.Nursery, seen: list[dict[str, Any]]) -> str:
    """A WebSocket MCP echo server: records each upgrade, answers with a notification first."""

    async def handler(request: WebSocketRequest) -> None:
        offered = list(request.proposed_subprotocols)
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        seen.append({"offered": offered, "authorization": headers.get("authorization")})
        if offered and offered[-1] == "mcp-orch.bearer.wrong":
            await request.reject(401, body=b"no")
            return
        ws = await request.accept(subprotocol="mcp" if "mcp" in offered else None)
        while True:
            try:
                message = json.loads(await ws.get_message())
            except ConnectionClosed:
                return
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "method": "notifications/x"}))
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": str(message["id"]),
                                              "result": {"wrong": "type of id"}}))
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": message["id"],
                                              "result": {"method": message["method"]}}))

    server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
    return f"ws://127.0.0.1:{server.port}/projects/p/servers/s/ws"


async def test_key_in_the_header_and_responses_matched_by_id(nursery: trio.Nursery) -> None:
    seen: list[dict[str, Any]] = []
    url = await start_server(nursery, seen)
    async with open_ws_client(url, key="k1") as ws:
        assert ws.subprotocol == "mcp"
        reply = await ws.request("tools/list", {})
        assert reply == {"jsonrpc": "2.0", "id": 1, "result": {"method": "tools/list"}}
        assert ws.notifications == [{"jsonrpc": "2.0", "method": "notifications/x"}]
        assert (await ws.request("ping"))["id"] == 2
        await ws.close()
    assert seen == [{"offered": ["mcp"], "authorization": "Bearer k1"}]


async def test_key_as_a_subprotocol_and_a_refused_upgrade(nursery: trio.Nursery) -> None:
    seen: list[dict[str, Any]] = []
    url = await start_server(nursery, seen)
    async with open_ws_client(url, key="k2", via="subprotocol") as ws:
        assert ws.subprotocol == "mcp"
    assert seen[-1] == {"offered": ["mcp", "mcp-orch.bearer.k2"], "authorization": None}
    async with open_ws_client(url, subprotocols=[]) as ws:
        assert ws.subprotocol is None
    with pytest.raises(ConnectionRejected) as refused:
        async with open_ws_client(url, key="wrong", via="subprotocol"):
            pass
    assert refused.value.status_code == 401
