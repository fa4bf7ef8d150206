"""A stdio MCP server for the tool-policy tests: tools with and without ``readOnlyHint``.

``status`` and ``log`` are annotated ``readOnlyHint: true``; ``push`` is
annotated ``readOnlyHint: false`` and ``push_force`` has no annotations.
Every tool answers ``called <its name>``, so a test sees which original name
reached the server; like the demo server it records what it reads into
``MCP_ORCH_RECORD`` when that is set.

Run as ``python -m tests.servers.policy_server`` from the repository root.
"""

from __future__ import annotations

from typing import Any

from upstream.demo_server import InvalidParams, Server

SCHEMA = {"type": "object", "properties": {}}
TOOLS = [
    {"name": "status", "description": "show the status", "inputSchema": SCHEMA,
     "annotations": {"readOnlyHint": True}},
    {"name": "log", "description": "show the log", "inputSchema": SCHEMA,
     "annotations": {"readOnlyHint": True}},
    {"name": "push", "description": "push commits", "inputSchema": SCHEMA,
     "annotations": {"readOnlyHint": False}},
    {"name": "push_force", "description": "force-push", "inputSchema": SCHEMA},
]
NAMES = [t["name"] for t in TOOLS]


class PolicyServer(Server):
    """The demo server's stdio machinery with read-only and writing tools."""

    def dispatch(self, method: Any, params: dict[str, Any], msg_id: Any) -> dict[str, Any]:
        if method == "initialize":
            return {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "policy-server", "version": "1.0.0"}}
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            name = params.get("name")
            if name not in NAMES:
                raise InvalidParams(f"unknown tool {name!r}")
            return {"content": [{"type": "text", "text": f"called {name}"}]}
        raise KeyError(method)


if __name__ == "__main__":
    PolicyServer().run()
