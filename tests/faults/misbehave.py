"""A stdio MCP server that misbehaves on purpose, for the fault suite.

``python -m tests.faults.misbehave MODE`` answers ``initialize``, ``ping``,
``tools/list`` and ``tools/call`` (tool ``echo``) like a plain server, and
misbehaves as ``MODE`` says:

* ``exit``: exit with code 3 before reading anything;
* ``silent``: read stdin forever and never answer;
* ``garbage``: write non-JSON lines before each answer;
* ``huge``: after ``initialize``, a ``tools/call`` of tool ``huge`` writes one
  64 MB line with no newline until the end, then keeps running;
* ``flood``: every ``tools/call`` first sends 5,000 ``notifications/message``;
* ``deluge``: every ``tools/call`` first sends ``arguments.count`` (default
  20,000) ``notifications/message`` of about 1 KB each — more than socket
  buffers hold, so a client that reads slowly is under pressure;
* ``ignore-eof``: keep running after stdin closes;
* ``children``: start two ``sleep 600`` grandchildren in its process group;
* ``plain``: no misbehaviour.

It is deliberately independent of ``upstream.demo_server``: the suite must
not depend on the code under test behaving.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def write(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "plain"
    if mode == "exit":
        print("exiting at start (misbehave exit)", file=sys.stderr, flush=True)
        sys.exit(3)
    if mode == "ignore-eof":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "children":
        for _ in range(2):
            subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
    print(f"misbehave {mode} ready (pid {os.getpid()})", file=sys.stderr, flush=True)
    for raw in sys.stdin:
        line = raw.strip()
        if not line or mode == "silent":
            continue
        message = json.loads(line)
        method, msg_id = message.get("method"), message.get("id")
        if msg_id is None or method is None:
            continue
        if mode == "garbage":
            sys.stdout.write("this is not JSON {{{\n\x00\xff garbage\n")
        if method == "initialize":
            write({"jsonrpc": "2.0", "id": msg_id, "result": {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": f"misbehave-{mode}", "version": "0"},
            }})
        elif method == "tools/list":
            write({"jsonrpc": "2.0", "id": msg_id, "result": {"tools": [
                {"name": "echo", "inputSchema": {"type": "object"}},
                {"name": "huge", "inputSchema": {"type": "object"}},
            ]}})
        elif method == "tools/call":
            name = message["params"].get("name")
            if mode == "huge" and name == "huge":
                chunk = "x" * (1 << 20)
                sys.stdout.write('{"jsonrpc":"2.0","method":"notifications/message","params":"')
                for _ in range(64):
                    sys.stdout.write(chunk)
                sys.stdout.flush()
                time.sleep(600)
            if mode == "flood":
                for n in range(5000):
                    write({"jsonrpc": "2.0", "method": "notifications/message",
                           "params": {"level": "info", "data": f"flood {n}"}})
            if mode == "deluge":
                padding = "d" * 1000
                count = int((message["params"].get("arguments") or {}).get("count", 20000))
                for n in range(count):
                    write({"jsonrpc": "2.0", "method": "notifications/message",
                           "params": {"level": "info", "data": f"deluge {n} {padding}"}})
            text = str((message["params"].get("arguments") or {}).get("text", ""))
            write({"jsonrpc": "2.0", "id": msg_id,
                   "result": {"content": [{"type": "text", "text": text}]}})
        else:
            write({"jsonrpc": "2.0", "id": msg_id, "result": {}})
    if mode == "ignore-eof":
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main()
