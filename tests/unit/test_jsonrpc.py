"""JSON-RPC classification: what the gateway accepts and what it rejects, and why."""

from __future__ import annotations

import pytest

from gateway.http import sse
from upstream import jsonrpc


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ({"jsonrpc": "2.0", "id": 1, "method": "ping"}, "request"),
        ({"jsonrpc": "2.0", "id": "a", "method": "ping", "params": {}}, "request"),
        ({"jsonrpc": "2.0", "method": "notifications/initialized"}, "notification"),
        ({"jsonrpc": "2.0", "id": 1, "result": {}}, "response"),
        ({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "x"}}, "response"),
    ],
)
def test_valid(message: dict, kind: str) -> None:
    assert jsonrpc.classify(message) == kind


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ([], "object"),
        ({"id": 1, "method": "ping"}, "jsonrpc"),
        ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, "jsonrpc"),
        ({"jsonrpc": "2.0", "id": None, "method": "ping"}, "id"),
        ({"jsonrpc": "2.0", "id": True, "method": "ping"}, "id"),
        ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, "id"),
        ({"jsonrpc": "2.0", "id": 1, "method": ""}, "method"),
        ({"jsonrpc": "2.0", "id": 1, "method": "x", "params": 3}, "params"),
        ({"jsonrpc": "2.0", "id": 1}, "method"),
        ({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1}}, "both"),
        ({"jsonrpc": "2.0", "id": 1, "error": {"message": "no code"}}, "code"),
    ],
)
def test_invalid(message: object, why: str) -> None:
    with pytest.raises(jsonrpc.InvalidMessage, match=why):
        jsonrpc.classify(message)


def test_loads_reports_parse_errors() -> None:
    with pytest.raises(jsonrpc.InvalidMessage, match="invalid JSON"):
        jsonrpc.loads(b"{nope")
    with pytest.raises(jsonrpc.InvalidMessage):
        jsonrpc.loads(b"\xff\xfe")


def test_dumps_is_one_line() -> None:
    data = jsonrpc.dumps({"text": "a\nb", "u": "é"})
    assert b"\n" not in data
    assert "é".encode() in data


def test_sse_event_framing() -> None:
    assert sse.event("/x?sessionId=1", name="endpoint") == b"event: endpoint\ndata: /x?sessionId=1\n\n"
    assert sse.event("a\nb", event_id="7") == b"id: 7\ndata: a\ndata: b\n\n"
    assert sse.event(b"") == b"data: \n\n"
