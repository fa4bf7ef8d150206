"""Notification floods: a slow reader loses notifications (counted), never its answer; a
client that reads nothing is bounded and cut; nothing leaks, the gateway serves on."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.conftest import Faulty
from tests.faults.helpers import finish, misbehave
from tests.support import SseComment, StreamableClient, aiter_sse, parse_events

FLOOD = 20_000  # ~21 MB of notifications/message: more than every buffer on the way


def deluge(msg_id: Any, count: int = FLOOD, text: str = "the answer") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text, "count": count}}}


async def dropped(http: httpx.AsyncClient, url: str, transport: str) -> float:
    text = (await http.get(url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "mcp_orch_notifications_dropped_total"
                    and sample.labels.get("transport") == transport):
                return sample.value
    return 0.0


async def read_until_answer(events: Any, msg_id: Any) -> tuple[dict[str, Any], int]:
    """Read SSE events slowly until the response to ``msg_id``; (it, notifications seen)."""
    notes = 0
    async for event in events:
        if isinstance(event, SseComment) or event.json() is None:
            continue
        message = event.json()
        if message.get("id") == msg_id and "method" not in message:
            return message, notes
        notes += 1
        if notes % 200 == 0:
            await trio.sleep(0.01)  # slow, but reading
    raise AssertionError("the stream ended without the answer")


async def test_legacy_sse_slow_reader_loses_notifications_never_its_answer(
    faulty_gateway: Faulty,
) -> None:
    gw, base = await faulty_gateway({"deluge": misbehave("deluge")})
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as http:
        async with http.stream("GET", gw.sse_url(server="deluge"), headers=gw.auth()) as stream:
            events = aiter_sse(stream)
            endpoint = (await events.__anext__()).data
            r = await http.post(gw.url + endpoint, json=deluge(1), headers=gw.auth())
            assert r.status_code == 202
            await trio.sleep(1.0)  # not reading for a while: the flood fills every buffer
            with trio.fail_after(60):
                answer, seen = await read_until_answer(events, 1)
            assert answer["result"]["content"][0]["text"] == "the answer"
            lost = await dropped(http, gw.url, "sse")
            assert lost > 0 and seen + lost == FLOOD  # each one either arrived or was counted
            # The session lives on.
            r = await http.post(gw.url + endpoint, json=deluge(2, 0, "again"), headers=gw.auth())
            assert r.status_code == 202
            with trio.fail_after(20):
                answer, _ = await read_until_answer(events, 2)
            assert answer["result"]["content"][0]["text"] == "again"
    await finish(gw.url, gw.auth(), base)


async def test_streamable_slow_reader_loses_notifications_never_its_answer(
    faulty_gateway: Faulty,
) -> None:
    gw, base = await faulty_gateway({"deluge": misbehave("deluge")})
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as http:
        client = StreamableClient(http, gw.mcp_url(server="deluge"), gw.auth())
        await client.connect("2025-03-26")
        async with client.stream_post(deluge(1)) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            await trio.sleep(1.0)
            with trio.fail_after(60):
                answer, seen = await read_until_answer(aiter_sse(r), 1)
        assert answer["result"]["content"][0]["text"] == "the answer"
        lost = await dropped(http, gw.url, "http")
        assert lost > 0 and seen + lost == FLOOD
        assert (await client.request("ping", msg_id="after"))["result"] == {}
        assert (await client.delete()).status_code == 200
    await finish(gw.url, gw.auth(), base)


async def test_resuming_after_dropped_notifications_is_a_clear_error_and_the_answer_is_kept(
    faulty_gateway: Faulty,
) -> None:
    gw, base = await faulty_gateway({"deluge": misbehave("deluge")})
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as http:
        client = StreamableClient(http, gw.mcp_url(server="deluge"), gw.auth())
        await client.connect("2025-03-26")
        async with client.stream_post(deluge(1)) as r:
            first = await aiter_sse(r).__anext__()
        assert first.id  # then the client drops the stream (that is not cancelling)
        session = gw.gateway.registry.sessions[client.session_id]
        stream = session.outlet.by_id[first.id.rsplit("-", 1)[0]]
        with trio.fail_after(30):
            while not stream.finished:
                await trio.sleep(0.05)
        lost = await client.get(headers={"Last-Event-ID": first.id})
        assert lost.status_code == 409
        resume_from = lost.json()["error"]["data"]["resumeFrom"]
        resumed = await client.get(headers={"Last-Event-ID": resume_from})
        assert resumed.status_code == 200
        answers = [m for m in (e.json() for e in parse_events(resumed.text))
                   if m and m.get("id") == 1]
        assert answers and answers[0]["result"]["content"][0]["text"] == "the answer"
        assert (await client.delete()).status_code == 200
    await finish(gw.url, gw.auth(), base)


async def test_a_client_that_reads_nothing_is_cut_and_stays_bounded(faulty_gateway: Faulty) -> None:
    gw, base = await faulty_gateway({"deluge": misbehave("deluge")}, reader_stall_s=1)
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    raw = await trio.open_tcp_stream(host, int(port))
    async with raw:
        await raw.send_all(
            f"GET /projects/demo/servers/deluge/sse HTTP/1.1\r\nhost: {host}:{port}\r\n"
            f"authorization: Bearer {gw.keys['demo']}\r\naccept: text/event-stream\r\n\r\n"
            .encode())
        head = b""
        with trio.fail_after(10):
            while b"sessionId=" not in head or b"\n\n" not in head.split(b"sessionId=")[1]:
                head += await raw.receive_some(65536)  # the endpoint event, then nothing more
        session_id = head.split(b"sessionId=")[1].split(b"\n")[0].strip().decode()
        session = gw.gateway.registry.sessions[session_id]
        queue = gw.gateway.config.gateway.session_queue
        deepest = 0

        async def watch() -> None:
            nonlocal deepest
            while not session.closed.is_set():
                deepest = max(deepest, session.outbox_depth)
                await trio.sleep(0.005)

        url = f"{gw.url}/projects/demo/servers/deluge/messages?sessionId={session_id}"
        async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            assert (await http.post(url, json=deluge(1, 5000), headers=gw.auth())).status_code == 202
            await trio.sleep(1.5)  # longer than reader_stall_s without reading a byte
            r = await http.post(url, json=deluge(2, 5000), headers=gw.auth())
            assert r.status_code in (202, 404)
            with trio.fail_after(20):
                await session.closed.wait()
        assert session.overflowed and "did not read" in session.close_reason
        assert 0 < deepest <= queue  # what it held for the client stayed bounded
    await finish(gw.url, gw.auth(), base)
