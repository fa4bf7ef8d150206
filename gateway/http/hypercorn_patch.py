"""Every dependency on Hypercorn 0.18's internals, in one place.

The gateway serves through Hypercorn's trio worker; four things it needs are
not configurable there, so this module patches them in (``apply()``), and
``tests/faults/test_http_framing.py`` checks the internals still look the way
these patches expect — an upgrade that changes them fails that test loudly,
and ``apply()`` refuses to run against a Hypercorn missing what it patches.

1. **Close a connection as soon as the client closes it.** Hypercorn runs
   each connection in a task group holding the reader and an idle-timeout
   task. When the client closes its side the reader ends, but the task group
   still waits for the idle task, which only returns after
   ``keep_alive_timeout`` (75 s here). Every connection a client closed kept
   its socket (in ``CLOSE_WAIT``), tasks and buffers that long. Stopping the
   idle task once the reader has ended lets the connection close at once.
2. **Header timeout** (``TCPServer._read_data``, re-implemented here with a
   deadline): a request head not complete within the guard's
   ``header_timeout_s`` — from the connection's start, or from the first
   byte of its next request — closes the connection. The protocol reports a
   complete head as ``Updated(idle=False)`` and a finished exchange as
   ``Updated(idle=True)`` (``TCPServer.protocol_send``), which drive it.
3. **Connection cap** (``TCPServer.run``): beyond the guard's
   ``max_connections`` a connection gets ``503`` and is closed at once.
4. **Framing** (``H11Protocol._create_stream``): a request head the guard's
   :func:`~gateway.http.connections.framing_problem` refuses (e.g. both
   ``Content-Length`` and ``Transfer-Encoding``) gets ``400`` with
   ``connection: close`` instead of a stream, and the connection is closed
   before anything after the head is read as another request.

The guard (:class:`~gateway.http.connections.ConnectionGuard`) is attached to
the Hypercorn ``Config`` of one server by :func:`attach`; connections of a
server without one keep only patch 1.
"""

from __future__ import annotations

import hashlib
import inspect
from math import inf
from typing import Any

import trio
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.utils import parse_socket_addr

from .connections import OVERLOADED_RESPONSE, ConnectionGuard, framing_problem

_GUARD = "_mcp_orch_guard"

#: sha256 of the source of each Hypercorn function these patches replace or
#: wrap, as of the Hypercorn release they were written against. A change means
#: the patches must be reviewed (see ``tests/faults/test_http_framing.py``).
#: Written against Hypercorn 0.18.0 with h11 0.16.
EXPECTED_SOURCES = {
    "TCPServer.run":
        "fd34b021d1a86c9859514de9472306ea47f4a6763732b26b7a5945278ded0e08",
    "TCPServer._read_data":
        "7ca747d922c65cf1fb6bd7ceabe82b0b51bb9de218ce159d7b7e093ec279f728",
    "TCPServer.protocol_send":
        "225856426bff7be02990c0badb90f51f801db14ac5db0f3d0c210cafbeb528ab",
    "H11Protocol._create_stream":
        "a2338a57ab343908f55d6a93b9d4a69aa6ccc39e49fc387e66b286f5cb274743",
    "H11Protocol._send_error_response":
        "58c2b47ae295d000c65a2216fa6afd9efb1ea05363a40d5dbf427b1d2b41b4c7",
}


class HypercornChangedError(RuntimeError):
    """The installed Hypercorn lacks an internal these patches rely on."""


def source_digests() -> dict[str, str]:
    """sha256 of the current source of each patched Hypercorn function (for the upgrade test)."""
    originals = {
        "TCPServer.run": _run,
        "TCPServer._read_data": _read_data,
        "TCPServer.protocol_send": _protocol_send,
        "H11Protocol._create_stream": _create_stream,
        "H11Protocol._send_error_response": H11Protocol._send_error_response,
    }
    return {
        name: hashlib.sha256(inspect.getsource(func).encode()).hexdigest()
        for name, func in originals.items()
    }


try:
    _run = TCPServer.run
    _read_data = TCPServer._read_data
    _protocol_send = TCPServer.protocol_send
    _create_stream = H11Protocol._create_stream
    H11Protocol._send_error_response  # noqa: B018  (used by the framing patch)
except AttributeError as exc:  # pragma: no cover - only on an incompatible Hypercorn
    raise HypercornChangedError(f"Hypercorn internals changed: {exc}") from exc


def attach(hyper_config: Any, guard: ConnectionGuard) -> None:
    """Make the connections of the server started with ``hyper_config`` obey ``guard``."""
    setattr(hyper_config, _GUARD, guard)


def _guard_of(config: Any) -> ConnectionGuard | None:
    return getattr(config, _GUARD, None)


async def _run_guarded(self: Any) -> None:
    guard = _guard_of(self.config)
    if guard is None:
        await _run(self)
        return
    if not guard.admit():
        with trio.CancelScope(shield=True), trio.move_on_after(1.0):
            try:
                await self.stream.send_all(OVERLOADED_RESPONSE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            await self.stream.aclose()
        return
    # Header deadline state, driven by _read_data and protocol_send below.
    self._mcp_head_deadline = trio.current_time() + guard.header_timeout_s
    self._mcp_awaiting_head = True
    # The socket under any TLS, by the client address the ASGI scope will carry.
    raw = getattr(self.stream, "transport_stream", self.stream)
    try:
        client = parse_socket_addr(raw.socket.family, raw.socket.getpeername())
    except OSError:
        client = None
    guard.register(client, raw)
    try:
        await _run(self)
    finally:
        guard.forget(client, raw)
        guard.release()


async def _protocol_send_tracking_heads(self: Any, event: Any) -> None:
    if isinstance(event, Updated) and hasattr(self, "_mcp_awaiting_head"):
        # idle=False: a request head is complete; idle=True: the exchange is
        # over and the keep-alive timer runs until the next request's first byte.
        self._mcp_awaiting_head = event.idle
        self._mcp_head_deadline = inf
    await _protocol_send(self, event)


async def _read_data_with_header_timeout(self: Any) -> None:
    """Hypercorn's read loop, plus the header deadline; stops the idle timer at the end."""
    guard = _guard_of(self.config)
    try:
        while True:
            deadline = inf
            if guard is not None and self._mcp_awaiting_head:
                deadline = self._mcp_head_deadline
            read_deadline = trio.current_time() + (self.config.read_timeout or inf)
            try:
                with trio.move_on_at(min(deadline, read_deadline)) as scope:
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            if scope.cancelled_caught:
                if guard is not None and deadline <= read_deadline:
                    guard.timed_out()
                break
            if guard is not None and self._mcp_awaiting_head and self._mcp_head_deadline == inf:
                # The first byte of the next request: its head has header_timeout_s.
                self._mcp_head_deadline = trio.current_time() + guard.header_timeout_s
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())
    finally:
        await self.idle_task.stop()


async def _create_stream_if_framed(self: Any, request: Any) -> None:
    guard = _guard_of(self.config)
    problem = framing_problem(request.http_version, request.headers) if guard else None
    if problem is None:
        await _create_stream(self, request)
        return
    assert guard is not None
    guard.bad_framing(problem)
    # No stream is created: h11 then has nowhere to deliver the body, the loop
    # in _handle_events stops, and Closed() closes the socket — whatever
    # followed the head (a smuggled request) is never parsed.
    await self._send_error_response(400)
    await self.send(Closed())


def apply() -> None:
    """Install the patches (idempotent)."""
    TCPServer.run = _run_guarded  # type: ignore[method-assign]
    TCPServer.protocol_send = _protocol_send_tracking_heads  # type: ignore[method-assign]
    TCPServer._read_data = _read_data_with_header_timeout  # type: ignore[method-assign]
    H11Protocol._create_stream = _create_stream_if_framed  # type: ignore[method-assign]
