"""A raw WebSocket MCP client for ``GET /projects/{project}/servers/{server}/ws``.

The wire the official SDKs' 1.x WebSocket clients speak: subprotocol ``mcp``,
one JSON-RPC message per text frame. Those clients cannot send headers, so
the gateway also takes the API key as a second offered subprotocol,
``mcp-orch.bearer.<key>``; this client offers the key either way
(``via="header"`` → ``Authorization: Bearer`` on the upgrade request,
``via="subprotocol"`` → the extra ``Sec-WebSocket-Protocol`` entry).

Built on trio-websocket's :func:`trio_websocket.open_websocket_url` (0.12), so:

Error handling: a refused upgrade raises :class:`trio_websocket.ConnectionRejected`
(``status_code``, ``headers``, ``body``) from :func:`open_ws_client`; a frame
read or written after the connection closed raises
:class:`trio_websocket.ConnectionClosed` (``reason.code``, ``reason.reason``).
Both are re-exported here.

Resource handling: :func:`open_ws_client` owns the connection (and
trio-websocket's reader task); leaving the block closes it, and
:meth:`WsClient.close` may be called earlier (closing twice is harmless).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Literal

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

__all__ = ["BEARER_PREFIX", "ConnectionClosed", "ConnectionRejected", "SUBPROTOCOL", "WsClient",
           "open_ws_client", "ws_offer"]

SUBPROTOCOL = "mcp"
BEARER_PREFIX = "mcp-orch.bearer."


@attrs.define(eq=False)
class WsClient:
    """One open WebSocket MCP connection.

    :meth:`request` matches responses by its own id counter; the notifications
    and server→client requests that arrive while it waits are kept in
    ``notifications`` and ``server_requests`` (a test answers the latter with
    :meth:`send`).
    """

    connection: WebSocketConnection
    notifications: list[dict[str, Any]] = attrs.field(factory=list)
    server_requests: list[dict[str, Any]] = attrs.field(factory=list)
    _ids: itertools.count = attrs.field(factory=lambda: itertools.count(1))

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose (``None`` if it chose none)."""
        return self.connection.subprotocol

    async def send(self, message: Any) -> None:
        """Send one JSON-RPC message (or any JSON value) as one text frame."""
        await self.connection.send_message(json.dumps(message))

    async def send_text(self, text: str | bytes) -> None:
        """Send a frame as is (text for ``str``, binary for ``bytes``): malformed input."""
        await self.connection.send_message(text)

    async def receive(self, timeout: float = 20) -> Any:
        """The next frame, parsed as JSON."""
        with trio.fail_after(timeout):
            frame = await self.connection.get_message()
        return json.loads(frame)

    async def request(self, method: str, params: dict[str, Any] | None = None, *,
                      msg_id: Any = None, timeout: float = 20) -> dict[str, Any]:
        """Send a request and return its response message (result or error).

        Frames that are not that response (notifications, server→client
        requests, other responses) are kept aside, not lost.
        """
        msg_id = next(self._ids) if msg_id is None else msg_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)
        with trio.fail_after(timeout):
            while True:
                frame = await self.receive(timeout=float("inf"))
                if not isinstance(frame, dict):
                    continue
                if "method" in frame:
                    (self.server_requests if "id" in frame else self.notifications).append(frame)
                elif frame.get("id") == msg_id and type(frame.get("id")) is type(msg_id):
                    return frame

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.connection.aclose(code, reason)


def ws_offer(key: str | None, via: Literal["header", "subprotocol"],
             subprotocols: Iterable[str] | None) -> tuple[list[str], list[tuple[bytes, bytes]]]:
    """The subprotocols to offer and the extra upgrade headers, for ``key`` sent ``via``."""
    offered = [SUBPROTOCOL] if subprotocols is None else list(subprotocols)
    headers: list[tuple[bytes, bytes]] = []
    if key is not None:
        if via == "header":
            headers.append((b"authorization", f"Bearer {key}".encode()))
        elif via == "subprotocol":
            offered.append(BEARER_PREFIX + key)
        else:
            raise ValueError(f"via must be 'header' or 'subprotocol', not {via!r}")
    return offered, headers


@asynccontextmanager
async def open_ws_client(
    url: str, *, key: str | None = None, via: Literal["header", "subprotocol"] = "header",
    subprotocols: Iterable[str] | None = None, max_message_size: int = 4 * 1024 * 1024,
    connect_timeout: float = 10, origin: str | None = None,
) -> AsyncIterator[WsClient]:
    """Open ``url`` (``ws://…/ws``) offering ``subprotocols`` (default ``["mcp"]``) and the key.

    ``subprotocols`` replaces the default offer (to test a client that offers
    none, or the wrong one); the key's subprotocol entry is appended after it.
    trio-websocket queues one received message at a time, so a test that does
    not call :meth:`WsClient.receive` is a client that does not read.
    """
    offered, headers = ws_offer(key, via, subprotocols)
    if origin is not None:  # as a browser page would send it
        headers.append((b"origin", origin.encode()))
    async with open_websocket_url(
        url, subprotocols=offered or None, extra_headers=headers or None,
        max_message_size=max_message_size, connect_timeout=connect_timeout,
        disconnect_timeout=5,
    ) as connection:
        yield WsClient(connection)
