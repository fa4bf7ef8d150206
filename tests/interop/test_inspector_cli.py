"""MCP Inspector 2.x in CLI mode against the gateway's legacy SSE endpoint."""

from __future__ import annotations

import json

import pytest
import trio

from tests.conftest import StartGateway
from tests.interop.peers import node_env, peer

pytestmark = pytest.mark.interop


async def inspector(*args: str) -> tuple[int, str, str]:
    binary = peer("mcp-inspector")
    result = await trio.run_process(
        [str(binary), *args], capture_stdout=True, capture_stderr=True, check=False,
        env=node_env(), stdin=b"",
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_inspector_cli_lists_and_calls_tools_over_sse(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    auth = f"Authorization: Bearer {gw.keys['demo']}"
    with trio.fail_after(120):
        code, out, err = await inspector(
            "--cli", gw.sse_url(), "--transport", "sse", "--header", auth, "--method", "tools/list"
        )
    assert code == 0, (out, err)
    names = {tool["name"] for tool in json.loads(out)["tools"]}
    assert {"echo", "add", "sleep"} <= names
    with trio.fail_after(120):
        code, out, err = await inspector(
            "--cli", gw.sse_url(), "--transport", "sse", "--header", auth,
            "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=hello inspector",
        )
    assert code == 0, (out, err)
    assert json.loads(out)["content"][0]["text"] == "hello inspector"


async def test_inspector_cli_wrong_key_fails_fast(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    with trio.fail_after(60):
        code, out, err = await inspector(
            "--cli", gw.sse_url(), "--transport", "sse", "--stored-auth-only",
            "--header", "Authorization: Bearer mcpo_wrong", "--method", "tools/list",
        )
    assert code != 0
    assert "tools" not in out


async def test_inspector_cli_over_streamable_http(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    url = f"{gw.url}/projects/demo/servers/demo/mcp"
    auth = f"Authorization: Bearer {gw.keys['demo']}"
    base = ["--cli", url, "--transport", "http", "--header", auth]
    with trio.fail_after(120):
        code, out, err = await inspector(*base, "--method", "tools/list")
        assert code == 0, (out, err)
        assert {"echo", "add"} <= {t["name"] for t in json.loads(out)["tools"]}
        code, out, err = await inspector(
            *base, "--method", "tools/call", "--tool-name", "add", "--tool-arg", "a=2", "b=3"
        )
        assert code == 0, (out, err)
        assert json.loads(out)["content"][0]["text"] == "5"
        code, out, err = await inspector(*base, "--method", "resources/read", "--uri",
                                         "demo://greeting")
        assert code == 0, (out, err)
        assert json.loads(out)["contents"][0]["text"] == "Hello from mcp-orch-demo"
        code, out, err = await inspector(*base, "--method", "prompts/get", "--prompt-name",
                                         "greet", "--prompt-args", "name=Grace")
        assert code == 0, (out, err)
        assert json.loads(out)["messages"][0]["content"]["text"] == "Say hello to Grace"
