"""The legacy HTTP+SSE transport (MCP 2024-11-05), served as raw ASGI on the hot path.

Wire behaviour, as the reference SDKs and MCP Inspector speak it:

* ``GET …/sse`` opens a session and its stream. The first event is
  ``event: endpoint`` whose data is a plain URI (not JSON-RPC) carrying
  ``sessionId``; clients resolve it against the SSE URL, so it is a path
  without scheme or host (never ``0.0.0.0`` or an internal name).
* ``POST …/messages?sessionId=`` (the Python SDK says ``session_id``; both
  are accepted) takes one message — or a batch — and answers ``202``. Every
  response travels on the stream as ``event: message``. A well-formed message
  that leads to a JSON-RPC error still gets ``202``: the Python SDK client
  dies on any non-2xx POST, so the error goes on the stream.
* Keep-alive comments every ``keepalive_s`` keep idle streams open through
  Node's 5-minute idle timeout and proxies; the gateway's heartbeat asks for
  them (``gateway/keepalive.py``), so an idle stream holds no timer.

Why raw ASGI: per call these two routes are the whole cost of the gateway,
and profiling showed Quart's request and response machinery taking most of
it (see README, "Benchmarks"). Here each request is a regex match, a header
scan and a direct ``send``. Everything else stays in the Quart app, which
this class falls through to.

The stream only moves frames from the session's outbox; the session actor
owns all cleanup (``actors/session.py``). A client that disconnects is seen
as ``http.disconnect`` on ``receive``, which cancels the stream.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qs

import trio

from upstream import jsonrpc

from ..http import sse
from ..http.asgi import (
    Headers,
    Receive,
    Scope,
    Send,
    admit,
    cancel_on_disconnect,
    error_body,
    read_body,
    reply,
)
from ..http.auth import key_fingerprint
from ..http.origin import OriginPolicy

log = logging.getLogger(__name__)

ROUTE = re.compile(r"^/projects/([^/]+)/servers/([^/]+)/(sse|messages)$")
_STREAM_HEADERS = [(k.lower().encode(), v.encode()) for k, v in sse.STREAM_HEADERS.items()]


class LegacySse:
    """ASGI app: the legacy SSE routes; any other request goes to ``fallback``."""

    def __init__(self, fallback: Any, gateway: Any, policy: OriginPolicy) -> None:
        self.fallback = fallback
        self.gateway = gateway
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = ROUTE.match(scope["path"])
            if match is not None:
                kind = match[3]
                if (kind, scope["method"]) in (("sse", "GET"), ("messages", "POST")):
                    await self._handle(kind, match[1], match[2], scope, receive, send)
                    return
        await self.fallback(scope, receive, send)

    async def _handle(
        self, kind: str, project: str, server: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        admitted = await admit(self.gateway, self.policy, scope, project, server, send)
        if admitted is None:
            return
        if kind == "sse":
            authorization = admitted.authorization
            key_hash = key_fingerprint(authorization) if authorization else None
            await self._stream(project, server, admitted.found, key_hash, receive, send,
                               admitted.cors)
        else:
            await self._message(project, server, scope, admitted.headers, receive, send,
                                admitted.cors)

    async def _stream(
        self, project: str, server: str, found: Any, key_hash: str | None,
        receive: Receive, send: Send, extra: Headers,
    ) -> None:
        gateway = self.gateway
        settings = gateway.config.gateway
        if gateway.draining:
            gateway.metrics.rejected.labels("draining").inc()
            await reply(send, 503, error_body(
                jsonrpc.UPSTREAM_UNAVAILABLE, "the gateway is shutting down"),
                [(b"retry-after", b"5"), *extra])
            return
        config, supervisor = found
        session = gateway.registry.new_session(
            project, config, supervisor, "sse", outbox_size=settings.session_queue
        )
        session.key_hash = key_hash
        frames = gateway.metrics.stream_frames.labels("sse")
        sent_bytes = gateway.metrics.stream_bytes.labels("sse")
        endpoint = f"/projects/{project}/servers/{server}/messages?sessionId={session.session_id}"
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
                await gateway.registry.start(session)
                await send({"type": "http.response.start", "status": 200,
                            "headers": [*_STREAM_HEADERS, *extra]})
                await send({"type": "http.response.body", "more_body": True,
                            "body": sse.event(endpoint, name="endpoint")})
                log.info("sse session %s opened for %s/%s", session.session_id, project, server)
                receive_message = session.outbound_recv.receive
                with gateway.heartbeat.watch(session.nudge) as beat:
                    try:
                        while True:
                            message = await receive_message()
                            if message is None:  # the heartbeat's nudge
                                frame = sse.KEEPALIVE
                            else:
                                frame = sse.event(jsonrpc.dumps(message), name="message")
                                frames.inc()
                                sent_bytes.inc(len(frame))
                            await send({"type": "http.response.body", "body": frame,
                                        "more_body": True})
                            beat.sent()
                    except trio.EndOfChannel:
                        log.info("sse session %s ended: %s", session.session_id,
                                 session.close_reason)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                nursery.cancel_scope.cancel()
        finally:
            session.close("the client disconnected")

    async def _message(
        self, project: str, server: str, scope: Scope, headers: dict[bytes, bytes],
        receive: Receive, send: Send, extra: Headers,
    ) -> None:
        gateway = self.gateway
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session_id = (query.get("sessionId") or query.get("session_id") or [""])[0]
        if not session_id:
            await reply(send, 400, error_body(
                jsonrpc.INVALID_REQUEST, "missing sessionId query parameter"), extra)
            return
        session = gateway.registry.get(session_id)
        if session is None or session.project != project or session.config.name != server:
            gateway.metrics.rejected.labels("session").inc()
            await reply(send, 404, error_body(
                -32001, "unknown or ended session; open a new SSE stream"), extra)
            return
        body = await read_body(gateway, headers, receive, send, extra)
        if body is None:
            return
        try:
            parsed = jsonrpc.loads(body)
        except jsonrpc.InvalidMessage as exc:
            await reply(send, 400, error_body(jsonrpc.PARSE_ERROR, f"parse error: {exc}"),
                              extra)
            return
        batch = parsed if isinstance(parsed, list) else [parsed]
        if not batch:
            await reply(send, 400, error_body(jsonrpc.INVALID_REQUEST, "empty batch"), extra)
            return
        for message in batch:
            try:
                jsonrpc.classify(message)
            except jsonrpc.InvalidMessage as exc:
                await reply(send, 400, error_body(
                    jsonrpc.INVALID_REQUEST, f"invalid JSON-RPC message: {exc}"), extra)
                return
        for message in batch:
            if not await session.submit(message):
                if session.closing:
                    await reply(send, 404, error_body(
                        -32001, "the session ended; open a new SSE stream"), extra)
                    return
                gateway.metrics.rejected.labels("busy").inc()
                await reply(send, 503, error_body(
                    jsonrpc.SESSION_BUSY, "session inbox full; retry"),
                    [(b"retry-after", b"1"), *extra])
                return
        await reply(send, 202, b"Accepted", extra, b"text/plain")

