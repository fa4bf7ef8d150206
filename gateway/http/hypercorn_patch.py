"""Close a client's connection as soon as the client closes it (a fix to Hypercorn 0.18's trio worker).

Hypercorn runs each connection in a task group holding the reader and an
idle-timeout task. When the client closes its side, the reader ends, but the
task group still waits for the idle task, which only returns after
``keep_alive_timeout`` (75 s here, so that clients, not the gateway, close
idle keep-alive connections and no request races a server-side close). Every
connection a client closed kept its socket (in ``CLOSE_WAIT``), tasks and
buffers for that long: thousands at a time after a burst of short-lived
clients, which slowed every later connection. Stopping the idle task once
the reader has ended lets the connection close at once.
"""

from __future__ import annotations

from typing import Any

from hypercorn.trio.tcp_server import TCPServer

_read_data = TCPServer._read_data


async def _read_data_then_stop_idle_timer(self: Any) -> None:
    try:
        await _read_data(self)
    finally:
        await self.idle_task.stop()


def apply() -> None:
    """Install the fix (idempotent)."""
    if TCPServer._read_data is not _read_data_then_stop_idle_timer:
        TCPServer._read_data = _read_data_then_stop_idle_timer  # type: ignore[method-assign]
