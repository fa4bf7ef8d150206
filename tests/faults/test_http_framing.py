"""HTTP framing attacks on the real gateway, over a raw socket (RFC 9112 §6.1)."""

from __future__ import annotations

import re

import pytest
import trio

from gateway.http import hypercorn_patch
from tests.faults.conftest import Faulty
from tests.faults.helpers import finish


def test_the_hypercorn_internals_the_patches_rely_on_are_unchanged() -> None:
    # Fails on a Hypercorn upgrade that changed what gateway/http/hypercorn_patch.py
    # replaces or wraps: review the patches, then update EXPECTED_SOURCES.
    assert hypercorn_patch.source_digests() == hypercorn_patch.EXPECTED_SOURCES


async def _exchange(url: str, data: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send ``data`` on a fresh connection; return everything read and whether the server closed."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    received = b""
    closed = False
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(timeout):
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    closed = True
                    break
                received += chunk
    return received, closed


HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _smuggling(host_header: bytes, *extra: bytes) -> bytes:
    hidden = b"GET /health?smuggled=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    body = b"0\r\n\r\n" + hidden
    head = b"POST /health HTTP/1.1\r\nHost: " + host_header + b"\r\n" + b"".join(extra)
    return head + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body) + body


@pytest.mark.parametrize("case", ["cl-te", "te-cl-order", "te-http10", "dup-cl", "te-gzip", "te-list"])
async def test_bad_framing_is_refused_and_the_connection_closed(faulty_gateway: Faulty, case: str) -> None:
    gw, base = await faulty_gateway()
    hidden = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    requests = {
        "cl-te": _smuggling(b"127.0.0.1"),
        "te-cl-order": b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                       b"Content-Length: 4\r\n\r\n0\r\n\r\n" + hidden,
        "te-http10": b"POST /health HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\n0\r\n\r\n" + hidden,
        "dup-cl": b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                  b"Content-Length: 5\r\n\r\n" + hidden,
        "te-gzip": b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip, chunked\r\n"
                   b"\r\n0\r\n\r\n" + hidden,
        "te-list": b"POST /health HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: identity\r\n"
                   b"\r\n0\r\n\r\n" + hidden,
    }
    received, closed = await _exchange(gw.url, requests[case])
    status = {"dup-cl": b"400", "te-gzip": b"501", "te-list": b"501"}.get(case, b"400")
    assert received.startswith(b"HTTP/1.1 " + status + b" "), received[:200]
    assert received.count(b"HTTP/1.1 ") == 1, f"the hidden request was answered: {received!r}"
    assert b'"status"' not in received  # no /health body ever went out
    assert closed, "the connection stayed open after a framing error"
    await finish(gw.url, gw.auth(), base)


async def test_keep_alive_pipelined_requests_are_answered_in_order(faulty_gateway: Faulty) -> None:
    gw, base = await faulty_gateway()
    first = b"GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    second = b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}"
    third = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    received, closed = await _exchange(gw.url, first + second + third, timeout=2)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"400", b"200"], received
    assert received.index(b'"ready"') < received.index(b"not OAuth") < received.index(b'"projects"')
    assert not closed  # keep-alive: the connection stays open for more
    await finish(gw.url, gw.auth(), base)
