"""Resumable event streams of a Streamable HTTP session.

A Streamable HTTP session (MCP 2025-03-26 and later, "Transports") has one
standalone stream (opened by ``GET``) and one stream per ``POST`` that
carries requests. Each stream numbers its events; an event id is
``<stream>-<seq>``, so a client that lost its connection can come back with
``GET`` and ``Last-Event-ID`` and receive exactly what it missed on *that*
stream (2025-11-25 "Resumability and Redelivery"). Disconnecting is not
cancelling: the request goes on and its response waits in the buffer.

Buffers are bounded, and what they give up under pressure is chosen: history
a reader already has goes first, then the oldest *notification* not yet
delivered (dropped, and counted); a *response* a stream is waiting to deliver
is never dropped (a stream holds at most the responses of its own requests),
nor a server→client request (beyond ``capacity`` of those undelivered the
stream refuses and the session ends). A live reader skips what was dropped;
a client resuming with ``Last-Event-ID`` from before a dropped event gets
:class:`EventsLost` — a clear error, never a silent gap.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Callable, Iterable

import attrs
import trio

from upstream import jsonrpc

from .outlet import droppable, is_response

STREAM_CAPACITY = 512
#: Finished request streams kept for late resumption, per session.
FINISHED_STREAMS_KEPT = 32

__all__ = ["STREAM_CAPACITY", "EventStream", "EventsLost", "StreamSet", "is_response"]


class EventsLost(Exception):
    """The events after the requested id are no longer buffered.

    ``resume_from`` is the id of the last event given up: resuming from it
    yields everything still kept (a response is always still kept).
    """

    def __init__(self, message: str, resume_from: str) -> None:
        super().__init__(message)
        self.resume_from = resume_from


@attrs.define(eq=False)
class EventStream:
    """One numbered, bounded, resumable stream of messages for a client.

    It keeps at most ``capacity`` events, except that a response it is waiting to
    deliver is never given up (there are at most as many as the requests it
    answers). Over ``capacity`` it first forgets history a reader already has,
    then drops the oldest undelivered notification (:attr:`dropped`,
    ``on_drop``); :meth:`push` returns ``False`` when more than ``capacity``
    server→client requests are waiting undelivered (the client is not reading).
    """

    stream_id: str
    #: Request ids this stream answers; it finishes when all are answered.
    awaiting: set[jsonrpc.Id] = attrs.field(factory=set)
    #: The POSTed messages it answers (a resent identical POST is answered from it).
    messages: tuple[jsonrpc.Message, ...] = ()
    capacity: int = STREAM_CAPACITY
    next_seq: int = 1
    finished: bool = False
    #: A reader is attached (an HTTP response is streaming it).
    attached: bool = False
    #: The highest sequence number handed to a reader so far.
    delivered: int = 0
    #: The gateway's heartbeat asked the reader for a keep-alive comment.
    keepalive_due: bool = False
    #: Called once for each notification dropped before a reader had it.
    on_drop: Callable[[], None] | None = None
    #: Notifications dropped before a reader had them.
    dropped: int = 0
    #: The highest sequence number given up (history or dropped); 0 if none.
    lost_upto: int = 0
    #: Responses and server→client requests, in order (never dropped undelivered).
    _kept: collections.deque[tuple[int, jsonrpc.Message]] = attrs.field(
        factory=collections.deque)
    #: Notifications, in order (the oldest undelivered one goes first under pressure).
    _notes: collections.deque[tuple[int, jsonrpc.Message]] = attrs.field(
        factory=collections.deque)
    #: Server→client requests in ``_kept``.
    _requests: int = 0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def event_id(self, seq: int) -> str:
        return f"{self.stream_id}-{seq}"

    def _signal(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    @property
    def events(self) -> list[tuple[int, jsonrpc.Message]]:
        """Every event kept, in order."""
        return list(heapq.merge(self._kept, self._notes, key=_seq))

    def push(self, message: jsonrpc.Message) -> bool:
        """Add an event; ``False`` when the stream can hold no more of what it may
        not drop (the client is not reading)."""
        if self.finished:
            return True
        entry = (self.next_seq, message)
        self.next_seq += 1
        if droppable(message):
            self._notes.append(entry)
        else:
            self._kept.append(entry)
            if is_response(message):
                self.awaiting.discard(message.get("id"))  # type: ignore[arg-type]
                if not self.awaiting:
                    self.finished = True
            else:
                self._requests += 1
        kept = self._trim()
        self._signal()
        return kept

    def _trim(self) -> bool:
        while len(self._kept) + len(self._notes) > self.capacity:
            kept_first = self._kept[0][0] if self._kept else None
            note_first = self._notes[0][0] if self._notes else None
            oldest = min(s for s in (kept_first, note_first) if s is not None)
            if oldest <= self.delivered:  # history a reader already has
                if oldest == note_first:
                    self._notes.popleft()
                else:
                    _, message = self._kept.popleft()
                    if not is_response(message):
                        self._requests -= 1
                self.lost_upto = max(self.lost_upto, oldest)
            elif self._notes:  # pressure: the oldest undelivered notification goes
                seq, _ = self._notes.popleft()
                self.lost_upto = max(self.lost_upto, seq)
                self.dropped += 1
                if self.on_drop is not None:
                    self.on_drop()
            else:
                break  # undelivered responses and requests only: never dropped
        return self._requests <= self.capacity

    def nudge(self) -> None:
        """Wake the reader for a keep-alive comment."""
        self.keepalive_due = True
        self._signal()

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._signal()

    def has_non_response(self) -> bool:
        return bool(self._notes) or self._requests > 0

    def responses(self) -> list[jsonrpc.Message]:
        """The responses kept, in order."""
        return [m for _, m in self._kept if is_response(m)]

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def pending_after(self, after: int, *, strict: bool = False
                      ) -> list[tuple[int, jsonrpc.Message]]:
        """Events kept with a sequence number above ``after``, handed to the reader:
        they and everything up to ``after`` count as delivered (history).

        A live reader skips what was dropped under pressure. With ``strict`` (a
        client resuming with ``Last-Event-ID``) :class:`EventsLost` is raised
        instead when any event after ``after`` is no longer kept.
        """
        if strict and after < self.lost_upto:
            raise EventsLost(
                f"events after {self.event_id(after)} are no longer buffered "
                f"(up to {self.event_id(self.lost_upto)} were given up)",
                self.event_id(self.lost_upto),
            )
        found = list(heapq.merge(
            (e for e in self._kept if e[0] > after),
            (e for e in self._notes if e[0] > after), key=_seq))
        # The reader has everything up to ``after`` and takes what it is handed now.
        self.delivered = max(self.delivered, min(after, self.next_seq - 1),
                             found[-1][0] if found else 0)
        return found

    def drained(self, after: int) -> bool:
        """Finished, and nothing after ``after`` left to deliver."""
        if not self.finished:
            return False
        last = max(self._kept[-1][0] if self._kept else 0,
                   self._notes[-1][0] if self._notes else 0)
        return after >= last

    @property
    def undelivered(self) -> int:
        """Events kept that no reader has had yet."""
        return sum(1 for seq, _ in self.events if seq > self.delivered)


def _seq(entry: tuple[int, jsonrpc.Message]) -> int:
    return entry[0]


@attrs.define(eq=False)
class StreamSet:
    """All event streams of one session, and the rule for which stream a message joins;
    the outlet (``actors/outlet.py``) of a Streamable HTTP session.

    Its responses wait in their request's stream (bounded by the streams kept), so
    it sets no :attr:`answer_limit` of its own and has no :attr:`backlog`.
    """

    standalone: EventStream = attrs.field(factory=lambda: EventStream("0"))
    by_request: dict[jsonrpc.Id, EventStream] = attrs.field(factory=dict)
    by_id: dict[str, EventStream] = attrs.field(factory=dict)
    on_drop: Callable[[], None] | None = None
    on_taken: Callable[[], None] | None = None
    _finished_order: collections.deque[str] = attrs.field(factory=collections.deque)
    _counter: int = 0
    _dropped: int = 0

    def __attrs_post_init__(self) -> None:
        self.by_id["0"] = self.standalone
        self.standalone.on_drop = self._count_drop

    def _count_drop(self) -> None:
        self._dropped += 1
        if self.on_drop is not None:
            self.on_drop()

    def open(self, request_ids: Iterable[jsonrpc.Id],
             messages: tuple[jsonrpc.Message, ...] = ()) -> EventStream:
        """A new stream for a POST carrying these requests (``messages``: the POST's)."""
        self._counter += 1
        stream = EventStream(str(self._counter), awaiting=set(request_ids),
                             messages=messages, on_drop=self._count_drop)
        self.by_id[stream.stream_id] = stream
        for request_id in stream.awaiting:
            self.by_request[request_id] = stream
        return stream

    def route(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> bool:
        """Put a message on the stream it belongs to; ``False`` when that stream is
        full of what it may not drop.

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
            return True
        if related is not None and related in self.by_request:
            return self.by_request[related].push(message)
        if message.get("method") == "notifications/message":
            active = {id(s): s for s in self.by_request.values() if not s.finished}
            if len(active) == 1:
                return next(iter(active.values())).push(message)
        return self.standalone.push(message)

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
        """Route the message (:meth:`route`); streams drop notifications under
        pressure, and refuse only when server→client requests pile up unread."""
        return self.route(message, related)

    def close(self) -> None:
        for stream in self.by_id.values():
            stream.finish()

    @property
    def depth(self) -> int:
        return sum(s.undelivered for s in self.by_id.values() if not s.finished or s.attached)

    @property
    def busy(self) -> bool:
        return any(s.attached for s in self.by_id.values())

    @property
    def backlog(self) -> int:
        return 0

    @property
    def answer_limit(self) -> int | None:
        return None

    @property
    def dropped(self) -> int:
        return self._dropped

    def resolve(self, last_event_id: str) -> tuple[EventStream, int]:
        """The stream and sequence number a ``Last-Event-ID`` names; ``KeyError`` if unknown."""
        stream_id, _, seq = last_event_id.rpartition("-")
        stream = self.by_id[stream_id]
        return stream, int(seq)
