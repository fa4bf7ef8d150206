"""A lean MCP load generator on trio: raw HTTP/1.1 with keep-alive, an SSE reader, stdio.

No HTTP library in the hot loop: requests are written as bytes, responses
parsed with a small incremental reader (Content-Length and chunked bodies,
SSE events over chunked streams). The same client code drives every target,
so differences are the targets'.

Run as ``python -m bench.loadgen SCENARIO --target JSON``; it prints one
JSON object of results. Scenarios: ``sequential``, ``throughput``,
``idle``, ``connect``, ``recovery``, ``ceiling``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import trio

JSON = dict[str, Any]


class HttpError(Exception):
    pass


async def open_stream(host: str, port: int) -> trio.SocketStream:
    """A TCP connection to ``host`` (an IPv4 address, as every target here has), without
    ``trio.open_tcp_stream``'s name lookup and happy-eyeballs nursery: about a quarter of
    what a client cost the load generator when 100 connect at once."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


class Conn:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, stream: trio.SocketStream, host: str, port: int) -> None:
        self.stream = stream
        self.host = f"{host}:{port}"
        self.addr = (host, port)
        self.buf = bytearray()
        self.must_reconnect = False

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        return cls(await open_stream(host, port), host, port)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise HttpError("connection closed")
        self.buf += data

    async def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            await self._fill()

    async def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def send(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> None:
        if self.must_reconnect:  # the server said "Connection: close" last time
            await self.stream.aclose()
            self.stream = await open_stream(*self.addr)
            self.buf.clear()
            self.must_reconnect = False
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        await self.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def head(self) -> tuple[int, dict[str, str]]:
        status = int((await self._line()).split(b" ", 2)[1])
        headers = {}
        while line := await self._line():
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        return status, headers

    async def chunks(self, headers: dict[str, str]):  # noqa: ANN201 - async generator
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self._line()).split(b";")[0], 16)
                if size == 0:
                    await self._line()
                    return
                data = await self._exact(size)
                await self._exact(2)
                yield data
        else:
            length = int(headers.get("content-length", "0"))
            if length:
                yield await self._exact(length)

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        await self.send(method, path, headers, body)
        status, rh = await self.head()
        data = b"".join([c async for c in self.chunks(rh)])
        if rh.get("connection", "").lower() == "close":
            self.must_reconnect = True
        return status, rh, data

    async def aclose(self) -> None:
        await self.stream.aclose()


def sse_events(pending: bytearray, chunk: bytes) -> list[tuple[str, str]]:
    """Feed a chunk; return complete (event, data) pairs (comments skipped)."""
    pending += chunk.replace(b"\r\n", b"\n")
    events = []
    while (i := pending.find(b"\n\n")) >= 0:
        block = bytes(pending[:i]).decode()
        del pending[: i + 2]
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if data and any(data):
            events.append((name, "\n".join(data)))
    return events


class Client:
    """Common interface: ``connect()``, ``call(text) -> latency``, ``aclose()``."""

    ids = itertools.count(1)

    async def connect(self) -> None: ...

    async def call(self, text: str) -> None: ...

    async def aclose(self) -> None: ...


class SseClient(Client):
    def __init__(self, target: JSON, nursery: trio.Nursery) -> None:
        self.t = target
        self.nursery = nursery
        self.waiters: dict[int, trio.Event] = {}
        self.results: dict[int, JSON] = {}
        self.endpoint = ""
        self.post_conn: Conn | None = None

    async def connect(self, initialize: bool = True) -> None:
        t = self.t
        self.stream_conn = await Conn.open(t["host"], t["port"])
        await self.stream_conn.send("GET", t["sse_path"], {**t["headers"], "Accept": "text/event-stream"})
        status, headers = await self.stream_conn.head()
        if status != 200:
            raise HttpError(f"GET sse → {status}")
        ready = trio.Event()

        async def reader() -> None:
            pending = bytearray()
            try:
                async for chunk in self.stream_conn.chunks(headers):
                    for name, data in sse_events(pending, chunk):
                        if name == "endpoint":
                            self.endpoint = data
                            ready.set()
                        elif name == "message":
                            msg = json.loads(data)
                            ev = self.waiters.pop(msg.get("id"), None)
                            if ev is not None:
                                self.results[msg["id"]] = msg
                                ev.set()
            except (HttpError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        self.nursery.start_soon(reader)
        await ready.wait()
        if initialize:
            await self.rpc("initialize", {"protocolVersion": "2024-11-05", "capabilities": {},
                                          "clientInfo": {"name": "bench", "version": "1"}})
            await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def post(self, message: JSON) -> None:
        if self.post_conn is None:  # opened on first use, as an HTTP client's pool does
            self.post_conn = await Conn.open(self.t["host"], self.t["port"])
        status, _, _ = await self.post_conn.request(
            "POST", self.endpoint, {**self.t["headers"], "Content-Type": "application/json"},
            json.dumps(message).encode(),
        )
        if status not in (200, 202):
            raise HttpError(f"POST → {status}")

    async def rpc(self, method: str, params: JSON) -> JSON:
        msg_id = next(self.ids)
        ev = trio.Event()
        self.waiters[msg_id] = ev
        await self.post({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        await ev.wait()
        return self.results.pop(msg_id)

    async def call(self, text: str) -> None:
        reply = await self.rpc("tools/call", {"name": "echo", "arguments": {"text": text}})
        if "result" not in reply:
            raise HttpError(str(reply))

    async def aclose(self) -> None:
        await self.stream_conn.aclose()
        if self.post_conn is not None:
            await self.post_conn.aclose()


class HttpClient(Client):
    def __init__(self, target: JSON, nursery: trio.Nursery) -> None:
        self.t = target
        self.session = ""

    async def connect(self) -> None:
        t = self.t
        self.conn = await Conn.open(t["host"], t["port"])
        reply, headers = await self.rpc("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}})
        self.session = headers.get("mcp-session-id", "")
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def _post(self, message: JSON) -> tuple[int, dict[str, str], bytes]:
        h = {**self.t["headers"], "Content-Type": "application/json",
             "Accept": "application/json, text/event-stream"}
        if self.session:
            h["Mcp-Session-Id"] = self.session
            h["MCP-Protocol-Version"] = "2025-06-18"
        return await self.conn.request("POST", self.t["mcp_path"], h, json.dumps(message).encode())

    async def rpc(self, method: str, params: JSON) -> tuple[JSON, dict[str, str]]:
        msg_id = next(self.ids)
        status, headers, body = await self._post(
            {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        if status != 200:
            raise HttpError(f"POST {method} → {status}: {body[:200]!r}")
        if headers.get("content-type", "").startswith("text/event-stream"):
            for _, data in sse_events(bytearray(), body + b"\n\n"):
                msg = json.loads(data)
                if msg.get("id") == msg_id:
                    return msg, headers
            raise HttpError("no response in the SSE body")
        return json.loads(body), headers

    async def call(self, text: str) -> None:
        reply, _ = await self.rpc("tools/call", {"name": "echo", "arguments": {"text": text}})
        if "result" not in reply:
            raise HttpError(str(reply))

    async def aclose(self) -> None:
        await self.conn.aclose()


class DirectClient(Client):
    """Talks to the stdio server itself: the baseline with no gateway at all."""

    def __init__(self, target: JSON, nursery: trio.Nursery) -> None:
        self.t = target
        self.nursery = nursery
        self.waiters: dict[int, trio.Event] = {}

    async def connect(self) -> None:
        self.proc = await trio.lowlevel.open_process(
            self.t["command"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        async def reader() -> None:
            pending = b""
            while data := await self.proc.stdout.receive_some(65536):
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    ev = self.waiters.pop(msg.get("id"), None)
                    if ev is not None:
                        ev.set()

        self.nursery.start_soon(reader)
        await self.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                      "clientInfo": {"name": "bench", "version": "1"}})

    async def rpc(self, method: str, params: JSON) -> None:
        msg_id = next(self.ids)
        ev = trio.Event()
        self.waiters[msg_id] = ev
        await self.proc.stdin.send_all(json.dumps(
            {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}).encode() + b"\n")
        await ev.wait()

    async def call(self, text: str) -> None:
        await self.rpc("tools/call", {"name": "echo", "arguments": {"text": text}})

    async def aclose(self) -> None:
        self.proc.kill()
        await self.proc.wait()


class CeilingClient(Client):
    """Requests to a trivial endpoint: the load generator's own ceiling."""

    def __init__(self, target: JSON, nursery: trio.Nursery) -> None:
        self.t = target

    async def connect(self) -> None:
        self.conn = await Conn.open(self.t["host"], self.t["port"])

    async def call(self, text: str) -> None:
        status, _, _ = await self.conn.request("POST", "/", {}, b"{}")
        if status != 200:
            raise HttpError(str(status))

    async def aclose(self) -> None:
        await self.conn.aclose()


KINDS = {"sse": SseClient, "http": HttpClient, "direct": DirectClient, "ceiling": CeilingClient}


def percentiles(samples: list[float]) -> JSON:
    if not samples:
        return {"n": 0}
    s = sorted(samples)

    def p(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 3)

    return {"n": len(s), "p50_ms": p(0.50), "p90_ms": p(0.90), "p99_ms": p(0.99)}


async def sequential(target: JSON, n: int) -> JSON:
    async with trio.open_nursery() as nursery:
        client = KINDS[target["kind"]](target, nursery)
        await client.connect()
        for _ in range(min(50, n)):  # warm-up
            await client.call("warm")
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            await client.call(f"x{i}")
            samples.append(time.perf_counter() - t0)
        await client.aclose()
        nursery.cancel_scope.cancel()
    return {"latency": percentiles(samples), "raw_ms": [round(x * 1000, 4) for x in samples]}


async def throughput(target: JSON, sessions: int, seconds: float) -> JSON:
    samples: list[float] = []
    errors = 0
    async with trio.open_nursery() as nursery:
        clients = [KINDS[target["kind"]](target, nursery) for _ in range(sessions)]
        async with trio.open_nursery() as starting:
            for c in clients:
                starting.start_soon(c.connect)
        for c in clients:
            await c.call("warm")
        stop_at = trio.current_time() + seconds
        started = time.perf_counter()

        async def loop(c: Client) -> None:
            nonlocal errors
            while trio.current_time() < stop_at:
                t0 = time.perf_counter()
                try:
                    await c.call("x")
                except HttpError:
                    errors += 1
                    continue
                samples.append(time.perf_counter() - t0)

        async with trio.open_nursery() as running:
            for c in clients:
                running.start_soon(loop, c)
        elapsed = time.perf_counter() - started
        for c in clients:
            await c.aclose()
        nursery.cancel_scope.cancel()
    return {"sessions": sessions, "calls_per_s": round(len(samples) / elapsed, 1),
            "errors": errors, "latency": percentiles(samples)}


async def idle(target: JSON, sessions: int, hold_s: float) -> JSON:
    """Open N SSE sessions (no initialize), say READY, hold them until stdin says so."""
    t0 = time.perf_counter()
    failures = 0
    async with trio.open_nursery() as nursery:
        clients = [SseClient(target, nursery) for _ in range(sessions)]
        limiter = trio.CapacityLimiter(200)

        async def open_one(c: SseClient) -> None:
            nonlocal failures
            async with limiter:
                try:
                    await c.connect(initialize=False)
                except (HttpError, OSError):
                    failures += 1

        async with trio.open_nursery() as starting:
            for c in clients:
                starting.start_soon(open_one, c)
        connect_s = time.perf_counter() - t0
        print(json.dumps({"ready": True, "connect_s": round(connect_s, 3),
                          "failures": failures}), flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)
        nursery.cancel_scope.cancel()
    return {"sessions": sessions, "connect_s": round(connect_s, 3), "failures": failures}


async def connect(target: JSON, clients: int) -> JSON:
    """N clients arrive at once; each: GET /sse … initialize result."""
    samples: list[float] = []
    async with trio.open_nursery() as nursery:
        go = trio.Event()

        async def one() -> None:
            c = SseClient(target, nursery)
            await go.wait()
            t0 = time.perf_counter()
            await c.connect(initialize=True)
            samples.append(time.perf_counter() - t0)

        async with trio.open_nursery() as n2:
            for _ in range(clients):
                n2.start_soon(one)
            await trio.sleep(0.2)
            go.set()
        nursery.cancel_scope.cancel()
    return {"clients": clients, "latency": percentiles(samples)}


async def recovery(target: JSON, pid: int, timeout_s: float) -> JSON:
    """kill -9 the upstream, then call every 10 ms until one succeeds (on a fresh session)."""
    async with trio.open_nursery() as nursery:
        c = KINDS[target["kind"]](target, nursery)
        await c.connect()
        await c.call("before")
        os.kill(pid, 9)
        t0 = time.perf_counter()
        recovered = None
        with trio.move_on_after(timeout_s):
            while recovered is None:
                try:
                    with trio.fail_after(1):
                        fresh = KINDS[target["kind"]](target, nursery)
                        await fresh.connect()
                        await fresh.call("after")
                    recovered = time.perf_counter() - t0
                except (HttpError, OSError, trio.TooSlowError, KeyError):
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return {"recovered_s": round(recovered, 3) if recovered is not None else None,
            "timeout_s": timeout_s}


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=["sequential", "throughput", "idle", "connect", "recovery"])
    p.add_argument("--target", required=True, help="JSON describing the target")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--pid", type=int, default=0)
    args = p.parse_args()
    target = json.loads(args.target)
    if args.scenario == "sequential":
        result = trio.run(sequential, target, args.n)
    elif args.scenario == "throughput":
        result = trio.run(throughput, target, args.sessions, args.seconds)
    elif args.scenario == "idle":
        result = trio.run(idle, target, args.sessions, args.seconds)
    elif args.scenario == "connect":
        result = trio.run(connect, target, args.n)
    else:
        result = trio.run(recovery, target, args.pid, args.seconds)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
