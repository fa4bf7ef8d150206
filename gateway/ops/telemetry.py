"""OpenTelemetry traces of the requests the gateway serves, exported by OTLP/HTTP.

Off unless ``[gateway.telemetry] endpoint`` is configured; then every client
request a session serves gets a SERVER span named after the MCP semantic
conventions (``tools/call echo``) with ``mcp.method.name``, the tool, prompt
or resource, ``mcp.session.id``, ``jsonrpc.request.id``, the project and
server, the outcome and, on failure, ``error.type`` and
``rpc.response.status_code`` (the JSON-RPC error code). Its child CLIENT span
is the upstream round trip; that span's W3C ``traceparent`` travels upstream
in ``params._meta.traceparent`` (stdio servers read it there; the remote
links also send it as the ``traceparent`` header).

The client's trace is continued: a ``traceparent`` in the request's
``params._meta`` — or in the HTTP request's ``traceparent`` header, which the
session front copies there (``gateway/transports/front.py``) — becomes the
server span's parent. The trace id is put in :data:`actors.tracing.TRACE_ID`
so the structured logs of the request carry it.

Spans are batched by the SDK's ``BatchSpanProcessor`` (its own thread; the
trio loop only enqueues) and flushed at shutdown (:meth:`Telemetry.shutdown`,
blocking: call it from a thread). Each gateway has its own tracer provider,
never the process-global one, so tests can run several.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import attrs

from actors.tracing import TRACE_ID
from config import ConfigError, expand_env
from config.models import TelemetrySettings
from upstream import jsonrpc

#: The part of a ``tools/call`` / ``prompts/get`` / ``resources/read`` that names its target.
_TARGETS = {
    "tools/call": ("name", "gen_ai.tool.name"),
    "prompts/get": ("name", "gen_ai.prompt.name"),
    "resources/read": ("uri", "mcp.resource.uri"),
    "resources/subscribe": ("uri", "mcp.resource.uri"),
    "resources/unsubscribe": ("uri", "mcp.resource.uri"),
}


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for ``endpoint`` (``/v1/traces`` unless a path is given)."""
    scheme, _, rest = endpoint.partition("://")
    _, slash, path = rest.partition("/")
    if slash and path.strip("/"):
        return endpoint
    return endpoint.rstrip("/") + "/v1/traces"


@attrs.define(eq=False)
class Telemetry:
    """A tracer provider exporting to one OTLP/HTTP endpoint; the sessions' ``RequestTracer``."""

    _provider: Any
    _tracer: Any
    _propagator: Any

    @classmethod
    def create(
        cls, settings: TelemetrySettings, environ: Mapping[str, str] | None = None,
        *, exporter: Any = None,
    ) -> Telemetry | None:
        """The gateway's telemetry, or ``None`` when no endpoint is configured.

        Error handling: a configured endpoint without the ``telemetry`` extra
        installed, or a header naming an unset variable, raises
        :class:`~config.ConfigError` naming the field.
        """
        if settings.endpoint is None:
            return None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            raise ConfigError(
                f"gateway.telemetry.endpoint is set but OpenTelemetry is not installed ({exc}); "
                "install the extra: pip install 'mcp-orch[telemetry]'",
                field="gateway.telemetry.endpoint",
            ) from None
        headers = expand_env(settings.headers, os.environ if environ is None else environ,
                             where="gateway.telemetry.headers")
        provider = TracerProvider(resource=Resource.create({
            "service.name": settings.service_name,
        }))
        if exporter is None:
            exporter = OTLPSpanExporter(endpoint=traces_url(settings.endpoint), headers=headers,
                                        timeout=5)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        return cls(provider, provider.get_tracer("mcp-orch"), TraceContextTextMapPropagator())

    def start(self, session: Any, message: jsonrpc.Message) -> _Trace:
        """A SERVER span for ``message`` of ``session``, child of the client's ``traceparent``."""
        from opentelemetry import trace

        method = message["method"]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        meta = params.get("_meta")
        carrier: dict[str, str] = {}
        if isinstance(meta, dict):
            for name in ("traceparent", "tracestate"):
                if isinstance(meta.get(name), str):
                    carrier[name] = meta[name]
        parent = self._propagator.extract(carrier) if carrier else None
        attributes: dict[str, Any] = {
            "mcp.method.name": method,
            "mcp.session.id": session.session_id,
            "jsonrpc.request.id": str(message["id"]),
            "mcp_orch.project": session.project,
            "mcp_orch.server": session.server_name,
            "network.transport": "tcp",
            "mcp_orch.transport": str(session.transport),
        }
        if session.protocol_version:
            attributes["mcp.protocol.version"] = session.protocol_version
        name = method
        target = _TARGETS.get(method)
        if target is not None and isinstance(params.get(target[0]), str):
            attributes[target[1]] = params[target[0]]
            name = f"{method} {params[target[0]]}"
        span = self._tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER,
                                       attributes=attributes)
        TRACE_ID.set(trace.format_trace_id(span.get_span_context().trace_id))
        return _Trace(self, span, name)

    def shutdown(self) -> None:
        """Flush what is queued and stop the exporter (blocking: run it in a thread)."""
        self._provider.shutdown()


@attrs.define(eq=False)
class _Trace:
    """One traced request: its server span and, once forwarded, the upstream span."""

    telemetry: Telemetry
    span: Any
    name: str
    upstream: Any = None

    def forwarded(self, message: jsonrpc.Message) -> jsonrpc.Message:
        from opentelemetry import trace

        self.upstream = self.telemetry._tracer.start_span(
            f"{self.name} upstream", context=trace.set_span_in_context(self.span),
            kind=trace.SpanKind.CLIENT,
            attributes={"mcp.method.name": message["method"],
                        "mcp_orch.server": self.span.attributes.get("mcp_orch.server", "")},
        )
        carrier: dict[str, str] = {}
        self.telemetry._propagator.inject(carrier, context=trace.set_span_in_context(self.upstream))
        params = message.get("params")
        params = dict(params) if isinstance(params, dict) else {}
        meta = params.get("_meta")
        params["_meta"] = {**(meta if isinstance(meta, dict) else {}), **carrier}
        return {**message, "params": params}

    def end(self, outcome: str, reply: jsonrpc.Message | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        error = reply.get("error") if isinstance(reply, dict) else None
        for span in (self.upstream, self.span):
            if span is None:
                continue
            span.set_attribute("mcp_orch.outcome", outcome)
            if isinstance(error, dict):
                code = error.get("code")
                span.set_attribute("rpc.response.status_code", str(code))
                span.set_attribute("error.type", outcome if outcome != "ok" else "error")
                span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:200]))
            elif outcome == "cancelled":
                span.set_attribute("error.type", "cancelled")
            span.end()
