"""Slow and idle connections: the header timeout, and the cap on open connections."""

from __future__ import annotations

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.faults.conftest import Faulty
from tests.faults.helpers import finish


def _metric(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


async def _connect(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def _closed_within(stream: trio.SocketStream, seconds: float) -> bytes | None:
    """What the server sent before closing, or ``None`` if it did not close in time."""
    received = b""
    with trio.move_on_after(seconds):
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
        return received
    return None


async def test_half_a_request_head_is_closed_after_the_header_timeout(faulty_gateway: Faulty) -> None:
    gw, base = await faulty_gateway(header_timeout_s=0.5)
    slow, silent = await _connect(gw.url), await _connect(gw.url)
    async with slow, silent:
        started = trio.current_time()
        await slow.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        for _ in range(2):  # a slowloris trickle does not extend the deadline
            await trio.sleep(0.15)
            await slow.send_all(b"a")
        assert await _closed_within(slow, 3) == b""
        assert await _closed_within(silent, 3) == b""
        assert trio.current_time() - started < 1.5
    # A complete request on a fresh connection is served, and keep-alive idle time
    # between requests is not cut by the header timeout.
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(gw.url + "/health")).status_code == 200
        await trio.sleep(0.8)
        assert (await http.get(gw.url + "/health")).status_code == 200
        text = (await http.get(gw.url + "/metrics")).text
    assert _metric(text, "mcp_orch_connections_header_timeouts_total") == 2
    await finish(gw.url, gw.auth(), base)


async def test_connections_beyond_the_cap_are_refused(faulty_gateway: Faulty) -> None:
    gw, base = await faulty_gateway(max_connections=5)
    held = [await _connect(gw.url) for _ in range(5)]
    try:
        await trio.sleep(0.2)
        sixth = await _connect(gw.url)
        async with sixth:
            answer = await _closed_within(sixth, 3)
        assert answer is not None and answer.startswith(b"HTTP/1.1 503 "), answer
        # While they are held, metrics cannot be scraped either (it would be a 6th).
    finally:
        for stream in held:
            await stream.aclose()
    with trio.fail_after(5):
        while True:
            async with httpx.AsyncClient(timeout=10) as http:
                text = (await http.get(gw.url + "/metrics")).text
            if _metric(text, "mcp_orch_connections_open") == 1:
                break
            await trio.sleep(0.05)
    assert _metric(text, "mcp_orch_connections_refused_total") == 1
    await finish(gw.url, gw.auth(), base)
