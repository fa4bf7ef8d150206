"""What an upstream actually received: the demo/conformance servers' ``MCP_ORCH_RECORD`` file.

Both fixture servers append each JSON-RPC message they read from stdin to the
file named by ``MCP_ORCH_RECORD``, one JSON line each. :class:`Recording`
configures that for a server (:meth:`Recording.server`) and reads it back,
so a test asserts on the upstream's side of the gateway — with the upstream's
ids, which the gateway remaps — instead of on the gateway's own counters.

The file is written by another process: :meth:`Recording.wait_for` polls it,
bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio

RECORD_ENV = "MCP_ORCH_RECORD"
POLL_S = 0.02

T = TypeVar("T")


@attrs.frozen
class Recording:
    """The messages one upstream process (or its successive restarts) read from stdin."""

    path: Path

    def server(self, server: Mapping[str, Any]) -> dict[str, Any]:
        """``server`` (a config dict) with its ``env`` naming this recording."""
        return {**server, "env": {**server.get("env", {}), RECORD_ENV: str(self.path)}}

    def messages(self) -> list[dict[str, Any]]:
        """Every complete line so far, in the order the server read them."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        lines = text.split("\n")[:-1]  # the last piece is empty or a line still being written
        found: list[dict[str, Any]] = []
        for line in lines:
            message = json.loads(line)
            found.extend(message if isinstance(message, list) else [message])
        return found

    def requests(self, method: str | None = None) -> list[dict[str, Any]]:
        """The requests (messages with an ``id`` and a ``method``), of ``method`` if given."""
        return [m for m in self.messages() if "id" in m and "method" in m
                and (method is None or m["method"] == method)]

    def tool_calls(self, name: str | None = None) -> list[dict[str, Any]]:
        """The ``tools/call`` requests, of tool ``name`` if given."""
        return [m for m in self.requests("tools/call")
                if name is None or (m.get("params") or {}).get("name") == name]

    def cancellations(self) -> list[dict[str, Any]]:
        """The ``notifications/cancelled`` messages."""
        return [m for m in self.messages()
                if m.get("method") == "notifications/cancelled" and "id" not in m]

    def cancelled_ids(self) -> list[Any]:
        """The ``requestId`` of each ``notifications/cancelled``, in order."""
        return [(m.get("params") or {}).get("requestId") for m in self.cancellations()]

    async def wait_for(self, predicate: Callable[[Recording], T], timeout: float = 5.0) -> T:
        """Poll until ``predicate(self)`` is truthy and return it; ``trio.TooSlowError`` after
        ``timeout`` seconds."""
        with trio.fail_after(timeout):
            while not (found := predicate(self)):
                await trio.sleep(POLL_S)
            return found

    async def upstream_id_of_call(self, tool: str, timeout: float = 5.0) -> Any:
        """The id the upstream saw on the (only) ``tools/call`` of ``tool``, once it arrived."""
        calls = await self.wait_for(lambda r: r.tool_calls(tool), timeout)
        assert len(calls) == 1, calls
        return calls[0]["id"]

    async def wait_cancelled(self, upstream_id: Any, timeout: float = 5.0) -> list[Any]:
        """Wait until ``upstream_id`` was cancelled; every cancelled id seen by then."""
        def seen(recording: Recording) -> list[Any] | None:
            ids = recording.cancelled_ids()
            return ids if upstream_id in ids else None

        return await self.wait_for(seen, timeout)
