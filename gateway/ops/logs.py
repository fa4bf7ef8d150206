"""Logging set-up: readable text by default, one JSON object per line on request.

Every record is tagged with the session and request it belongs to (from the
context variables in ``actors/context.py``), so one client's story can be
followed through the log. As a last line of defence, anything shaped like an
mcp-orch key is masked before it is written, whatever logged it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Sequence

from actors.context import REQUEST_ID, SESSION_ID
from actors.tracing import TRACE_ID

_KEY_SHAPE = re.compile(r"mcpo_(?:admin_)?[A-Za-z0-9_-]{16,}")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


def redact(text: str) -> str:
    """Mask API keys and bearer tokens in a log line."""
    text = _KEY_SHAPE.sub("mcpo_[redacted]", text)
    return _BEARER.sub(r"\1[redacted]", text)


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.session_id = SESSION_ID.get()
        record.request_id = REQUEST_ID.get()
        record.trace_id = TRACE_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """``time level logger [session request] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(correlation)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        parts = [p for p in (getattr(record, "session_id", None), getattr(record, "request_id", None)) if p]
        if getattr(record, "trace_id", None):
            parts.append(f"trace={record.trace_id}")
        record.correlation = f" [{' '.join(parts)}]" if parts else ""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, session, request, trace_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        body = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "session_id", None):
            body["session"] = record.session_id
        if getattr(record, "request_id", None):
            body["request"] = record.request_id
        if getattr(record, "trace_id", None):
            body["trace_id"] = record.trace_id
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(body, ensure_ascii=False))


def parse_levels(specs: Sequence[str]) -> dict[str, int]:
    """``["info", "actors=debug"]`` → ``{"": INFO, "actors": DEBUG}``; raises ``ValueError``."""
    levels: dict[str, int] = {}
    for spec in specs:
        name, _, level = spec.rpartition("=")
        value = logging.getLevelName(level.upper())
        if not isinstance(value, int):
            raise ValueError(f"unknown log level {level!r} in {spec!r}")
        levels[name] = value
    return levels


def setup_logging(fmt: str = "text", levels: Sequence[str] = ("info",)) -> None:
    """Configure the root logger (stderr) with the chosen format and per-logger levels."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_CorrelationFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    parsed = parse_levels(levels)
    root.setLevel(parsed.pop("", logging.INFO))
    for name, level in parsed.items():
        logging.getLogger(name).setLevel(level)
