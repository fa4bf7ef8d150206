"""Remote upstreams: a gateway whose server is another gateway's endpoint, over both transports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from config import Store, load_config
from gateway.serve import run_gateway
from tests.support import demo_projects, open_sse_session, write_config


async def start(nursery: trio.Nursery, directory: Path, projects: dict[str, Any]) -> tuple[Any, str]:
    await trio.Path(directory).mkdir()
    config = load_config(write_config(directory, projects))
    store = Store.open(config.gateway.state_dir)
    key = store.create_key("demo")
    store.close()
    gateway = await nursery.start(run_gateway, config)
    return gateway, key


@pytest.mark.parametrize(("transport", "path"), [("streamable-http", "mcp"), ("sse", "sse")])
async def test_a_remote_server_behind_the_gateway(
    nursery: trio.Nursery, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    transport: str, path: str,
) -> None:
    back, back_key = await start(nursery, tmp_path / "back", demo_projects())
    monkeypatch.setenv("BACK_KEY", back_key)  # the header value comes from the environment
    remote = {
        "url": f"{back.url}/projects/demo/servers/demo/{path}",
        "transport": transport,
        "headers": {"Authorization": "Bearer ${BACK_KEY}"},
        "restart": {"backoff_initial_s": 0.2, "backoff_max_s": 0.5},
    }
    front, front_key = await start(nursery, tmp_path / "front",
                                   {"demo": {"servers": {"remote": remote}}})
    url = f"{front.url}/projects/demo/servers/remote/sse"
    auth = {"Authorization": f"Bearer {front_key}"}
    async with open_sse_session(url, auth) as s:
        init = await s.initialize()
        assert init["serverInfo"]["name"] == "mcp-orch-demo"
        tools = await s.call("tools/list")
        assert "echo" in {t["name"] for t in tools["tools"]}
        result = await s.call("tools/call", {"name": "echo", "arguments": {"text": "two hops"}})
        assert result["content"][0]["text"] == "two hops"
        # Progress crosses both gateways with its token intact.
        await s.call("tools/call", {"name": "sleep", "arguments": {"seconds": 0.3},
                                    "_meta": {"progressToken": "far"}})
        progress = [n for n in s.notifications if n["method"] == "notifications/progress"]
        assert progress and all(n["params"]["progressToken"] == "far" for n in progress)
        # Several requests at once over the one remote connection.
        async with trio.open_nursery() as calls:
            answers: dict[int, str] = {}

            async def one(n: int) -> None:
                reply = await s.call("tools/call", {"name": "echo", "arguments": {"text": str(n)}})
                answers[n] = reply["content"][0]["text"]

            for n in range(10):
                calls.start_soon(one, n)
        assert answers == {n: str(n) for n in range(10)}
    supervisor = front.servers[("demo", "remote")]
    assert supervisor.snapshot()["state"] == "running" and supervisor.pid is None
    # The client's key never travels upstream: the back gateway saw only its own key.
    assert front_key not in json.dumps(supervisor.status())


async def test_an_unreachable_remote_server_fails_clearly(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    remote = {"url": "http://127.0.0.1:9/mcp",  # nothing listens on the discard port
              "restart": {"max_restarts": 1, "backoff_initial_s": 0.1, "backoff_max_s": 0.1}}
    front, key = await start(nursery, tmp_path / "front", {"demo": {"servers": {"r": remote}}})
    supervisor = front.servers[("demo", "r")]
    with trio.fail_after(10):
        while supervisor.state != "failed":
            await trio.sleep(0.05)
    assert "127.0.0.1:9" in supervisor.last_exit
    assert any("127.0.0.1:9" in line for line in supervisor.stderr_tail)
