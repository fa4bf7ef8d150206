"""Misbehaving upstreams: each case bounded, nothing lost, nothing leaked, the gateway serves on."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import attrs
import pytest
import trio

from config import parse_server
from tests.faults.conftest import Faulty
from tests.faults.helpers import finish, groups_alive, misbehave, wait_health
from tests.support import DEMO_SERVER, RpcError, open_sse_session
from upstream import errors

FAST = {"request_timeout_s": 1.5, "first_start_timeout_s": 1.5,
        "restart": {"backoff_initial_s": 0.2, "backoff_max_s": 0.5}}


async def _call(gw: Any, server: str, tool: str = "echo", **arguments: Any) -> dict[str, Any]:
    """One call on a fresh session of ``server``: the response message (result or error)."""
    async with open_sse_session(gw.sse_url(server=server), gw.auth()) as s:
        try:
            await s.initialize()
        except RpcError as exc:  # initialize waits for the upstream too
            return {"error": exc.error}
        return await s.request("tools/call", {"name": tool, "arguments": arguments}, timeout=10)


@pytest.mark.parametrize("mode", ["exit", "silent"])
async def test_an_upstream_that_never_comes_up_gets_errors_not_hangs(
    faulty_gateway: Faulty, mode: str
) -> None:
    gw, base = await faulty_gateway({"bad": misbehave(mode, **FAST)})
    view = await wait_health(gw.url, "demo", "bad", lambda v: v.get("last_exit"))
    assert view["state"] in ("restarting", "failed"), view
    with trio.fail_after(8):
        reply = await _call(gw, "bad")
    assert reply["error"]["code"] in (errors.UPSTREAM_UNAVAILABLE, errors.UPSTREAM_CLOSED), reply
    await finish(gw.url, gw.auth(), base)


async def test_garbage_on_stdout_is_skipped(faulty_gateway: Faulty) -> None:
    gw, base = await faulty_gateway({"garbage": misbehave("garbage")})
    reply = await _call(gw, "garbage", text="through the noise")
    assert reply["result"]["content"][0]["text"] == "through the noise"
    await finish(gw.url, gw.auth(), base)


async def test_a_huge_line_breaks_the_link_and_health_says_so_at_once(faulty_gateway: Faulty) -> None:
    gw, base = await faulty_gateway({"huge": misbehave("huge")}, stop_grace_s=1)
    before = await wait_health(gw.url, "demo", "huge", lambda v: v["state"] == "running")
    reply = await _call(gw, "huge", "huge")
    assert "broke the protocol" in reply["error"]["message"], reply
    # The error went out when the link broke; /health must agree right away,
    # while the old process is still being stopped (stdin EOF, grace, SIGTERM).
    view = await wait_health(gw.url, "demo", "huge", lambda v: True)
    assert view["state"] != "running" or view["pid"] != before["pid"], view
    assert view["pid"] != before["pid"]
    await wait_health(gw.url, "demo", "huge", lambda v: v["state"] == "running")
    await finish(gw.url, gw.auth(), base)


async def test_a_notification_flood_does_not_lose_the_answer(faulty_gateway: Faulty) -> None:
    gw, base = await faulty_gateway({"flood": misbehave("flood")})
    async with open_sse_session(gw.sse_url(server="flood"), gw.auth()) as s:
        await s.initialize()
        try:
            reply = await s.request("tools/call", {"name": "echo", "arguments": {"text": "x"}},
                                    timeout=15)
        except trio.TooSlowError:
            # Allowed only one way: the session was ended for not keeping up.
            assert s.ended.is_set(), "the answer was lost and the session lives on"
        else:
            assert reply["result"]["content"][0]["text"] == "x"
    await finish(gw.url, gw.auth(), base)


@pytest.mark.parametrize("mode", ["ignore-eof", "children"])
async def test_a_removed_upstream_leaves_no_process(faulty_gateway: Faulty, mode: str) -> None:
    gw, base = await faulty_gateway({"odd": misbehave(mode)}, stop_grace_s=0.3)
    view = await wait_health(gw.url, "demo", "odd", lambda v: v["state"] == "running")
    group = {view["pid"]}
    with trio.fail_after(5):
        while len(groups_alive(group)) < (3 if mode == "children" else 1):
            await trio.sleep(0.05)
    gateway = gw.gateway
    project = gateway.config.projects["demo"]
    servers = {k: v for k, v in project.servers.items() if k != "odd"}
    await gateway.apply_projects({"demo": attrs.evolve(project, servers=servers)}, "the test")
    with trio.fail_after(5):
        while groups_alive(group):
            await trio.sleep(0.05)
    await finish(gw.url, gw.auth(), base)


@pytest.mark.heavy
async def test_kill_9_during_a_stream_of_calls_answers_each_exactly_once(
    faulty_gateway: Faulty,
) -> None:
    gw, base = await faulty_gateway({"victim": {**DEMO_SERVER, "restart": FAST["restart"]}})
    view = await wait_health(gw.url, "demo", "victim", lambda v: v["state"] == "running")
    answers: dict[int, list[dict[str, Any]]] = {}
    async with open_sse_session(gw.sse_url(server="victim"), gw.auth()) as s:
        await s.initialize()
        async def call(n: int) -> None:
            await trio.sleep(n * 0.02)
            try:
                await s.call("tools/call", {"name": "sleep", "arguments": {"seconds": 0.3}},
                             msg_id=100 + n, timeout=10)
            except RpcError:
                pass

        async with trio.open_nursery() as nursery:
            for n in range(1, 61):
                nursery.start_soon(call, n)
            await trio.sleep(0.6)
            os.kill(view["pid"], signal.SIGKILL)
        await trio.sleep(0.3)  # a duplicate would arrive now
        for name, data in s.events:
            message = json.loads(data) if name == "message" else None
            if isinstance(message, dict) and "id" in message and "method" not in message:
                answers.setdefault(message["id"], []).append(message)
    answers = {k: v for k, v in answers.items() if isinstance(k, int) and k > 100}
    assert sorted(answers) == list(range(101, 161)), sorted(set(range(101, 161)) - set(answers))
    doubled = {k: v for k, v in answers.items() if len(v) != 1}
    assert not doubled, doubled
    outcomes = {"result" if "result" in v[0] else v[0]["error"]["code"] for v in answers.values()}
    assert "result" in outcomes and outcomes - {"result"}, outcomes  # some before, some cut
    await finish(gw.url, gw.auth(), base)


async def test_a_slow_first_start_shows_starting_with_its_pid(faulty_gateway: Faulty) -> None:
    slow = {**DEMO_SERVER, "env": {"DEMO_SERVER_STARTUP_DELAY_S": "2.5"},
            "request_timeout_s": 1, "first_start_timeout_s": 20}
    gw, base = await faulty_gateway({"slow": slow})
    view = await wait_health(gw.url, "demo", "slow", lambda v: v.get("starting_for_s", 0) > 0.3)
    assert view["state"] == "starting" and view["pid"] and groups_alive({view["pid"]}), view
    running = await wait_health(gw.url, "demo", "slow", lambda v: v["state"] == "running")
    assert running["pid"] == view["pid"] and running["restarts"] == 0  # 2.5 s > request_timeout_s
    await finish(gw.url, gw.auth(), base)


def test_first_start_timeout_is_validated() -> None:
    server = parse_server("p", "s", {"command": "x"}, "t")
    assert server.first_start_timeout_s == 300
    with pytest.raises(Exception, match="first_start_timeout_s"):
        parse_server("p", "s", {"command": "x", "first_start_timeout_s": 0}, "t")
