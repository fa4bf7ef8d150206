"""A stdio MCP server whose tool names are hard to expose: for the project endpoint's tests.

Its tools have names with ``.``, ``/`` and spaces, names that collide once
those are mapped to ``_`` (``a.b``, ``a/b``, ``a b`` and a real ``a_b``), and
100-character names that share their first 99 characters. Every tool answers
``called <its name>``, so a test sees which original name reached the server.

``NAMES_SERVER_HANG_LIST=1`` makes it never answer ``tools/list`` (and
``prompts/list``), like a server that is stuck; calls still work.
Like the demo server (whose stdio loop it reuses) it records what it reads
into ``MCP_ORCH_RECORD`` when that is set.

Run as ``python -m tests.servers.names_server`` from the repository root.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from upstream.demo_server import InvalidParams, Server

NAMES = ["a.b", "a/b", "a b", "a_b", "x" * 100, "x" * 99 + "y", "ok", "dotted.name/with space"]
TOOLS = [{"name": n, "description": f"tool {n!r}",
          "inputSchema": {"type": "object", "properties": {}}} for n in NAMES]
PROMPTS = [{"name": "p.q", "description": "a prompt with a dot"}]


class NamesServer(Server):
    """The demo server's stdio machinery with awkwardly named tools."""

    hang = bool(os.environ.get("NAMES_SERVER_HANG_LIST"))

    def handle(self, message: dict[str, Any]) -> None:
        if self.hang and message.get("method") in ("tools/list", "prompts/list"):
            return  # never answered
        super().handle(message)

    def dispatch(self, method: Any, params: dict[str, Any], msg_id: Any) -> dict[str, Any]:
        if method == "initialize":
            return {"protocolVersion": "2025-11-25",
                    "capabilities": {"tools": {"listChanged": True}, "prompts": {}},
                    "serverInfo": {"name": "names-server", "version": "1.0.0"},
                    "instructions": "Tools with awkward names."}
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "prompts/list":
            return {"prompts": PROMPTS}
        if method == "prompts/get":
            return {"messages": [{"role": "user", "content": {
                "type": "text", "text": f"prompt {params.get('name')}"}}]}
        if method == "tools/call":
            name = params.get("name")
            if name not in NAMES:
                raise InvalidParams(f"unknown tool {name!r}")
            return {"content": [{"type": "text", "text": f"called {name}"}]}
        raise KeyError(method)


def main() -> None:
    print("names server ready on stdio", file=sys.stderr, flush=True)
    NamesServer().run()


if __name__ == "__main__":
    main()
