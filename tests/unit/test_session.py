"""Session actor rules that need no process: overflow, closing before start, negotiation."""

from __future__ import annotations

import trio

from actors.session import LATEST_VERSION, Session, negotiate_version
from config import ServerConfig


def make_session(outbox: int = 2) -> Session:
    return Session("s1", "p", ServerConfig(name="x", command="unused"), "sse", outbox_size=outbox)


async def test_full_outbox_ends_the_session() -> None:
    session = make_session(outbox=2)
    session.deliver({"n": 1})
    session.deliver({"n": 2})
    assert not session._scope.cancel_called
    session.deliver({"n": 3})  # the client is not reading: end, do not grow
    assert session._scope.cancel_called
    assert "did not read" in session.close_reason


async def test_closed_before_start_ends_at_once(nursery: trio.Nursery) -> None:
    session = make_session()
    session.close("gone")
    with trio.fail_after(1):
        await nursery.start(session.run)
        await session.closed.wait()
    assert not await session.submit({"jsonrpc": "2.0", "method": "x"})
    assert session.close_reason == "gone"


def test_negotiation() -> None:
    assert negotiate_version("2024-11-05") == "2024-11-05"
    assert negotiate_version("2025-06-18") == "2025-06-18"
    assert negotiate_version("2099-01-01") == LATEST_VERSION
    assert negotiate_version(None) == LATEST_VERSION
