"""Connection-level limits and request framing rules, independent of the HTTP server.

What the gateway promises before any request reaches the app:

* **Framing** (RFC 9112 §6.1): a request carrying both ``Content-Length``
  and ``Transfer-Encoding`` — the classic request-smuggling shape, which
  h11 would read as chunked — and an HTTP/1.0 request with
  ``Transfer-Encoding`` are answered ``400`` and their connection closed, so
  nothing hidden after the body is ever served. (h11 itself already refuses
  conflicting ``Content-Length`` values with ``400`` and any coding but
  ``chunked`` with ``501``, both closing the connection.)
* **Header timeout**: a connection that has not completed its request head
  within ``header_timeout_s`` of opening — or of the first byte of its next
  request — is closed (slowloris, silent connections). Idle keep-alive time
  between requests is governed by the keep-alive timeout, not this one.
* **Connection cap**: at most ``max_connections`` open at once; beyond it a
  new connection gets ``503`` and is closed at once, logged at most once per
  :data:`REFUSAL_LOG_INTERVAL_S`.

This module holds the policy and the counters; :mod:`gateway.http.hypercorn_patch`
is the only place that knows how Hypercorn is wired to it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S = 5.0
#: What a refused connection is told before it is closed.
OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 38\r\n"
    b"connection: close\r\nretry-after: 1\r\n\r\ntoo many connections; try again shortly"
)


def framing_problem(http_version: bytes, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """Why a request head's framing is refused (RFC 9112 §6.1), or ``None`` when it is fine.

    ``headers`` are (lower-case name, value) pairs as the parser produced them.
    """
    has_length = has_coding = False
    for name, _ in headers:
        if name == b"content-length":
            has_length = True
        elif name == b"transfer-encoding":
            has_coding = True
    if has_length and has_coding:
        return "both Content-Length and Transfer-Encoding"
    if has_coding and http_version == b"1.0":
        return "Transfer-Encoding in an HTTP/1.0 request"
    return None


@attrs.define(eq=False)
class ConnectionGuard:
    """Counts open connections, refuses those beyond the cap, and exports the counts.

    One per gateway (tests run several in one process); its instruments live
    in the gateway's metrics registry.
    """

    max_connections: int
    header_timeout_s: float
    registry: CollectorRegistry | None = None
    #: Called with a reason for each request refused for its framing (metrics).
    on_bad_framing: Callable[[str], None] | None = None
    clock: Callable[[], float] = time.monotonic
    open: int = 0
    refused: Counter = attrs.field(init=False)
    header_timeouts: Counter = attrs.field(init=False)
    _last_refusal_log: float = attrs.field(init=False, default=-1e18)
    _refused_since_log: int = attrs.field(init=False, default=0)
    #: The socket of each open connection, by its client address (ASGI ``scope["client"]``).
    _sockets: dict[Any, Any] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        registry = self.registry if self.registry is not None else CollectorRegistry()
        gauge = Gauge("mcp_orch_connections_open", "Client connections open now",
                      registry=registry)
        gauge.set_function(lambda: self.open)
        self.refused = Counter(
            "mcp_orch_connections_refused",
            "Connections closed at once because max_connections were open", registry=registry,
        )
        self.header_timeouts = Counter(
            "mcp_orch_connections_header_timeouts",
            "Connections closed for not completing a request head within header_timeout_s",
            registry=registry,
        )

    def admit(self) -> bool:
        """Count a new connection in; ``False`` (and counted as refused) beyond the cap."""
        if self.open >= self.max_connections:
            self.refused.inc()
            self._refused_since_log += 1
            now = self.clock()
            if now - self._last_refusal_log >= REFUSAL_LOG_INTERVAL_S:
                log.warning(
                    "refused %d connection(s): %d open, the limit (gateway.max_connections)",
                    self._refused_since_log, self.open,
                )
                self._last_refusal_log = now
                self._refused_since_log = 0
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def register(self, client: Any, stream: Any) -> None:
        """Remember the socket stream of the connection from ``client`` (see :meth:`abort`)."""
        if client is not None:
            self._sockets[client] = stream

    def forget(self, client: Any, stream: Any) -> None:
        if self._sockets.get(client) is stream:
            del self._sockets[client]

    async def abort(self, client: Any) -> bool:
        """Close the connection from ``client`` at once, even while a write to it is
        stuck on a client that does not read (the write then fails and the server
        drops the connection). ``False`` when no such connection is open."""
        stream = self._sockets.pop(client, None)
        if stream is None:
            return False
        await stream.aclose()
        return True

    def timed_out(self) -> None:
        self.header_timeouts.inc()

    def bad_framing(self, reason: str) -> None:
        log.info("refused a request: %s (RFC 9112 §6.1); connection closed", reason)
        if self.on_bad_framing is not None:
            self.on_bad_framing("framing")
