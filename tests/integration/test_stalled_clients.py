"""A client that stops reading its stream loses its session *and* its connection: the
socket is not held once the stream had a grace period to drain (legacy SSE, WebSocket)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

import gateway.transports.front as front
from tests.conftest import StartGateway
from tests.support.websocket import ConnectionClosed, open_ws_client

BIG = "z" * 60_000
CALLS = 300  # ~18 MB of answers: more than the socket buffers of both ends hold


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front, "STALL_GRACE_S", 0.3)


def echo(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": BIG}}}


async def wait_until(predicate: Any, timeout: float = 20) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_legacy_sse_connection_of_a_client_that_does_not_read_is_closed(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(session_queue=4)
    connections = gw.gateway.connections
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        f"GET /projects/demo/servers/demo/sse HTTP/1.1\r\nhost: {host}:{port}\r\n"
        f"authorization: Bearer {gw.keys['demo']}\r\naccept: text/event-stream\r\n\r\n".encode())
    head = b""
    with trio.fail_after(10):
        while b"sessionId=" not in head or b"\n\n" not in head.split(b"sessionId=")[1]:
            head += await stream.receive_some(65536)  # the endpoint event, then read no more
    session_id = head.split(b"sessionId=")[1].split(b"\n")[0].strip().decode()
    session = gw.gateway.registry.sessions[session_id]
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{gw.url}/projects/demo/servers/demo/messages?sessionId={session_id}"
        for n in range(CALLS):
            r = await http.post(url, json=echo(n), headers=gw.auth())
            if r.status_code == 404:  # the session already ended
                break
            assert r.status_code == 202
        await wait_until(lambda: session.closed.is_set())
        assert session.overflowed
        # The connection is closed by the gateway although the client never read.
        await wait_until(lambda: connections.open == 1 or connections.open == 0)
        with trio.fail_after(20):
            while await _read_or_reset(stream):
                pass  # what was buffered, then the end
        # The gateway still serves: a new session works.
        r = await http.get(f"{gw.url}/health")
        assert r.status_code == 200


async def _read_or_reset(stream: trio.SocketStream) -> bytes:
    try:
        return await stream.receive_some(1 << 20)
    except trio.BrokenResourceError:  # reset by the gateway
        return b""


async def test_websocket_connection_of_a_client_that_does_not_read_is_closed(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(session_queue=4)
    connections = gw.gateway.connections
    url = gw.url.replace("http://", "ws://") + "/projects/demo/servers/demo/ws"
    try:
        async with open_ws_client(url, key=gw.keys["demo"]) as client:
            before = connections.open
            with trio.fail_after(30):
                for n in range(CALLS):
                    await client.connection.send_message(json.dumps(echo(n)))
            await wait_until(lambda: not any(s.transport == "ws"
                                             for s in gw.gateway.registry.sessions.values()))
            # Not reading at all, past the grace: the gateway lets go of the socket.
            await wait_until(lambda: connections.open < before)
    except ConnectionClosed as exc:
        # Cut (1006, no close frame) or, when the close frame still fit in the
        # socket buffers, closed with the reason (1008): either way, let go of.
        assert exc.reason.code in (1006, 1008), exc.reason
    async with open_ws_client(url, key=gw.keys["demo"]) as client:
        assert (await client.request("ping"))["result"] == {}
