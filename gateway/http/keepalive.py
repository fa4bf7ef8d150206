"""Keep-alive comments for idle SSE streams, driven by one task for the whole gateway.

An idle stream needs a comment every ``keepalive_s`` so that proxies (60 s
idle limits are common) and clients keep it open. A timer per stream — a
``move_on_after(keepalive_s)`` around each wait — fires by cancelling the
wait, which unwinds an exception through it: with 10,000 idle SSE sessions
that alone took about 11 % of a core (README, "Benchmarks"). Here one task
wakes every ``keepalive_s / TICKS`` and nudges each stream that has been
silent for at least ``keepalive_s - tick``; the nudge reaches the wait the
stream is in anyway (an entry in its outbox, or its change event), so no
stream holds a timer, and none stays silent longer than ``keepalive_s``.

The per-call SSE responses of 2026-07-28 requests keep a timer of their own:
they wait on a deadline anyway (questions are coalesced for 50 ms).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import attrs
import trio

#: Sweeps per keep-alive interval: a stream is nudged after between
#: ``keepalive_s * (1 - 1/TICKS)`` and ``keepalive_s`` of silence.
TICKS = 10


@attrs.define(eq=False)
class Beat:
    """One stream under watch: how to wake it, and when it last sent a frame."""

    wake: Callable[[], None]
    last_sent: float

    def sent(self) -> None:
        """The stream sent a frame: its silence starts now."""
        self.last_sent = trio.current_time()


@attrs.define(eq=False)
class Heartbeat:
    """Nudges the silent streams registered with :meth:`watch`; run by the gateway."""

    keepalive_s: float
    _beats: set[Beat] = attrs.field(factory=set)

    @contextlib.contextmanager
    def watch(self, wake: Callable[[], None]) -> Iterator[Beat]:
        """Watch a stream for the duration of the block; ``wake`` must not block."""
        beat = Beat(wake, trio.current_time())
        self._beats.add(beat)
        try:
            yield beat
        finally:
            self._beats.discard(beat)

    def __len__(self) -> int:
        return len(self._beats)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep until cancelled."""
        tick = self.keepalive_s / TICKS
        task_status.started()
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            due = now - (self.keepalive_s - tick)
            # ``wake`` only queues (it never yields), so the set cannot change meanwhile.
            for beat in self._beats:
                if beat.last_sent <= due:
                    beat.last_sent = now
                    beat.wake()
