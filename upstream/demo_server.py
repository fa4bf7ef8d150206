"""A small stdio MCP server that ships with mcp-orch, for the demo project and the tests.

Standard library only, so it starts in milliseconds anywhere Python runs. It
speaks newline-delimited JSON-RPC on stdin/stdout and logs to stderr. Requests
are served concurrently (a thread each), so a slow ``sleep`` never delays an
``echo``, and answers may come out of order — as real servers do.

Tools: ``echo``, ``add``, ``sleep`` (reports progress, honours
``notifications/cancelled``), ``pid``, ``crash`` (exits at once) and
``stderr``. One resource, one prompt. For crash-loop tests,
``DEMO_SERVER_EXIT_AT_START=<code>`` makes it exit immediately, and
``DEMO_SERVER_STARTUP_DELAY_S`` delays it before it reads stdin, and
``DEMO_SERVER_IGNORE_EOF`` keeps it alive after stdin closes (an upstream
that only a signal stops).

For tests that check what an upstream actually received, ``MCP_ORCH_RECORD=<file>``
appends every JSON-RPC message read from stdin to that file, one JSON line
each, written (unbuffered, one ``write`` per line) as soon as it is read.
Without the variable nothing is recorded and nothing else changes.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, BinaryIO

VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SERVER_INFO = {"name": "mcp-orch-demo", "version": "0.1.0"}

TOOLS = [
    {
        "name": "echo",
        "description": "Return the text you send.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                        "required": ["text"]},
    },
    {
        "name": "add",
        "description": "Add two numbers.",
        "inputSchema": {"type": "object",
                        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                        "required": ["a", "b"]},
    },
    {
        "name": "sleep",
        "description": "Wait the given seconds, reporting progress when asked to.",
        "inputSchema": {"type": "object", "properties": {"seconds": {"type": "number"}},
                        "required": ["seconds"]},
    },
    {
        "name": "pid",
        "description": "The server's process id.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "crash",
        "description": "Exit the server process at once with the given code.",
        "inputSchema": {"type": "object", "properties": {"code": {"type": "integer"}}},
    },
    {
        "name": "touch",
        "description": "Report a resource as updated (to its subscribers).",
        "inputSchema": {"type": "object", "properties": {"uri": {"type": "string"}},
                        "required": ["uri"]},
    },
    {
        "name": "subscriptions",
        "description": "The resource URIs this server was asked to watch.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "stderr",
        "description": "Write the text to the server's stderr.",
        "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}},
                        "required": ["text"]},
    },
]
GREETING_URI = "demo://greeting"


class InvalidParams(Exception):
    pass


RECORD_ENV = "MCP_ORCH_RECORD"


def _open_recording() -> BinaryIO | None:
    """The file named by ``MCP_ORCH_RECORD`` opened for unbuffered appends, or ``None``.

    Unbuffered, so each message is one ``write`` of a whole line: a test
    polling the file from another process never waits for a flush.
    """
    path = os.environ.get(RECORD_ENV)
    return open(path, "ab", buffering=0) if path else None


class Server:
    """The demo server's state: the output lock and the set of cancelled requests."""

    def __init__(self) -> None:
        self.recording = _open_recording()
        self.out_lock = threading.Lock()
        self.cancelled: set[Any] = set()
        self.cancel_lock = threading.Lock()
        self.client_capabilities: dict[str, Any] = {}
        self.watched: set[str] = set()  # resource URIs a client subscribed to
        self._replies: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._next_id = 0

    def request_client(self, method: str, params: dict[str, Any], timeout: float = 30,
                       msg_id: str | None = None) -> dict[str, Any]:
        """Send a request to the client and wait for its response message."""
        return self.request_client_many([(msg_id, method, params)], timeout)[0]

    def request_client_many(
        self, requests: list[tuple[str | None, str, dict[str, Any]]], timeout: float = 30
    ) -> list[dict[str, Any]]:
        """Send several requests to the client at once; their responses, in order.

        Each request is ``(id or None, method, params)``; ``None`` picks an id.
        """
        waiters = []
        with self.cancel_lock:
            for msg_id, method, params in requests:
                self._next_id += 1
                chosen = msg_id or f"srv-{self._next_id}"
                waiter: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
                self._replies[chosen] = waiter
                waiters.append((chosen, method, params, waiter))
        for chosen, method, params, _ in waiters:
            self.write({"jsonrpc": "2.0", "id": chosen, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        replies = []
        for chosen, method, _, waiter in waiters:
            if not waiter[0].wait(max(0.0, deadline - time.monotonic())):
                with self.cancel_lock:
                    self._replies.pop(chosen, None)
                raise TimeoutError(f"no answer to {method} within {timeout} s")
            replies.append(waiter[1][0])
        return replies

    def _on_response(self, message: dict[str, Any]) -> None:
        with self.cancel_lock:
            waiter = self._replies.pop(message.get("id"), None)  # type: ignore[arg-type]
        if waiter is not None:
            waiter[1].append(message)
            waiter[0].set()

    def write(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")) + "\n"
        with self.out_lock:
            try:
                sys.stdout.write(data)
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):
                pass

    def is_cancelled(self, msg_id: Any) -> bool:
        with self.cancel_lock:
            return (type(msg_id), msg_id) in self.cancelled

    # -- handlers ------------------------------------------------------------
    def handle(self, message: dict[str, Any]) -> None:
        msg_id = message.get("id")
        method = message.get("method")
        params = message.get("params") or {}
        try:
            result = self.dispatch(method, params, msg_id)
        except InvalidParams as exc:
            self.answer_error(msg_id, -32602, str(exc))
            return
        except KeyError:
            self.answer_error(msg_id, -32601, f"method not found: {method}")
            return
        if self.is_cancelled(msg_id):
            return
        self.write({"jsonrpc": "2.0", "id": msg_id, "result": result})

    def answer_error(self, msg_id: Any, code: int, text: str) -> None:
        self.write({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": text}})

    def dispatch(self, method: Any, params: dict[str, Any], msg_id: Any) -> dict[str, Any]:
        if method == "initialize":
            self.client_capabilities = params.get("capabilities") or {}
            requested = params.get("protocolVersion")
            return {
                "protocolVersion": requested if requested in VERSIONS else "2025-06-18",
                "capabilities": {
                    "tools": {"listChanged": True},
                    "resources": {"subscribe": True, "listChanged": False},
                    "prompts": {"listChanged": False},
                    "logging": {},
                },
                "serverInfo": SERVER_INFO,
                "instructions": "A demo server bundled with mcp-orch: echo, add, sleep, pid.",
            }
        if method == "ping" or method == "logging/setLevel":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            return self.call_tool(params, msg_id)
        if method == "resources/list":
            return {"resources": [{"uri": GREETING_URI, "name": "greeting",
                                   "mimeType": "text/plain"}]}
        if method in ("resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            if not isinstance(uri, str):
                raise InvalidParams("uri is required")
            with self.cancel_lock:
                (self.watched.add if method == "resources/subscribe" else self.watched.discard)(uri)
            return {}
        if method == "resources/templates/list":
            return {"resourceTemplates": []}
        if method == "resources/read":
            if params.get("uri") != GREETING_URI:
                raise InvalidParams(f"unknown resource {params.get('uri')!r}")
            return {"contents": [{"uri": GREETING_URI, "mimeType": "text/plain",
                                  "text": "Hello from mcp-orch-demo"}]}
        if method == "prompts/list":
            return {"prompts": [{"name": "greet", "description": "Greet someone.",
                                 "arguments": [{"name": "name", "required": True}]}]}
        if method == "prompts/get":
            if params.get("name") != "greet":
                raise InvalidParams(f"unknown prompt {params.get('name')!r}")
            name = (params.get("arguments") or {}).get("name", "world")
            return {"messages": [{"role": "user",
                                  "content": {"type": "text", "text": f"Say hello to {name}"}}]}
        raise KeyError(method)

    def call_tool(self, params: dict[str, Any], msg_id: Any) -> dict[str, Any]:
        name = params.get("name")
        args = params.get("arguments") or {}
        if not isinstance(args, dict):
            raise InvalidParams("arguments must be an object")

        def text(value: Any) -> dict[str, Any]:
            return {"content": [{"type": "text", "text": str(value)}]}

        if name == "echo":
            if not isinstance(args.get("text"), str):
                raise InvalidParams("echo needs a string 'text'")
            return text(args["text"])
        if name == "add":
            a, b = args.get("a"), args.get("b")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
                raise InvalidParams("add needs numbers 'a' and 'b'")
            total = a + b
            return text(int(total) if float(total).is_integer() else total)
        if name == "sleep":
            seconds = args.get("seconds")
            if not isinstance(seconds, (int, float)) or seconds < 0:
                raise InvalidParams("sleep needs a number 'seconds' >= 0")
            token = (params.get("_meta") or {}).get("progressToken")
            steps = max(1, int(seconds / 0.1))
            for step in range(1, steps + 1):
                time.sleep(seconds / steps)
                if self.is_cancelled(msg_id):
                    return {}
                if token is not None:
                    self.write({"jsonrpc": "2.0", "method": "notifications/progress",
                                "params": {"progressToken": token, "progress": step,
                                           "total": steps}})
            return text(f"slept {seconds} s")
        if name == "pid":
            return text(os.getpid())
        if name == "crash":
            code = args.get("code", 1)
            sys.stdout.flush()
            os._exit(code if isinstance(code, int) else 1)
        if name == "touch":
            self.write({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                        "params": {"uri": str(args.get("uri"))}})
            return text("touched")
        if name == "subscriptions":
            with self.cancel_lock:
                return text(json.dumps(sorted(self.watched)))
        if name == "stderr":
            print(str(args.get("text", "")), file=sys.stderr, flush=True)
            return text("ok")
        return {"content": [{"type": "text", "text": f"unknown tool: {name}"}], "isError": True}

    # -- loop ------------------------------------------------------------------
    def run(self) -> None:
        for raw in sys.stdin.buffer:
            line = raw.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError as exc:
                self.answer_error(None, -32700, f"parse error: {exc}")
                continue
            if self.recording is not None:
                self.recording.write(line + b"\n")
            if not isinstance(message, dict):
                self.answer_error(None, -32600, "expected a JSON object")
                continue
            method = message.get("method")
            if method is None:
                self._on_response(message)
                continue
            if "id" not in message:
                if method == "notifications/cancelled":
                    request_id = (message.get("params") or {}).get("requestId")
                    with self.cancel_lock:
                        self.cancelled.add((type(request_id), request_id))
                continue
            threading.Thread(target=self.handle, args=(message,), daemon=True).start()


def main() -> None:
    code = os.environ.get("DEMO_SERVER_EXIT_AT_START")
    if code:
        print(f"exiting at start with code {code} (DEMO_SERVER_EXIT_AT_START)", file=sys.stderr)
        sys.exit(int(code))
    delay = os.environ.get("DEMO_SERVER_STARTUP_DELAY_S")
    if delay:
        time.sleep(float(delay))
    print("mcp-orch-demo: ready on stdio", file=sys.stderr, flush=True)
    Server().run()
    if os.environ.get("DEMO_SERVER_IGNORE_EOF"):
        # Misbehave on purpose (tests): outlive stdin EOF until signalled. (Write
        # nothing: the pipes' reader may be gone, and a broken pipe would end us.)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
