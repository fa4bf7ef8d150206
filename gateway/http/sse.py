"""Server-Sent Events framing (WHATWG HTML, "server-sent events").

An event is ``field: value`` lines ended by a blank line. ``data`` values
containing newlines are split over several ``data:`` lines, which the reader
joins back with ``\\n``; compact JSON never contains a raw newline, so an MCP
message is always exactly one ``data:`` line.
"""

from __future__ import annotations

KEEPALIVE = b": ping\n\n"

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache, no-transform",
    # Reverse proxies (nginx) must not buffer a stream.
    "X-Accel-Buffering": "no",
}


def event(
    data: str | bytes, *, name: str | None = None, event_id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """Frame one event (``retry_ms`` tells the client how soon to reconnect)."""
    if isinstance(data, str):
        data = data.encode()
    parts: list[bytes] = []
    if retry_ms is not None:
        parts.append(b"retry: %d\n" % retry_ms)
    if event_id is not None:
        parts.append(b"id: " + event_id.encode() + b"\n")
    if name is not None:
        parts.append(b"event: " + name.encode() + b"\n")
    for line in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"):
        parts.append(b"data: " + line + b"\n")
    parts.append(b"\n")
    return b"".join(parts)
