"""Remote upstreams over WebSocket: a gateway whose server speaks MCP on ``ws://`` (subprotocol ``mcp``).

The server here is written in the test with trio-websocket's ``serve_websocket``
(one JSON-RPC message per text frame) and records what it received — the
handshake headers and every message — so the tests assert what actually
crossed the wire. Clients reach it through the gateway's legacy SSE endpoint.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from tests.conftest import StartGateway
from tests.support import open_sse_session, write_config
from upstream.ws_link import WebSocketLinkError, open_websocket_link

ADMIN = "test-admin-token-ws-0123456789"
ECHO = {"name": "echo", "description": "Echo the text back",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}


@attrs.define(eq=False)
class WsMcpServer:
    """A small MCP server over WebSocket; tool calls can make it misbehave on purpose."""

    port: int = 0
    handshakes: list[dict[str, str]] = attrs.field(factory=list)
    paths: list[str] = attrs.field(factory=list)
    proposed: list[tuple[str, ...]] = attrs.field(factory=list)
    received: list[dict[str, Any]] = attrs.field(factory=list)
    #: HTTP status to refuse the next handshakes with (0: accept).
    reject_with: int = 0

    async def handle(self, request: WebSocketRequest) -> None:
        self.handshakes.append({k.decode().lower(): v.decode() for k, v in request.headers})
        self.paths.append(request.path)
        self.proposed.append(tuple(request.proposed_subprotocols))
        if self.reject_with:
            await request.reject(self.reject_with, body=b"go away")
            return
        ws = await request.accept(subprotocol="mcp")
        while True:
            try:
                frame = await ws.get_message()
            except ConnectionClosed:
                return
            message = json.loads(frame)
            self.received.append(message)
            if "id" in message and "method" in message:
                if not await self.answer(ws, message):
                    return

    async def answer(self, ws: WebSocketConnection, message: dict[str, Any]) -> bool:
        method, params = message["method"], message.get("params") or {}
        result: dict[str, Any]
        if method == "initialize":
            result = {"protocolVersion": params["protocolVersion"], "capabilities": {"tools": {}},
                      "serverInfo": {"name": "ws-test-server", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [ECHO]}
        elif method == "tools/call":
            name, arguments = params["name"], params.get("arguments") or {}
            if name == "close":  # hang up in the middle of a request
                await ws.aclose(4000, "bye")
                return False
            if name == "huge":  # one frame above the gateway's limit
                await ws.send_message("x" * arguments["size"])
            if name == "garbage":  # frames that are no JSON-RPC message, then the answer
                await ws.send_message(b"\x00\x01binary")
                await ws.send_message("this is {not json")
                await ws.send_message('{"hello": "world"}')
            result = {"content": [{"type": "text", "text": arguments.get("text", name)}]}
        else:
            await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": -32601, "message": f"unknown method {method}"}}))
            return True
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}))
        return True

    def calls(self) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("method") == "tools/call"]


async def ws_server(nursery: trio.Nursery) -> WsMcpServer:
    server = WsMcpServer()
    listening = await nursery.start(serve_websocket, server.handle, "127.0.0.1", 0, None)
    server.port = listening.port
    return server


def remote(server: WsMcpServer, **extra: Any) -> dict[str, Any]:
    return {"demo": {"servers": {"remote": {
        "url": f"ws://127.0.0.1:{server.port}/mcp?tenant=t1",
        "headers": {"Authorization": "Bearer ${WS_UPSTREAM_KEY}", "X-Upstream-Tag": "from-config"},
        "restart": {"backoff_initial_s": 0.1, "backoff_max_s": 0.2},
        **extra,
    }}}}


async def status_of(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url + "/status", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    return response.json()["projects"]["demo"]["servers"]["remote"]


async def test_a_websocket_server_behind_the_gateway(
    nursery: trio.Nursery, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await ws_server(nursery)
    monkeypatch.setenv("WS_UPSTREAM_KEY", "upstream-secret")
    gw = await start_gateway(remote(server))  # no transport: the ws:// url selects it
    supervisor = gw.gateway.servers[("demo", "remote")]
    assert supervisor.config.transport == "websocket"
    async with open_sse_session(gw.sse_url(server="remote"), gw.auth()) as s:
        await s.initialize()
        tools = await s.call("tools/list")
        assert [t["name"] for t in tools["tools"]] == ["echo"]
        reply = await s.request("tools/call", {"name": "echo", "arguments": {"text": "over ws"}},
                                msg_id="client-7")
        assert reply["id"] == "client-7"
        assert reply["result"]["content"][0]["text"] == "over ws"
        # Several at once over the one connection, each answered to its caller.
        answers: dict[int, str] = {}

        async def one(n: int) -> None:
            result = await s.call("tools/call", {"name": "echo", "arguments": {"text": str(n)}})
            answers[n] = result["content"][0]["text"]

        async with trio.open_nursery() as calls:
            for n in range(8):
                calls.start_soon(one, n)
        assert answers == {n: str(n) for n in range(8)}

    # The handshake: subprotocol "mcp", the configured headers, never the client's key.
    assert len(server.handshakes) == 1
    handshake = server.handshakes[0]
    assert server.proposed == [("mcp",)]
    assert server.paths == ["/mcp?tenant=t1"]
    assert handshake["authorization"] == "Bearer upstream-secret"
    assert handshake["x-upstream-tag"] == "from-config"
    assert gw.keys["demo"] not in json.dumps(server.handshakes)
    assert gw.keys["demo"] not in json.dumps(server.received)
    # What the server received: the gateway's own initialize, then remapped ids.
    methods = [m.get("method") for m in server.received]
    assert methods[:3] == ["initialize", "notifications/initialized", "tools/list"]
    assert server.received[0]["params"]["clientInfo"]["name"] != "mcp-orch-tests"
    echo = next(m for m in server.calls() if m["params"]["arguments"]["text"] == "over ws")
    assert echo["id"] != "client-7"
    ids = [m["id"] for m in server.received if "id" in m]
    assert len(ids) == len(set(ids)) == 1 + 1 + 1 + 8 + 1  # initialize, 2 lists, 9 calls
    assert supervisor.restarts == 0 and supervisor.pid is None


async def test_the_server_closing_the_connection_restarts_the_link(
    nursery: trio.Nursery, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await ws_server(nursery)
    monkeypatch.setenv("WS_UPSTREAM_KEY", "k")
    gw = await start_gateway(remote(server), admin_token=ADMIN)
    async with open_sse_session(gw.sse_url(server="remote"), gw.auth()) as s:
        await s.initialize()
        assert (await s.call("tools/call", {"name": "echo", "arguments": {"text": "1"}}))
        # The server hangs up during a call: the call fails at once, not by timeout.
        with trio.fail_after(5):
            reply = await s.request("tools/call", {"name": "close"})
        assert "error" in reply and "4000" in reply["error"]["message"]
        with trio.fail_after(10):
            while (status := await status_of(gw.url))["restarts"] < 1 or (
                status["state"] != "running"
            ):
                await trio.sleep(0.05)
        assert "code 4000" in status["last_exit"] and "bye" in status["last_exit"]
        assert any("code 4000" in line for line in status["stderr_tail"])
        # A later call works over the new connection, which initialized again.
        result = await s.call("tools/call", {"name": "echo", "arguments": {"text": "again"}})
        assert result["content"][0]["text"] == "again"
    assert len(server.handshakes) == 2
    assert [m["method"] for m in server.received if m.get("method") == "initialize"] == [
        "initialize", "initialize"]


async def test_frames_that_are_not_json_rpc_are_noted_and_skipped(
    nursery: trio.Nursery, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await ws_server(nursery)
    monkeypatch.setenv("WS_UPSTREAM_KEY", "k")
    gw = await start_gateway(remote(server), admin_token=ADMIN)
    async with open_sse_session(gw.sse_url(server="remote"), gw.auth()) as s:
        await s.initialize()
        result = await s.call("tools/call", {"name": "garbage", "arguments": {"text": "after"}})
        assert result["content"][0]["text"] == "after"  # the answer behind the garbage
        result = await s.call("tools/call", {"name": "echo", "arguments": {"text": "still"}})
        assert result["content"][0]["text"] == "still"
    status = await status_of(gw.url)
    assert status["state"] == "running" and status["restarts"] == 0
    tail = "\n".join(status["stderr_tail"])
    assert "binary frame (8 bytes)" in tail
    assert "not JSON" in tail and "this is {not json" in tail
    assert "not a JSON-RPC message" in tail and "hello" in tail
    assert len(server.handshakes) == 1


async def test_a_refused_handshake_is_shown_and_retried(
    nursery: trio.Nursery, start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await ws_server(nursery)
    server.reject_with = 401
    monkeypatch.setenv("WS_UPSTREAM_KEY", "wrong")
    gw = await start_gateway(remote(server), admin_token=ADMIN)
    with trio.fail_after(10):
        while len(server.handshakes) < 2:  # retried with backoff
            await trio.sleep(0.05)
    status = await status_of(gw.url)
    assert status["state"] in ("restarting", "failed")
    assert "HTTP 401" in status["last_exit"] and "go away" in status["last_exit"]
    assert any("HTTP 401" in line for line in status["stderr_tail"])
    server.reject_with = 0
    with trio.fail_after(10):
        while (await status_of(gw.url))["state"] != "running":
            await trio.sleep(0.05)


async def test_the_link_alone_ends_on_close_and_on_an_oversized_frame(nursery: trio.Nursery) -> None:
    server = await ws_server(nursery)
    url = f"ws://127.0.0.1:{server.port}/"
    errors: collections.deque[str] = collections.deque(maxlen=5)
    async with open_websocket_link(url, {}, errors=errors, max_message_size=1000) as link:
        await link.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "huge", "arguments": {"size": 5000}}})
        with trio.fail_after(5):
            assert await link.receive() is None
        assert "code 1009" in link.end_reason()
        with pytest.raises(trio.BrokenResourceError):
            await link.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    async with open_websocket_link(url, {}, errors=errors) as link:
        await link.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                         "params": {"name": "close"}})
        with trio.fail_after(5):
            assert await link.receive() is None
        assert "code 4000" in link.end_reason() and "bye" in link.end_reason()
    # The ring is bounded; nothing listens on the discard port.
    for _ in range(6):
        with pytest.raises(WebSocketLinkError, match="127.0.0.1:9"):
            async with open_websocket_link("ws://127.0.0.1:9/", {}, errors=errors):
                pass  # pragma: no cover
    assert len(errors) == 5 and all("127.0.0.1:9" in line for line in errors)


def test_the_cli_adds_a_websocket_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    config = str(write_config(tmp_path, {}))
    assert main(["projects", "create", "ops", "--config", config]) == 0
    assert main(["servers", "add", "--project", "ops", "w", "--url", "ws://127.0.0.1:1/mcp",
                 "--header", "X-K=${K}", "--config", config]) == 0
    assert main(["servers", "add", "--project", "ops", "e", "--url", "wss://h/ws",
                 "--transport", "websocket", "--config", config]) == 0
    capsys.readouterr()
    assert main(["servers", "show", "--project", "ops", "w", "--json", "--config", config]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["transport"] == "websocket" and shown["url"] == "ws://127.0.0.1:1/mcp"
    assert main(["servers", "add", "--project", "ops", "x", "--url", "ws://h/",
                 "--transport", "sse", "--config", config]) == 2
    assert ("command line: projects.ops.servers.x.transport: expected 'websocket' for a "
            "ws:// or wss:// url") in capsys.readouterr().err


async def test_a_silently_dead_connection_is_found_by_ping(nursery: trio.Nursery) -> None:
    server = await ws_server(nursery)
    frozen = trio.Event()

    async def relay(stream: trio.SocketStream) -> None:
        async with stream, await trio.open_tcp_stream("127.0.0.1", server.port) as target:
            async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                async for chunk in source:
                    if frozen.is_set():
                        await trio.sleep_forever()  # swallow: a path that died without RST
                    await sink.send_all(chunk)

            async with trio.open_nursery() as pipes:
                pipes.start_soon(pipe, stream, target)
                pipes.start_soon(pipe, target, stream)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, host="127.0.0.1"), relay, 0)
    port = listeners[0].socket.getsockname()[1]
    async with open_websocket_link(f"ws://127.0.0.1:{port}/", {}, ping_interval_s=0.1,
                                   ping_timeout_s=0.3) as link, trio.open_nursery() as inner:
        inner.start_soon(link.background, logging.getLogger("test"))
        await link.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        with trio.fail_after(5):
            assert (await link.receive())["result"]["tools"] == [ECHO]
        await trio.sleep(0.5)  # pings answered meanwhile: the link stays up
        assert not link.end_reason().startswith("lost")
        frozen.set()
        with trio.fail_after(5):
            assert await link.receive() is None
        assert "no pong within 0.3 s" in link.end_reason()
        assert any("no pong" in line for line in link.stderr_tail)
