"""A Streamable HTTP POST sent again while its answer is unread — what a load balancer does
when the instance relaying it dies — is answered from the first one's stream: the upstream
serves it once. A different message with an id in flight is still refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from tests.conftest import StartGateway
from tests.support import DEMO_SERVER, Recording
from tests.support.sse import SseEvent, aiter_sse, sse_messages
from tests.support.streamable import StreamableClient

VERSION = "2025-11-25"


async def test_a_resent_post_gets_the_answer_of_the_first(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    recording = Recording(tmp_path / "upstream.jsonl")
    gw = await start_gateway({"demo": {"servers": {"demo": recording.server(DEMO_SERVER)}}})
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "sleep", "arguments": {"seconds": 0.6}}}
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect(VERSION)
        with trio.fail_after(10):
            async with client.stream_post(call) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                async for event in aiter_sse(r):
                    if isinstance(event, SseEvent):
                        break  # the priming event: then this client is gone
        with trio.fail_after(10):
            while not recording.tool_calls("sleep"):
                await trio.sleep(0.02)
        other = {**call, "params": {"name": "echo", "arguments": {"text": "x"}}}
        r = await client.post(other)
        assert r.status_code == 400 and "in flight" in r.text
        with trio.fail_after(10):
            r = await client.post(call)
        assert r.status_code == 200
        answers = [m for _, m in sse_messages(r.text) if isinstance(m, dict) and "result" in m]
        assert [a["id"] for a in answers] == [7]
        assert answers[0]["result"]["content"][0]["text"] == "slept 0.6 s"
    assert len(recording.tool_calls("sleep")) == 1
