"""What the fault suite checks after every case: nothing lost, nothing leaked.

Leaks are measured on the test process itself (the in-process gateway runs
there): open file descriptors (``/proc/self/fd``), live trio tasks, and the
number of child processes (a restarted upstream has a new pid, but no more
of them). A baseline is taken once the gateway is serving; each case
must come back to it within a bounded wait.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import attrs
import httpx
import trio

from tests.support import child_pids, count_tasks, open_fds, open_sse_session
from tests.support.probes import processes


#: A server command line running :mod:`tests.faults.misbehave` in ``mode``.
def misbehave(mode: str, **extra: Any) -> dict[str, Any]:
    return {"command": sys.executable, "args": ["-m", "tests.faults.misbehave", mode],
            "env": {"PYTHONPATH": str(_repo())}, **extra}


def _repo() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def groups_alive(pgids: set[int]) -> dict[int, int]:
    """Live (non-zombie) processes whose process group is in ``pgids``: pid → pgid."""
    return {p.pid: p.pgrp for p in processes() if p.pgrp in pgids}


@attrs.frozen
class Baseline:
    fds: int
    tasks: int
    children: frozenset[int]


def baseline() -> Baseline:
    return Baseline(open_fds(), count_tasks(), frozenset(child_pids()))


async def assert_back_to(base: Baseline, timeout: float = 8.0) -> None:
    """Wait (bounded) until fds, tasks and children are back to ``base``; fail naming what is not."""
    with trio.move_on_after(timeout):
        while True:
            now = baseline()
            if (now.fds <= base.fds and now.tasks <= base.tasks
                    and len(now.children) <= len(base.children)):
                return
            await trio.sleep(0.05)
    now = baseline()
    raise AssertionError(
        f"leak: fds {base.fds} → {now.fds}, tasks {base.tasks} → {now.tasks}, "
        f"children {len(base.children)} → {len(now.children)} "
        f"(new: {sorted(now.children - base.children)})"
    )


async def normal_call(url: str, headers: dict[str, str], server: str = "demo",
                      project: str = "demo") -> None:
    """A plain session on the demo server answers an echo: the gateway still serves."""
    sse = f"{url}/projects/{project}/servers/{server}/sse"
    async with open_sse_session(sse, headers) as s:
        await s.initialize()
        result = await s.call("tools/call", {"name": "echo", "arguments": {"text": "after"}})
        assert result["content"][0]["text"] == "after"


async def get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url, **kw)


async def wait_health(url: str, project: str, server: str, predicate: Any,
                      timeout: float = 15.0) -> dict[str, Any]:
    """Poll ``/health`` until ``predicate(view of the server)`` holds; return that view."""
    with trio.fail_after(timeout):
        while True:
            view = (await get(url + "/health")).json()["projects"].get(project, {})
            server_view = view.get("servers", {}).get(server)
            if server_view is not None and predicate(server_view):
                return server_view
            await trio.sleep(0.05)


async def finish(url: str, headers: dict[str, str], base: Baseline) -> None:
    """Every case ends here: the gateway serves a normal call, and nothing leaked."""
    with trio.fail_after(15):
        await normal_call(url, headers)
    await assert_back_to(base)
