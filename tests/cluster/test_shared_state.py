"""What three instances behind HAProxy share through PostgreSQL: keys (created and revoked
anywhere, honoured everywhere within a second), servers added through the admin API, and
rate limits that hold for the cluster, not once per instance."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.cluster.conftest import running_cluster
from tests.support import DEMO_SERVER
from tests.support.haproxy import haproxy
from tests.support.streamable import StreamableClient

VERSION = "2025-11-25"


async def each_instance_answers(urls: list[str], key: str, expected: int,
                                timeout: float = 1.0) -> None:
    """Within ``timeout``, a ``tools/list`` with ``key`` gets ``expected`` from every instance."""
    with trio.fail_after(timeout):
        async with httpx.AsyncClient(timeout=5) as http:
            for url in urls:
                while True:
                    client = StreamableClient(http, f"{url}/projects/demo/servers/demo/mcp",
                                              {"Authorization": f"Bearer {key}"})
                    r = await client.initialize(VERSION)
                    if r.status_code == expected:
                        break
                    await trio.sleep(0.02)


async def test_keys_servers_and_limits_are_the_clusters(tmp_path: Path, pg_dsn: str) -> None:
    async with running_cluster(tmp_path, 3, store=pg_dsn) as cluster, \
            haproxy(tmp_path, [i.url.removeprefix("http://") for i in cluster.instances]) as lb:
        urls = [i.url for i in cluster.instances]
        async with httpx.AsyncClient(timeout=10, headers=cluster.admin) as admin:
            # A key created through one instance's admin API works on all within 1 s.
            r = await admin.post(f"{urls[0]}/admin/projects/demo/keys", json={"name": "new"})
            assert r.status_code == 201, r.text
            key, prefix = r.json()["key"], r.json()["prefix"]
            await each_instance_answers(urls, key, 200)
            # Revoked through another, it stops everywhere within 1 s.
            assert (await admin.delete(f"{urls[1]}/admin/keys/{prefix}")).status_code == 200
            await each_instance_answers(urls, key, 401)

            # A server added through the admin API appears on every instance.
            r = await admin.post(f"{urls[2]}/admin/projects/demo/servers",
                                 json={"name": "extra", **DEMO_SERVER})
            assert r.status_code == 201, r.text
            with trio.fail_after(10):
                for url in urls:
                    while True:
                        health = (await admin.get(url + "/health")).json()
                        extra = health["projects"]["demo"]["servers"].get("extra")
                        if extra is not None and extra["state"] == "running":
                            break
                        await trio.sleep(0.1)

            # One key's rate limit holds across the instances: 6 requests at once with a
            # burst of 6 pass, whichever instances they reach, and the 7th is refused.
            r = await admin.put(f"{urls[0]}/admin/projects/demo/limits",
                                json={"rate": 0.01, "burst": 6})
            assert r.status_code == 200, r.text
        await trio.sleep(1.5)  # applied everywhere (a store change: within a second)
        async with httpx.AsyncClient(timeout=10) as http:
            clients = []
            for url in urls:
                client = StreamableClient(http, f"{url}/projects/demo/servers/demo/mcp",
                                          cluster.auth())
                await client.connect(VERSION)
                clients.append(client)
            statuses = []
            for i in range(9):
                r = await clients[i % 3].post({
                    "jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "x"}}})
                statuses.append(r.status_code)
            assert statuses == [200] * 6 + [429] * 3, statuses
            # Through the load balancer too (its round robin spreads them).
            lb_client = StreamableClient(http, f"{lb.url}/projects/demo/servers/demo/mcp",
                                         cluster.auth())
            await lb_client.connect(VERSION)
            r = await lb_client.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                      "params": {"name": "echo", "arguments": {"text": "x"}}})
            assert r.status_code == 429
