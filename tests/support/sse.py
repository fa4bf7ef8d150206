"""The tests' one Server-Sent Events parser, for every stream the gateway sends.

Legacy SSE, Streamable HTTP responses and GET streams, and 2026-07-28
``subscriptions/listen`` streams all use it. It follows the field rules of the
HTML living standard (``field: value``, one leading space dropped, ``:`` starts
a comment, a blank line ends an event) with one deliberate difference: an
event is reported whenever its block had any field — a priming event (``id:``
with an empty ``data``) is an event here, where a browser would drop it —
because tests check exactly what went over the wire.

Three ways in: :class:`SseParser` line by line, :func:`parse_events` for a
whole body, :func:`aiter_sse` over a streaming ``httpx`` response (plus
:class:`SseReader` to read as far as a test needs).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import attrs
import httpx
import trio


@attrs.frozen
class SseEvent:
    """One event: its name (``message`` unless ``event:`` said otherwise), data, id, retry.

    ``data`` is ``None`` when the block had no ``data:`` line at all.
    """

    event: str = "message"
    data: str | None = None
    id: str | None = None
    retry: int | None = None

    def json(self) -> Any:
        """The data parsed as JSON; ``None`` for empty or absent data (a priming event)."""
        if self.data is None or not self.data.strip():
            return None
        return json.loads(self.data)


@attrs.frozen
class SseComment:
    """A comment line (``: ping``), kept as sent."""

    line: str

    @property
    def text(self) -> str:
        value = self.line[1:]
        return value[1:] if value.startswith(" ") else value


@attrs.define
class SseParser:
    """Feed lines (without their line ending); get events and comments back as they complete."""

    _event: str | None = None
    _data: list[str] = attrs.field(factory=list)
    _id: str | None = None
    _retry: int | None = None
    _fields: int = 0

    def feed(self, line: str) -> SseEvent | SseComment | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return SseComment(line)
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        self._fields += 1
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        if not self._fields:
            return None
        event = SseEvent(
            event=self._event or "message",
            data="\n".join(self._data) if self._data else None,
            id=self._id,
            retry=self._retry,
        )
        self._event, self._data, self._id, self._retry, self._fields = None, [], None, None, 0
        return event


def parse_events(text: str) -> list[SseEvent]:
    """Every event of a complete SSE body (comments dropped)."""
    parser = SseParser()
    found = [parser.feed(line) for line in text.splitlines()]
    found.append(parser.feed(""))  # a body that ends without its blank line
    return [item for item in found if isinstance(item, SseEvent)]


def sse_messages(text: str) -> list[tuple[str | None, Any]]:
    """(event id, parsed data or None for an empty data field) for each event of a body."""
    return [(event.id, event.json()) for event in parse_events(text)]


async def aiter_sse(response: httpx.Response) -> AsyncIterator[SseEvent | SseComment]:
    """Events and comments of a streaming response, as they arrive."""
    parser = SseParser()
    async for line in response.aiter_lines():
        item = parser.feed(line)
        if item is not None:
            yield item


class SseReader:
    """The JSON ``data`` of a streaming response's events, read as far as a test needs."""

    def __init__(self, response: httpx.Response) -> None:
        self._items = aiter_sse(response)
        self.events: list[Any] = []

    async def until(self, count: int, timeout: float = 10) -> list[Any]:
        """Read until ``count`` events with data have arrived (at most ``timeout`` seconds)."""
        with trio.fail_after(timeout):
            while len(self.events) < count:
                item = await self._items.__anext__()
                if isinstance(item, SseEvent) and item.data is not None:
                    self.events.append(json.loads(item.data))
        return self.events

    async def comments(self, seconds: float) -> list[SseComment]:
        """The comments that arrive within ``seconds`` (the stream stays open)."""
        seen: list[SseComment] = []
        with trio.move_on_after(seconds):
            async for item in self._items:
                if isinstance(item, SseComment):
                    seen.append(item)
        return seen
