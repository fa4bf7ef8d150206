"""Shared fixtures: a real gateway (Hypercorn on 127.0.0.1, port 0) in the test's nursery."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from config import load_config, open_store
from gateway.serve import run_gateway
from tests.support import RunningGateway, demo_projects, write_config
from tests.support.postgres import pg_dsn as pg_dsn
from tests.support.postgres import postgres_server as postgres_server
from tests.support.postgres import store_target as store_target

StartGateway = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
def start_gateway(nursery: trio.Nursery, tmp_path: Path) -> StartGateway:
    """Start a gateway on a free port; ``projects`` defaults to the demo server.

    Returns a :class:`RunningGateway` holding a fresh API key per project.
    The gateway is cancelled (upstreams stopped) when the test ends.
    """

    async def start(projects: dict[str, Any] | None = None, **settings: Any) -> RunningGateway:
        path = write_config(tmp_path, projects or demo_projects(), **settings)
        config = load_config(path)
        store = open_store(config.gateway)
        try:
            keys = {name: store.create_key(name) for name in config.projects}
        finally:
            store.close()
        gateway = await nursery.start(run_gateway, config)
        return RunningGateway(gateway, gateway.url, keys, path)

    return start
