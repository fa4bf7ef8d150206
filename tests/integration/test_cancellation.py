"""Every way a request can be cancelled reaches the upstream as ``notifications/cancelled``.

Asserted on the upstream's side: the demo server records what it reads
(``MCP_ORCH_RECORD``), and each test checks that the cancellation names the
id the upstream saw on the ``tools/call`` — the gateway's remapped id, not the
client's. Paths: the client's own ``notifications/cancelled`` (legacy SSE,
Streamable HTTP, also while the POST's answer is still held), the client going
away (legacy SSE stream dropped, Streamable HTTP ``DELETE``, a Streamable HTTP
POST closed before its answer began, a 2026-07-28 response stream closed), and
the gateway's ``request_timeout_s``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import StartGateway
from tests.support import (
    DEMO_SERVER,
    Recording,
    StreamableClient,
    cancelled,
    demo_projects,
    open_sse_session,
    rpc,
)
from tests.support import stateless as stateless_wire

SLOW_CALL = {"name": "sleep", "arguments": {"seconds": 30}}


@pytest.fixture
def recording(tmp_path: Path) -> Recording:
    return Recording(tmp_path / "upstream.jsonl")


def recorded_demo(recording: Recording, **overrides: Any) -> dict[str, Any]:
    return {"demo": {"servers": {"demo": recording.server({**DEMO_SERVER, **overrides})}}}


async def assert_cancelled_upstream(recording: Recording, upstream_id: Any) -> None:
    """The upstream got exactly one ``notifications/cancelled``, for ``upstream_id``."""
    ids = await recording.wait_cancelled(upstream_id)
    assert ids == [upstream_id]
    # And the call was not sent again (no retry reached the upstream).
    assert len(recording.tool_calls("sleep")) == 1


async def test_client_cancellation_over_legacy_sse(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    gw = await start_gateway(recorded_demo(recording))
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        r = await s.post(rpc("slow", "tools/call", SLOW_CALL))
        assert r.status_code == 202
        upstream_id = await recording.upstream_id_of_call("sleep")
        assert upstream_id != "slow"  # remapped
        r = await s.post(cancelled("slow", "user"))
        assert r.status_code == 202
        await assert_cancelled_upstream(recording, upstream_id)
        assert await s.call("ping") == {}


async def test_client_cancellation_over_streamable_http(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    gw = await start_gateway(recorded_demo(recording))
    async with httpx.AsyncClient(timeout=20) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-06-18")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.post, rpc("call-1", "tools/call", SLOW_CALL))
            upstream_id = await recording.upstream_id_of_call("sleep")
            assert upstream_id != "call-1"
            r = await client.post(cancelled("call-1"))
            assert r.status_code == 202
            await assert_cancelled_upstream(recording, upstream_id)
            nursery.cancel_scope.cancel()


async def test_client_cancellation_while_the_answer_is_held(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    """2025-11-25, a tools/call still in its answer window (long here, so certainly):
    the client's ``notifications/cancelled`` reaches the upstream, and the held POST
    ends with an empty stream — no response, no event id to resume from."""
    gw = await start_gateway(recorded_demo(recording), answer_window_s=60)
    async with httpx.AsyncClient(timeout=20) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-11-25")
        answers: list[httpx.Response] = []

        async def held_call() -> None:
            answers.append(await client.post(rpc("call-1", "tools/call", SLOW_CALL)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(held_call)
            upstream_id = await recording.upstream_id_of_call("sleep")
            r = await client.post(cancelled("call-1"))
            assert r.status_code == 202
            await assert_cancelled_upstream(recording, upstream_id)
        [answer] = answers
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.content == b""


async def test_a_client_leaving_while_its_answer_is_held_cancels_upstream(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    """2025-11-25: hanging up before the answer began (in the window, no priming event
    yet) leaves the client nothing to resume from, so the gateway cancels the call."""
    gw = await start_gateway(recorded_demo(recording), answer_window_s=60)
    async with httpx.AsyncClient(timeout=20) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-11-25")
        session_id = client.session_id

    async def call_then_hang_up(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with httpx.AsyncClient(timeout=20) as http:
                caller = StreamableClient(http, gw.mcp_url(), gw.auth(), session_id,
                                          "2025-11-25")
                await caller.post(rpc("call-1", "tools/call", SLOW_CALL))

    async with trio.open_nursery() as nursery:
        hang_up = await nursery.start(call_then_hang_up)
        upstream_id = await recording.upstream_id_of_call("sleep")
        assert recording.cancellations() == []
        hang_up.cancel()  # the connection closes before any byte of the answer
    await assert_cancelled_upstream(recording, upstream_id)
    # The session lives on: only the request was cancelled.
    async with httpx.AsyncClient(timeout=20) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth(), session_id, "2025-11-25")
        assert (await client.request("ping"))["result"] == {}


async def test_a_dropped_legacy_sse_stream_cancels_upstream(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    gw = await start_gateway(recorded_demo(recording))
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        await s.post(rpc(1, "tools/call", SLOW_CALL))
        upstream_id = await recording.upstream_id_of_call("sleep")
        assert recording.cancellations() == []
    # The stream is closed: the session ends and takes its requests with it.
    await assert_cancelled_upstream(recording, upstream_id)


async def test_delete_on_streamable_http_cancels_upstream(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    gw = await start_gateway(recorded_demo(recording))
    async with httpx.AsyncClient(timeout=20) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-11-25")

        async def slow_call() -> None:
            # The session ends under this POST; whatever it gets back is not the point.
            with contextlib.suppress(httpx.HTTPError):
                await client.post(rpc("call-1", "tools/call", SLOW_CALL))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call)
            upstream_id = await recording.upstream_id_of_call("sleep")
            assert recording.cancellations() == []
            r = await client.delete()
            assert r.status_code == 200
            await assert_cancelled_upstream(recording, upstream_id)
            nursery.cancel_scope.cancel()


async def test_a_dropped_request_is_cancelled_upstream(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    """2026-07-28: closing a request's response stream cancels that request."""
    gw = await start_gateway({"p": {"servers": {"demo": recording.server(DEMO_SERVER)}}})
    url = f"{gw.url}/projects/p/servers/demo/mcp"
    call = stateless_wire.request("call-1", "tools/call", SLOW_CALL)

    async def call_then_hang_up(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with httpx.AsyncClient(timeout=20) as http, \
                    stateless_wire.stream(http, url, gw.auth("p"), call):
                await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        hang_up = await nursery.start(call_then_hang_up)
        upstream_id = await recording.upstream_id_of_call("sleep")
        assert upstream_id != "call-1"
        assert recording.cancellations() == []
        hang_up.cancel()  # the response stream (and its connection) closes
    await assert_cancelled_upstream(recording, upstream_id)


async def test_a_request_timeout_is_cancelled_upstream(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    gw = await start_gateway(recorded_demo(recording, request_timeout_s=0.5))
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        reply = await s.request("tools/call", SLOW_CALL, msg_id="slow")
        assert "error" in reply  # the gateway answered for the upstream
        upstream_id = (await recording.wait_for(lambda r: r.tool_calls("sleep")))[0]["id"]
        await assert_cancelled_upstream(recording, upstream_id)
        assert await s.call("ping") == {}


async def test_no_cancellation_for_an_answered_request(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    """The control: a request that completes is not cancelled, so the tests above can fail."""
    gw = await start_gateway(demo_projects(env={"MCP_ORCH_RECORD": str(recording.path)}))
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        result = await s.call("tools/call", {"name": "sleep", "arguments": {"seconds": 0.1}})
        assert result["content"][0]["text"] == "slept 0.1 s"
    await trio.sleep(0.3)  # the session ended; nothing was in flight to cancel
    assert len(recording.tool_calls("sleep")) == 1
    assert recording.cancellations() == []
