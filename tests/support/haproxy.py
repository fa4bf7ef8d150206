"""A real HAProxy (Debian's package) in front of gateway instances: round-robin, no
stickiness, on a free loopback port, in a temporary directory.

The backend is configured as an operator would for mcp-orch (README,
"Several instances"): health checks on ``/ready``, a request whose
connection is refused is retried on another instance (``option redispatch``),
and long timeouts for SSE streams.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def require_haproxy() -> None:
    """Skip without HAProxy — except in CI, where setup must have installed it."""
    if not os.path.exists(HAPROXY):
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (scripts/setup.sh installs it with apt-get)")
        pytest.skip("haproxy is not installed (scripts/setup.sh installs it with apt-get)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def haproxy_config(port: int, backends: Sequence[str]) -> str:
    """The load balancer of the README's multi-instance example, for ``backends``
    (``host:port`` each)."""
    servers = "\n".join(
        f"    server gw{i} {address} check inter 500ms fall 1 rise 1"
        for i, address in enumerate(backends)
    )
    return f"""\
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request

frontend mcp
    bind 127.0.0.1:{port}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk GET /ready
{servers}
"""


@attrs.define(eq=False)
class Haproxy:
    url: str
    process: trio.Process


@asynccontextmanager
async def haproxy(directory: Path, backends: Sequence[str]) -> AsyncIterator[Haproxy]:
    """HAProxy round-robin over ``backends`` until the block ends; yields once it answers."""
    require_haproxy()
    port = free_port()
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(port, backends))
    process = await trio.lowlevel.open_process([HAPROXY, "-db", "-f", str(config)],
                                               stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with trio.fail_after(20):
            async with httpx.AsyncClient(timeout=2) as http:
                while True:
                    try:
                        if (await http.get(url + "/ready")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.1)
        yield Haproxy(url, process)
    finally:
        process.terminate()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
