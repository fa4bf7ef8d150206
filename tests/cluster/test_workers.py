"""``mcp-orch serve --workers 2``: two processes on one port, one SQLite store; clients
work whichever worker each connection lands on; a dead worker is started again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import httpx
import httpx2
import trio
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from config import Store, load_config
from tests.cluster.conftest import ADMIN
from tests.interop.test_inspector_cli import inspector
from tests.support import demo_projects, write_config
from tests.support.gateway import gateway_process
from tests.support.probes import alive

ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def worker_addresses(url: str) -> dict[str, str]:
    """instance id → private address of every worker, asked until both are known."""
    found: dict[str, str] = {}
    with trio.fail_after(20):
        async with httpx.AsyncClient(timeout=5) as http:
            while len(found) < 2:
                # A new connection each time: the kernel picks the worker per connection.
                status = (await http.get(url + "/status", headers={**ADMIN_AUTH,
                                                                    "Connection": "close"})).json()
                found[status["instance"]] = status["address"]
                for peer in status["peers"]:
                    found[peer["instance"]] = peer["address"]
                if len(found) < 2:
                    await trio.sleep(0.2)
    return found


async def forwarded(addresses: dict[str, str]) -> float:
    total = 0.0
    async with httpx.AsyncClient(timeout=5) as http:
        for address in addresses.values():
            for line in (await http.get(address + "/metrics")).text.splitlines():
                if line.startswith('mcp_orch_forwarded_requests_total{outcome="relayed"}'):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def test_two_workers_serve_every_transport(tmp_path: Path) -> None:
    path = write_config(tmp_path, demo_projects(), admin_token=ADMIN)
    store = Store.open(load_config(path).gateway.state_dir)
    key = store.create_key("demo")
    store.close()
    auth = {"Authorization": f"Bearer {key}"}
    async with gateway_process(path, "--workers", "2") as gw:
        workers = await worker_addresses(gw.url)
        base = f"{gw.url}/projects/demo/servers/demo"
        for n in range(6):
            # New connections each time, so both workers get some of each session.
            async with httpx2.AsyncClient(headers=auth, timeout=30,
                                          limits=httpx2.Limits(max_keepalive_connections=0)
                                          ) as http:
                async with streamable_http_client(f"{base}/mcp", http_client=http) as (r, w):
                    async with ClientSession(r, w) as session:
                        await session.initialize()
                        for i in range(3):
                            result = await session.call_tool("echo", {"text": f"{n}.{i}"})
                            assert result.content[0].text == f"{n}.{i}"
            async with sse_client(f"{base}/sse", headers=auth) as (r, w):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    result = await session.call_tool("add", {"a": n, "b": 2})
                    assert result.content[0].text in (str(n + 2), f"{n + 2}.0")
        with trio.fail_after(120):
            code, out, err = await inspector(
                "--cli", f"{base}/mcp", "--transport", "http", "--header",
                f"Authorization: Bearer {key}", "--method", "tools/list")
        assert code == 0, (out, err)
        assert "echo" in {t["name"] for t in json.loads(out)["tools"]}
        assert await forwarded(workers) > 0

        # A worker killed outright is started again by the parent; the port keeps serving.
        async with httpx.AsyncClient(timeout=5) as http:
            victim_pid = (await http.get(gw.url + "/status", headers=ADMIN_AUTH)).json()["pid"]
        os.kill(victim_pid, signal.SIGKILL)
        with trio.fail_after(30):
            while True:
                now = await worker_addresses(gw.url)
                if set(now) != set(workers) and len(now) == 2:
                    break
                await trio.sleep(0.3)
        async with httpx2.AsyncClient(headers=auth, timeout=30) as http:
            async with streamable_http_client(f"{base}/mcp", http_client=http) as (r, w):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    assert (await session.call_tool("echo", {"text": "again"})
                            ).content[0].text == "again"
        assert any("worker" in line and "exited" in line for line in gw.stdout + gw.stderr)

        # SIGTERM to the parent drains both workers, and everything exits.
        async with httpx.AsyncClient(timeout=5) as http:
            children = [(await http.get(address + "/status", headers=ADMIN_AUTH)).json()["pid"]
                        for address in now.values()]
        assert victim_pid not in children and all(alive(pid) for pid in children)
        gw.process.send_signal(signal.SIGTERM)
        assert await gw.wait_exit(60) == 0
        assert not any(alive(pid) for pid in children)
