"""Where a session's messages for its client go: the one interface every transport's
outbound side implements.

A session does not know how its client reads. Legacy SSE and WebSocket have
one connection reading one ordered queue — the :class:`Outbox` here; Streamable
HTTP has resumable numbered streams, one per POST plus a standalone one —
:class:`~actors.streams.StreamSet`; the stateless revision filters those
per request. The session only calls :class:`Outlet`'s methods.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import attrs
import trio

from upstream import jsonrpc


class Outlet(Protocol):
    """What a session needs of the way to its client."""

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> bool:
        """Queue a message without blocking; ``False`` when the client is not keeping up
        (the session then ends). ``related`` is the client's id of the request the
        message belongs to, when known."""
        ...

    def abandon(self, request_id: jsonrpc.Id) -> None:
        """A request that will get no response (the client cancelled it)."""
        ...

    def close(self) -> None:
        """The session ended: readers see the end once they have what was queued."""
        ...

    @property
    def depth(self) -> int:
        """Messages queued and not yet handed to a reader."""
        ...

    @property
    def busy(self) -> bool:
        """A reader is attached (an idle session with a reader is not idle)."""
        ...


@attrs.define(eq=False)
class Outbox:
    """One bounded, ordered queue read by one connection (legacy SSE, WebSocket).

    ``None`` in the queue asks the reader for a keep-alive (:meth:`nudge`).

    Resource handling: :meth:`close` ends the reader's iteration once it has
    read what was queued.
    """

    size: int = 256
    _send: trio.MemorySendChannel[jsonrpc.Message | None] = attrs.field(init=False)
    #: The reader's end: messages in order, ``None`` for a keep-alive.
    recv: trio.MemoryReceiveChannel[jsonrpc.Message | None] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._send, self.recv = trio.open_memory_channel(self.size)

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> bool:
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return True

    def nudge(self) -> None:
        """Ask the reader for a keep-alive (never ends the session: a full outbox is
        not idle)."""
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError,
                                 trio.ClosedResourceError):
            self._send.send_nowait(None)

    def abandon(self, request_id: jsonrpc.Id) -> None:
        pass

    def close(self) -> None:
        self._send.close()

    @property
    def depth(self) -> int:
        return self._send.statistics().current_buffer_used

    @property
    def busy(self) -> bool:
        return False
