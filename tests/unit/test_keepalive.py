"""The gateway's heartbeat: silent streams are nudged in time, busy ones never."""

from __future__ import annotations

import trio

from gateway.http.keepalive import TICKS, Heartbeat


async def test_a_silent_stream_is_nudged_every_keepalive_interval(autojump_clock: trio.abc.Clock) -> None:
    heartbeat = Heartbeat(keepalive_s=15.0)
    woken: list[float] = []
    sent: list[float] = []
    asked = trio.Event()

    def wake() -> None:
        woken.append(trio.current_time())
        asked.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        with heartbeat.watch(wake) as beat:
            beat.sent()
            sent.append(trio.current_time())
            while len(woken) < 5:
                await asked.wait()
                asked = trio.Event()
                await trio.sleep(0.3)  # the stream takes a while to send its comment
                beat.sent()
                sent.append(trio.current_time())
        assert len(heartbeat) == 0
        # Silence before each nudge: between keepalive_s - tick and keepalive_s.
        silences = [w - s for s, w in zip(sent, woken, strict=False)]
        tick = 15.0 / TICKS
        assert all(15.0 - tick - 1e-9 <= gap <= 15.0 + 1e-9 for gap in silences), silences
        await trio.sleep(60)  # no longer watched: never woken again
        assert len(woken) == 5
        nursery.cancel_scope.cancel()


async def test_a_stream_that_keeps_sending_is_never_nudged(autojump_clock: trio.abc.Clock) -> None:
    heartbeat = Heartbeat(keepalive_s=15.0)
    busy: list[float] = []
    quiet: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        with heartbeat.watch(lambda: busy.append(trio.current_time())) as beat, \
                heartbeat.watch(lambda: quiet.append(trio.current_time())):
            for _ in range(40):  # a frame every 10 s for 400 s
                await trio.sleep(10)
                beat.sent()
        assert busy == []
        assert len(quiet) >= 400 // 15
        nursery.cancel_scope.cancel()
