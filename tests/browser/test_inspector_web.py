"""MCP Inspector 2.x's web UI (the client whose "disconnected" started this project)
connects to the gateway in a real browser, lists tools and runs ``echo``.

The Inspector is started without ``--cli`` (its web UI) on free ports, with the
gateway's endpoint and an ``Authorization`` header as its ad-hoc server
(``--transport``, ``--server-url``, ``--header``); ``DANGEROUSLY_OMIT_AUTH``
skips its own session token (everything is on 127.0.0.1) and
``MCP_AUTO_OPEN_ENABLED=false`` keeps it from opening a browser itself.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.interop.peers import node_env, peer
from tests.support import DEMO_SERVER, REPO, Recording

INSPECTOR = REPO / "tests/interop/node_modules/.bin/mcp-inspector"
NODE22 = REPO / ".tools/node22/node_modules/.bin"

pytestmark = pytest.mark.skipif(not INSPECTOR.exists(),
                                reason="MCP Inspector is not installed (scripts/setup.sh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def inspector_web(transport: str, url: str, key: str) -> AsyncIterator[str]:
    """Run the Inspector's web UI for one ad-hoc server; yield the URL it serves."""
    env = {**os.environ, "CLIENT_PORT": str(_free_port()), "SERVER_PORT": str(_free_port()),
           "HOST": "127.0.0.1", "DANGEROUSLY_OMIT_AUTH": "true",
           "MCP_AUTO_OPEN_ENABLED": "false", "MCP_INSPECTOR_SECRET_STORE": "memory",
           "PATH": f"{NODE22}:{os.environ.get('PATH', '')}"}
    proc = await trio.lowlevel.open_process(
        [str(INSPECTOR), "--web", "--transport", transport, "--server-url", url,
         "--header", f"Authorization: Bearer {key}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    output = b""
    try:
        with trio.fail_after(60):
            while (found := re.search(rb"running at:\s*(http://\S+)", output)) is None:
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    raise AssertionError(f"the Inspector exited: {output.decode()}")
                output += chunk
        async with trio.open_nursery() as nursery:
            async def drain() -> None:
                while await proc.stdout.receive_some(65536):
                    pass
            nursery.start_soon(drain)
            yield found.group(1).decode()
            nursery.cancel_scope.cancel()
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGTERM)
            with trio.CancelScope(shield=True), trio.move_on_after(5) as waited:
                await proc.wait()
            if waited.cancelled_caught:
                os.killpg(proc.pid, signal.SIGKILL)
                with trio.CancelScope(shield=True):
                    await proc.wait()


def _connect_and_echo(open_page: Any, url: str, shots: Path, tag: str, text: str,
                      argument: str) -> str:
    with open_page() as page:
        page.goto(url)
        page.get_by_role("switch").first.check(force=True)
        page.get_by_text("Connected", exact=True).first.wait_for(timeout=20_000)
        page.screenshot(path=str(shots / f"{tag}-01-connected.png"))
        page.get_by_text("Tools", exact=True).first.click()
        page.get_by_text("echo", exact=True).first.click()
        page.screenshot(path=str(shots / f"{tag}-02-tools.png"))
        page.get_by_label(re.compile(rf"^{argument}")).first.fill(text)
        page.get_by_role("button", name="Execute Tool").click()
        page.get_by_text(text).last.wait_for()
        page.screenshot(path=str(shots / f"{tag}-03-echo.png"), full_page=True)
        return page.inner_text("body")


def _wrong_key(open_page: Any, url: str, shots: Path) -> str:
    with open_page() as page:
        page.goto(url)
        page.get_by_role("switch").first.check(force=True)
        page.wait_for_timeout(4000)
        page.screenshot(path=str(shots / "wrong-key.png"), full_page=True)
        return page.inner_text("body")


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_inspector_web_ui_connects_and_runs_echo(
    start_gateway: Any, browser_page: Any, artifacts: Path, tmp_path: Path, transport: str
) -> None:
    recording = Recording(tmp_path / "demo.jsonl")
    gw = await start_gateway({"demo": {"servers": {"demo": recording.server(DEMO_SERVER)}}})
    url = gw.mcp_url() if transport == "http" else gw.sse_url()
    text = f"hello from the inspector over {transport}"
    async with inspector_web(transport, url, gw.keys["demo"]) as ui:
        body = await trio.to_thread.run_sync(
            _connect_and_echo, browser_page, ui, artifacts, transport, text, "text")
    assert text in body
    calls = recording.tool_calls("echo")
    assert calls and calls[-1]["params"]["arguments"] == {"text": text}


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_inspector_web_ui_with_server_everything(
    start_gateway: Any, browser_page: Any, artifacts: Path, transport: str
) -> None:
    everything = peer("mcp-server-everything")
    gw = await start_gateway({"demo": {"servers": {"everything": {
        "command": str(everything), "args": ["stdio"], "env": {"PATH": node_env()["PATH"]},
        "first_start_timeout_s": 60}}}})
    url = (gw.mcp_url(server="everything") if transport == "http"
           else gw.sse_url(server="everything"))
    text = f"everything over {transport}"
    async with inspector_web(transport, url, gw.keys["demo"]) as ui:
        body = await trio.to_thread.run_sync(
            _connect_and_echo, browser_page, ui, artifacts, f"everything-{transport}", text,
            "message")
    assert f"Echo: {text}" in body


async def test_inspector_web_ui_shows_why_a_wrong_key_fails(
    start_gateway: Any, browser_page: Any, artifacts: Path
) -> None:
    gw = await start_gateway()
    async with inspector_web("http", gw.mcp_url(), "mcpo_wrong_key_0123456789abcdef") as ui:
        body = await trio.to_thread.run_sync(_wrong_key, browser_page, ui, artifacts)
    assert "Connected" not in body.replace("Disconnected", "")
    # The OAuth-shaped refusal of the gateway's /register, shown by the Inspector.
    assert "this gateway takes API keys" in body
