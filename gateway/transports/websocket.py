"""WebSocket (``GET …/ws``): its rules, on the session front.

WebSocket is not in the MCP specification, but both official SDKs shipped a
client for it (the TypeScript SDK 1.x ``WebSocketClientTransport``, the Python
SDK 1.x ``websocket_client``): subprotocol ``mcp``, one JSON-RPC message per
text frame, in both directions, for the whole session.

* Auth: ``Authorization: Bearer`` on the upgrade request, or — for clients
  that cannot set headers (browsers, both SDKs) — the key offered as an extra
  subprotocol ``mcp-orch.bearer.<key>`` (as Kubernetes does); the gateway
  answers with ``mcp`` only. Never a key in the URL. A refusal (``401``,
  ``404``, Origin ``403``, draining ``503``) is an HTTP answer before the
  upgrade, with the same JSON-RPC error body as the other transports.
* Frames: a binary frame, text that is not JSON, or JSON that is not JSON-RPC
  gets a JSON-RPC error (id ``null``) on the socket; the session carries on.
  Oversized frames are closed by Hypercorn with ``1009`` (the limit is
  ``max_body_bytes``). Keep-alive pings come from Hypercorn
  (``websocket_ping_interval``).
* A client that does not read fills the session's outbox; the session then
  ends and the socket is closed with ``1008`` and the reason once what was
  queued has gone out. The gateway ending the session (shutdown, reload,
  revoked key) closes with ``1001`` or ``1000`` and the reason.
"""

from __future__ import annotations

import json
import logging

import attrs
import trio

from actors import Outbox, Session, Transport
from upstream import errors, jsonrpc

from ..http.asgi import HttpRequest, Receive, Scope, Send
from .front import Front, Refused, parse_json, validate

log = logging.getLogger(__name__)

SUBPROTOCOL = "mcp"
KEY_PREFIX = "mcp-orch.bearer."
#: Close codes (RFC 6455 §7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
POLICY = 1008


def offered_key(subprotocols: list[str]) -> str | None:
    """The API key offered as a ``mcp-orch.bearer.<key>`` subprotocol, if any."""
    for proto in subprotocols:
        if proto.startswith(KEY_PREFIX) and len(proto) > len(KEY_PREFIX):
            return proto[len(KEY_PREFIX):]
    return None


def close_code(session: Session) -> int:
    """``1008`` for a client that did not read, ``1001`` on shutdown, else ``1000``."""
    if session.overflowed:
        return POLICY
    return GOING_AWAY if session.refusing else NORMAL


@attrs.define(eq=False)
class WebSocketTransport:
    """``GET …/ws`` of one gateway."""

    front: Front

    async def serve(self, scope: Scope, receive: Receive, send: Send,
                    project: str, server: str | None) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        http = HttpRequest(scope, receive, send)
        subprotocols = list(scope.get("subprotocols") or [])
        front = self.front
        try:
            if subprotocols and SUBPROTOCOL not in subprotocols:
                raise Refused(400, errors.INVALID_REQUEST,
                              f"offer the {SUBPROTOCOL!r} WebSocket subprotocol")
            key = offered_key(subprotocols)
            authorization = f"Bearer {key}" if key is not None else None
            target = await front.admit(http, project, server, authorization=authorization)
            outbox = Outbox(front.gateway.config.gateway.session_queue)
            session = await front.open_session(target.options(Transport.WEBSOCKET), outbox)
        except Refused as exc:
            await front.refuse(http, exc)  # an HTTP answer instead of the upgrade
            return
        log.info("websocket session %s opened for %s/%s", session.session_id, project,
                 target.server_name)
        try:
            await send({"type": "websocket.accept",
                        "subprotocol": SUBPROTOCOL if subprotocols else None,
                        "headers": http.extra})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, receive, session, outbox, nursery.cancel_scope)
                nursery.start_soon(front.cut_if_stalled, http, session)
                await self._write(send, session, outbox)
                nursery.cancel_scope.cancel()
        finally:
            session.close("the client disconnected")

    async def _read(self, receive: Receive, session: Session, outbox: Outbox,
                    done: trio.CancelScope) -> None:
        """Client frames into the session; a bad frame gets an error, not a close."""
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                session.close("the client disconnected")
                done.cancel()
                return
            text = event.get("text")
            if text is None:
                self._reply_error(session, errors.INVALID_REQUEST,
                                  "binary frames are not accepted: send JSON-RPC as text")
                continue
            try:
                parsed = validate(parse_json(text))
                await self.front.submit(session, parsed.messages, hint="reconnect")
            except Refused as exc:
                if exc.status == 404:
                    # The session ended; its close frame follows what was queued. Frames
                    # the client still sends are read and dropped, so it never blocks.
                    continue
                self._reply_error(session, exc.code, exc.message)

    @staticmethod
    def _reply_error(session: Session, code: int, message: str) -> None:
        session.deliver(jsonrpc.error_response(None, code, message))

    async def _write(self, send: Send, session: Session, outbox: Outbox) -> None:
        """Session messages out, one text frame each, then a close frame saying why."""
        async for message in outbox.recv:
            if message is None:  # keep-alive: Hypercorn's pings do that job here
                continue
            await send({"type": "websocket.send",
                        "text": json.dumps(message, separators=(",", ":"), ensure_ascii=False)})
        reason = (session.close_reason or "session ended").encode()[:120].decode(
            "utf-8", "ignore")
        await send({"type": "websocket.close", "code": close_code(session), "reason": reason})

