"""kill -9 of one of three instances behind HAProxy while 30 sessions call tools."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import httpx2
import trio
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.cluster.conftest import running_cluster
from tests.support.haproxy import haproxy
from tests.support.probes import alive
from tests.support.sse import SseEvent, aiter_sse, sse_messages
from tests.support.streamable import StreamableClient

SESSIONS = 30
VERSION = "2025-11-25"


async def test_kill_9_of_one_instance_under_load(tmp_path: Path, pg_dsn: str) -> None:
    async with running_cluster(tmp_path, 3, store=pg_dsn) as cluster, \
            haproxy(tmp_path, [i.url.removeprefix("http://") for i in cluster.instances]) as lb:
        victim = cluster.instances[0]
        victim_id = (await cluster.instance_ids())[0]
        upstream_pid = victim.health()["projects"]["demo"]["servers"]["demo"]["pid"]
        assert upstream_pid and alive(upstream_pid)
        url = f"{lb.url}/projects/demo/servers/demo/mcp"
        killed = trio.Event()
        failures: list[str] = []  # requests of sessions on surviving instances that failed
        ended: list[float] = []  # seconds from the kill to a dead session's 404
        survivors_calls = 0

        async def call(client: StreamableClient, message: dict[str, Any]) -> tuple[int, Any]:
            """POST a request as the SDKs do: read a JSON or SSE answer; an SSE answer cut
            after an event id is resumed with GET and Last-Event-ID."""
            last_id: str | None = None
            async with client.stream_post(message) as r:
                if r.status_code != 200 or not r.headers.get("content-type", "").startswith(
                        "text/event-stream"):
                    body = await r.aread()
                    return r.status_code, json.loads(body) if body else None
                try:
                    async for event in aiter_sse(r):
                        if isinstance(event, SseEvent):
                            last_id = event.id or last_id
                            data = event.json()
                            if isinstance(data, dict) and data.get("id") == message["id"]:
                                return 200, data
                except httpx.TransportError:
                    if last_id is None:
                        raise
            # The stream ended or was cut before the answer: resume it.
            r = await client.get(headers={"Last-Event-ID": last_id or ""})
            for _, data in sse_messages(r.text):
                if isinstance(data, dict) and data.get("id") == message["id"]:
                    return 200, data
            return r.status_code, f"resumed from {last_id!r}: {r.text}"

        async def session_loop(n: int, *, task_status: trio.TaskStatus[None]) -> None:
            nonlocal survivors_calls
            async with httpx.AsyncClient(timeout=30) as http:
                client = StreamableClient(http, url, cluster.auth())
                await client.connect(VERSION)
                assert client.session_id is not None
                mine = client.session_id.split(".")[0] == victim_id
                task_status.started()
                i = 0
                while True:
                    i += 1
                    message = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                               "params": {"name": "echo", "arguments": {"text": f"{n}:{i}"}}}
                    try:
                        status, answer = await call(client, message)
                    except httpx.TransportError as exc:
                        if not mine:
                            failures.append(f"session {n} call {i}: {exc!r}")
                        return
                    if mine and killed.is_set() and status == 404:
                        ended.append(trio.current_time() - kill_time)
                        return
                    if status != 200 or f"{n}:{i}" not in json.dumps(answer):
                        if not (mine and killed.is_set()):
                            failures.append(f"session {n} call {i}: {status} {answer}")
                        return
                    if not mine and killed.is_set():
                        survivors_calls += 1
                        if survivors_calls >= SESSIONS * 5:
                            return

        kill_time = 0.0
        with trio.fail_after(90):
            async with trio.open_nursery() as nursery:
                for n in range(SESSIONS):
                    await nursery.start(session_loop, n)
                await trio.sleep(2)
                kill_time = trio.current_time()
                os.kill(victim.process.pid, signal.SIGKILL)
                killed.set()
        assert failures == []
        assert ended, "no session lived on the killed instance"
        assert max(ended) < 2.0, ended
        # Its reaper stopped its upstream process.
        with trio.fail_after(10):
            while alive(upstream_pid):
                await trio.sleep(0.1)
        # A client of a dead session starts a new one, and it works.
        async with httpx2.AsyncClient(headers=cluster.auth(), timeout=30) as http:
            async with streamable_http_client(url, http_client=http) as (r, w):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    result = await session.call_tool("echo", {"text": "after"})
                    assert result.content[0].text == "after"
