"""A small legacy HTTP+SSE (2024-11-05) MCP client: the stream, the POST endpoint, matching.

Deliberately our own and minimal (httpx streaming plus :mod:`tests.support.sse`)
so tests can open hundreds of sessions cheaply and observe the wire exactly;
third-party clients are exercised in the interop tests.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from tests.support.messages import RpcError, client_info, notification, rpc
from tests.support.sse import SseComment, aiter_sse


@attrs.define(eq=False)
class SseSession:
    """One legacy-SSE MCP session: the stream, the POST endpoint, request/response matching.

    ``events`` holds every ``(event name, data)`` in arrival order, comments as
    ``("comment", line)``; server→client requests and notifications are also
    sorted into their own lists. ``ended`` is set when the stream closes.
    """

    http: httpx.AsyncClient
    base: str
    headers: dict[str, str]
    endpoint: str = ""
    events: list[tuple[str, str]] = attrs.field(factory=list)
    notifications: list[dict[str, Any]] = attrs.field(factory=list)
    _waiters: dict[Any, trio.MemorySendChannel[dict[str, Any]]] = attrs.field(factory=dict)
    _ids: itertools.count = attrs.field(factory=lambda: itertools.count(1))
    server_requests: list[dict[str, Any]] = attrs.field(factory=list)
    ended: trio.Event = attrs.field(factory=trio.Event)

    @property
    def session_id(self) -> str:
        return self.endpoint.split("sessionId=", 1)[1]

    def _on_event(self, name: str, data: str) -> None:
        self.events.append((name, data))
        if name != "message":
            return
        message = json.loads(data)
        if "method" in message:
            (self.server_requests if "id" in message else self.notifications).append(message)
            return
        waiter = self._waiters.pop(message.get("id"), None)
        if waiter is not None:
            waiter.send_nowait(message)

    async def post(self, message: Any) -> httpx.Response:
        return await self.http.post(
            self.base + self.endpoint, json=message, headers=self.headers
        )

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, msg_id: Any = None,
        timeout: float = 20,
    ) -> dict[str, Any]:
        """Send a request and return its response message (result or error)."""
        msg_id = next(self._ids) if msg_id is None else msg_id
        send, recv = trio.open_memory_channel[dict[str, Any]](1)
        self._waiters[msg_id] = send
        response = await self.post(rpc(msg_id, method, params))
        assert response.status_code == 202, (response.status_code, response.text)
        with trio.fail_after(timeout):
            return await recv.receive()

    async def call(self, method: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        reply = await self.request(method, params, **kw)
        if "error" in reply:
            raise RpcError(reply["error"])
        return reply["result"]

    async def initialize(self, version: str = "2024-11-05") -> dict[str, Any]:
        result = await self.call(
            "initialize",
            {"protocolVersion": version, "capabilities": {}, "clientInfo": client_info()},
        )
        response = await self.post(notification("notifications/initialized"))
        assert response.status_code == 202
        return result


@asynccontextmanager
async def open_sse_session(
    url: str, headers: Mapping[str, str], *, http: httpx.AsyncClient | None = None
) -> AsyncIterator[SseSession]:
    """Open an SSE stream, wait for the ``endpoint`` event, and read events in the background.

    Resource handling: leaving the block closes the stream (the gateway sees the
    client go away); the ``httpx`` client is closed too unless it was passed in.
    """
    own = http is None
    client = http or httpx.AsyncClient(timeout=httpx.Timeout(30, read=None))
    base = url.split("/projects/", 1)[0]
    try:
        async with client.stream("GET", url, headers=dict(headers)) as response:
            if response.status_code != 200:
                await response.aread()
                raise httpx.HTTPStatusError(
                    f"{response.status_code}: {response.text}", request=response.request,
                    response=response,
                )
            session = SseSession(client, base, dict(headers))
            ready = trio.Event()

            async def read() -> None:
                try:
                    async for item in aiter_sse(response):
                        if isinstance(item, SseComment):
                            session.events.append(("comment", item.line))
                        elif item.data is not None:
                            session._on_event(item.event, item.data)
                            if item.event == "endpoint":
                                session.endpoint = item.data.split("\n", 1)[0]
                                ready.set()
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    pass
                finally:
                    session.ended.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                with trio.fail_after(20):
                    await ready.wait()
                yield session
                nursery.cancel_scope.cancel()
    finally:
        if own:
            await client.aclose()
