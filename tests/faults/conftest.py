"""The fault suite's fixture: a gateway (demo server, project without auth noise) and a leak baseline."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from tests.conftest import StartGateway
from tests.faults.helpers import Baseline, baseline, normal_call
from tests.support import RunningGateway, demo_projects

Faulty = Callable[..., Awaitable[tuple[RunningGateway, Baseline]]]


@pytest.fixture
def faulty_gateway(start_gateway: StartGateway) -> Faulty:
    """Start a gateway, wait until a normal call works, and take the leak baseline.

    ``servers`` are added to project ``demo`` next to its ``demo`` server.
    """

    async def start(servers: dict[str, Any] | None = None, **settings: Any
                    ) -> tuple[RunningGateway, Baseline]:
        projects = demo_projects()
        projects["demo"]["servers"].update(servers or {})
        gw = await start_gateway(projects, **settings)
        with trio.fail_after(15):
            await normal_call(gw.url, gw.auth())
        await trio.testing.wait_all_tasks_blocked(0.05)
        return gw, baseline()

    return start
