"""OpenTelemetry: a tool call through the gateway reaches an OTLP/HTTP receiver as spans
of the client's trace, and the upstream is handed the trace context.

The receiver is a small HTTP server on 127.0.0.1 that decodes each export with
``opentelemetry-proto`` (what a collector does); the upstream's side is the
demo server's recording of what it read.
"""

from __future__ import annotations

import http.server
import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from config import ConfigError, load_config
from tests.support import DEMO_SERVER, Recording, StreamableClient, write_config

pytest.importorskip("opentelemetry.sdk", reason="the telemetry extra is not installed")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class _Receiver(http.server.ThreadingHTTPServer):
    spans: list[Any]
    paths: list[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.paths.append(self.path)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.server.spans.extend(scope_spans.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
async def receiver(nursery: trio.Nursery) -> Any:
    server = _Receiver(("127.0.0.1", 0), _Handler)
    server.spans, server.paths = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _attrs(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = value.string_value or value.int_value or value.bool_value
    return out


async def test_tool_call_spans_carry_the_clients_trace(
    start_gateway: Any, receiver: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recording = Recording(tmp_path / "upstream.jsonl")
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    gw = await start_gateway({"demo": {"servers": {"demo": recording.server(DEMO_SERVER)}}},
                             telemetry={"endpoint": endpoint})
    async with httpx.AsyncClient(timeout=10) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-06-18")
        traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
        with caplog.at_level(logging.DEBUG):
            r = await client.post(
                {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                 "params": {"name": "echo", "arguments": {"text": "traced"}}},
                headers={"traceparent": traceparent})
        assert r.status_code == 200, r.text
        assert "traced" in r.text

    # The upstream was handed the trace context of the gateway's upstream span.
    calls = await recording.wait_for(lambda r: r.tool_calls("echo"))
    upstream_tp = calls[0]["params"]["_meta"]["traceparent"]
    _, up_trace, up_span, _ = upstream_tp.split("-")
    assert up_trace == TRACE_ID

    with trio.fail_after(15):
        while True:
            names = {s.name for s in receiver.spans}
            if {"tools/call echo", "tools/call echo upstream"} <= names:
                break
            await trio.sleep(0.1)
    assert receiver.paths and all(p == "/v1/traces" for p in receiver.paths)
    server_span = next(s for s in receiver.spans if s.name == "tools/call echo")
    child = next(s for s in receiver.spans if s.name == "tools/call echo upstream")
    assert server_span.trace_id.hex() == TRACE_ID
    assert server_span.parent_span_id.hex() == CLIENT_SPAN
    assert server_span.kind == server_span.SPAN_KIND_SERVER
    attributes = _attrs(server_span)
    assert attributes["mcp.method.name"] == "tools/call"
    assert attributes["gen_ai.tool.name"] == "echo"
    assert attributes["mcp.session.id"] == client.session_id
    assert attributes["mcp_orch.project"] == "demo"
    assert attributes["mcp_orch.server"] == "demo"
    assert attributes["mcp_orch.outcome"] == "ok"
    assert child.trace_id.hex() == TRACE_ID
    assert child.parent_span_id == server_span.span_id
    assert child.span_id.hex() == up_span
    assert child.kind == child.SPAN_KIND_CLIENT


async def test_error_spans_carry_the_error_code(start_gateway: Any, receiver: Any) -> None:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    gw = await start_gateway(telemetry={"endpoint": endpoint})
    async with httpx.AsyncClient(timeout=10) as http:
        client = StreamableClient(http, gw.mcp_url(), gw.auth())
        await client.connect("2025-06-18")
        # The trace context in params._meta (no header this time).
        reply = await client.request("prompts/get", {
            "name": "no-such-prompt", "_meta": {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}})
    assert "error" in reply
    with trio.fail_after(15):
        while not any(s.name == "prompts/get no-such-prompt" for s in receiver.spans):
            await trio.sleep(0.1)
    span = next(s for s in receiver.spans if s.name == "prompts/get no-such-prompt")
    assert span.trace_id.hex() == TRACE_ID
    attributes = _attrs(span)
    assert attributes["rpc.response.status_code"] == str(reply["error"]["code"])
    assert attributes["error.type"] == "error"
    assert span.status.code == span.status.STATUS_CODE_ERROR


def test_trace_id_in_structured_logs() -> None:
    from actors.tracing import TRACE_ID as TRACE_VAR
    from gateway.ops.logs import JsonFormatter, _CorrelationFilter

    token = TRACE_VAR.set(TRACE_ID)
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        _CorrelationFilter().filter(record)
        assert f'"trace_id": "{TRACE_ID}"' in JsonFormatter().format(record)
    finally:
        TRACE_VAR.reset(token)


def test_telemetry_settings_are_validated(tmp_path: Path) -> None:
    path = write_config(tmp_path, {}, telemetry={"endpoint": "collector:4318"})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.field == "gateway.telemetry.endpoint"
    path = write_config(tmp_path, {}, telemetry={"endpont": "http://127.0.0.1:4318"})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "gateway.telemetry" in str(caught.value) and "endpoint" in str(caught.value)
    assert load_config(write_config(tmp_path, {})).gateway.telemetry.endpoint is None
