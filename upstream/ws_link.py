"""A link to a remote MCP server over WebSocket: subprotocol ``mcp``, one JSON-RPC message per text frame.

WebSocket is not in the MCP specification, but both official SDKs shipped a
client for it (TypeScript ``WebSocketClientTransport``, Python 1.x
``websocket_client``) and some remote servers speak it. The link presents
such a server as a :class:`~upstream.link.Link`, so the upstream actor serves
it like any other: one connection shared by every client session, ids
remapped, answers routed back.

* The handshake offers subprotocol ``mcp`` and carries only the configured
  ``headers`` (e.g. the server's own ``Authorization``) — never a client's
  credentials, which the link never sees.
* Each text frame is one JSON-RPC message (a JSON array of messages is
  accepted too). A binary frame, or a text frame that is not a JSON-RPC
  message, is noted in the link's error ring (shown as the server's
  ``stderr_tail`` in ``/status``) and skipped: a misbehaving server cannot
  crash the gateway.
* When the server closes the connection or it drops, the link ends:
  :meth:`WebSocketLink.receive` returns ``None`` and
  :meth:`WebSocketLink.end_reason` gives the close code and reason; the
  supervisor then reconnects with backoff as for a crashed process.
* A connection that dies silently (a half-open TCP connection, a proxy
  that stopped forwarding) is found by a ping every ``ping_interval_s``:
  no pong within ``ping_timeout_s`` ends the link like a close.
* Bounded: messages above ``max_message_size`` make trio-websocket close the
  connection (code 1009) — the link ends rather than buffering without
  limit; received messages wait in a bounded inbox, so a slow gateway side
  stops reading the socket instead of growing memory.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import trio
import trio_websocket

from . import jsonrpc

log = logging.getLogger(__name__)

SUBPROTOCOL = "mcp"
INBOX = 256
ERRORS_KEPT = 200
#: The largest message accepted from the server (the stdio link's line limit).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: How long the closing handshake may take when the link is closed.
CLOSE_TIMEOUT_S = 2.0
#: Keep-alive: a ping this often, and how long its pong may take (as the
#: ``websockets`` library's defaults).
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 20.0
_SHOWN_CHARS = 120


class WebSocketLinkError(ConnectionError):
    """The WebSocket to a remote server could not be opened (refused, rejected, timed out)."""


def _describe_close(reason: trio_websocket.CloseReason | None) -> str:
    if reason is None:
        return "without a close frame"
    text = f"code {reason.code} {reason.name}"
    return f"{text}: {reason.reason}" if reason.reason else text


@attrs.define(eq=False)
class WebSocketLink:
    """A remote server over one WebSocket connection (see the module docstring).

    Made by :func:`open_websocket_link`, which owns the connection (and
    trio-websocket's reader task); the link only holds it. Frames are read
    by :meth:`receive` itself, so the only buffer is trio-websocket's bounded
    message queue (``INBOX`` messages).
    """

    url: str
    connection: trio_websocket.WebSocketConnection
    errors: collections.deque[str]
    #: Messages of a frame that held a JSON array, not yet returned.
    _pending: collections.deque[jsonrpc.Message] = attrs.field(factory=collections.deque)
    ping_interval_s: float = PING_INTERVAL_S
    ping_timeout_s: float = PING_TIMEOUT_S
    _end_reason: str = ""

    pid = None
    exit_code = None

    @property
    def stderr_tail(self) -> collections.deque[str]:
        return self.errors

    def end_reason(self) -> str:
        return self._end_reason or f"closed the WebSocket to {self.url}"

    def _note(self, text: str) -> None:
        self.errors.append(f"{time.strftime('%H:%M:%S')} {text}")
        log.warning("remote %s: %s", self.url, text)

    def _end(self, exc: trio_websocket.ConnectionClosed) -> None:
        if not self._end_reason:
            self._end_reason = f"closed the WebSocket to {self.url} ({_describe_close(exc.reason)})"
            self._note(self._end_reason)

    async def send(self, message: jsonrpc.Message) -> None:
        """Send one message as a text frame.

        Error handling: once the connection is closed this ends the link and
        raises ``trio.BrokenResourceError`` (what the actor's writer expects
        of a link whose server went away).
        """
        try:
            await self.connection.send_message(jsonrpc.dumps(message).decode())
        except trio_websocket.ConnectionClosed as exc:
            self._end(exc)
            raise trio.BrokenResourceError(self._end_reason) from None

    async def receive(self) -> jsonrpc.Message | None:
        """The next JSON-RPC message; frames that hold none are noted and skipped."""
        while not self._pending:
            try:
                frame = await self.connection.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self._end(exc)
                return None
            self._pending.extend(self._parse(frame))
        return self._pending.popleft()

    async def background(self, logger: logging.Logger) -> None:
        """Ping the server every ``ping_interval_s``; a missing pong ends the link.

        Without this a connection that died without a FIN or RST would keep
        the link "running" forever while every request times out.
        """
        if self.ping_interval_s <= 0:
            return
        while True:
            await trio.sleep(self.ping_interval_s)
            with trio.move_on_after(self.ping_timeout_s) as waiting:
                try:
                    await self.connection.ping()
                except trio_websocket.ConnectionClosed:
                    return  # receive() ends the link and says why
            if waiting.cancelled_caught:
                if not self._end_reason:
                    self._end_reason = (f"lost the WebSocket to {self.url}: no pong within "
                                        f"{self.ping_timeout_s:g} s")
                    self._note(self._end_reason)
                # The peer is gone: no closing handshake. A cancelled aclose()
                # still closes the TCP stream, which wakes receive() with None.
                with trio.CancelScope() as abort:
                    abort.cancel()
                    await self.connection.aclose()
                return

    def _parse(self, frame: str | bytes) -> list[jsonrpc.Message]:
        if isinstance(frame, bytes):
            self._note(f"a binary frame ({len(frame)} bytes) from the server; "
                       "expected JSON-RPC text frames; ignored")
            return []
        try:
            data: Any = jsonrpc.loads(frame)
        except jsonrpc.InvalidMessage as exc:
            self._note(f"a text frame that is not JSON ({exc}): "
                       f"{frame[:_SHOWN_CHARS]!r}; ignored")
            return []
        messages = []
        for item in data if isinstance(data, list) else [data]:
            try:
                jsonrpc.classify(item)
            except jsonrpc.InvalidMessage as exc:
                self._note(f"a frame that is not a JSON-RPC message ({exc}): "
                           f"{frame[:_SHOWN_CHARS]!r}; ignored")
                continue
            messages.append(item)
        return messages


@contextlib.asynccontextmanager
async def open_websocket_link(
    url: str,
    headers: Mapping[str, str],
    *,
    timeout_s: float = 60.0,
    errors: collections.deque[str] | None = None,
    max_message_size: int = MAX_MESSAGE_BYTES,
    ssl_context: ssl.SSLContext | None = None,
    ping_interval_s: float = PING_INTERVAL_S,
    ping_timeout_s: float = PING_TIMEOUT_S,
) -> AsyncIterator[WebSocketLink]:
    """Connect to ``url`` (``ws://`` or ``wss://``) with subprotocol ``mcp``; yield the link.

    ``headers`` go on the opening handshake; ``timeout_s`` bounds the
    connect and handshake; ``ping_interval_s`` (0: never) and
    ``ping_timeout_s`` drive the keep-alive in :meth:`WebSocketLink.background`.

    Resource handling: the connection and trio-websocket's reader task
    belong to this block. On any exit — normal, error or cancellation — the
    connection is closed with a close frame (code 1000) from a shielded
    scope, waiting at most ``CLOSE_TIMEOUT_S`` for the server's answer before
    the TCP stream is closed anyway.

    Error handling: a refused connection, a rejected handshake (the server's
    HTTP status is named), a timeout or an unusable URL raises
    :class:`WebSocketLinkError`, and the reason is also noted in ``errors``.
    Errors of the block's body pass through unchanged.
    """
    ring = errors if errors is not None else collections.deque(maxlen=ERRORS_KEPT)
    extra = [(name.encode(), value.encode()) for name, value in headers.items()]
    opened = False
    try:
        async with trio_websocket.open_websocket_url(
            url, ssl_context, subprotocols=[SUBPROTOCOL], extra_headers=extra,
            message_queue_size=INBOX, max_message_size=max_message_size,
            connect_timeout=timeout_s, disconnect_timeout=CLOSE_TIMEOUT_S,
        ) as connection:
            opened = True
            try:
                yield WebSocketLink(url, connection, ring, ping_interval_s=ping_interval_s,
                                    ping_timeout_s=ping_timeout_s)
            finally:
                # Close here, shielded and bounded, so a cancelled gateway still
                # says goodbye; trio-websocket's own close then has nothing to do.
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                    await connection.aclose()
    except (trio_websocket.HandshakeError, ValueError) as exc:
        if opened:
            raise
        if isinstance(exc, trio_websocket.ConnectionRejected):
            body = (exc.body or b"")[:200].decode(errors="replace").strip()
            detail = f"the server answered HTTP {exc.status_code}" + (f": {body}" if body else "")
        elif isinstance(exc, trio_websocket.ConnectionTimeout):
            detail = f"no handshake within {timeout_s:g} s"
        else:
            detail = str(exc.__cause__ or exc) or type(exc).__name__
        text = f"cannot open the WebSocket to {url}: {detail}"
        ring.append(f"{time.strftime('%H:%M:%S')} {text}")
        log.warning("remote %s: %s", url, text)
        raise WebSocketLinkError(text) from None
