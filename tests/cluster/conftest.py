"""Several real gateway instances on one store, and HAProxy in front of them.

``cluster`` starts N ``mcp-orch serve`` processes sharing one store (the
PostgreSQL fixture's database; ``store="sqlite"`` shares one SQLite file, as
``serve --workers`` does), each on its own free port, waits until every one
sees all the others in the instance registry, and stops them afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from config import Store, load_config
from tests.support import demo_projects, write_config
from tests.support.gateway import GatewayProcess, gateway_process

ADMIN = "admin-token-for-cluster-tests-0123"


@attrs.define(eq=False)
class Cluster:
    """Instances of one gateway, the key of the ``demo`` project, the config file."""

    instances: list[GatewayProcess]
    key: str
    config_path: Path

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN}"}

    async def instance_ids(self) -> list[str]:
        async with httpx.AsyncClient(timeout=10) as http:
            return [(await http.get(i.url + "/ready")).json()["instance"]
                    for i in self.instances]

    async def forwarded(self) -> float:
        """Requests relayed to an owner, summed over the instances (``/metrics``)."""
        total = 0.0
        async with httpx.AsyncClient(timeout=10) as http:
            for instance in self.instances:
                if instance.process.returncode is not None:
                    continue
                text = (await http.get(instance.url + "/metrics")).text
                for line in text.splitlines():
                    if line.startswith('mcp_orch_forwarded_requests_total{outcome="relayed"}'):
                        total += float(line.rsplit(" ", 1)[1])
        return total


async def wait_for_peers(urls: list[str], expected: int, timeout: float = 20) -> None:
    """Until every instance at ``urls`` is ready and sees ``expected`` peers."""
    with trio.fail_after(timeout):
        async with httpx.AsyncClient(timeout=5) as http:
            for url in urls:
                while True:
                    try:
                        r = await http.get(url + "/ready")
                        if r.status_code == 200 and len(r.json()["peers"]) == expected:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)


StartCluster = Callable[..., Awaitable[Cluster]]


@contextlib.asynccontextmanager
async def running_cluster(
    tmp_path: Path, n: int, *, store: str | None = None,
    projects: dict[str, Any] | None = None, **settings: Any,
) -> AsyncIterator[Cluster]:
    """``n`` instances of one config on one store (``store``: a PostgreSQL DSN, or
    ``None`` for one shared SQLite file)."""
    if store is not None:
        settings["store"] = store
    path = write_config(tmp_path, projects or demo_projects(), admin_token=ADMIN, **settings)
    config = load_config(path)
    opened = Store.open(config.gateway.state_dir) if store is None else _open(config)
    try:
        key = opened.create_key("demo")
    finally:
        opened.close()
    async with contextlib.AsyncExitStack() as stack:
        instances = [await stack.enter_async_context(gateway_process(path)) for _ in range(n)]
        await wait_for_peers([i.url for i in instances], n - 1)
        yield Cluster(instances, key, path)


def _open(config: Any) -> Store:
    from config.store import open_store
    return open_store(config.gateway)

