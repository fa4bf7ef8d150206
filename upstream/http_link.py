"""Links to remote MCP servers: a Streamable HTTP client and a legacy HTTP+SSE client.

Both present a remote server as a :class:`~upstream.link.Link`, so the
upstream actor serves it exactly like a stdio process: one connection (one
remote session) shared by every client session, ids remapped, routed back.

* Streamable HTTP (2025-03-26 and later): every message is a ``POST``; a
  request's answer comes back as JSON or as an SSE stream (with whatever the
  server sends before it). ``Mcp-Session-Id`` from the ``initialize``
  response and the negotiated ``MCP-Protocol-Version`` go on every later
  request; after ``initialize`` a ``GET`` stream carries server-initiated
  messages (a ``405`` means the server has none). A ``404`` on the session
  means the remote session is gone: the link ends, and the supervisor
  reconnects with a fresh ``initialize``.
* Legacy SSE (2024-11-05): a ``GET`` stream whose first event names the
  ``POST`` endpoint; every answer arrives on the stream.

Posts run in tasks of their own (bounded), so a slow ``tools/call`` never
holds up other traffic. Transport failures of a request become JSON-RPC
errors for it at once. Only the configured ``headers`` are sent upstream —
never a client's credentials. Transport errors are kept in a bounded ring
(the remote counterpart of a process's stderr) for ``/status``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urljoin

import attrs
import httpx
import trio

from . import errors, jsonrpc

log = logging.getLogger(__name__)

INBOX = 256
MAX_POSTS_IN_FLIGHT = 64
ERRORS_KEPT = 200


@attrs.define(eq=False)
class _RemoteLink:
    url: str
    headers: dict[str, str]
    client: httpx.AsyncClient
    errors: collections.deque[str]
    _inbox_send: trio.MemorySendChannel[jsonrpc.Message] = attrs.field(init=False)
    _inbox_recv: trio.MemoryReceiveChannel[jsonrpc.Message] = attrs.field(init=False)
    _nursery: trio.Nursery | None = None
    _limiter: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(MAX_POSTS_IN_FLIGHT)
    )
    _end_reason: str = ""

    def __attrs_post_init__(self) -> None:
        self._inbox_send, self._inbox_recv = trio.open_memory_channel(INBOX)

    pid = None
    exit_code = None

    @property
    def stderr_tail(self) -> collections.deque[str]:
        return self.errors

    async def receive(self) -> jsonrpc.Message | None:
        try:
            return await self._inbox_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None

    def end_reason(self) -> str:
        return self._end_reason or f"closed the connection to {self.url}"

    def _note(self, text: str) -> None:
        self.errors.append(f"{time.strftime('%H:%M:%S')} {text}")
        log.warning("remote %s: %s", self.url, text)

    def _end(self, reason: str) -> None:
        if not self._end_reason:
            self._end_reason = reason
            self._note(reason)
        self._inbox_send.close()

    async def _deliver(self, message: Any) -> None:
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._inbox_send.send(item)

    def _fail(self, message: jsonrpc.Message, text: str) -> None:
        if "method" in message and "id" in message:
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError,
                                     trio.ClosedResourceError):
                self._inbox_send.send_nowait(
                    jsonrpc.error_response(message["id"], errors.UPSTREAM_UNAVAILABLE, text)
                )

    async def send(self, message: jsonrpc.Message) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._post, message)

    async def _post(self, message: jsonrpc.Message) -> None:
        raise NotImplementedError

    async def _read_sse(self, response: httpx.Response) -> str | None:
        """Deliver the messages of an SSE response; return the last event id seen."""
        name, data, last_id = "message", [], None
        async for line in response.aiter_lines():
            if line == "":
                if data and name == "message":
                    text = "\n".join(data)
                    if text.strip():
                        try:
                            await self._deliver(jsonrpc.loads(text))
                        except jsonrpc.InvalidMessage:
                            self._note("a stream event was not JSON; ignored")
                elif data and name == "endpoint":
                    await self._on_endpoint("\n".join(data))
                name, data = "message", []
            elif line.startswith(":"):
                continue
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line.startswith("id:"):
                last_id = line[3:].strip()
        return last_id

    async def _on_endpoint(self, data: str) -> None:
        pass


@attrs.define(eq=False)
class StreamableHttpLink(_RemoteLink):
    """A remote server over Streamable HTTP."""

    session_id: str | None = None
    protocol_version: str | None = None
    _init_id: Any = None
    _initialized: trio.Event = attrs.field(factory=trio.Event)

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {**self.headers, "Accept": accept}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        if self.protocol_version:
            headers["MCP-Protocol-Version"] = self.protocol_version
        return headers

    async def _deliver(self, message: Any) -> None:
        if self._init_id is not None and isinstance(message, dict) and (
            message.get("id") == self._init_id and "method" not in message
        ):
            result = message.get("result")
            if isinstance(result, dict) and isinstance(result.get("protocolVersion"), str):
                self.protocol_version = result["protocolVersion"]
                self._initialized.set()
        await super()._deliver(message)

    async def _post(self, message: jsonrpc.Message) -> None:
        if message.get("method") == "initialize":
            self._init_id = message.get("id")
        headers = {**self._headers("application/json, text/event-stream"),
                   "Content-Type": "application/json"}
        params = message.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("traceparent"), str):
            headers["traceparent"] = meta["traceparent"]  # W3C trace context (tracing on)
        async with self._limiter:
            try:
                async with self.client.stream(
                    "POST", self.url, content=jsonrpc.dumps(message), headers=headers
                ) as response:
                    if response.status_code == 404 and self.session_id:
                        self._fail(message, "the remote session ended")
                        self._end(f"the remote session at {self.url} ended (404)")
                        return
                    if response.status_code >= 400:
                        body = (await response.aread())[:300].decode(errors="replace")
                        text = f"{self.url} answered HTTP {response.status_code}: {body}"
                        self._note(text)
                        self._fail(message, text)
                        if message.get("method") == "initialize":
                            self._end(text)
                        return
                    session_id = response.headers.get("mcp-session-id")
                    if session_id and message.get("method") == "initialize":
                        self.session_id = session_id
                    content_type = response.headers.get("content-type", "")
                    if content_type.startswith("text/event-stream"):
                        await self._read_sse(response)
                    elif content_type.startswith("application/json"):
                        body = await response.aread()
                        if body.strip():
                            await self._deliver(jsonrpc.loads(body))
            except (httpx.HTTPError, jsonrpc.InvalidMessage) as exc:
                text = f"POST to {self.url} failed: {exc}"
                self._fail(message, text)
                if isinstance(exc, (httpx.ConnectError, httpx.RemoteProtocolError)):
                    self._end(text)
                else:
                    self._note(text)

    async def background(self, logger: logging.Logger) -> None:
        """The server→client stream, opened once initialized; resumed after drops."""
        await self._initialized.wait()
        last_id: str | None = None
        while not self._end_reason:
            headers = self._headers("text/event-stream")
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                async with self.client.stream("GET", self.url, headers=headers) as response:
                    if response.status_code == 405:
                        return  # the server offers no standalone stream
                    if response.status_code == 404:
                        self._end(f"the remote session at {self.url} ended (404)")
                        return
                    if response.status_code >= 400:
                        self._note(f"GET stream: HTTP {response.status_code}")
                    else:
                        last_id = await self._read_sse(response) or last_id
            except httpx.HTTPError as exc:
                self._note(f"GET stream dropped: {exc}")
            await trio.sleep(1.0)  # reconnect delay (the spec's default retry)


@attrs.define(eq=False)
class SseLink(_RemoteLink):
    """A remote server over the legacy HTTP+SSE transport."""

    post_url: str | None = None
    _ready: trio.Event = attrs.field(factory=trio.Event)

    async def _on_endpoint(self, data: str) -> None:
        self.post_url = urljoin(self.url, data.strip())
        self._ready.set()

    async def background(self, logger: logging.Logger) -> None:
        try:
            async with self.client.stream(
                "GET", self.url, headers={**self.headers, "Accept": "text/event-stream"}
            ) as response:
                if response.status_code != 200:
                    self._end(f"{self.url} answered HTTP {response.status_code} to the SSE GET")
                    return
                await self._read_sse(response)
            self._end(f"the SSE stream from {self.url} closed")
        except httpx.HTTPError as exc:
            self._end(f"cannot keep the SSE stream from {self.url}: {exc}")

    async def _post(self, message: jsonrpc.Message) -> None:
        await self._ready.wait()
        assert self.post_url is not None
        async with self._limiter:
            try:
                response = await self.client.post(
                    self.post_url, content=jsonrpc.dumps(message),
                    headers={**self.headers, "Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                self._fail(message, f"POST to {self.post_url} failed: {exc}")
                return
            if response.status_code >= 400:
                text = f"{self.post_url} answered HTTP {response.status_code}"
                self._note(text)
                self._fail(message, text)
                if response.status_code == 404:
                    self._end(f"the remote SSE session ended ({text})")


@contextlib.asynccontextmanager
async def open_remote_link(
    transport: str,
    url: str,
    headers: Mapping[str, str],
    *,
    timeout_s: float = 60.0,
    errors: collections.deque[str] | None = None,
) -> AsyncIterator[_RemoteLink]:
    """Connect to a remote server; on exit end its session (Streamable HTTP ``DELETE``).

    Resource handling: the HTTP client, its connections and every ``POST``
    task belong to this block and are closed when it exits.
    """
    ring = errors if errors is not None else collections.deque(maxlen=ERRORS_KEPT)
    timeout = httpx.Timeout(timeout_s, read=None)
    async with httpx.AsyncClient(timeout=timeout) as client:
        cls = SseLink if transport == "sse" else StreamableHttpLink
        link = cls(url, dict(headers), client, ring)
        async with trio.open_nursery() as nursery:
            link._nursery = nursery
            try:
                yield link
            finally:
                nursery.cancel_scope.cancel()
        if isinstance(link, StreamableHttpLink) and link.session_id:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                with contextlib.suppress(httpx.HTTPError):
                    await client.delete(url, headers=link._headers("application/json"))
