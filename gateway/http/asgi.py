"""Raw-ASGI plumbing for the hot routes (legacy SSE, Streamable HTTP session requests).

Per call these routes are most of what the gateway costs, and Quart's request
and response machinery was most of that (README, "Benchmarks"). The hot routes
answer straight from ASGI events with the helpers here: the same Origin and
Host policy, project auth and server lookup as the Quart app, a bounded body
reader, and a way to hand a request whose body was already read back to the
Quart app (:func:`replay_body`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from upstream import jsonrpc

from .auth import check_project_access
from .origin import OriginPolicy, check_request, cors_headers

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


def error_body(code: int, message: str) -> bytes:
    """A JSON-RPC error with a null id, as an HTTP error body."""
    return jsonrpc.dumps(jsonrpc.error_response(None, code, message))


def header_list(headers: dict[str, str]) -> Headers:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


async def reply(
    send: Send, status: int, body: bytes, headers: Headers,
    content_type: bytes = b"application/json",
) -> None:
    """A complete response with a body."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


@attrs.define
class Admitted:
    """A request that passed the Origin/Host policy and the project's auth rule."""

    #: (ServerConfig, ServerSupervisor | None) of the addressed server.
    found: Any
    #: The request headers, lower-case names (the last value of a repeated header).
    headers: dict[bytes, bytes]
    #: CORS headers every response to this request carries.
    cors: Headers
    authorization: str | None


async def admit(
    gateway: Any, policy: OriginPolicy, scope: Scope, project: str, server: str, send: Send
) -> Admitted | None:
    """Apply Origin/Host policy, auth and server lookup; answer and return ``None`` on refusal."""
    headers = dict(scope["headers"])
    host = headers[b"host"].decode("latin-1") if b"host" in headers else None
    origin = headers[b"origin"].decode("latin-1") if b"origin" in headers else None
    refusal = check_request(policy, host, origin)
    if refusal is not None:
        gateway.metrics.rejected.labels(refusal.reason).inc()
        await reply(send, refusal.status, error_body(jsonrpc.INVALID_REQUEST, refusal.message), [])
        return None
    cors = header_list(cors_headers(origin)) if origin is not None else []
    raw_auth = headers.get(b"authorization")
    authorization = raw_auth.decode("latin-1") if raw_auth is not None else None
    denied = await check_project_access(gateway, project, authorization)
    if denied is not None:
        await reply(send, denied.status, error_body(-32001, denied.message),
                    [*header_list(denied.headers), *cors])
        return None
    found = gateway.server(project, server)
    if found is None:
        await reply(send, 404, error_body(-32001, f"no server {server!r} in project {project!r}"),
                    cors)
        return None
    return Admitted(found, headers, cors, authorization)


async def read_body(
    gateway: Any, headers: dict[bytes, bytes], receive: Receive, send: Send, cors: Headers
) -> bytes | None:
    """The whole request body, at most ``max_body_bytes``; ``None`` once answered (413)
    or when the client went away."""
    limit = gateway.config.gateway.max_body_bytes
    too_large = error_body(jsonrpc.INVALID_REQUEST, f"request body exceeds {limit} bytes")
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        gateway.metrics.rejected.labels("size").inc()
        await reply(send, 413, too_large, cors)
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return None
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            gateway.metrics.rejected.labels("size").inc()
            await reply(send, 413, too_large, cors)
            return None
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


async def cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    """Cancel ``scope`` when the client goes away (run beside a streaming response)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields an already-read body once, then the real events."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> dict[str, Any]:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
