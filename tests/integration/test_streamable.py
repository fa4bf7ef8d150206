"""Streamable HTTP on the wire: status codes, session lifecycle, JSON vs SSE, resumption, CORS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import StartGateway
from tests.support import (
    DEMO_SERVER,
    Recording,
    RunningGateway,
    SseComment,
    SseEvent,
    StreamableClient,
    aiter_sse,
    cancelled,
    parse_events,
    rpc,
    sse_messages,
    streamable,
)


@pytest.fixture
def recording(tmp_path: Path) -> Recording:
    return Recording(tmp_path / "upstream.jsonl")


def recorded_demo(recording: Recording) -> dict[str, Any]:
    return {"demo": {"servers": {"demo": recording.server(DEMO_SERVER)}}}


def mcp_url(gw: RunningGateway) -> str:
    return gw.mcp_url()


def headers(gw: RunningGateway, session: str | None = None, version: str | None = None,
            **extra: str) -> dict[str, str]:
    return streamable.headers(gw.auth(), session, version, **extra)


async def initialize(http: httpx.AsyncClient, gw: RunningGateway, version: str) -> str:
    client = StreamableClient(http, mcp_url(gw), gw.auth())
    r = await client.initialize(version)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["result"]["protocolVersion"] == version
    session = r.headers["mcp-session-id"]
    assert session.isascii() and session.isprintable()
    r = await client.initialized()
    assert r.status_code == 202 and r.content == b""
    return session


async def test_session_lifecycle_and_status_codes(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-06-18")
        h = headers(gw, session, "2025-06-18")
        r = await http.post(mcp_url(gw), headers=h, json=rpc(1, "tools/list"))
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert {"echo", "sleep"} <= {t["name"] for t in r.json()["result"]["tools"]}
        # Missing session → 400; unknown → 404.
        r = await http.post(mcp_url(gw), headers=headers(gw), json=rpc(2, "tools/list"))
        assert r.status_code == 400
        r = await http.post(mcp_url(gw), headers=headers(gw, "nope"), json=rpc(2, "tools/list"))
        assert r.status_code == 404
        # Accept, Content-Type, protocol version, parse errors, batches.
        r = await http.post(mcp_url(gw), headers={**h, "Accept": "application/json"},
                            json=rpc(3, "ping"))
        assert r.status_code == 406
        r = await http.post(mcp_url(gw), headers={**h, "Content-Type": "text/plain"},
                            content=json.dumps(rpc(3, "ping")))
        assert r.status_code == 415
        r = await http.post(mcp_url(gw), headers={**h, "MCP-Protocol-Version": "1999-01-01"},
                            json=rpc(3, "ping"))
        assert r.status_code == 400 and "1999-01-01" in r.json()["error"]["message"]
        r = await http.post(mcp_url(gw), headers=h, content=b"{oops")
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        r = await http.post(mcp_url(gw), headers=h, json=[rpc(4, "ping"), rpc(5, "ping")])
        assert r.status_code == 400 and "batch" in r.json()["error"]["message"]
        # Errors from the upstream are JSON-RPC errors with status 200.
        r = await http.post(mcp_url(gw), headers=h, json=rpc(6, "no/such"))
        assert r.status_code == 200 and r.json()["error"]["code"] == -32601
        # A second standalone GET stream is refused while the first is open.
        async with http.stream("GET", mcp_url(gw), headers={**h, "Accept": "text/event-stream"}) as g:
            assert g.status_code == 200
            r = await http.get(mcp_url(gw), headers={**h, "Accept": "text/event-stream"})
            assert r.status_code == 409
        # DELETE ends the session; then it is 404.
        r = await http.delete(mcp_url(gw), headers=h)
        assert r.status_code == 200
        r = await http.post(mcp_url(gw), headers=h, json=rpc(7, "tools/list"))
        assert r.status_code == 404


async def test_batches_in_2025_03_26(start_gateway: StartGateway, recording: Recording) -> None:
    gw = await start_gateway(recorded_demo(recording))
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-03-26")
        h = headers(gw, session, "2025-03-26")
        batch = [rpc("a", "tools/call", {"name": "echo", "arguments": {"text": "one"}}),
                 rpc("b", "tools/call", {"name": "echo", "arguments": {"text": "two"}})]
        r = await http.post(mcp_url(gw), headers=h, json=batch)
        assert r.status_code == 200, r.text
        # One JSON array, one response per request (JSON-RPC leaves their order open).
        assert r.headers["content-type"].startswith("application/json")
        replies = {m["id"]: m["result"]["content"][0]["text"] for m in r.json()}
        assert replies == {"a": "one", "b": "two"} and len(r.json()) == 2
    texts = sorted(c["params"]["arguments"]["text"] for c in recording.tool_calls("echo"))
    assert texts == ["one", "two"]


async def test_progress_makes_the_answer_an_sse_stream(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-06-18")
        r = await http.post(
            mcp_url(gw), headers=headers(gw, session, "2025-06-18"),
            json=rpc(9, "tools/call", {"name": "sleep", "arguments": {"seconds": 0.3},
                                       "_meta": {"progressToken": "p"}}),
        )
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [m for _, m in sse_messages(r.text) if m is not None]
        assert events[0]["method"] == "notifications/progress"
        assert events[0]["params"]["progressToken"] == "p"
        assert events[-1]["id"] == 9 and "result" in events[-1]


async def test_dropped_stream_is_resumed_and_the_result_arrives_exactly_once(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    """A call slower than the answer window (default 50 ms) streams with a priming event;
    hanging up after it is not cancelling: the call runs on and is resumed."""
    gw = await start_gateway(recorded_demo(recording))
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-11-25")
        h = headers(gw, session, "2025-11-25")
        call = rpc("call-1", "tools/call", {"name": "sleep", "arguments": {"seconds": 1.0}})
        async with http.stream("POST", mcp_url(gw), headers=h, json=call) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.aiter_lines()
            priming = [await lines.__anext__() for _ in range(4)]
        # The priming event: an id, a retry hint and empty data; then we hang up mid-call.
        assert priming[0].startswith("retry: ")
        assert priming[1].startswith("id: ")
        assert priming[2] == "data: "
        last_event_id = priming[1][4:]
        await trio.sleep(1.3)  # the call finishes while nobody is listening
        r = await http.get(mcp_url(gw), headers={**h, "Accept": "text/event-stream",
                                                 "Last-Event-ID": last_event_id})
        assert r.status_code == 200
        replies = [m for _, m in sse_messages(r.text) if m and m.get("id") == "call-1"]
        assert len(replies) == 1
        assert replies[0]["result"]["content"][0]["text"] == "slept 1.0 s"
        # The upstream ran the call once and was never told to cancel it.
        assert len(recording.tool_calls("sleep")) == 1 and recording.cancellations() == []
        # An id the gateway never issued is a clear error, not an empty stream.
        r = await http.get(mcp_url(gw), headers={**h, "Accept": "text/event-stream",
                                                 "Last-Event-ID": "999-1"})
        assert r.status_code == 404 and "Last-Event-ID" in r.json()["error"]["message"]


async def test_client_cancellation_over_streamable_http(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    supervisor = gw.gateway.servers[("demo", "demo")]
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-06-18")
        h = headers(gw, session, "2025-06-18")
        async with trio.open_nursery() as nursery:
            async def slow_call() -> None:
                await http.post(mcp_url(gw), headers=h, json=rpc(
                    5, "tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))

            nursery.start_soon(slow_call)
            with trio.fail_after(5):
                while supervisor.upstream is None or supervisor.upstream.in_flight == 0:
                    await trio.sleep(0.01)
            r = await http.post(mcp_url(gw), headers=h, json={
                "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 5}})
            assert r.status_code == 202
            with trio.fail_after(3):
                while supervisor.upstream.in_flight:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def test_origin_host_and_cors(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient(timeout=20) as http:
        init = rpc(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                     "clientInfo": {"name": "t", "version": "0"}})
        r = await http.post(mcp_url(gw), headers=headers(gw, Origin="http://evil.example"),
                            json=init)
        assert r.status_code == 403
        r = await http.post(mcp_url(gw), headers=headers(gw, Host="evil.example"), json=init)
        assert r.status_code == 421
        r = await http.get(gw.sse_url(), headers={**gw.auth(), "Origin": "http://evil.example"})
        assert r.status_code == 403
        # A browser preflight from MCP Inspector's UI (a loopback origin), no credentials.
        r = await http.options(mcp_url(gw), headers={
            "Origin": "http://localhost:6274", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id, "
                                              "mcp-protocol-version, last-event-id, mcp-param-x"})
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "http://localhost:6274"
        allowed = r.headers["access-control-allow-headers"].lower()
        for name in ("authorization", "content-type", "mcp-session-id", "mcp-protocol-version",
                     "last-event-id", "mcp-param-x"):
            assert name in allowed
        assert "POST" in r.headers["access-control-allow-methods"]
        r = await http.post(mcp_url(gw), headers=headers(gw, Origin="http://localhost:6274"),
                            json=init)
        assert r.status_code == 200
        exposed = r.headers["access-control-expose-headers"].lower()
        assert "mcp-session-id" in exposed and "www-authenticate" in exposed
        assert r.headers["access-control-allow-origin"] == "http://localhost:6274"


async def test_requests_of_an_open_session_keep_every_rule(start_gateway: StartGateway) -> None:
    """Requests carrying Mcp-Session-Id are served by the raw-ASGI hot path
    (``SessionPost``): the same Origin, auth, size and session rules apply there."""
    gw = await start_gateway(max_body_bytes=4096)
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-11-25")
        h = headers(gw, session, "2025-11-25")
        r = await http.post(mcp_url(gw), headers={**h, "Origin": "http://evil.example"},
                            json=rpc(1, "tools/list"))
        assert r.status_code == 403
        r = await http.post(mcp_url(gw), headers={**h, "Origin": "http://localhost:6274"},
                            json=rpc(2, "tools/list"))
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://localhost:6274"
        r = await http.post(mcp_url(gw), headers={**h, "Authorization": "Bearer wrong"},
                            json=rpc(3, "tools/list"))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await http.post(mcp_url(gw), headers=h,
                            json=rpc(4, "tools/call", {"name": "echo",
                                                       "arguments": {"text": "x" * 8192}}))
        assert r.status_code == 413
        r = await http.post(mcp_url(gw), headers=h, json=[])
        assert r.status_code == 400
        r = await http.post(mcp_url(gw), headers=h, json={"jsonrpc": "2.0", "id": 5})
        assert r.status_code == 400 and r.json()["error"]["code"] == -32600
        # A notification alone: 202, nothing to answer.
        r = await http.post(mcp_url(gw), headers=h,
                            json={"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
        assert r.status_code == 202
        # A 2025-11-25 tools/call slower than the answer window streams, priming event first.
        r = await http.post(mcp_url(gw), headers=h,
                            json=rpc(6, "tools/call", {"name": "sleep",
                                                       "arguments": {"seconds": 0.3}}))
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_messages(r.text)
        assert events[0][1] is None and events[0][0]
        assert events[-1][1]["result"]["content"][0]["text"] == "slept 0.3 s"
        # initialize sent with a (stale) session header still opens a new session.
        r = await http.post(mcp_url(gw), headers=h, json=rpc(0, "initialize", {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"}}))
        assert r.status_code == 200 and r.headers["mcp-session-id"] != session
        # Only Streamable HTTP sessions answer to Mcp-Session-Id.
        async with http.stream("GET", gw.sse_url(), headers=gw.auth()) as stream:
            assert stream.status_code == 200
            sse_ids = [s.session_id for s in gw.gateway.registry.sessions.values()
                       if s.transport == "sse"]
            r = await http.post(mcp_url(gw), headers=headers(gw, sse_ids[0], "2025-11-25"),
                                json=rpc(7, "tools/list"))
            assert r.status_code == 404


async def test_idle_streams_get_keepalive_comments(start_gateway: StartGateway) -> None:
    gw = await start_gateway(keepalive_s=0.2)
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-06-18")
        h = {**headers(gw, session, "2025-06-18"), "Accept": "text/event-stream"}
        async with http.stream("GET", mcp_url(gw), headers=h) as g:
            assert g.status_code == 200
            seen: list[float] = []
            with trio.move_on_after(1.0):
                async for item in aiter_sse(g):
                    if isinstance(item, SseComment) and item.line == ": ping":
                        seen.append(trio.current_time())
            # About one comment per 0.2 s of silence (loose: the machine may be busy).
            assert len(seen) >= 2, seen


# -- JSON when the answer is ready (2025-11-25 tools/call) ---------------------------------
# A long window (``answer_window_s``) makes "the result came first" certain on a busy
# machine; the window passing is shown with the default one and a call that sleeps.

async def test_a_ready_tool_result_is_a_json_body(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    gw = await start_gateway(recorded_demo(recording), answer_window_s=30)
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-11-25")
        r = await http.post(mcp_url(gw), headers=headers(gw, session, "2025-11-25"),
                            json=rpc("c1", "tools/call",
                                     {"name": "echo", "arguments": {"text": "hi"}}))
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {"jsonrpc": "2.0", "id": "c1",
                            "result": {"content": [{"type": "text", "text": "hi"}]}}
    assert [c["params"]["arguments"] for c in recording.tool_calls()] == [{"text": "hi"}]


async def test_progress_before_the_result_makes_the_answer_a_stream(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    """Priming event, the progress, then the result — each once, with distinct ids."""
    gw = await start_gateway(recorded_demo(recording), answer_window_s=60)
    async with httpx.AsyncClient(timeout=30) as http:
        session = await initialize(http, gw, "2025-11-25")
        r = await http.post(mcp_url(gw), headers=headers(gw, session, "2025-11-25"),
                            json=rpc(7, "tools/call", {
                                "name": "sleep", "arguments": {"seconds": 0.5},
                                "_meta": {"progressToken": "p"}}))
    assert r.headers["content-type"].startswith("text/event-stream")
    priming, *events = parse_events(r.text)
    assert priming.id and priming.retry and priming.json() is None
    messages = [e.json() for e in events]
    assert [m.get("method") for m in messages[:-1]] == ["notifications/progress"] * 5
    assert messages[0]["params"]["progressToken"] == "p"
    assert messages[-1] == {"jsonrpc": "2.0", "id": 7,
                            "result": {"content": [{"type": "text", "text": "slept 0.5 s"}]}}
    assert len({e.id for e in [priming, *events]}) == len(events) + 1
    assert len(recording.tool_calls("sleep")) == 1


async def test_a_notification_in_the_window_starts_the_stream_then(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    """The stream begins with the first progress, not when the window or the call ends:
    its events arrive while the call still runs (it is cancelled unfinished here)."""
    gw = await start_gateway(recorded_demo(recording), answer_window_s=60)
    async with httpx.AsyncClient(timeout=20) as http:
        client = StreamableClient(http, mcp_url(gw), gw.auth())
        await client.connect("2025-11-25")
        call = rpc(8, "tools/call", {"name": "sleep", "arguments": {"seconds": 30},
                                     "_meta": {"progressToken": "p"}})
        async with client.stream_post(call) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = aiter_sse(r)
            priming = await anext_event(events)
            first = await anext_event(events)
            assert priming.json() is None and priming.id
            assert first.json()["method"] == "notifications/progress"
            upstream_id = await recording.upstream_id_of_call("sleep")
            assert (await client.post(cancelled(8))).status_code == 202
            rest = [e.json() for e in [e async for e in events] if isinstance(e, SseEvent)]
    assert not any("result" in m for m in rest)  # it never finished
    assert await recording.wait_cancelled(upstream_id) == [upstream_id]


async def test_a_call_slower_than_the_window_resumes_from_its_priming_event(
    start_gateway: StartGateway, recording: Recording,
) -> None:
    gw = await start_gateway(recorded_demo(recording), sse_poll_s=0.2)
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gw, "2025-11-25")
        h = headers(gw, session, "2025-11-25")
        r = await http.post(mcp_url(gw), headers=h, json=rpc(
            "slow", "tools/call", {"name": "sleep", "arguments": {"seconds": 0.6}}))
        # The gateway closed the stream (polling) before the result: priming event only.
        assert r.headers["content-type"].startswith("text/event-stream")
        events = parse_events(r.text)
        assert [e.json() for e in events] == [None] and events[0].retry == 1000
        r = await http.get(mcp_url(gw), headers={**h, "Accept": "text/event-stream",
                                                 "Last-Event-ID": events[0].id})
        messages = [m for _, m in sse_messages(r.text) if m is not None]
        while not any("result" in m for m in messages):  # polled again: resume once more
            last = [i for i, _ in sse_messages(r.text) if i][-1]
            r = await http.get(mcp_url(gw), headers={**h, "Accept": "text/event-stream",
                                                     "Last-Event-ID": last})
            messages += [m for _, m in sse_messages(r.text) if m is not None]
    assert [m["id"] for m in messages if "result" in m] == ["slow"]
    assert len(recording.tool_calls("sleep")) == 1


async def anext_event(events: Any) -> SseEvent:
    """The next event of ``aiter_sse`` (comments skipped)."""
    while not isinstance(item := await events.__anext__(), SseEvent):
        pass
    return item
