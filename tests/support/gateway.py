"""The gateway under test: in-process (:class:`RunningGateway`) or as a child process.

``RunningGateway`` is what the ``start_gateway`` fixture (tests/conftest.py)
returns; ``gateway_process`` runs ``mcp-orch serve`` for the tests that need
signals, exit codes and the real command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.support.config import REPO


@attrs.define
class RunningGateway:
    """A gateway started in the test's nursery, with one API key per project."""

    gateway: Any
    url: str
    keys: dict[str, str]
    config_path: Path

    def sse_url(self, project: str = "demo", server: str = "demo") -> str:
        return f"{self.url}/projects/{project}/servers/{server}/sse"

    def mcp_url(self, project: str = "demo", server: str = "demo") -> str:
        return f"{self.url}/projects/{project}/servers/{server}/mcp"

    def ws_url(self, project: str = "demo", server: str = "demo") -> str:
        return f"ws{self.url.removeprefix('http')}/projects/{project}/servers/{server}/ws"

    def auth(self, project: str = "demo") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[project]}"}


@attrs.define(eq=False)
class GatewayProcess:
    """``mcp-orch serve`` running as a real child process, with its output collected."""

    process: trio.Process
    url: str
    stdout: list[str]
    stderr: list[str]

    def health(self) -> dict[str, Any]:
        return httpx.get(self.url + "/health", timeout=10).json()

    async def wait_exit(self, timeout: float) -> int:
        with trio.fail_after(timeout):
            return await self.process.wait()


@asynccontextmanager
async def gateway_process(
    config_path: Path, *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[GatewayProcess]:
    """Start ``mcp-orch serve --port 0`` and yield once it reports its address."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_path), "--port", "0",
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    stdout: list[str] = []
    stderr: list[str] = []
    found: dict[str, str] = {}
    listening = trio.Event()

    async def pump(stream: Any, sink: list[str]) -> None:
        pending = b""
        while chunk := await stream.receive_some(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                sink.append(line)
                text = json.loads(line)["msg"] if line.startswith("{") else line
                if "mcp-orch listening on " in text and not listening.is_set():
                    found["url"] = text.rsplit(" ", 1)[1].strip()
                    listening.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, proc.stdout, stdout)
            nursery.start_soon(pump, proc.stderr, stderr)
            with trio.fail_after(30):
                await listening.wait()
            yield GatewayProcess(proc, found["url"], stdout, stderr)
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
