"""The official SDKs' 1.x WebSocket clients against the gateway's ``GET …/ws``.

Two real clients no one here wrote — the TypeScript SDK's
``WebSocketClientTransport`` (``tests/interop/ws_client.mjs``, Node 22) and the
Python SDK 1.x ``websocket_client`` (``tests/interop/ws_client_py1.py`` in
``.venv-mcp1``) — each initialize, list the tools and call one, of the demo
server and of server-everything, through the gateway. Neither client can send
a header (nor a second subprotocol), so the project is ``auth = "none"``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import trio

from tests.conftest import StartGateway
from tests.interop.peers import node_env, peer
from tests.support import DEMO_SERVER, REPO, RunningGateway

pytestmark = pytest.mark.interop

INTEROP = REPO / "tests" / "interop"
MCP1_PYTHON = REPO / ".venv-mcp1" / "bin" / "python"


def open_projects() -> dict[str, Any]:
    """A keyless project with the demo server and server-everything (stdio, under Node 22)."""
    everything = peer("mcp-server-everything")
    return {"open": {"auth": "none", "servers": {
        "demo": DEMO_SERVER,
        "everything": {"command": str(everything), "args": ["stdio"],
                       "env": {"PATH": node_env()["PATH"]}, "first_start_timeout_s": 60},
    }}}


def mcp1_python() -> str:
    if not MCP1_PYTHON.exists():
        message = f"{MCP1_PYTHON} is not installed: run scripts/setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(MCP1_PYTHON)


async def run_client(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one client to its end; what it printed, parsed (a non-zero exit fails the test)."""
    with trio.fail_after(120):
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                        check=False, env=env, stdin=b"", cwd=INTEROP)
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, (out, err)
    return json.loads(out)


async def typescript(url: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    peer("mcp-server-everything")  # the npm peers are installed (the SDK with them)
    return await run_client(["node", str(INTEROP / "ws_client.mjs"), url, tool,
                             json.dumps(arguments)], env=node_env())


async def python1(url: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return await run_client([mcp1_python(), str(INTEROP / "ws_client_py1.py"), url, tool,
                             json.dumps(arguments)])


CLIENTS = {"typescript": typescript, "python1": python1}


@pytest.fixture
async def gw(start_gateway: StartGateway) -> RunningGateway:
    return await start_gateway(open_projects())


@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_the_sdk_client_lists_and_calls_the_demo_server(
    gw: RunningGateway, client: str
) -> None:
    printed = await CLIENTS[client](gw.ws_url("open", "demo"), "echo", {"text": f"hi {client}"})
    assert printed["server"]["name"] == "mcp-orch-demo"
    assert {"echo", "add", "sleep"} <= set(printed["tools"])
    assert printed["result"]["content"] == [{"type": "text", "text": f"hi {client}"}]


@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_the_sdk_client_lists_and_calls_server_everything(
    gw: RunningGateway, client: str
) -> None:
    printed = await CLIENTS[client](gw.ws_url("open", "everything"), "get-sum",
                                    {"a": 19, "b": 23})
    assert printed["server"]["name"] == "mcp-servers/everything"
    assert {"echo", "get-sum", "get-tiny-image"} <= set(printed["tools"])
    assert printed["result"]["content"][0]["text"] == "The sum of 19 and 23 is 42."
    echoed = await CLIENTS[client](gw.ws_url("open", "everything"), "echo",
                                   {"message": f"from {client}"})
    assert echoed["result"]["content"] == [{"type": "text", "text": f"Echo: from {client}"}]
