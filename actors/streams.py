"""Resumable event streams of a Streamable HTTP session.

A Streamable HTTP session (MCP 2025-03-26 and later, "Transports") has one
standalone stream (opened by ``GET``) and one stream per ``POST`` that
carries requests. Each stream numbers its events; an event id is
``<stream>-<seq>``, so a client that lost its connection can come back with
``GET`` and ``Last-Event-ID`` and receive exactly what it missed on *that*
stream (2025-11-25 "Resumability and Redelivery"). Disconnecting is not
cancelling: the request goes on and its response waits in the buffer.

Buffers are bounded. A reader asking for events older than what is retained
gets :class:`EventsLost` — a clear error, never a silent gap.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import attrs
import trio

from upstream import jsonrpc

STREAM_CAPACITY = 512
#: Finished request streams kept for late resumption, per session.
FINISHED_STREAMS_KEPT = 32


class EventsLost(Exception):
    """The events after the requested id are no longer buffered."""


def is_response(message: jsonrpc.Message) -> bool:
    return "method" not in message and ("result" in message or "error" in message)


@attrs.define(eq=False)
class EventStream:
    """One numbered, bounded, resumable stream of messages for a client."""

    stream_id: str
    #: Request ids this stream answers; it finishes when all are answered.
    awaiting: set[jsonrpc.Id] = attrs.field(factory=set)
    capacity: int = STREAM_CAPACITY
    events: collections.deque[tuple[int, jsonrpc.Message]] = attrs.field(
        factory=collections.deque
    )
    next_seq: int = 1
    finished: bool = False
    #: A reader is attached (an HTTP response is streaming it).
    attached: bool = False
    #: The highest sequence number handed to a reader so far.
    delivered: int = 0
    #: The gateway's heartbeat asked the reader for a keep-alive comment.
    keepalive_due: bool = False
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def event_id(self, seq: int) -> str:
        return f"{self.stream_id}-{seq}"

    def _signal(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def push(self, message: jsonrpc.Message) -> None:
        if self.finished:
            return
        if len(self.events) >= self.capacity:
            self.events.popleft()
        self.events.append((self.next_seq, message))
        self.next_seq += 1
        if is_response(message):
            self.awaiting.discard(message.get("id"))  # type: ignore[arg-type]
            if not self.awaiting:
                self.finished = True
        self._signal()

    def nudge(self) -> None:
        """Wake the reader for a keep-alive comment."""
        self.keepalive_due = True
        self._signal()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._signal()

    def has_non_response(self) -> bool:
        return any(not is_response(m) for _, m in self.events)

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def pending_after(self, after: int) -> list[tuple[int, jsonrpc.Message]]:
        """Events with a sequence number above ``after``.

        Raises :class:`EventsLost` if some of them were already dropped.
        """
        oldest = self.events[0][0] if self.events else self.next_seq
        if after + 1 < oldest:
            raise EventsLost(
                f"events after {self.event_id(after)} are no longer buffered "
                f"(the oldest kept is {self.event_id(oldest)})"
            )
        return [(seq, m) for seq, m in self.events if seq > after]

    def drained(self, after: int) -> bool:
        """Finished, and nothing after ``after`` left to deliver."""
        return self.finished and after >= self.next_seq - 1


@attrs.define(eq=False)
class StreamSet:
    """All event streams of one session, and the rule for which stream a message joins;
    the outlet (``actors/outlet.py``) of a Streamable HTTP session."""

    standalone: EventStream = attrs.field(factory=lambda: EventStream("0"))
    by_request: dict[jsonrpc.Id, EventStream] = attrs.field(factory=dict)
    by_id: dict[str, EventStream] = attrs.field(factory=dict)
    _finished_order: collections.deque[str] = attrs.field(factory=collections.deque)
    _counter: int = 0

    def __attrs_post_init__(self) -> None:
        self.by_id["0"] = self.standalone

    def open(self, request_ids: Iterable[jsonrpc.Id]) -> EventStream:
        """A new stream for a POST carrying these requests."""
        self._counter += 1
        stream = EventStream(str(self._counter), awaiting=set(request_ids))
        self.by_id[stream.stream_id] = stream
        for request_id in stream.awaiting:
            self.by_request[request_id] = stream
        return stream

    def route(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> None:
        """Put a message on the stream it belongs to.

        Responses go to their request's stream; messages related to a request
        (its progress, server→client requests made while serving it) go to
        that request's stream; log messages go to the only request in flight
        when there is exactly one (they are about it); everything else goes to
        the standalone stream.
        """
        if is_response(message):
            stream = self.by_request.pop(message.get("id"), None)  # type: ignore[arg-type]
            if stream is not None:
                stream.push(message)
                if stream.finished:
                    self._retire(stream)
            return
        if related is not None and related in self.by_request:
            self.by_request[related].push(message)
            return
        if message.get("method") == "notifications/message":
            active = {id(s): s for s in self.by_request.values() if not s.finished}
            if len(active) == 1:
                next(iter(active.values())).push(message)
                return
        self.standalone.push(message)

    def _retire(self, stream: EventStream) -> None:
        self._finished_order.append(stream.stream_id)
        while len(self._finished_order) > FINISHED_STREAMS_KEPT:
            old = self._finished_order.popleft()
            if not self.by_id[old].attached:
                self.by_id.pop(old, None)

    def abandon(self, request_id: jsonrpc.Id) -> None:
        """A request that will get no response (cancelled by the client)."""
        stream = self.by_request.pop(request_id, None)
        if stream is not None:
            stream.awaiting.discard(request_id)
            if not stream.awaiting:
                stream.finish()
                self._retire(stream)

    # -- the session's outlet (actors/outlet.py) ---------------------------------
    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> bool:
        """Route the message (:meth:`route`); streams keep a bounded history instead of
        refusing, so this never reports overflow."""
        self.route(message, related)
        return True

    def close(self) -> None:
        for stream in self.by_id.values():
            stream.finish()

    @property
    def depth(self) -> int:
        return sum(max(0, s.next_seq - 1 - s.delivered) for s in self.by_id.values()
                   if not s.finished or s.attached)

    @property
    def busy(self) -> bool:
        return any(s.attached for s in self.by_id.values())

    def resolve(self, last_event_id: str) -> tuple[EventStream, int]:
        """The stream and sequence number a ``Last-Event-ID`` names; ``KeyError`` if unknown."""
        stream_id, _, seq = last_event_id.rpartition("-")
        stream = self.by_id[stream_id]
        return stream, int(seq)

