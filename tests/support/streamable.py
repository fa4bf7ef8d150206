"""A small Streamable HTTP (stateful revisions) MCP client: initialize, session id, POST, GET, DELETE.

It keeps the session id and protocol version the way a real client does and
builds the headers every later request must carry; each method returns the
raw ``httpx`` response, so tests still check status codes and headers
themselves. ``headers(..., **override)`` and ``post(..., headers=...)`` let a
test send what a broken client would.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx

from tests.support.messages import client_info, notification, rpc
from tests.support.sse import sse_messages

ACCEPT = "application/json, text/event-stream"


def headers(auth: Mapping[str, str], session: str | None = None, version: str | None = None,
            **extra: str) -> dict[str, str]:
    """The headers of a POST: auth, both Accept types, JSON body, then session and version."""
    h = {**auth, "Accept": ACCEPT, "Content-Type": "application/json", **extra}
    if session:
        h["Mcp-Session-Id"] = session
    if version:
        h["MCP-Protocol-Version"] = version
    return h


class NoAnswer(Exception):
    """A response carried no JSON-RPC message with the request's id."""


@attrs.define(eq=False)
class StreamableClient:
    """One client of one ``…/mcp`` endpoint; ``session_id``/``version`` set by :meth:`initialize`."""

    http: httpx.AsyncClient
    url: str
    auth: dict[str, str]
    session_id: str | None = None
    version: str | None = None
    _ids: itertools.count = attrs.field(factory=lambda: itertools.count(1))

    def headers(self, **extra: str) -> dict[str, str]:
        return headers(self.auth, self.session_id, self.version, **extra)

    async def initialize(
        self, version: str, capabilities: dict[str, Any] | None = None, *, msg_id: Any = 0
    ) -> httpx.Response:
        """POST ``initialize``; on success remember the session id and the version."""
        r = await self.http.post(self.url, headers=headers(self.auth), json=rpc(msg_id, "initialize", {
            "protocolVersion": version, "capabilities": capabilities or {},
            "clientInfo": client_info()}))
        if r.status_code == 200 and "mcp-session-id" in r.headers:
            self.session_id = r.headers["mcp-session-id"]
            self.version = version
        return r

    async def initialized(self) -> httpx.Response:
        return await self.post(notification("notifications/initialized"))

    async def connect(self, version: str, capabilities: dict[str, Any] | None = None) -> None:
        """Both steps of the handshake; raises ``httpx.HTTPStatusError`` if either fails."""
        (await self.initialize(version, capabilities)).raise_for_status()
        (await self.initialized()).raise_for_status()

    async def post(self, message: Any = None, *, content: bytes | str | None = None,
                   headers: Mapping[str, str] | None = None) -> httpx.Response:
        """POST one message (or raw ``content``) with the session's headers, ``headers`` on top."""
        h = {**self.headers(), **(headers or {})}
        if content is not None:
            return await self.http.post(self.url, headers=h, content=content)
        return await self.http.post(self.url, headers=h, json=message)

    @asynccontextmanager
    async def stream_post(self, message: Any, *, headers: Mapping[str, str] | None = None
                          ) -> AsyncIterator[httpx.Response]:
        """POST and read the answer as it streams (an SSE response, or JSON at the end)."""
        h = {**self.headers(), **(headers or {})}
        async with self.http.stream("POST", self.url, headers=h, json=message) as r:
            yield r

    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      msg_id: Any = None) -> dict[str, Any]:
        """Send a request; its response message, from a JSON or an SSE answer."""
        msg_id = next(self._ids) if msg_id is None else msg_id
        r = await self.post(rpc(msg_id, method, params))
        r.raise_for_status()
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            for _, message in sse_messages(r.text):
                if isinstance(message, dict) and message.get("id") == msg_id and (
                        "result" in message or "error" in message):
                    return message
            raise NoAnswer(msg_id)
        message = json.loads(r.content)
        if message.get("id") != msg_id:
            raise NoAnswer(msg_id)
        return message

    def _stream_headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        return {**self.headers(), "Accept": "text/event-stream", **(extra or {})}

    @asynccontextmanager
    async def get_stream(self, *, headers: Mapping[str, str] | None = None
                         ) -> AsyncIterator[httpx.Response]:
        """Open the server→client GET stream (``Accept: text/event-stream``)."""
        async with self.http.stream("GET", self.url, headers=self._stream_headers(headers)) as r:
            yield r

    async def get(self, *, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """A GET read to its end (a resumption with ``Last-Event-ID``, or a refusal)."""
        return await self.http.get(self.url, headers=self._stream_headers(headers))

    async def delete(self, *, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """End the session."""
        return await self.http.delete(self.url, headers={**self.headers(), **(headers or {})})
