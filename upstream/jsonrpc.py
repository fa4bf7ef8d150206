"""JSON-RPC 2.0 framing and validation shared by every transport.

MCP messages are plain JSON objects; the gateway keeps them as dicts (no model
classes on the hot path) and validates only what it must route on: the
``jsonrpc`` marker, the id's type (``string | number``, never null for a
request, and never converted: ``"1"`` and ``1`` are different ids), the method
name and the result/error shape of a response. Error codes are in
:mod:`upstream.errors`.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, Literal

Message = dict[str, Any]
Id = str | int

Kind = Literal["request", "notification", "response"]


class InvalidMessage(ValueError):
    """Raised for JSON that is not a JSON-RPC 2.0 message; its text says why."""


#: ``json.dumps`` with options builds a new encoder on every call; this one is built once
#: (encoding keeps no state between calls).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(message: Message) -> bytes:
    """Serialise one message compactly (no newlines, UTF-8)."""
    return _ENCODER.encode(message).encode()


#: Deepest nesting of arrays/objects a message may have. Real MCP messages
#: (tool schemas included) stay far below; a body nested 100,000 deep would
#: otherwise reach the decoder's recursion limit.
MAX_DEPTH = 128
# A JSON string literal, escapes included (so brackets inside strings do not count).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Every byte but the four brackets; the depth step of each bracket (by byte value).
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = tuple(1 if b in b"[{" else -1 for b in range(256))
_TOO_MANY_OPEN = re.compile(rb"[\[{]{%d}" % (MAX_DEPTH + 1))
#: Innermost-pair passes tried before the exact running sum (honest messages are shallower).
_PASSES = 16


def _too_deep(data: bytes | str) -> bool:
    """Whether ``data`` nests arrays/objects deeper than :data:`MAX_DEPTH`.

    Cheap, and never recursive. A message with at most ``MAX_DEPTH`` opening
    brackets cannot be too deep, and counting them is a C loop (a typical
    1 KB message pays only that). Otherwise, in C loops as far as possible:
    strings are cut out and everything but brackets deleted; a run of more
    than ``MAX_DEPTH`` opening brackets is too deep at once; then innermost
    pairs (``[]``, ``{}``) are removed pass after pass — each pass lowers the
    depth by exactly one, so a typical message is done in a few passes — and
    what is still nested after :data:`_PASSES` passes gets an exact running
    sum. The cost is linear in the body, which ``max_body_bytes`` bounds.
    """
    if isinstance(data, str):
        if data.count("[") + data.count("{") <= MAX_DEPTH:
            return False
        data = data.encode("utf-8", "surrogatepass")
    elif data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    if b"\\" in data:
        data = _STRING.sub(b"", data)
    else:  # no escapes: strings are exactly the odd pieces between quotes
        data = b"".join(data.split(b'"')[::2])
    brackets = data.translate(None, _NOT_BRACKETS)
    if _TOO_MANY_OPEN.search(brackets):
        return True
    for _ in range(_PASSES):
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if not shorter or len(shorter) == len(brackets):
            return False  # fully matched, or unbalanced (not JSON: the parser says why)
        brackets = shorter
    depth = max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)))
    return depth > MAX_DEPTH - _PASSES


def loads(data: bytes | str) -> Any:
    """Parse JSON text; raises ``InvalidMessage`` with the parser's reason.

    Nesting deeper than :data:`MAX_DEPTH` is refused before parsing (a
    ``RecursionError`` of the decoder is turned into the same refusal), so
    every transport answers it as a parse error.
    """
    if _too_deep(data):
        raise InvalidMessage(f"invalid JSON: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(data)
    except RecursionError:
        raise InvalidMessage(f"invalid JSON: nested deeper than {MAX_DEPTH} levels") from None
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
