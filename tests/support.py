"""Test support: config files, an in-process gateway, and a small legacy-SSE MCP client.

The SSE client here is deliberately our own and minimal (httpx streaming plus
line parsing) so tests can open hundreds of sessions cheaply and observe the
wire exactly; third-party clients are exercised in the interop tests.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

REPO = Path(__file__).resolve().parent.parent
DEMO_SERVER: dict[str, Any] = {"command": "python", "args": ["-m", "upstream.demo_server"]}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_config(
    directory: Path,
    projects: Mapping[str, Mapping[str, Any]],
    **gateway: Any,
) -> Path:
    """Write a gateway TOML config; ``projects`` maps name → {"auth":…, "servers": {…}}."""
    lines = ["[gateway]"]
    settings = {"host": "127.0.0.1", "port": 0, "state_dir": "state", **gateway}
    lines += [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    for pname, project in projects.items():
        lines.append(f"\n[projects.{pname}]")
        if "auth" in project:
            lines.append(f"auth = {_toml_value(project['auth'])}")
        for sname, server in project.get("servers", {}).items():
            lines.append(f"\n[projects.{pname}.servers.{sname}]")
            restart = server.get("restart")
            for k, v in server.items():
                if k != "restart":
                    lines.append(f"{k} = {_toml_value(v)}")
            if restart:
                lines.append(f"\n[projects.{pname}.servers.{sname}.restart]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in restart.items()]
    path = directory / "mcp-orch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@attrs.define
class RunningGateway:
    """A gateway started in the test's nursery, with one API key per project."""

    gateway: Any
    url: str
    keys: dict[str, str]
    config_path: Path

    def sse_url(self, project: str = "demo", server: str = "demo") -> str:
        return f"{self.url}/projects/{project}/servers/{server}/sse"

    def auth(self, project: str = "demo") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[project]}"}


def demo_projects(**server_overrides: Any) -> dict[str, Any]:
    return {"demo": {"servers": {"demo": {**DEMO_SERVER, **server_overrides}}}}


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.error = error


@attrs.define(eq=False)
class SseSession:
    """One legacy-SSE MCP session: the stream, the POST endpoint, request/response matching."""

    http: httpx.AsyncClient
    base: str
    headers: dict[str, str]
    endpoint: str = ""
    events: list[tuple[str, str]] = attrs.field(factory=list)
    notifications: list[dict[str, Any]] = attrs.field(factory=list)
    _waiters: dict[Any, trio.MemorySendChannel[dict[str, Any]]] = attrs.field(factory=dict)
    _ids: itertools.count = attrs.field(factory=lambda: itertools.count(1))
    server_requests: list[dict[str, Any]] = attrs.field(factory=list)
    ended: trio.Event = attrs.field(factory=trio.Event)

    @property
    def session_id(self) -> str:
        return self.endpoint.split("sessionId=", 1)[1]

    def _on_event(self, name: str, data: str) -> None:
        self.events.append((name, data))
        if name != "message":
            return
        message = json.loads(data)
        if "method" in message:
            (self.server_requests if "id" in message else self.notifications).append(message)
            return
        waiter = self._waiters.pop(message.get("id"), None)
        if waiter is not None:
            waiter.send_nowait(message)

    async def post(self, message: Any) -> httpx.Response:
        return await self.http.post(
            self.base + self.endpoint, json=message, headers=self.headers
        )

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, msg_id: Any = None,
        timeout: float = 20,
    ) -> dict[str, Any]:
        """Send a request and return its response message (result or error)."""
        msg_id = next(self._ids) if msg_id is None else msg_id
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._waiters[msg_id] = send
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        response = await self.post(message)
        assert response.status_code == 202, (response.status_code, response.text)
        with trio.fail_after(timeout):
            return await recv.receive()

    async def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        reply = await self.request(method, params, **kw)
        if "error" in reply:
            raise RpcError(reply["error"])
        return reply["result"]

    async def initialize(self, version: str = "2024-11-05") -> dict[str, Any]:
        result = await self.call(
            "initialize",
            {"protocolVersion": version, "capabilities": {},
             "clientInfo": {"name": "mcp-orch-tests", "version": "0"}},
        )
        response = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert response.status_code == 202
        return result


@asynccontextmanager
async def open_sse_session(
    url: str, headers: Mapping[str, str], *, http: httpx.AsyncClient | None = None
) -> AsyncIterator[SseSession]:
    """Open an SSE stream, wait for the ``endpoint`` event, and read events in the background."""
    own = http is None
    client = http or httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
    base = url.split("/projects/", 1)[0]
    try:
        async with client.stream("GET", url, headers=dict(headers)) as response:
            if response.status_code != 200:
                await response.aread()
                raise httpx.HTTPStatusError(
                    f"{response.status_code}: {response.text}", request=response.request,
                    response=response,
                )
            session = SseSession(client, base, dict(headers))
            ready = trio.Event()

            async def read() -> None:
                name, data = "message", []
                try:
                    async for line in response.aiter_lines():
                        if line == "":
                            if data:
                                session._on_event(name, "\n".join(data))
                                if name == "endpoint":
                                    session.endpoint = data[0]
                                    ready.set()
                            name, data = "message", []
                        elif line.startswith(":"):
                            session.events.append(("comment", line))
                        elif line.startswith("event:"):
                            name = line[6:].strip()
                        elif line.startswith("data:"):
                            data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    pass
                finally:
                    session.ended.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                with trio.fail_after(20):
                    await ready.wait()
                yield session
                nursery.cancel_scope.cancel()
    finally:
        if own:
            await client.aclose()


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def child_pids() -> set[int]:
    """Pids of this process's direct children (from /proc)."""
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.add(int(entry))
    return found


def count_tasks() -> int:
    """All live trio tasks of the current run."""
    root = trio.lowlevel.current_root_task()
    total = 0
    stack = [root]
    while stack:
        task = stack.pop()
        total += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return total


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
    import subprocess
    import sys

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
