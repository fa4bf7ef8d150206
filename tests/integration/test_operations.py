"""Operations: readiness, graceful shutdown, orphans, reload, metrics, status, logs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway
from tests.support import (
    DEMO_SERVER,
    REPO,
    alive,
    demo_projects,
    gateway_process,
    open_sse_session,
    write_config,
)

ADMIN = "test-admin-token-0123456789"


def _create_key(config: Path, project: str = "demo") -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--project", project,
         "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    return out.stdout.strip().splitlines()[-1]


async def _get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url, **kw)


async def test_ready_goes_503_to_200_during_startup(start_gateway: StartGateway) -> None:
    gw = await start_gateway(demo_projects(env={"DEMO_SERVER_STARTUP_DELAY_S": "1.0"}))
    first = await _get(gw.url + "/ready")
    assert first.status_code == 503
    assert "demo/demo" in first.json()["reason"]
    assert (await _get(gw.url + "/health")).status_code == 200  # alive while not ready
    with trio.fail_after(10):
        while (await _get(gw.url + "/ready")).status_code != 200:
            await trio.sleep(0.05)
    ready = (await _get(gw.url + "/ready")).json()
    assert {k: ready[k] for k in ("ready", "reason")} == {"ready": True, "reason": "ready"}
    assert re.fullmatch(r"[0-9a-f]{12}", ready["instance"])
    assert ready["peers"] == []  # a lone instance on its own SQLite file


async def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    config = write_config(tmp_path, demo_projects(), drain_timeout_s=10)
    key = _create_key(config)
    async with gateway_process(config) as gw:
        auth = {"Authorization": f"Bearer {key}"}
        url = gw.url + "/projects/demo/servers/demo/sse"
        with trio.fail_after(10):
            while (await _get(gw.url + "/ready")).status_code != 200:
                await trio.sleep(0.05)
        upstream_pid = gw.health()["projects"]["demo"]["servers"]["demo"]["pid"]
        async with open_sse_session(url, auth) as s:
            await s.initialize()
            replies: dict[int, Any] = {}
            not_ready_seen = trio.Event()

            async def call(n: int) -> None:
                replies[n] = await s.request(
                    "tools/call", {"name": "sleep", "arguments": {"seconds": 1.5}}, msg_id=n,
                    timeout=15,
                )

            async def watch_ready() -> None:
                async with httpx.AsyncClient(timeout=5) as http:
                    while True:
                        try:
                            r = await http.get(gw.url + "/ready")
                        except httpx.TransportError:
                            return
                        if r.status_code == 503 and "draining" in r.json()["reason"]:
                            not_ready_seen.set()
                            return
                        await trio.sleep(0.02)

            async with trio.open_nursery() as nursery:
                for n in range(20):
                    nursery.start_soon(call, n)
                await trio.sleep(0.5)  # all 20 are now in flight upstream
                sent_at = trio.current_time()
                gw.process.send_signal(signal.SIGTERM)
                nursery.start_soon(watch_ready)
            assert not_ready_seen.is_set(), "/ready never answered 503 while draining"
            assert sorted(replies) == list(range(20))
            for reply in replies.values():
                assert reply["result"]["content"][0]["text"] == "slept 1.5 s", reply
        code = await gw.wait_exit(10)
        assert code == 0, "\n".join(gw.stderr[-20:])
        assert trio.current_time() - sent_at < 10
    assert not alive(upstream_pid)


async def test_sigkill_of_the_gateway_leaves_no_upstream(tmp_path: Path) -> None:
    # This upstream ignores stdin EOF: only the reaper's signals can stop it.
    config = write_config(
        tmp_path, demo_projects(env={"DEMO_SERVER_IGNORE_EOF": "1"}), stop_grace_s=1
    )
    async with gateway_process(config) as gw:
        with trio.fail_after(10):
            while (await _get(gw.url + "/ready")).status_code != 200:
                await trio.sleep(0.05)
        pid = gw.health()["projects"]["demo"]["servers"]["demo"]["pid"]
        assert alive(pid)
        gw.process.kill()
        await gw.wait_exit(5)
        with trio.fail_after(5):
            while alive(pid):
                await trio.sleep(0.05)


async def test_sighup_restarts_only_the_changed_server(tmp_path: Path) -> None:
    projects = {"demo": {"servers": {"a": DEMO_SERVER, "b": DEMO_SERVER}}}
    config = write_config(tmp_path, projects)
    key = _create_key(config)
    async with gateway_process(config) as gw:
        with trio.fail_after(10):
            while (await _get(gw.url + "/ready")).status_code != 200:
                await trio.sleep(0.05)
        before = gw.health()["projects"]["demo"]["servers"]
        auth = {"Authorization": f"Bearer {key}"}
        async with open_sse_session(gw.url + "/projects/demo/servers/a/sse", auth) as s:
            await s.initialize()
            changed = {"demo": {"servers": {
                "a": DEMO_SERVER, "b": {**DEMO_SERVER, "args": [*DEMO_SERVER["args"], "--x"]},
            }}}
            write_config(tmp_path, changed)
            # The documented way: `mcp-orch reload` signals the gateway through its pidfile.
            done = await trio.run_process(
                [sys.executable, "-m", "gateway", "reload", "--config", str(config)],
                cwd=REPO, capture_stdout=True, capture_stderr=True,
            )
            assert done.returncode == 0
            with trio.fail_after(10):
                while True:
                    after = gw.health()["projects"]["demo"]["servers"]
                    if after["b"]["state"] == "running" and after["b"]["pid"] != before["b"]["pid"]:
                        break
                    await trio.sleep(0.05)
            assert after["a"]["pid"] == before["a"]["pid"]
            assert after["a"]["restarts"] == 0
            result = await s.call("tools/call", {"name": "echo", "arguments": {"text": "still here"}})
            assert result["content"][0]["text"] == "still here"
            assert not s.ended.is_set()
    assert any("applied a config reload" in line and "demo/b" in line for line in gw.stderr)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_parse_and_move_with_traffic(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    r = await _get(gw.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    before = _samples(r.text)
    ok_key = ("mcp_orch_requests_total", (("method", "tools/call"), ("outcome", "ok"),
                                          ("project", "demo"), ("server", "demo")))
    assert before.get(ok_key, 0) == 0
    await _get(gw.sse_url(), headers={"Authorization": "Bearer nope"})
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        for _ in range(3):
            await s.call("tools/call", {"name": "echo", "arguments": {"text": "m"}})
        during = _samples((await _get(gw.url + "/metrics")).text)
    assert during[ok_key] == 3
    assert during[("mcp_orch_sessions_active",
                   (("project", "demo"), ("server", "demo"), ("transport", "sse")))] == 1
    # One refused request, counted once.
    assert during[("mcp_orch_rejected_requests_total", (("reason", "auth"),))] == 1
    assert during[("mcp_orch_upstream_state",
                   (("project", "demo"), ("server", "demo"), ("state", "running")))] == 1
    assert during[("mcp_orch_upstream_seconds_count", (("project", "demo"), ("server", "demo")))] == 3
    assert during[("mcp_orch_stream_frames_total", (("transport", "sse"),))] >= 4
    assert during[("mcp_orch_stream_bytes_total", (("transport", "sse"),))] > 100


async def test_status_needs_admin_token_and_sees_a_crash_within_a_second(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(
        demo_projects(restart={"backoff_initial_s": 5, "backoff_max_s": 5}), admin_token=ADMIN
    )
    assert (await _get(gw.url + "/status")).status_code == 401
    assert (await _get(gw.url + "/status", headers=gw.auth())).status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with trio.fail_after(10):
        while True:
            status = (await _get(gw.url + "/status", headers=admin)).json()
            server = status["projects"]["demo"]["servers"]["demo"]
            if server["state"] == "running" and server["tools"] is not None:
                break
            await trio.sleep(0.05)
    assert server["protocol_version"] == "2025-11-25"
    assert server["server_info"]["name"] == "mcp-orch-demo"
    assert server["tools"] == 8
    assert any("ready on stdio" in line for line in server["stderr_tail"])
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        await s.call("tools/call", {"name": "echo", "arguments": {"text": "x"}})
        status = (await _get(gw.url + "/status", headers=admin)).json()
        server = status["projects"]["demo"]["servers"]["demo"]
        assert server["sessions_by_transport"] == {"sse": 1}
        assert server["requests"] >= 2 and server["errors"] == 0
        await s.post({"jsonrpc": "2.0", "id": "boom", "method": "tools/call",
                      "params": {"name": "crash", "arguments": {"code": 7}}})
        crashed_at = trio.current_time()
        with trio.fail_after(1):
            while True:
                status = (await _get(gw.url + "/status", headers=admin)).json()
                server = status["projects"]["demo"]["servers"]["demo"]
                if server["state"] == "restarting":
                    break
                await trio.sleep(0.02)
        assert trio.current_time() - crashed_at < 1
        assert server["last_exit_code"] == 7 and "code 7" in server["last_exit"]
        assert server["errors"] >= 1
    assert gw.keys["demo"] not in json.dumps(status)


async def test_json_logs_carry_correlation_ids_and_no_keys(tmp_path: Path) -> None:
    config = write_config(tmp_path, demo_projects())
    key = _create_key(config)
    async with gateway_process(config, "--log-format", "json", "--log-level", "info",
                               "--log-level", "actors=debug") as gw:
        auth = {"Authorization": f"Bearer {key}"}
        url = gw.url + "/projects/demo/servers/demo/sse"
        async with open_sse_session(url, auth) as s:
            await s.initialize()
            await s.call("tools/call", {"name": "echo", "arguments": {"text": key}})
            sid = s.session_id
        await _get(url, headers={"Authorization": "Bearer " + key + "x"})
        with trio.fail_after(5):
            while not any("ended" in line and sid in line for line in gw.stderr):
                await trio.sleep(0.05)
        gw.process.send_signal(signal.SIGTERM)
        assert await gw.wait_exit(15) == 0
    records = [json.loads(line) for line in gw.stderr if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r.get("session") == sid for r in records)
    assert any(r["level"] == "debug" and r["logger"].startswith("actors") for r in records)
    everything = "\n".join(gw.stderr + gw.stdout)
    assert key not in everything and key[5:25] not in everything


def test_reload_without_a_running_gateway_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, demo_projects())
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "reload", "--config", str(config)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 1 and "no running gateway" in result.stderr
    os.makedirs(tmp_path / "state", exist_ok=True)
