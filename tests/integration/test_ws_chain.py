"""A gateway in front of a gateway over WebSocket.

The back gateway serves the demo server (recording what it read); the front
gateway has one remote server, ``url = "ws://…/projects/demo/servers/demo/ws"``
of the back gateway, with the back project's key as a configured
``Authorization`` header. A client reaches the front over legacy SSE. So the
front's WebSocket link (``upstream/ws_link.py``) talks to the back's ``…/ws``
endpoint (``gateway/transports/websocket.py``): our client against our
server, each as the other side would see any peer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.conftest import StartGateway
from tests.support import DEMO_SERVER, Recording, RunningGateway, cancelled, open_sse_session, rpc


def ws_sessions(back: RunningGateway) -> list:
    return [s for s in back.gateway.registry.sessions.values() if s.transport == "ws"]


@pytest.fixture
def recording(tmp_path: Path) -> Recording:
    return Recording(tmp_path / "demo.jsonl")


@pytest.fixture
async def chain(start_gateway: StartGateway, recording: Recording,
                tmp_path: Path) -> tuple[RunningGateway, RunningGateway]:
    """``(back, front)``; the front's only server is the back's demo server over ``ws://``."""
    back = await start_gateway({"demo": {"servers": {"demo": recording.server(DEMO_SERVER)}}})
    # Both gateways write tmp_path/mcp-orch.toml (the back has read its copy; neither
    # reloads here); the front keeps its own store so the back's keys stay the back's.
    front = await start_gateway(
        {"front": {"servers": {"back": {
            "url": back.ws_url("demo", "demo"),
            "headers": {"Authorization": f"Bearer {back.keys['demo']}"},
            "restart": {"backoff_initial_s": 0.1, "backoff_max_s": 0.2},
        }}}},
        state_dir=str(tmp_path / "front-state"),
    )
    return back, front


async def test_a_client_lists_and_calls_through_two_gateways(
    chain: tuple[RunningGateway, RunningGateway], recording: Recording,
) -> None:
    back, front = chain
    assert front.gateway.servers[("front", "back")].config.transport == "websocket"
    async with open_sse_session(front.sse_url("front", "back"), front.auth("front")) as s:
        init = await s.initialize()
        assert init["serverInfo"]["name"] == "mcp-orch-demo"  # the back's upstream, passed on
        tools = await s.call("tools/list")
        assert {"echo", "add", "sleep"} <= {t["name"] for t in tools["tools"]}
        reply = await s.request("tools/call",
                                {"name": "echo", "arguments": {"text": "two hops"}},
                                msg_id="front-1")
        assert reply["id"] == "front-1"
        assert reply["result"]["content"] == [{"type": "text", "text": "two hops"}]

        # The back gateway holds one WebSocket session: the front's link, which
        # initialized as the gateway, with the back key (never the front's).
        [session] = ws_sessions(back)
        assert session.project == "demo" and session.config.name == "demo"
        assert session.client_info is not None and session.client_info["name"] == "mcp-orch"
        assert session.key_hash is not None

        # A second client of the front shares that one connection.
        async with open_sse_session(front.sse_url("front", "back"), front.auth("front")) as s2:
            await s2.initialize()
            result = await s2.call("tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}})
            assert result["content"][0]["text"] == "5"
            assert ws_sessions(back) == [session]

        # The demo server got the call, with an id remapped at each hop.
        [echo] = recording.tool_calls("echo")
        assert echo["params"]["arguments"] == {"text": "two hops"}
        assert echo["id"] != "front-1"
    assert front.keys["front"] not in "".join(map(str, recording.messages()))


async def test_a_cancellation_crosses_both_gateways(
    chain: tuple[RunningGateway, RunningGateway], recording: Recording,
) -> None:
    back, front = chain
    async with open_sse_session(front.sse_url("front", "back"), front.auth("front")) as s:
        await s.initialize()
        response = await s.post(rpc("slow", "tools/call",
                                    {"name": "sleep", "arguments": {"seconds": 30}}))
        assert response.status_code == 202
        upstream_id = await recording.upstream_id_of_call("sleep")
        await s.post(cancelled("slow", "user"))
        # Front session → front link → ws frame → back session → demo server's stdin.
        assert await recording.wait_cancelled(upstream_id) == [upstream_id]
        assert len(recording.tool_calls("sleep")) == 1
        assert (await s.call("tools/call", {"name": "echo", "arguments": {"text": "after"}})
                )["content"][0]["text"] == "after"
        with trio.fail_after(5):
            while any(session.in_flight for session in ws_sessions(back)):
                await trio.sleep(0.02)
