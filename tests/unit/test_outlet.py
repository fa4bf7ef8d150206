"""Outlets under pressure: notifications go, responses and requests stay, a non-reader is
bounded and refused; a stream's resumption reports what was given up."""

from __future__ import annotations

import pytest
import trio

from actors import Outbox
from actors.streams import EventsLost, EventStream


def note(n: int) -> dict:
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": n}}


def answer(n: int) -> dict:
    return {"jsonrpc": "2.0", "id": n, "result": {}}


def ask(n: int) -> dict:
    return {"jsonrpc": "2.0", "id": f"q{n}", "method": "sampling/createMessage"}


async def drain(outbox: Outbox) -> list[dict]:
    outbox.close()
    return [m async for m in outbox.recv if m is not None]


async def test_notifications_are_dropped_and_counted_responses_evict_them() -> None:
    drops: list[None] = []
    outbox = Outbox(4, on_drop=lambda: drops.append(None))
    for n in range(6):
        assert outbox.deliver(note(n), None)
    assert outbox.depth == 4 and outbox.dropped == 2 == len(drops)
    assert outbox.deliver(answer(1), None)  # evicts the oldest notification
    assert outbox.deliver(ask(1), None)
    assert outbox.backlog == 1 and outbox.dropped == 4
    assert [m.get("params", {}).get("data", m.get("id")) for m in await drain(outbox)] == [
        2, 3, 1, "q1"]


async def test_a_queue_full_of_what_may_not_be_dropped_refuses() -> None:
    outbox = Outbox(3)
    assert all(outbox.deliver(answer(n), None) for n in range(3))
    assert outbox.deliver(note(0), None)  # dropped: fine
    assert not outbox.deliver(answer(9), None)  # nothing to evict: the client is not reading
    assert outbox.answer_limit == 1
    assert [m["id"] for m in await drain(outbox)] == [0, 1, 2]


async def test_a_reader_that_took_nothing_for_stall_s_is_refused_under_pressure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(2, stall_s=10)
    taken: list[None] = []
    outbox.on_taken = lambda: taken.append(None)
    assert outbox.deliver(answer(1), None) and outbox.deliver(note(1), None)
    assert outbox.deliver(note(2), None)  # pressure, but the wait is short: dropped
    assert await outbox.recv.__anext__() == answer(1) and taken == [None]
    assert outbox.deliver(note(3), None)
    await trio.sleep(9)
    assert outbox.deliver(note(4), None)  # a slow reader loses notifications only
    await trio.sleep(1)
    assert not outbox.deliver(note(5), None)  # a reader that reads nothing loses its session


async def test_keepalive_nudges_reach_an_idle_reader() -> None:
    outbox = Outbox(2)
    outbox.nudge()
    assert await outbox.recv.__anext__() is None
    outbox.deliver(note(1), None)
    outbox.nudge()
    assert await outbox.recv.__anext__() == note(1)  # a frame makes the comment needless
    outbox.close()
    with pytest.raises(StopAsyncIteration):
        await outbox.recv.__anext__()


def test_a_stream_never_drops_a_response_and_resumption_reports_the_gap() -> None:
    drops: list[None] = []
    stream = EventStream("1", awaiting={1, 2}, capacity=4, on_drop=lambda: drops.append(None))
    assert stream.push(answer(1))
    for n in range(10):
        assert stream.push(note(n))
    assert stream.push(answer(2))
    assert stream.finished and len(drops) == 8
    live = stream.pending_after(0)  # a live reader skips what was dropped
    assert [m.get("id") for _, m in live] == [1, None, None, 2]
    assert [m["id"] for m in stream.responses()] == [1, 2]
    with pytest.raises(EventsLost):
        stream.pending_after(0, strict=True)  # resuming from before the gap: a clear error
    last_kept_note = live[-2][0]
    assert stream.pending_after(last_kept_note, strict=True) == live[-1:]
    assert stream.drained(live[-1][0])


def test_history_a_reader_has_goes_before_undelivered_notifications() -> None:
    drops: list[None] = []
    stream = EventStream("0", capacity=3, on_drop=lambda: drops.append(None))
    for n in range(3):
        stream.push(note(n))
    stream.pending_after(3)  # the reader has all three
    for n in range(3, 6):
        stream.push(note(n))
    assert drops == [] and [m["params"]["data"] for _, m in stream.events] == [3, 4, 5]


def test_server_requests_piling_up_unread_are_refused() -> None:
    stream = EventStream("0", capacity=2)
    assert stream.push(ask(1)) and stream.push(ask(2))
    assert stream.push(note(1))  # dropped for room
    assert not stream.push(ask(3))
