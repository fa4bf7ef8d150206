"""JSON-RPC 2.0 framing and validation shared by every transport.

MCP messages are plain JSON objects; the gateway keeps them as dicts (no model
classes on the hot path) and validates only what it must route on: the
``jsonrpc`` marker, the id's type (``string | number``, never null for a
request, and never converted: ``"1"`` and ``1`` are different ids), the method
name and the result/error shape of a response.
"""

from __future__ import annotations

import json
from typing import Any, Literal

Message = dict[str, Any]
Id = str | int

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000 .. -32099).
UPSTREAM_UNAVAILABLE = -32000
REQUEST_TIMEOUT = -32001
UPSTREAM_CLOSED = -32002
SESSION_BUSY = -32003

Kind = Literal["request", "notification", "response"]


class InvalidMessage(ValueError):
    """Raised for JSON that is not a JSON-RPC 2.0 message; its text says why."""


def dumps(message: Message) -> bytes:
    """Serialise one message compactly (no newlines, UTF-8)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON text; raises ``InvalidMessage`` with the parser's reason."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidMessage(f"invalid JSON: {exc}") from None


def _valid_id(value: Any) -> bool:
    # bool is an int subclass in Python, but `true` is not a JSON-RPC id.
    return (isinstance(value, str) or isinstance(value, int)) and not isinstance(value, bool)


def classify(message: Any) -> Kind:
    """Say what a parsed message is, or raise ``InvalidMessage`` naming the defect."""
    if not isinstance(message, dict):
        raise InvalidMessage("a JSON-RPC message must be a JSON object")
    if message.get("jsonrpc") != "2.0":
        raise InvalidMessage('"jsonrpc" must be "2.0"')
    if "method" in message:
        if not isinstance(message["method"], str) or not message["method"]:
            raise InvalidMessage('"method" must be a non-empty string')
        params = message.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            raise InvalidMessage('"params" must be an object or an array')
        if "id" not in message:
            return "notification"
        if not _valid_id(message["id"]):
            raise InvalidMessage('"id" must be a string or a number (not null)')
        return "request"
    if "result" in message or "error" in message:
        if "result" in message and "error" in message:
            raise InvalidMessage('a response has "result" or "error", not both')
        if "error" in message:
            error = message["error"]
            if not isinstance(error, dict) or not isinstance(error.get("code"), int):
                raise InvalidMessage('"error" must be an object with an integer "code"')
        msg_id = message.get("id")
        if msg_id is not None and not _valid_id(msg_id):
            raise InvalidMessage('"id" must be a string or a number')
        return "response"
    raise InvalidMessage('a message needs "method" (request/notification) or "result"/"error"')


def error_response(msg_id: Id | None, code: int, message: str, data: Any = None) -> Message:
    """Build a JSON-RPC error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": msg_id, "error": error}


def result_response(msg_id: Id, result: Any) -> Message:
    """Build a JSON-RPC success response."""
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def notification(method: str, params: dict[str, Any] | None = None) -> Message:
    """Build a JSON-RPC notification."""
    msg: Message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def request(msg_id: Id, method: str, params: dict[str, Any] | None = None) -> Message:
    """Build a JSON-RPC request."""
    msg: Message = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        msg["params"] = params
    return msg
