"""The legacy HTTP+SSE transport (MCP 2024-11-05): its rules, on the session front.

Wire behaviour, as the reference SDKs and MCP Inspector speak it:

* ``GET …/sse`` opens a session and its stream. The first event is
  ``event: endpoint`` whose data is a plain URI (not JSON-RPC) carrying
  ``sessionId``; clients resolve it against the SSE URL, so it is a path
  without scheme or host (never ``0.0.0.0`` or an internal name).
* ``POST …/messages?sessionId=`` (the Python SDK says ``session_id``; both
  are accepted) takes one message — or a batch — and answers ``202``. Every
  response travels on the stream as ``event: message``; every request of a
  batch is answered there, at the pace the stream is read (the session waits
  for room rather than overflowing its outbox). A batch over
  ``gateway.max_batch`` is refused whole with ``400`` (``Front.submit``). A
  well-formed message that leads to a JSON-RPC error still gets ``202``: the
  Python SDK client dies on any non-2xx POST, so the error goes on the stream.
* Keep-alive comments every ``keepalive_s`` keep idle streams open through
  Node's 5-minute idle timeout and proxies; the gateway's heartbeat asks for
  them (``gateway/http/keepalive.py``), so an idle stream holds no timer.

The stream only moves frames from the session's outbox; the session actor
owns all cleanup (``actors/session.py``). A client that disconnects is seen
as ``http.disconnect``, which cancels the stream and closes the session.
"""

from __future__ import annotations

import logging

import attrs
import trio

from actors import Outbox, Transport
from upstream import errors

from ..http import sse
from ..http.asgi import HttpRequest, header_list
from .front import Front, Refused, outbox_frames, parse

log = logging.getLogger(__name__)

_STREAM_HEADERS = header_list(sse.STREAM_HEADERS)


@attrs.define(eq=False)
class LegacySse:
    """``GET …/sse`` and ``POST …/messages`` of one gateway."""

    front: Front

    async def stream(self, http: HttpRequest, project: str, server: str | None) -> None:
        front = self.front
        target = await front.admit(http, project, server)
        outbox = Outbox(front.gateway.config.gateway.session_queue)
        session = await front.open_session(target.options(Transport.LEGACY_SSE), outbox)
        endpoint = f"{target.base_path}/messages?sessionId={session.session_id}"
        log.info("sse session %s opened for %s/%s", session.session_id, project,
                 target.server_name)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(front.cut_if_stalled, http, session)
                await http.stream(
                    outbox_frames(front.gateway, outbox, sse.event(endpoint, name="endpoint"),
                                  "sse"),
                    _STREAM_HEADERS)
                nursery.cancel_scope.cancel()
            log.info("sse session %s ended: %s", session.session_id, session.close_reason)
        finally:
            session.close("the client disconnected")

    async def message(self, http: HttpRequest, project: str, server: str | None) -> None:
        front = self.front
        target = await front.admit(http, project, server)
        session_id = http.query("sessionId", "session_id")
        if not session_id:
            raise Refused(400, errors.INVALID_REQUEST, "missing sessionId query parameter")
        session = front.find_session(session_id, target, Transport.LEGACY_SSE)
        parsed = parse(await front.body(http))
        await front.submit(session, parsed.messages, hint="open a new SSE stream")
        await http.reply(202, b"Accepted", content_type=b"text/plain")
