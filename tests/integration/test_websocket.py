"""The WebSocket endpoint (``GET …/ws``) through real HTTP: auth both ways, refusals
before the upgrade, bad frames, a client that does not read, cancellation upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from tests.conftest import StartGateway
from tests.support import DEMO_SERVER, Recording
from tests.support.websocket import ConnectionClosed, ConnectionRejected, open_ws_client
from upstream import errors


def ws_url(gw: Any, project: str = "demo", server: str = "demo") -> str:
    return gw.url.replace("http://", "ws://") + f"/projects/{project}/servers/{server}/ws"


async def initialize(client: Any) -> dict[str, Any]:
    reply = await client.request("initialize", {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "ws-test", "version": "1"}})
    await client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    return reply


@pytest.mark.parametrize("via", ["header", "subprotocol"])
async def test_list_and_call_with_the_key_either_way(start_gateway: StartGateway,
                                                     via: str) -> None:
    gw = await start_gateway()
    async with open_ws_client(ws_url(gw), key=gw.keys["demo"], via=via) as client:
        assert client.subprotocol == "mcp"  # never the key's entry
        init = await initialize(client)
        assert init["result"]["serverInfo"]["name"] == "mcp-orch-demo"
        tools = await client.request("tools/list")
        assert {"echo", "add"} <= {t["name"] for t in tools["result"]["tools"]}
        echo = await client.request("tools/call", {"name": "echo", "arguments": {"text": "ws"}},
                                    msg_id="str-id")
        assert echo["id"] == "str-id"
        assert echo["result"]["content"][0]["text"] == "ws"
    sessions = gw.gateway.registry.sessions
    with trio.fail_after(5):
        while any(s.transport == "ws" for s in sessions.values()):
            await trio.sleep(0.02)


async def test_refusals_come_before_the_upgrade(start_gateway: StartGateway) -> None:
    gw = await start_gateway({"demo": {"servers": {"demo": DEMO_SERVER}},
                              "other": {"servers": {"demo": DEMO_SERVER}}})
    with pytest.raises(ConnectionRejected) as missing:
        async with open_ws_client(ws_url(gw)):
            pass
    assert missing.value.status_code == 401
    headers = {k.lower(): v for k, v in missing.value.headers}
    assert headers[b"www-authenticate"].startswith(b"Bearer")
    assert b'"code":%d' % errors.UNAUTHORIZED in missing.value.body

    with pytest.raises(ConnectionRejected) as wrong_project:
        async with open_ws_client(ws_url(gw, "other"), key=gw.keys["demo"], via="subprotocol"):
            pass
    assert wrong_project.value.status_code == 404

    with pytest.raises(ConnectionRejected) as bad_origin:
        async with open_ws_client(ws_url(gw), key=gw.keys["demo"], origin="https://evil.example"):
            pass
    assert bad_origin.value.status_code == 403

    with pytest.raises(ConnectionRejected) as wrong_protocol:
        async with open_ws_client(ws_url(gw), key=gw.keys["demo"], subprotocols=["graphql-ws"]):
            pass
    assert wrong_protocol.value.status_code == 400
    assert not any(s.transport == "ws" for s in gw.gateway.registry.sessions.values())


async def test_bad_frames_get_errors_and_the_session_carries_on(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(max_body_bytes=65536)
    async with open_ws_client(ws_url(gw), key=gw.keys["demo"]) as client:
        await initialize(client)
        await client.send_text(b"\x00\x01binary")
        assert (await client.receive())["error"]["code"] == errors.INVALID_REQUEST
        await client.send_text("{not json")
        assert (await client.receive())["error"]["code"] == errors.PARSE_ERROR
        await client.send_text("[" * 30_000 + "]" * 30_000)  # deeper than any decoder
        assert (await client.receive())["error"]["code"] == errors.PARSE_ERROR
        await client.send({"jsonrpc": "1.0", "id": 1, "method": "ping"})
        assert (await client.receive())["error"]["code"] == errors.INVALID_REQUEST
        assert (await client.request("ping"))["result"] == {}
        # A batch is served too, one answer per request.
        await client.send([{"jsonrpc": "2.0", "id": "a", "method": "ping"},
                           {"jsonrpc": "2.0", "id": "b", "method": "ping"}])
        assert {(await client.receive())["id"], (await client.receive())["id"]} == {"a", "b"}
    async with open_ws_client(ws_url(gw), key=gw.keys["demo"]) as client:
        await client.send_text("x" * 70_000)  # over max_body_bytes
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
        assert closed.value.reason.code == 1009
    async with open_ws_client(ws_url(gw), key=gw.keys["demo"]) as client:
        assert (await client.request("ping"))["result"] == {}


async def test_a_client_that_does_not_read_is_closed_with_a_reason(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(session_queue=4)
    text = "y" * 60_000
    async with open_ws_client(ws_url(gw), key=gw.keys["demo"]) as client:
        await initialize(client)
        with trio.fail_after(30):
            for n in range(300):  # ~18 MB of answers: more than the socket buffers hold
                await client.send({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                                   "params": {"name": "echo", "arguments": {"text": text}}})
        sessions = gw.gateway.registry.sessions
        with trio.fail_after(20):
            while any(s.transport == "ws" for s in sessions.values()):
                await trio.sleep(0.05)  # the session ended without the client reading
        received = 0
        with pytest.raises(ConnectionClosed) as closed, trio.fail_after(20):
            while True:
                await client.receive()
                received += 1
        assert closed.value.reason.code == 1008
        assert "did not read" in (closed.value.reason.reason or "")
        assert received < 300  # what was queued went out; the rest was not buffered


async def test_disconnecting_cancels_the_call_upstream(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    recording = Recording(tmp_path / "upstream.jsonl")
    gw = await start_gateway({"demo": {"servers": {"demo": recording.server(DEMO_SERVER)}}})
    async with open_ws_client(ws_url(gw), key=gw.keys["demo"]) as client:
        await initialize(client)
        await client.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                           "params": {"name": "sleep", "arguments": {"seconds": 30}}})
        upstream_id = await recording.upstream_id_of_call("sleep")
        assert upstream_id != 7
    assert await recording.wait_cancelled(upstream_id) == [upstream_id]
