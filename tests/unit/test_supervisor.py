"""Supervisor restart policy under trio's MockClock: exact backoff, failed state, recovery."""

from __future__ import annotations

import contextlib
import logging
import types
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors.supervisor import ServerSupervisor
from actors.upstream import UpstreamError
from config import RestartPolicy, ServerConfig


@attrs.define(eq=False)
class FakeUpstream:
    pid: int
    closed: trio.Event = attrs.field(factory=trio.Event)
    close_reason: str = ""
    in_flight: int = 0
    link: Any = attrs.field(factory=lambda: types.SimpleNamespace(exit_code=3))


@attrs.define
class Script:
    """An opener whose upstreams live for the given virtual durations (None = fail to start)."""

    lives: list[float | None]
    starts: list[float] = attrs.field(factory=list)
    current: FakeUpstream | None = None

    @contextlib.asynccontextmanager
    async def __call__(self, *args: Any, **kwargs: Any) -> AsyncIterator[FakeUpstream]:
        self.starts.append(trio.current_time())
        life = self.lives.pop(0) if self.lives else None
        if life is None:
            raise RuntimeError("exited with code 1 at start")
        up = FakeUpstream(pid=len(self.starts))
        self.current = up

        async def die() -> None:
            await trio.sleep(life)
            up.close_reason = "exited with code 3"
            up.closed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(die)
            yield up
            nursery.cancel_scope.cancel()


def make(script: Script, **policy: float) -> ServerSupervisor:
    restart = RestartPolicy(
        max_restarts=int(policy.get("max_restarts", 3)),
        window_s=policy.get("window_s", 60),
        backoff_initial_s=policy.get("backoff_initial_s", 1),
        backoff_max_s=policy.get("backoff_max_s", 30),
        failed_retry_s=policy.get("failed_retry_s", 300),
    )
    config = ServerConfig(name="s", command="true", restart=restart)
    return ServerSupervisor("p", config, jitter=0.0, opener=script)


async def test_crash_loop_backs_off_exponentially_then_fails(autojump_clock: Any) -> None:
    script = Script(lives=[])  # every start fails at once
    sup = make(script)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(10)
        assert script.starts == [0, 1, 3, 7]  # backoff 1, 2, 4 s — no busy loop
        assert sup.state == "failed"
        assert sup.restarts == 3
        assert "exited with code 1 at start" in sup.snapshot()["last_exit"]
        with pytest.raises(UpstreamError, match="failed"):
            with trio.fail_after(0.001):  # no waiting: failed answers at once
                await sup.wait_ready(30)
        await trio.sleep(300)
        assert script.starts[4] == 307  # retried slowly after failed_retry_s
        nursery.cancel_scope.cancel()
    assert sup.state == "stopped"


async def test_backoff_caps_at_max(autojump_clock: Any) -> None:
    script = Script(lives=[])
    sup = make(script, max_restarts=100, window_s=1000, backoff_max_s=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(30)
        gaps = [b - a for a, b in zip(script.starts, script.starts[1:], strict=False)]
        assert gaps[:5] == [1, 2, 4, 5, 5]
        nursery.cancel_scope.cancel()


async def test_healthy_run_resets_backoff(autojump_clock: Any) -> None:
    # Crash twice at start (backoff 1, 2), then live 100 s (> window), then die:
    # the next restart waits backoff_initial_s again, not 4 s.
    script = Script(lives=[None, None, 100.0, None])
    sup = make(script, max_restarts=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(3.5)
        assert sup.state == "running"
        await trio.sleep(101)
        assert sup.last_exit_code == 3
        assert script.starts == [0, 1, 3, 104]
        nursery.cancel_scope.cancel()


async def test_wait_ready_waits_through_restart(autojump_clock: Any) -> None:
    script = Script(lives=[None, 1000.0])
    sup = make(script)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        upstream = await sup.wait_ready(5)
        assert trio.current_time() == 1
        assert upstream is script.current
        assert sup.snapshot()["state"] == "running"
        assert sup.restarts == 1
        nursery.cancel_scope.cancel()


async def test_wait_ready_times_out_with_clear_error(autojump_clock: Any) -> None:
    script = Script(lives=[])
    sup = make(script, backoff_initial_s=20, max_restarts=10)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(UpstreamError, match="restarting"):
            await sup.wait_ready(5)
        assert trio.current_time() == 5
        nursery.cancel_scope.cancel()


@attrs.define
class SlowStop(Script):
    """A Script whose upstreams take ``stop_s`` to stop after they died (like a
    process given stdin EOF, a grace period, then SIGTERM)."""

    stop_s: float = 5.0

    @contextlib.asynccontextmanager
    async def __call__(self, *args: Any, **kwargs: Any) -> AsyncIterator[FakeUpstream]:
        async with Script.__call__(self, *args, **kwargs) as up:
            try:
                yield up
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.stop_s)


async def test_state_leaves_running_as_soon_as_the_link_is_broken(autojump_clock: Any) -> None:
    script = SlowStop(lives=[10.0, 1000.0])
    sup = make(script)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(9)
        assert sup.snapshot()["state"] == "running" and sup.snapshot()["pid"] == 1
        await trio.sleep(1.001)  # it broke at 10; stopping it takes until 15
        view = sup.snapshot()
        assert view["state"] == "restarting", view
        assert view["pid"] is None
        assert "exited with code 3" in view["last_exit"]
        nursery.cancel_scope.cancel()


@attrs.define
class SlowStart(Script):
    """An opener that records the init budget it was given and takes ``init_s`` to start."""

    init_s: list[float] = attrs.field(factory=list)
    budgets: list[float] = attrs.field(factory=list)

    @contextlib.asynccontextmanager
    async def __call__(self, name: str, open_link: Any, **kwargs: Any) -> AsyncIterator[FakeUpstream]:
        budget = kwargs["init_timeout_s"]
        self.budgets.append(budget)
        delay = self.init_s.pop(0)
        if delay > budget:
            await trio.sleep(budget)
            raise UpstreamError(-32000, f"did not answer initialize within {budget:g} s")
        await trio.sleep(delay)
        async with Script.__call__(self, name, open_link, **kwargs) as up:
            yield up


async def test_first_start_has_its_own_budget_and_shows_starting(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    script = SlowStart(lives=[5.0, 1000.0], init_s=[200.0, 200.0, 1.0])
    restart = RestartPolicy(max_restarts=10, backoff_initial_s=1)
    config = ServerConfig(name="s", command="true", restart=restart, request_timeout_s=60,
                          first_start_timeout_s=300)
    sup = ServerSupervisor("p", config, jitter=0.0, opener=script)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with caplog.at_level(logging.INFO, logger="actors.supervisor"):
            await trio.sleep(120)
        view = sup.snapshot()
        assert view["state"] == "starting" and view["starting_for_s"] == 120
        # The log says so too, every 15 s, naming the likely cause.
        slow = [r.getMessage() for r in caplog.records if "still starting" in r.getMessage()]
        assert slow[0] == ("server p/s: still starting after 15 s "
                           "(a first start may still be installing it)")
        # One line per 15 s so far (the one due at 120 s races with this wake-up).
        seconds = [int(m.split("after ")[1].split(" s")[0]) for m in slow]
        assert seconds == list(range(15, 15 * len(slow) + 1, 15)) and len(slow) >= 7
        await trio.sleep(81)  # 200 s: the slow first start made it within 300 s
        assert sup.state == "running"
        await trio.sleep(5)  # it died at 205; the restart (206) gets the ordinary budget
        await trio.sleep(60.5)
        assert script.budgets == [300, 60]
        assert sup.state == "restarting" and "within 60 s" in sup.last_exit
        nursery.cancel_scope.cancel()
