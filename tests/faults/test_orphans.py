"""Item: no upstream outlives a SIGKILLed gateway, including servers a reload started."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from tests.faults.helpers import get, groups_alive, misbehave, wait_health
from tests.support import DEMO_SERVER, gateway_process, write_config

FORKING = {"command": "bash",
           "args": ["-c", f"sleep 600 & exec {sys.executable} -m upstream.demo_server"]}


@pytest.mark.heavy
async def test_servers_started_by_a_reload_die_with_a_sigkilled_gateway(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"demo": {"auth": "none", "servers": {"demo": DEMO_SERVER}}},
                          stop_grace_s=1)
    async with gateway_process(config) as gw:
        with trio.fail_after(10):
            while (await get(gw.url + "/ready")).status_code != 200:
                await trio.sleep(0.05)
        write_config(tmp_path, {"demo": {"auth": "none", "servers": {
            "demo": DEMO_SERVER, "forking": FORKING,
            "stubborn": {**DEMO_SERVER, "env": {"DEMO_SERVER_IGNORE_EOF": "1"}},
            "children": misbehave("children"),
        }}}, stop_grace_s=1)
        gw.process.send_signal(1)  # SIGHUP: reload
        pgids = set()
        for name in ("demo", "forking", "stubborn", "children"):
            view = await wait_health(gw.url, "demo", name,
                                     lambda v: v["state"] == "running" and v["pid"])
            pgids.add(view["pid"])
        with trio.fail_after(5):  # the forking server's `sleep` and misbehave's children
            while len(groups_alive(pgids)) < 7:
                await trio.sleep(0.05)
        gw.process.kill()
        await gw.wait_exit(5)
        with trio.move_on_after(6):
            while groups_alive(pgids):
                await trio.sleep(0.05)
        left = groups_alive(pgids)
        assert not left, f"processes left after the gateway was SIGKILLed: {left}"
