"""Session actor rules that need no process: overflow, closing before start, negotiation."""

from __future__ import annotations

import pytest
import trio

from actors import Outbox
from actors.session import LATEST_VERSION, Session, SessionOptions, Transport, negotiate_version
from actors.upstream import Upstream, _NoSession, _Pending
from config import ServerConfig


def make_session(outbox: int = 2) -> Session:
    options = SessionOptions("p", ServerConfig(name="x", command="unused"), None,
                             Transport.LEGACY_SSE)
    return Session("s1", options, Outbox(outbox))


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


class _Peer:
    """A client session as an upstream sees it: records what it is asked."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.asked: list[dict] = []

    def deliver(self, message: dict, related: object = None) -> None:
        pass

    def deliver_server_request(self, upstream: object, message: dict) -> None:
        self.asked.append(message)


def test_a_question_goes_to_the_one_client_even_while_the_gateway_asks_its_own() -> None:
    # Regression: the tools listing the gateway makes right after a (re)start counted
    # as a second session, so a question asked then was refused as ambiguous.
    writer_send, writer_recv = trio.open_memory_channel[dict](10)
    upstream = Upstream("x", None, writer_send)  # type: ignore[arg-type]
    client = _Peer("client")
    upstream.attach(client)
    upstream._pending[1] = _Pending(_NoSession(), 1, trio.open_memory_channel[dict](1)[0])
    upstream._pending[2] = _Pending(client, "c1", trio.open_memory_channel[dict](1)[0])
    question = {"jsonrpc": "2.0", "id": "q1", "method": "elicitation/create", "params": {}}
    upstream._dispatch(question)
    assert client.asked == [question]
    with pytest.raises(trio.WouldBlock):
        writer_recv.receive_nowait()  # nothing was refused upstream

    other = _Peer("other")
    upstream.attach(other)
    upstream._pending[3] = _Pending(other, "o1", trio.open_memory_channel[dict](1)[0])
    upstream._dispatch({**question, "id": "q2"})
    refusal = writer_recv.receive_nowait()  # two clients: ambiguous, refused
    assert refusal["id"] == "q2" and "ambiguous" in refusal["error"]["message"]


async def test_in_flight_counts_client_requests_not_the_gateways_own() -> None:
    # Regression: the gateway's tools listing after a start counted as in flight, so a
    # test (and an operator reading /status) waiting for "the client's call reached the
    # upstream" could see the listing instead and act before the call was there.
    writer_send, writer_recv = trio.open_memory_channel[dict](10)
    upstream = Upstream("x", None, writer_send)  # type: ignore[arg-type]
    client = _Peer("client")
    upstream.attach(client)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(upstream.request_internal, "tools/list", None, 10.0)
        listing = await writer_recv.receive()
        assert listing["method"] == "tools/list"
        assert upstream.in_flight == 0
        call = {"jsonrpc": "2.0", "id": "c1", "method": "tools/call", "params": {}}
        nursery.start_soon(upstream.call, client, call, 10.0)
        await writer_recv.receive()
        assert upstream.in_flight == 1
        nursery.cancel_scope.cancel()
