"""Legacy HTTP+SSE transport through a real Hypercorn and real upstream processes."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import httpx
import pytest
import trio

from tests.conftest import StartGateway
from tests.support import (
    RpcError,
    alive,
    child_pids,
    count_tasks,
    demo_projects,
    open_fds,
    open_sse_session,
)


async def test_stream_headers_and_endpoint_event_first(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient(timeout=10) as http:
        async with http.stream("GET", gw.sse_url(), headers=gw.auth()) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache, no-transform"
            assert response.headers["x-accel-buffering"] == "no"
            lines = response.aiter_lines()
            first = [await lines.__anext__() for _ in range(3)]
    assert first[0] == "event: endpoint"
    assert first[1].startswith("data: /projects/demo/servers/demo/messages?sessionId=")
    assert first[2] == ""
    # A plain URI, not JSON-RPC, and relative: no scheme or host to mislead clients.
    assert "{" not in first[1] and "://" not in first[1]


async def test_initialize_list_and_call(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        init = await s.initialize("2024-11-05")
        assert init["protocolVersion"] == "2024-11-05"
        assert init["serverInfo"]["name"] == "mcp-orch-demo"
        assert "tools" in init["capabilities"]
        tools = await s.call("tools/list")
        assert {"echo", "add", "sleep"} <= {t["name"] for t in tools["tools"]}
        result = await s.call("tools/call", {"name": "add", "arguments": {"a": 2, "b": 40}})
        assert result["content"][0]["text"] in ("42", "42.0")
        assert await s.call("ping") == {}
        # Responses travel as `event: message`, never any other event name.
        assert {name for name, _ in s.events} <= {"endpoint", "message", "comment"}


async def test_version_negotiation_falls_back_to_latest(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        init = await s.initialize("1999-01-01")
        assert init["protocolVersion"] == "2025-11-25"


async def test_session_id_alias_and_uninitialized_session_is_served(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway()
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        # The Python SDK names the parameter session_id.
        s.endpoint = s.endpoint.replace("sessionId=", "session_id=")
        # No initialize at all (typescript-sdk#510 reconnects do this): still served.
        result = await s.call("tools/call", {"name": "echo", "arguments": {"text": "hi"}})
        assert result["content"][0]["text"] == "hi"


async def test_errors_travel_on_the_stream_with_202(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        reply = await s.request("no/such/method")
        assert reply["error"]["code"] == -32601
        reply = await s.request("tools/call", {"name": "nope", "arguments": {}})
        assert "error" in reply or reply["result"].get("isError") is True


async def test_ids_keep_their_type(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        async with trio.open_nursery() as nursery:
            replies: dict[Any, Any] = {}

            async def go(msg_id: Any, text: str) -> None:
                replies[msg_id] = await s.request(
                    "tools/call", {"name": "echo", "arguments": {"text": text}}, msg_id=msg_id
                )

            nursery.start_soon(go, "7", "string seven")
            nursery.start_soon(go, 7, "number seven")
    assert replies["7"]["id"] == "7" and replies[7]["id"] == 7
    assert replies["7"]["result"]["content"][0]["text"] == "string seven"
    assert replies[7]["result"]["content"][0]["text"] == "number seven"


async def test_bad_requests_get_clear_errors(start_gateway: StartGateway) -> None:
    gw = await start_gateway(max_body_bytes=4096)
    base = gw.url + "/projects/demo/servers/demo/messages"
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        url = gw.url + s.endpoint
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.post(url, content=b"{not json", headers=gw.auth())
            assert r.status_code == 400 and r.json()["error"]["code"] == -32700
            r = await http.post(url, json={"id": 1, "method": "x"}, headers=gw.auth())
            assert r.status_code == 400 and "jsonrpc" in r.json()["error"]["message"]
            r = await http.post(url, json={"jsonrpc": "2.0", "id": None, "method": "x"},
                                headers=gw.auth())
            assert r.status_code == 400
            r = await http.post(url, json=[], headers=gw.auth())
            assert r.status_code == 400
            r = await http.post(url, content=b"x" * 10_000, headers=gw.auth())
            assert r.status_code == 413
            r = await http.post(base + "?sessionId=nope", json={"jsonrpc": "2.0", "method": "x"},
                                headers=gw.auth())
            assert r.status_code == 404
            r = await http.post(base, json={"jsonrpc": "2.0", "method": "x"}, headers=gw.auth())
            assert r.status_code == 400
            r = await http.post(gw.url + "/projects/demo/servers/other/messages?sessionId="
                                + s.session_id, json={"jsonrpc": "2.0", "method": "x"},
                                headers=gw.auth())
            assert r.status_code == 404
        # The session is untouched by all of that.
        assert await s.call("ping") == {}


async def test_keepalive_comments(start_gateway: StartGateway) -> None:
    gw = await start_gateway(keepalive_s=0.2)
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await trio.sleep(0.7)
        assert ("comment", ": ping") in s.events


async def test_progress_tokens_are_mapped_back(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with open_sse_session(gw.sse_url(), gw.auth()) as s, open_sse_session(
        gw.sse_url(), gw.auth()
    ) as other:
        async with trio.open_nursery() as nursery:
            # Both sessions use the same token; each must see only its own progress.
            for sess in (s, other):
                nursery.start_soon(
                    sess.call, "tools/call",
                    {"name": "sleep", "arguments": {"seconds": 0.5}, "_meta": {"progressToken": "tok"}},
                )
        for sess in (s, other):
            progress = [n for n in sess.notifications if n["method"] == "notifications/progress"]
            assert progress, sess.notifications
            assert all(n["params"]["progressToken"] == "tok" for n in progress)
        assert len(s.notifications) < 30  # not the other session's share as well


async def test_client_cancellation_reaches_upstream(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    supervisor = gw.gateway.servers[("demo", "demo")]
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.post({"jsonrpc": "2.0", "id": "slow", "method": "tools/call",
                      "params": {"name": "sleep", "arguments": {"seconds": 30}}})
        with trio.fail_after(5):
            while supervisor.upstream is None or supervisor.upstream.in_flight == 0:
                await trio.sleep(0.01)
        await s.post({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": "slow", "reason": "user"}})
        with trio.fail_after(2):
            while supervisor.upstream.in_flight:
                await trio.sleep(0.01)
        await trio.sleep(0.2)
        # No response is sent for a cancelled request; the session keeps working.
        assert not any('"slow"' in data for _, data in s.events)
        assert await s.call("ping") == {}


async def test_disconnect_cancels_in_flight_and_ends_session(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    supervisor = gw.gateway.servers[("demo", "demo")]
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "sleep", "arguments": {"seconds": 30}}})
        with trio.fail_after(5):
            while supervisor.upstream is None or supervisor.upstream.in_flight == 0:
                await trio.sleep(0.01)
        sid = s.session_id
    with trio.fail_after(2):
        while gw.gateway.registry.get(sid) is not None or supervisor.upstream.in_flight:
            await trio.sleep(0.01)
    assert supervisor.sessions == {}


async def test_fifty_concurrent_sessions_get_their_own_responses(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway()
    results: dict[int, list[str]] = {}
    pids: set[str] = set()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=limits) as http:

        async def one(n: int) -> None:
            async with open_sse_session(gw.sse_url(), gw.auth(), http=http) as s:
                await s.initialize()
                got = []
                for i in range(5):  # every session reuses ids 1..5: the gateway remaps them
                    result = await s.call(
                        "tools/call", {"name": "echo", "arguments": {"text": f"{n}:{i}"}},
                        msg_id=i + 1,
                    )
                    got.append(result["content"][0]["text"])
                pid = await s.call("tools/call", {"name": "pid", "arguments": {}})
                pids.add(pid["content"][0]["text"])
                results[n] = got

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(one, n)
    assert len(results) == 50
    for n, got in results.items():
        assert got == [f"{n}:{i}" for i in range(5)]
    assert len(pids) == 1  # one shared upstream process


async def test_isolation_session_gives_each_session_its_own_process(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(demo_projects(isolation="session"))
    pids = []
    async with open_sse_session(gw.sse_url(), gw.auth()) as a, open_sse_session(
        gw.sse_url(), gw.auth()
    ) as b:
        for s in (a, b):
            await s.initialize()
            result = await s.call("tools/call", {"name": "pid", "arguments": {}})
            pids.append(int(result["content"][0]["text"]))
        health = (await httpx.AsyncClient().get(gw.url + "/health")).json()
        assert health["projects"]["demo"]["servers"]["demo"]["instances"] == 2
    assert pids[0] != pids[1]
    with trio.fail_after(5):
        while any(alive(p) for p in pids):
            await trio.sleep(0.05)


async def test_kill_9_during_call_errors_fast_and_recovers(start_gateway: StartGateway) -> None:
    gw = await start_gateway(
        demo_projects(restart={"backoff_initial_s": 0.2, "backoff_max_s": 1})
    )
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        pid = int((await s.call("tools/call", {"name": "pid", "arguments": {}}))["content"][0]["text"])
        async with trio.open_nursery() as nursery:
            outcome: dict[str, Any] = {}

            async def slow_call() -> None:
                outcome["reply"] = await s.request(
                    "tools/call", {"name": "sleep", "arguments": {"seconds": 30}}
                )
                outcome["at"] = trio.current_time()

            nursery.start_soon(slow_call)
            await trio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            killed_at = trio.current_time()
        assert "error" in outcome["reply"], outcome
        assert outcome["at"] - killed_at < 1.0
        assert "SIGKILL" in outcome["reply"]["error"]["message"]
        # Back within its backoff, on a new process.
        with trio.fail_after(5):
            while True:
                reply = await s.request("tools/call", {"name": "pid", "arguments": {}})
                if "result" in reply:
                    break
                await trio.sleep(0.1)
        assert int(reply["result"]["content"][0]["text"]) != pid
    async with httpx.AsyncClient() as http:
        server = (await http.get(gw.url + "/health")).json()["projects"]["demo"]["servers"]["demo"]
    assert server["state"] == "running" and server["restarts"] >= 1
    assert "SIGKILL" in server["last_exit"]


async def test_upstream_crashing_at_start_ends_failed(start_gateway: StartGateway) -> None:
    gw = await start_gateway(
        demo_projects(
            env={"DEMO_SERVER_EXIT_AT_START": "3"},
            restart={"max_restarts": 2, "window_s": 60, "backoff_initial_s": 0.1,
                     "backoff_max_s": 0.2, "failed_retry_s": 300},
        )
    )
    supervisor = gw.gateway.servers[("demo", "demo")]
    with trio.fail_after(10):
        while supervisor.state != "failed":
            await trio.sleep(0.05)
    assert supervisor.restarts == 2  # three starts, then it stops trying for failed_retry_s
    await trio.sleep(0.5)
    assert supervisor.restarts == 2  # no busy loop
    async with httpx.AsyncClient() as http:
        server = (await http.get(gw.url + "/health")).json()["projects"]["demo"]["servers"]["demo"]
    assert server["state"] == "failed" and "code 3" in server["last_exit"]
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        with trio.fail_after(1):
            with pytest.raises(RpcError, match="failed"):
                await s.call("tools/list")


async def test_command_not_found_is_reported_not_fatal(start_gateway: StartGateway) -> None:
    gw = await start_gateway(
        {"demo": {"servers": {
            "demo": {"command": "python", "args": ["-m", "upstream.demo_server"]},
            "ghost": {"command": "no-such-binary-mcp-orch", "restart": {"max_restarts": 0}},
        }}}
    )
    ghost = gw.gateway.servers[("demo", "ghost")]
    with trio.fail_after(5):
        while ghost.state != "failed":
            await trio.sleep(0.05)
    assert "command not found" in ghost.last_exit
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        assert await s.call("ping") == {}


async def test_two_hundred_cycles_leak_nothing(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as http:
        async with open_sse_session(gw.sse_url(), gw.auth(), http=http) as s:
            await s.initialize()  # warm: upstream running, connection pool open
        await trio.sleep(0.2)
        tasks, fds, children = count_tasks(), open_fds(), child_pids()
        for i in range(200):
            async with open_sse_session(gw.sse_url(), gw.auth(), http=http) as s:
                if i % 4 == 0:
                    await s.call("tools/call", {"name": "echo", "arguments": {"text": "x"}})
                if i % 10 == 0:  # leave one in flight: disconnect must cancel it
                    await s.post({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                                  "params": {"name": "sleep", "arguments": {"seconds": 10}}})
        with trio.fail_after(5):
            while gw.gateway.registry.sessions:
                await trio.sleep(0.01)
        await trio.sleep(0.3)
        assert count_tasks() <= tasks
        assert open_fds() <= fds + 2  # allow pooled keep-alive sockets to differ by one or two
        assert child_pids() == children
    assert gw.gateway.servers[("demo", "demo")].upstream.in_flight == 0


async def test_health_lists_projects_and_servers(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient() as http:
        r = await http.get(gw.url + "/health")
        assert r.status_code == 200
        body = r.json()
        assert body["status"] == "ok"
        server = body["projects"]["demo"]["servers"]["demo"]
        assert server["state"] in ("starting", "running")
        assert server["restarts"] == 0
        assert gw.keys["demo"] not in json.dumps(body)
        r = await http.get(gw.url + "/.well-known/oauth-authorization-server")
        assert r.status_code == 404


async def test_resource_updates_reach_subscribed_sessions_only(start_gateway: StartGateway) -> None:
    gw = await start_gateway()

    async def watched(s: Any) -> list[str]:
        result = await s.call("tools/call", {"name": "subscriptions", "arguments": {}})
        return json.loads(result["content"][0]["text"])

    async def updates(s: Any) -> int:
        return sum(n["method"] == "notifications/resources/updated" for n in s.notifications)

    uri = "demo://greeting"
    async with open_sse_session(gw.sse_url(), gw.auth()) as a, open_sse_session(
        gw.sse_url(), gw.auth()
    ) as b:
        for s in (a, b):
            await s.initialize()
        assert await a.call("resources/subscribe", {"uri": uri}) == {}
        await a.call("tools/call", {"name": "touch", "arguments": {"uri": uri}})
        await trio.sleep(0.2)
        assert await updates(a) == 1 and await updates(b) == 0
        # A second subscriber is recorded by the gateway; the upstream watches once.
        assert await b.call("resources/subscribe", {"uri": uri}) == {}
        await a.call("resources/unsubscribe", {"uri": uri})
        assert await watched(a) == [uri]  # b still holds it
        await a.call("tools/call", {"name": "touch", "arguments": {"uri": uri}})
        await trio.sleep(0.2)
        assert await updates(a) == 1 and await updates(b) == 1
    # The last subscriber's session ended: the upstream is told to stop watching.
    async with open_sse_session(gw.sse_url(), gw.auth()) as c:
        with trio.fail_after(5):
            while await watched(c):
                await trio.sleep(0.05)


async def test_connections_a_client_closed_are_closed_at_once(start_gateway: StartGateway) -> None:
    """Hypercorn kept a connection the client closed for keep_alive_timeout (75 s) —
    socket in CLOSE_WAIT, tasks and buffers held; gateway/hypercorn_patch.py ends it."""
    gw = await start_gateway()
    host, port = gw.url.rsplit("/", 1)[1].split(":")
    await trio.sleep(0.2)
    fds = open_fds()
    for i in range(20):
        stream = await trio.open_tcp_stream(host, int(port))
        if i % 2:  # half send a request first and read the answer
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
        await stream.aclose()
    with trio.fail_after(3):  # without the fix: 75 s
        while open_fds() > fds:
            await trio.sleep(0.05)
