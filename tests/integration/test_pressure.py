"""Batches under pressure, through real HTTP: every request of an accepted batch is
answered (Streamable HTTP 2025-03-26 and legacy SSE), the session lives on, and a
batch over ``gateway.max_batch`` is refused whole with nothing served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartGateway
from tests.support import DEMO_SERVER, Recording, StreamableClient, open_sse_session


def echo(n: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": f"n{n}"}}}


def assert_every_answer(replies: list[dict[str, Any]], count: int) -> None:
    by_id = {r["id"]: r for r in replies}
    assert len(replies) == count == len(by_id), (len(replies), len(by_id))
    for n in range(count):
        assert by_id[n]["result"]["content"][0]["text"] == f"n{n}", by_id[n]


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def test_a_2025_03_26_batch_of_2000_gets_2000_answers(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient(timeout=60) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-03-26")
        r = await client.post([echo(n) for n in range(2000)])
        assert r.status_code == 200, r.text[:300]
        assert r.headers["content-type"].startswith("application/json")
        assert_every_answer(r.json(), 2000)
        # The session lives on.
        assert (await client.request("ping", msg_id="after"))["result"] == {}


async def test_a_legacy_sse_batch_of_1000_gets_202_and_1000_answers_on_the_stream(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway()
    async with open_sse_session(gw.sse_url(), gw.auth()) as s:
        await s.initialize()
        before = len(s.events)
        r = await s.post([echo(n) for n in range(1000)])
        assert r.status_code == 202, r.text

        def answers() -> list[dict[str, Any]]:
            found = [json.loads(d) for name, d in s.events[before:] if name == "message"]
            return [m for m in found if isinstance(m.get("id"), int) and "method" not in m]

        with trio.fail_after(60):
            while len(answers()) < 1000 and not s.ended.is_set():
                await trio.sleep(0.05)
        assert not s.ended.is_set(), "the batch ended the session"
        assert_every_answer(answers(), 1000)
        result = await s.call("tools/call", {"name": "echo", "arguments": {"text": "alive"}},
                              msg_id="after")
        assert result["content"][0]["text"] == "alive"


async def test_a_batch_over_max_batch_is_refused_whole_and_nothing_is_served(
    start_gateway: StartGateway, tmp_path: Path,
) -> None:
    recording = Recording(tmp_path / "upstream.jsonl")
    gw = await start_gateway({"demo": {"servers": {"demo": recording.server(DEMO_SERVER)}}},
                             max_batch=100)
    too_many = [echo(n) for n in range(101)]
    async with httpx.AsyncClient(timeout=30) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-03-26")
        r = await client.post(too_many)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == -32600
        assert "gateway.max_batch" in r.json()["error"]["message"]
        async with open_sse_session(gw.sse_url(), gw.auth(), http=http) as s:
            await s.initialize()
            r = await s.post(too_many)
            assert r.status_code == 400 and r.json()["error"]["code"] == -32600
            # At the limit, both serve every request; the sessions are unharmed.
            assert (await s.post([echo(n) for n in range(100)])).status_code == 202
            r = await client.post([echo(n) for n in range(100)])
            assert_every_answer(r.json(), 100)
            await recording.wait_for(lambda rec: len(rec.tool_calls("echo")) == 200, 20)
        text = (await http.get(gw.url + "/metrics")).text
    # What the upstream saw: only the two batches at the limit, never the refused ones.
    await trio.sleep(0.2)
    assert len(recording.tool_calls("echo")) == 200
    assert metric(text, "mcp_orch_rejected_requests_total", reason="batch") == 2
