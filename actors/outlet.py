"""Where a session's messages for its client go: the one interface every transport's
outbound side implements.

A session does not know how its client reads. Legacy SSE and WebSocket have
one connection reading one ordered queue — the :class:`Outbox` here; Streamable
HTTP has resumable numbered streams, one per POST plus a standalone one —
:class:`~actors.streams.StreamSet`; the stateless revision filters those
per request. The session only calls :class:`Outlet`'s methods.

Under pressure every outlet keeps the same promise: a *notification* may be
dropped (and counted), a *response* or a server→client *request* never is. A
client that reads nothing is still bounded: the session counts the responses
an outlet holds as unanswered requests (:attr:`Outlet.backlog`,
:attr:`Outlet.answer_limit`), so it stops starting new ones rather than
piling up answers, and an outlet refuses (``deliver`` → ``False``, the
session ends) when what it may not drop outgrows its bound.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Protocol

import attrs
import trio

from upstream import jsonrpc

#: How long a single reader may take nothing while messages wait for it before, under
#: pressure, it counts as not reading at all (``gateway.reader_stall_s``).
READER_STALL_S = 30.0


def droppable(message: jsonrpc.Message) -> bool:
    """A notification: the only kind of message an outlet may drop under pressure."""
    return "method" in message and "id" not in message


def is_response(message: jsonrpc.Message) -> bool:
    """A response (result or error) to one of the client's requests."""
    return "method" not in message and ("result" in message or "error" in message)


class Outlet(Protocol):
    """What a session needs of the way to its client."""

    #: Called (no arguments) for every notification dropped under pressure (metrics);
    #: set by whoever opens the session.
    on_drop: Callable[[], None] | None
    #: Called whenever a reader takes a response, so :attr:`backlog` shrank; set by
    #: the session (it may start a request that waited for room).
    on_taken: Callable[[], None] | None

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> bool:
        """Queue a message without blocking; ``False`` when the client is not keeping
        up (the session then ends). ``related`` is the client's id of the request the
        message belongs to, when known. Notifications may be dropped instead (``True``
        all the same; :attr:`dropped` counts them); responses and requests never are."""
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

    @property
    def backlog(self) -> int:
        """Responses queued and not yet taken by a reader: the session counts them as
        unanswered requests."""
        ...

    @property
    def answer_limit(self) -> int | None:
        """How many requests the session may have unanswered (running, or answered
        and in :attr:`backlog`) at once with this outlet; ``None``: no limit of its own."""
        ...

    @property
    def dropped(self) -> int:
        """Notifications dropped under pressure so far."""
        ...


@attrs.define(eq=False)
class Outbox:
    """One bounded, ordered queue read by one connection (legacy SSE, WebSocket).

    The reader iterates :attr:`recv`: messages in order, ``None`` when the
    gateway's heartbeat asked for a keep-alive (:meth:`nudge`).

    Bounds (``size`` is ``gateway.session_queue``, 256 by default):

    * At most ``size`` messages are queued, ever.
    * **Notifications** are queued only while fewer than ``size`` messages
      are; otherwise they are dropped and counted (:attr:`dropped`,
      ``on_drop``). A response or request that finds the queue full evicts
      the oldest queued notification (counted the same way).
    * **Responses** are never dropped. The session treats a response in this
      queue as a request still unanswered and keeps at most
      :attr:`answer_limit` (``size // 2``, at least 1) of those at once — running
      or queued here — so a slow reader slows its session down instead of
      growing this queue, and half of it stays free for what the session
      answers without a slot (``SESSION_BUSY`` beyond its waiting room) and for
      server→client requests.
    * A response or request that finds the queue full of messages it may not
      drop is refused: ``deliver`` returns ``False`` and the session ends
      ("did not read"). So does any pressure (a notification to drop) once the
      reader has taken nothing for ``stall_s`` while messages waited: a slow
      reader loses notifications, a reader that reads nothing loses its session.

    So a client that reads nothing holds at most ``size`` messages here, plus
    the requests its session keeps waiting (``actors/session.py``).

    Resource handling: :meth:`close` ends the reader's iteration once it has
    read what was queued.
    """

    size: int = 256
    stall_s: float = READER_STALL_S
    on_drop: Callable[[], None] | None = None
    on_taken: Callable[[], None] | None = None
    _queue: collections.deque[jsonrpc.Message] = attrs.field(factory=collections.deque)
    _responses: int = 0
    _notifications: int = 0
    _dropped: int = 0
    _keepalive_due: bool = False
    _closed: bool = False
    #: When the reader last took a message (or the queue last became non-empty).
    _since: float = 0.0
    _changed: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self.size = max(1, self.size)

    # -- the session's side --------------------------------------------------------
    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> bool:
        if self._closed:
            return True
        now = trio.current_time()
        if not self._queue:
            self._since = now
        if droppable(message):
            if len(self._queue) < self.size:
                self._append(message)
                return True
            self._drop()
            return not self._stalled(now)
        if len(self._queue) >= self.size:
            if self._notifications == 0 or self._stalled(now):
                return False
            self._evict_oldest_notification()
        self._append(message)
        return True

    def _append(self, message: jsonrpc.Message) -> None:
        self._queue.append(message)
        if is_response(message):
            self._responses += 1
        elif droppable(message):
            self._notifications += 1
        self._changed.set()

    def _evict_oldest_notification(self) -> None:
        for index, queued in enumerate(self._queue):
            if droppable(queued):
                del self._queue[index]
                self._notifications -= 1
                self._drop()
                return

    def _drop(self) -> None:
        self._dropped += 1
        if self.on_drop is not None:
            self.on_drop()

    def _stalled(self, now: float) -> bool:
        return bool(self._queue) and now - self._since >= self.stall_s

    def nudge(self) -> None:
        """Ask the reader for a keep-alive (never ends the session: a full outbox is
        not idle)."""
        if not self._closed:
            self._keepalive_due = True
            self._changed.set()

    def abandon(self, request_id: jsonrpc.Id) -> None:
        pass

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return False

    @property
    def backlog(self) -> int:
        return self._responses

    @property
    def answer_limit(self) -> int:
        return max(1, self.size // 2)

    @property
    def dropped(self) -> int:
        return self._dropped

    # -- the reader's side ---------------------------------------------------------
    @property
    def recv(self) -> Outbox:
        """The reader's end: ``async for message in outbox.recv`` — messages in order,
        ``None`` for a keep-alive, until the outbox is closed and drained."""
        return self

    def __aiter__(self) -> Outbox:
        return self

    async def __anext__(self) -> jsonrpc.Message | None:
        while True:
            if self._queue:
                message = self._queue.popleft()
                self._since = trio.current_time()
                self._keepalive_due = False  # a frame goes out: no comment needed
                if is_response(message):
                    self._responses -= 1
                    if self.on_taken is not None:
                        self.on_taken()
                elif droppable(message):
                    self._notifications -= 1
                return message
            if self._keepalive_due:
                self._keepalive_due = False
                return None
            if self._closed:
                raise StopAsyncIteration
            self._changed = trio.Event()
            await self._changed.wait()
