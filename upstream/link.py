"""What the upstream actor needs of a connection to one MCP server, whatever carries it.

Three links implement it: a stdio child process (``upstream/stdio.py``), and
Streamable HTTP and legacy SSE clients for remote servers
(``upstream/http_link.py``). The actor does the rest — initialize, id
remapping, routing — the same way for all of them.
"""

from __future__ import annotations

import collections
import logging
from typing import Protocol

from . import jsonrpc


class Link(Protocol):
    """A bidirectional JSON-RPC connection to one server."""

    @property
    def pid(self) -> int | None:
        """The server's process id, for a local process."""

    @property
    def exit_code(self) -> int | None:
        """How a local process ended (``None`` while running or for a remote server)."""

    @property
    def stderr_tail(self) -> collections.deque[str]:
        """The last lines of diagnostics (a process's stderr; a remote link's errors)."""

    async def send(self, message: jsonrpc.Message) -> None:
        """Send one message; never blocks on the server's answer."""

    async def receive(self) -> jsonrpc.Message | None:
        """The next message from the server, or ``None`` once the link has ended."""

    def end_reason(self) -> str:
        """Why the link ended (after ``receive`` returned ``None``)."""

    async def background(self, logger: logging.Logger) -> None:
        """Work the link needs while it lives (stderr copying, a server→client stream)."""
