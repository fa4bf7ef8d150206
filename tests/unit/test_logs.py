"""Log formatting: redaction of keys, JSON shape, per-logger levels."""

from __future__ import annotations

import json
import logging

import pytest

from actors.context import REQUEST_ID, SESSION_ID
from gateway.ops.logs import JsonFormatter, _CorrelationFilter, parse_levels, redact


def test_redact_masks_keys_and_bearer_tokens() -> None:
    key = "mcpo_" + "A1b2" * 11
    assert key not in redact(f"got {key} here")
    assert "mcpo_[redacted]" in redact(f"got {key} here")
    assert "sekrit" not in redact("Authorization: Bearer sekrit")
    assert redact("nothing to hide") == "nothing to hide"


def test_json_formatter_includes_correlation_ids() -> None:
    record = logging.LogRecord("actors.session", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    token_s, token_r = SESSION_ID.set("s-1"), REQUEST_ID.set("s-1:7")
    try:
        _CorrelationFilter().filter(record)
    finally:
        SESSION_ID.reset(token_s)
        REQUEST_ID.reset(token_r)
    body = json.loads(JsonFormatter().format(record))
    assert body["msg"] == "hello x" and body["session"] == "s-1" and body["request"] == "s-1:7"
    assert body["level"] == "info" and body["logger"] == "actors.session"


def test_parse_levels() -> None:
    assert parse_levels(["warning", "actors=debug"]) == {"": logging.WARNING, "actors": logging.DEBUG}
    with pytest.raises(ValueError, match="loud"):
        parse_levels(["loud"])
