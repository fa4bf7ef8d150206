"""The benchmark's upstream: a minimal stdio MCP server that answers at once.

Single-threaded and allocation-light on purpose, so what a benchmark measures
is the gateway in front of it, not this server. Arguments are ignored (the
benchmark passes one to tell its copies apart).
"""

import json
import sys

TOOL = {"name": "echo", "description": "Echo the text back.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}


def main() -> None:
    read = sys.stdin.buffer.readline
    out = sys.stdout.buffer
    while line := read():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict) or "id" not in msg or "method" not in msg:
            continue
        method = msg["method"]
        params = msg.get("params") or {}
        if method == "initialize":
            result = {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                      "capabilities": {"tools": {}},
                      "serverInfo": {"name": "bench-echo", "version": "1"}}
        elif method == "tools/call":
            text = (params.get("arguments") or {}).get("text", "")
            result = {"content": [{"type": "text", "text": text}]}
        elif method == "tools/list":
            result = {"tools": [TOOL]}
        elif method == "ping":
            result = {}
        else:
            out.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {
                "code": -32601, "message": "method not found"}}).encode() + b"\n")
            out.flush()
            continue
        out.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result},
                             separators=(",", ":")).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
