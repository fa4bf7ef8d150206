"""The session under pressure, with no process: a batch waits its turn instead of being
refused, a slow reader slows the session down, answers in the outbox stay bounded."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from actors import Outbox
from actors.session import MAX_IN_FLIGHT, MAX_WAITING, Session, SessionOptions, Transport
from config import ServerConfig
from upstream import errors


class _Server:
    """A shared supervisor stand-in: pings never reach it."""

    upstream = None

    def attach(self, session: Any) -> None:
        pass

    def detach(self, session: Any) -> None:
        pass


def ping(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "method": "ping"}


async def open_session(nursery: trio.Nursery, outbox: Outbox) -> Session:
    options = SessionOptions("p", ServerConfig(name="x", command="unused"), _Server(),  # type: ignore[arg-type]
                             Transport.LEGACY_SSE)
    session = Session("s1", options, outbox)
    await nursery.start(session.run)
    return session


async def test_a_batch_larger_than_every_limit_is_answered_in_full_at_the_readers_pace(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock,
) -> None:
    outbox = Outbox(8)  # room for 4 answers at a time
    session = await open_session(nursery, outbox)
    assert await session.submit(tuple(ping(n) for n in range(1000)))
    got: list[Any] = []
    deepest = 0
    async for message in outbox.recv:
        deepest = max(deepest, outbox.backlog + 1)
        got.append(message["id"])
        await trio.sleep(0.01)  # a slow reader
        if len(got) == 1000:
            break
    assert got == list(range(1000))  # every answer, in order, none an error
    assert deepest <= outbox.answer_limit
    assert not session.closing and not session.overflowed


async def test_beyond_the_waiting_room_requests_get_session_busy_not_silence(
    nursery: trio.Nursery,
) -> None:
    outbox = Outbox(1000)
    session = await open_session(nursery, outbox)
    total = MAX_IN_FLIGHT + MAX_WAITING + 10
    # Nobody reads: the answers hold every slot, then the waiting room fills.
    for n in range(total):
        assert await session.submit(ping(n))
    await trio.testing.wait_all_tasks_blocked()
    assert session.waiting == MAX_WAITING and outbox.backlog == MAX_IN_FLIGHT + 10
    answers = []
    while len(answers) < total:
        answers.append(await outbox.recv.__anext__())
        await trio.testing.wait_all_tasks_blocked()  # room made: the waiting ones run
    busy = sorted(m["id"] for m in answers if "error" in m)
    assert busy == list(range(MAX_IN_FLIGHT + MAX_WAITING, total))
    assert {m["error"]["code"] for m in answers if "error" in m} == {errors.SESSION_BUSY}
    assert sorted(m["id"] for m in answers if "result" in m) == list(
        range(MAX_IN_FLIGHT + MAX_WAITING))
    assert not session.closing and session.waiting == 0


async def test_a_waiting_request_cancelled_is_never_answered(nursery: trio.Nursery) -> None:
    outbox = Outbox(2)  # one answer at a time
    session = await open_session(nursery, outbox)
    assert await session.submit((ping(1), ping(2), ping(3)))
    await trio.testing.wait_all_tasks_blocked()
    assert session.waiting == 2
    assert await session.submit({"jsonrpc": "2.0", "method": "notifications/cancelled",
                                 "params": {"requestId": 2}})
    await trio.testing.wait_all_tasks_blocked()
    assert session.waiting == 1
    ids = []
    for _ in range(2):
        ids.append((await outbox.recv.__anext__())["id"])
        await trio.testing.wait_all_tasks_blocked()
    assert ids == [1, 3] and session.waiting == 0
