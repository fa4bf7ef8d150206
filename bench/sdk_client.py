"""What users see: the official Python SDK client (``mcp``) making tools/call round trips.

The lean load generator (``bench/loadgen.py``) measures the gateways with as
little client cost as possible; this measures them through the client most
Python users run — ``ClientSession`` over ``sse_client``,
``streamable_http_client`` or, for the floor, ``stdio_client`` straight to the
server — so a gateway's answer format (JSON or an SSE stream, priming events)
counts as much as the client makes it count. It runs on trio (the SDK runs on
it through anyio), in a process of its own per measurement, as the load
generator does.

    python -m bench.sdk_client --target JSON -n 300

``--target``: ``{"kind": "direct", "command": [...]}`` or ``{"kind": "sse" |
"http", "url": ..., "headers": {...}}``, plus ``"tool"`` (the tool to call)
and ``"argument"`` (the name of its one string argument). Prints one JSON
object: the per-call latency percentiles and the raw samples.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx2
from mcp import StdioServerParameters
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from .loadgen import percentiles

JSON = dict[str, Any]
WARMUP = 20


class SdkCallError(Exception):
    """A tools/call through the SDK came back as an error result."""


async def _open(stack: AsyncExitStack, target: JSON) -> ClientSession:
    kind = target["kind"]
    if kind == "direct":
        command, *args = target["command"]
        streams = await stack.enter_async_context(
            stdio_client(StdioServerParameters(command=command, args=args)))
    elif kind == "sse":
        streams = await stack.enter_async_context(
            sse_client(target["url"], headers=target.get("headers") or None))
    elif kind == "http":
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers=target.get("headers") or {}, timeout=30))
        streams = await stack.enter_async_context(
            streamable_http_client(target["url"], http_client=http))
    else:
        raise ValueError(f"unknown target kind {kind!r}")
    read, write = streams[0], streams[1]
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


async def calls(target: JSON, n: int) -> JSON:
    """Initialize, warm up, then ``n`` sequential tools/call round trips, each timed."""
    tool, argument = target["tool"], target["argument"]
    samples: list[float] = []
    async with AsyncExitStack() as stack:
        session = await _open(stack, target)
        for i in range(WARMUP + n):
            t0 = time.perf_counter()
            result = await session.call_tool(tool, {argument: f"x{i}"})
            elapsed = time.perf_counter() - t0
            if result.is_error:
                raise SdkCallError(str(result.content)[:200])
            if i >= WARMUP:
                samples.append(elapsed)
    return {"latency": percentiles(samples), "raw_ms": [round(x * 1000, 4) for x in samples]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="JSON describing the target")
    p.add_argument("-n", type=int, default=300)
    args = p.parse_args()
    result = anyio.run(calls, json.loads(args.target), args.n, backend="trio")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
