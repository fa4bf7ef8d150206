"""The MCP routes of one gateway, dispatched to their transport; everything else falls
through to the operations app (Quart: health, status, metrics, admin).

``/projects/{project}/servers/{server}/`` (one server) and
``/projects/{project}/`` (the project endpoint: every enabled server of the
project in one session, ``actors/project.py``):

* ``sse`` (``GET``) and ``messages`` (``POST``) — legacy HTTP+SSE;
* ``mcp`` (``POST``, ``GET``, ``DELETE``) — Streamable HTTP, every revision;
* ``ws`` (WebSocket upgrade) — WebSocket.

A handler gets the server's name, or ``None`` for the project endpoint; the
front's admission (``Front.admit``) makes the target either way, and the
transports serve both alike.

A request for a session another instance owns is relayed to it first
(``gateway/cluster/forward.py``). A refusal raised by any step is rendered here, once, by the front; an
``OPTIONS`` preflight from an allowed origin gets the CORS answer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from upstream import errors

from ..core import Gateway
from ..http.asgi import ClientGone, HttpRequest, Receive, Scope, Send, header_list
from ..http.origin import OriginPolicy, preflight_headers
from .front import Front, Refused, Reply, send_reply
from .legacy_sse import LegacySse
from .stateless import StatelessEndpoint
from .streamable import Streamable
from .websocket import WebSocketTransport

ROUTE = re.compile(r"^/projects/([^/]+)(?:/servers/([^/]+))?/(sse|messages|mcp|ws)$")
Handler = Callable[[HttpRequest, str, "str | None"], Awaitable["Reply | None"]]
ALLOWED = {"sse": "GET", "messages": "POST", "mcp": "GET, POST, DELETE", "ws": "GET"}


class McpRoutes:
    """ASGI app: the MCP routes on the session front, in front of ``fallback``."""

    def __init__(self, gateway: Gateway, policy: OriginPolicy, fallback: Any) -> None:
        self.fallback = fallback
        self.front = front = Front(gateway, policy)
        legacy = LegacySse(front)
        streamable = Streamable(front, StatelessEndpoint(front))
        self.websocket = WebSocketTransport(front)
        self._handlers: dict[tuple[str, str], Handler] = {
            ("sse", "GET"): legacy.stream,
            ("messages", "POST"): legacy.message,
            ("mcp", "POST"): streamable.post,
            ("mcp", "GET"): streamable.get,
            ("mcp", "DELETE"): streamable.delete,
            ("ws", "GET"): self._not_upgraded,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind in ("http", "websocket"):
            match = ROUTE.match(scope["path"])
            if match is not None:
                if kind == "http":
                    await self._http(match[3], match[1], match[2], scope, receive, send)
                    return
                if match[3] == "ws":
                    await self.websocket.serve(scope, receive, send, match[1], match[2])
                    return
        await self.fallback(scope, receive, send)

    async def _http(self, route: str, project: str, server: str | None,
                    scope: Scope, receive: Receive, send: Send) -> None:
        http = HttpRequest(scope, receive, send)
        # A client that goes away cancels its request's handling (a 2026-07-28
        # request then ends upstream; a stateful session's request runs on once
        # its answer has begun, ``streamable.await_answer``).
        async with trio.open_nursery() as nursery:
            http.cancel_on_disconnect(nursery)
            await self._answer(http, route, project, server)
            nursery.cancel_scope.cancel()

    async def _answer(self, http: HttpRequest, route: str, project: str,
                      server: str | None) -> None:
        try:
            forwarder = self.front.gateway.forwarder
            if forwarder is not None:
                owner = await forwarder.owner(self.front, http, route)
                if owner is not None:
                    await forwarder.relay(self.front, http, owner)
                    return
            handler = self._handlers.get((route, http.method))
            if handler is None:
                self.front.check_origin(http)
                origin = http.header("origin")
                if http.method == "OPTIONS" and origin is not None:
                    requested = http.header("access-control-request-headers")
                    http.extra = []  # the preflight headers carry the CORS ones
                    await http.reply(204, b"", header_list(preflight_headers(origin, requested)),
                                     b"text/plain")
                    return
                raise Refused(405, errors.METHOD_NOT_ALLOWED, "method not allowed",
                              headers=[(b"allow", ALLOWED[route].encode())])
            reply = await handler(http, project, server)
            if reply is not None:
                await send_reply(http, reply)
        except Refused as exc:
            await self.front.refuse(http, exc)
        except ClientGone:
            pass

    async def _not_upgraded(self, http: HttpRequest, project: str, server: str | None) -> None:
        await self.front.admit(http, project, server)
        raise Refused(426, errors.INVALID_REQUEST, "this endpoint speaks WebSocket: upgrade",
                      headers=[(b"upgrade", b"websocket")])
