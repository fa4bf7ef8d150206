"""Raw-ASGI plumbing for the MCP routes: one request object over ASGI's scope, receive
and send, with a bounded body reader, complete replies and streamed bodies.

Per call the MCP routes are most of what the gateway costs, and Quart's request
and response machinery was most of that (README, "Benchmarks"), so they answer
straight from ASGI events. Nothing here knows MCP: the session front
(``gateway/transports/front.py``) decides what to answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


def header_list(headers: Mapping[str, str]) -> Headers:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


class BodyTooLarge(Exception):
    """The request body exceeds the limit it was read with."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


@attrs.define(eq=False)
class HttpRequest:
    """One HTTP request on the raw-ASGI path, and the way its answer goes out.

    ``extra`` holds headers every response to this request carries (CORS).
    """

    scope: Scope
    receive: Receive
    send: Send
    headers: dict[bytes, bytes] = attrs.field(init=False)
    extra: Headers = attrs.field(factory=list)
    _nursery: trio.Nursery | None = None
    _watching: bool = False
    #: The body once read: a second reader (the transport after the cluster's
    #: router looked into it) gets the same bytes.
    _body: bytes | None = None

    def __attrs_post_init__(self) -> None:
        # The last value of a repeated header wins.
        self.headers = dict(self.scope["headers"])

    @property
    def method(self) -> str:
        return self.scope["method"]

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower().encode())
        return value.decode("latin-1") if value is not None else None

    def query(self, *names: str) -> str:
        """The first non-empty query parameter among ``names`` ('' when none is)."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        for name in names:
            values = query.get(name)
            if values and values[0]:
                return values[0]
        return ""

    def cancel_on_disconnect(self, nursery: trio.Nursery) -> None:
        """From now on — or, for a request with a body, once the body is read —
        a disconnecting client cancels ``nursery`` (the request's handling).

        Only one task may wait on ``receive``, so while the body is still being
        read the watch waits for :meth:`read_body` to finish.
        """
        self._nursery = nursery
        if self.method != "POST":
            self._watch()

    def _watch(self) -> None:
        if self._nursery is not None and not self._watching:
            self._watching = True
            self._nursery.start_soon(self._cancel_on_disconnect, self._nursery.cancel_scope)

    async def read_body(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes.

        Error handling: :class:`BodyTooLarge` (declared or actual size),
        :class:`ClientGone` when the client disconnects first.
        """
        if self._body is not None:
            return self._body
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self.receive()
            if event["type"] == "http.disconnect":
                raise ClientGone()
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(limit)
            chunks.append(chunk)
            if not event.get("more_body", False):
                self._watch()
                self._body = b"".join(chunks)
                return self._body

    async def reply(
        self, status: int, body: bytes, headers: Headers = (),  # type: ignore[assignment]
        content_type: bytes = b"application/json",
    ) -> None:
        """A complete response with a body (for a WebSocket request: the HTTP answer
        that refuses the upgrade)."""
        kind = "websocket.http" if self.scope["type"] == "websocket" else "http"
        await self.send({"type": f"{kind}.response.start", "status": status,
                         "headers": [(b"content-type", content_type),
                                     (b"content-length", str(len(body)).encode()),
                                     *headers, *self.extra]})
        await self.send({"type": f"{kind}.response.body", "body": body})

    async def stream(self, frames: AsyncIterator[bytes], headers: Headers) -> None:
        """A ``200`` whose body is ``frames``, sent as they come, until they end or the
        client goes away (which cancels the iteration; its ``finally`` runs)."""
        async with contextlib.aclosing(frames), trio.open_nursery() as nursery:
            if not self._watching:
                nursery.start_soon(self._cancel_on_disconnect, nursery.cancel_scope)
            await self.send({"type": "http.response.start", "status": 200,
                             "headers": [*headers, *self.extra]})
            async for frame in frames:
                await self.send({"type": "http.response.body", "body": frame,
                                 "more_body": True})
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()

    async def _cancel_on_disconnect(self, scope: trio.CancelScope) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        scope.cancel()
