"""The hook a session actor calls to trace the requests it serves (OpenTelemetry lives
in ``gateway/ops/telemetry.py``; the actors know only these two protocols).

A :class:`RequestTracer` is handed to every session by the registry when
tracing is on (``[gateway.telemetry] endpoint``); when it is off the session
holds ``None`` and pays one ``is None`` test per request.

``TRACE_ID`` carries the current request's trace id (32 hex digits) for the
log formatter, as ``actors/context.py`` carries the session and request ids.
"""

from __future__ import annotations

import contextvars
from typing import Any, Protocol

from upstream import jsonrpc

TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)


class RequestTrace(Protocol):
    """One client request being traced (a server span, and a child span per upstream call)."""

    def forwarded(self, message: jsonrpc.Message) -> jsonrpc.Message:
        """Start the upstream round trip's span; return the message to send upstream,
        carrying that span's ``traceparent`` in ``params._meta``."""
        ...

    def end(self, outcome: str, reply: jsonrpc.Message | None) -> None:
        """The request finished with ``outcome`` (``ok``, ``error``, ``cancelled`` …)."""
        ...


class RequestTracer(Protocol):
    """Starts a :class:`RequestTrace` for each request a session serves."""

    def start(self, session: Any, message: jsonrpc.Message) -> RequestTrace:
        """Begin tracing ``message`` (a request) of ``session``; sets :data:`TRACE_ID`."""
        ...
