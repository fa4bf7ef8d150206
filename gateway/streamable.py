"""Streamable HTTP, the stateful revisions (MCP 2025-03-26, 2025-06-18, 2025-11-25).

(Requests of the stateless revision, 2026-07-28, arrive on the same endpoint
without a session and are handed to :mod:`gateway.stateless`.)

One endpoint per server, ``/projects/{project}/servers/{server}/mcp``:

* ``POST`` one JSON-RPC message (a batch only in 2025-03-26). ``initialize``
  creates a session and its response carries ``Mcp-Session-Id``; later
  requests must send it (missing → ``400``, unknown or ended → ``404``, so
  the client initializes again) and ``MCP-Protocol-Version`` (missing →
  2025-03-26 is assumed; unsupported → ``400``). Notifications and
  responses alone get ``202``. A request is answered with JSON when nothing
  else comes first, and with an SSE stream when the server has something to
  send before the result — progress, log messages, sampling or elicitation
  requests — or, for ``tools/call`` in 2025-11-25, at once with a priming
  event so the client can resume. The ``Accept`` header must list both
  ``application/json`` and ``text/event-stream`` (``406``); the body must
  be ``application/json`` (``415``).
* ``GET`` opens the session's standalone stream for server-initiated
  messages (one at a time: a second gets ``409``). With ``Last-Event-ID``
  it resumes any of the session's streams where the client lost it; the
  response it was waiting for arrives there, exactly once.
* ``DELETE`` ends the session (``200``).

Disconnecting is not cancelling (2025-11-25 "Cancellation"): a request whose
stream dropped runs on and its answer waits for the client to resume; only
``notifications/cancelled`` cancels.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Response, make_response, request
from quart_trio import QuartTrio

from actors.session import SUPPORTED_VERSIONS, Session
from actors.streams import EventsLost, EventStream
from upstream import jsonrpc

from . import sse
from .auth import key_fingerprint
from .stateless import ALL_VERSIONS, STATELESS_VERSIONS, StatelessEndpoint, wants_stateless

log = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
DEFAULT_VERSION = "2025-03-26"
#: Revisions whose clients get a priming event and resumable tool calls.
RESUMABLE_FROM = "2025-11-25"


def _accepts(header: str | None, *types: str) -> bool:
    if not header:
        return False
    offered = {part.split(";")[0].strip().lower() for part in header.split(",")}
    if "*/*" in offered:
        return True
    return all(t in offered or f"{t.split('/')[0]}/*" in offered for t in types)


def register_streamable(app: QuartTrio, gateway: Any, resolve: Any, rpc_error: Any) -> None:
    """Add the Streamable HTTP routes to ``app``."""
    settings = gateway.config.gateway
    path = "/projects/<project>/servers/<server>/mcp"
    stateless = StatelessEndpoint(gateway)

    def sessionless_stateless() -> Response | None:
        """GET and DELETE have no meaning in 2026-07-28 (``subscriptions/listen`` replaces GET)."""
        if (request.headers.get(VERSION_HEADER) in STATELESS_VERSIONS
                and not request.headers.get(SESSION_HEADER)):
            return rpc_error(405, jsonrpc.INVALID_REQUEST,
                             f"{STATELESS_VERSIONS[0]} uses POST only (subscriptions/listen "
                             "for server notifications)", {"Allow": "POST"})
        return None

    def session_for(project: str, server: str) -> Session | Response:
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, f"missing {SESSION_HEADER} header")
        session = gateway.registry.get(session_id)
        if (
            session is None
            or session.streams is None
            or session.project != project
            or session.config.name != server
        ):
            gateway.metrics.rejected.labels("session").inc()
            return rpc_error(404, -32001, "unknown or ended session; initialize again")
        return session

    def stream_response(
        session: Session, stream: EventStream, after: int, *, priming: bool,
        headers: dict[str, str] | None = None,
    ) -> Any:
        keepalive_s = settings.keepalive_s
        # Polling (2025-11-25 only: older clients cannot resume a POST's stream).
        poll_s = settings.sse_poll_s if priming else 0.0
        frames = gateway.metrics.stream_frames.labels("http")
        sent_bytes = gateway.metrics.stream_bytes.labels("http")

        async def body() -> AsyncIterator[bytes]:
            stream.attached = True
            last = after
            close_at = trio.current_time() + poll_s if poll_s > 0 else None
            try:
                if priming:
                    yield sse.event(
                        b"", event_id=stream.event_id(after), retry_ms=settings.sse_retry_ms
                    )
                while True:
                    try:
                        batch = stream.pending_after(last)
                    except EventsLost as exc:
                        log.warning("session %s: %s", session.session_id, exc)
                        return
                    for seq, message in batch:
                        frame = sse.event(jsonrpc.dumps(message), event_id=stream.event_id(seq))
                        frames.inc()
                        sent_bytes.inc(len(frame))
                        yield frame
                        last = seq
                        stream.delivered = max(stream.delivered, seq)
                    if stream.drained(last):
                        return
                    if close_at is not None and trio.current_time() >= close_at:
                        return  # the client resumes with GET and Last-Event-ID
                    if not batch:
                        changed = False
                        wait_s = keepalive_s
                        if close_at is not None:
                            wait_s = min(wait_s, max(0.0, close_at - trio.current_time()))
                        with trio.move_on_after(wait_s):
                            await stream.wait_changed()
                            changed = True
                        if not changed and (close_at is None or trio.current_time() < close_at):
                            yield sse.KEEPALIVE
            finally:
                stream.attached = False
                session.touch()

        async def build() -> Response:
            response = await make_response(
                body(), 200, {**sse.STREAM_HEADERS, **(headers or {})}
            )
            response.timeout = None
            return response

        return build()

    async def answer(
        session: Session, stream: EventStream, batch: bool, sse_now: bool,
        headers: dict[str, str],
    ) -> Response:
        """JSON when the answer is all there is; SSE as soon as anything else comes first."""
        if not sse_now:
            while not (stream.finished or stream.has_non_response()):
                await stream.wait_changed()
            if stream.finished and not stream.has_non_response():
                replies = [m for _, m in stream.events]
                if not replies:
                    if session.closing:
                        return rpc_error(404, -32001, "the session ended before answering")
                    # Cancelled by the client: no response is due; the stream just ends.
                    return await stream_response(session, stream, 0, priming=False,
                                                 headers=headers)
                stream.delivered = stream.next_seq - 1
                body = replies if batch else replies[0]
                return Response(
                    jsonrpc.dumps(body), status=200, headers=headers,
                    content_type="application/json",
                )
        return await stream_response(session, stream, 0, priming=sse_now, headers=headers)

    @app.post(path)
    async def mcp_post(project: str, server: str) -> Response:
        config, supervisor = await resolve(gateway, project, server)
        if not _accepts(request.headers.get("Accept"), "application/json", "text/event-stream"):
            return rpc_error(
                406, jsonrpc.INVALID_REQUEST,
                "Accept must list application/json and text/event-stream",
            )
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return rpc_error(415, jsonrpc.INVALID_REQUEST, "Content-Type must be application/json")
        version = request.headers.get(VERSION_HEADER)
        body = await request.get_data(cache=False)
        try:
            parsed = jsonrpc.loads(body)
        except jsonrpc.InvalidMessage as exc:
            return rpc_error(400, jsonrpc.PARSE_ERROR, f"parse error: {exc}")
        if wants_stateless(version, request.headers.get(SESSION_HEADER), parsed):
            return await stateless.handle(
                project, config, supervisor, parsed, request.headers,
                key_fingerprint(request.headers.get("Authorization")),
            )
        if version is not None and version not in SUPPORTED_VERSIONS:
            return rpc_error(
                400, jsonrpc.INVALID_REQUEST,
                f"unsupported {VERSION_HEADER} {version!r}; supported: "
                + ", ".join(ALL_VERSIONS),
            )
        is_batch = isinstance(parsed, list)
        messages = parsed if is_batch else [parsed]
        if not messages:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, "empty batch")
        try:
            kinds = [jsonrpc.classify(m) for m in messages]
        except jsonrpc.InvalidMessage as exc:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, f"invalid JSON-RPC message: {exc}")
        requests = [m for m, k in zip(messages, kinds, strict=True) if k == "request"]
        ids = [m["id"] for m in requests]
        if len(set(map(repr, ids))) != len(ids):
            return rpc_error(400, jsonrpc.INVALID_REQUEST, "duplicate request ids in the batch")

        if any(m["method"] == "initialize" for m in requests):
            if is_batch:
                return rpc_error(400, jsonrpc.INVALID_REQUEST, "initialize must be sent alone")
            if gateway.draining:
                gateway.metrics.rejected.labels("draining").inc()
                return rpc_error(503, jsonrpc.UPSTREAM_UNAVAILABLE, "the gateway is shutting down",
                                 {"Retry-After": "5"})
            session = gateway.registry.new_session(
                project, config, supervisor, "http", outbox_size=settings.session_queue
            )
            session.idle_timeout_s = settings.http_session_idle_s
            session.key_hash = key_fingerprint(request.headers.get("Authorization"))
            await gateway.registry.start(session)
            assert session.streams is not None
            stream = session.streams.open(ids)
            try:
                await session.submit(messages[0])
                reply = await answer(
                    session, stream, False, False, {SESSION_HEADER: session.session_id}
                )
            except BaseException:
                # The client never learned this session's id: nobody can use it.
                session.close("the client went away during initialize")
                raise
            init_reply = stream.events[0][1] if stream.events else {}
            if "error" in init_reply:
                session.close("initialize failed")
            log.info("http session %s opened for %s/%s", session.session_id, project, server)
            return reply

        found = session_for(project, server)
        if isinstance(found, Response):
            return found
        session = found
        negotiated = session.protocol_version or version or DEFAULT_VERSION
        if is_batch and negotiated != "2025-03-26":
            return rpc_error(
                400, jsonrpc.INVALID_REQUEST, f"JSON-RPC batches are not part of {negotiated}"
            )
        assert session.streams is not None
        if any(i in session.streams.by_request for i in ids):
            return rpc_error(400, jsonrpc.INVALID_REQUEST, "a request with this id is in flight")
        stream = session.streams.open(ids) if requests else None
        for message in messages:
            if not await session.submit(message):
                if stream is not None:
                    for request_id in ids:
                        session.streams.abandon(request_id)
                if session.closing:
                    return rpc_error(404, -32001, "the session ended; initialize again")
                gateway.metrics.rejected.labels("busy").inc()
                return rpc_error(503, jsonrpc.SESSION_BUSY, "session inbox full; retry",
                                 {"Retry-After": "1"})
        if stream is None:
            return Response("", status=202)
        sse_now = negotiated >= RESUMABLE_FROM and any(
            m["method"] == "tools/call" for m in requests
        )
        return await answer(session, stream, is_batch, sse_now, {})

    @app.get(path)
    async def mcp_get(project: str, server: str) -> Response:
        await resolve(gateway, project, server)
        if (refused := sessionless_stateless()) is not None:
            return refused
        if not _accepts(request.headers.get("Accept"), "text/event-stream"):
            return rpc_error(406, jsonrpc.INVALID_REQUEST, "Accept must list text/event-stream")
        found = session_for(project, server)
        if isinstance(found, Response):
            return found
        session = found
        assert session.streams is not None
        last_event_id = request.headers.get("Last-Event-ID")
        if last_event_id:
            try:
                stream, after = session.streams.resolve(last_event_id)
                stream.pending_after(after)
            except (KeyError, ValueError):
                return rpc_error(
                    404, jsonrpc.INVALID_REQUEST,
                    f"unknown Last-Event-ID {last_event_id!r}: that stream is gone",
                )
            except EventsLost as exc:
                return rpc_error(409, jsonrpc.INVALID_REQUEST, str(exc))
            if stream.attached:
                return rpc_error(409, jsonrpc.INVALID_REQUEST, "that stream is already being read")
            return await stream_response(session, stream, after, priming=False)
        standalone = session.streams.standalone
        if standalone.attached:
            return rpc_error(409, jsonrpc.INVALID_REQUEST, "this session's stream is already open")
        try:
            standalone.pending_after(standalone.delivered)
        except EventsLost:
            standalone.delivered = standalone.events[0][0] - 1
        return await stream_response(session, standalone, standalone.delivered, priming=False)

    @app.delete(path)
    async def mcp_delete(project: str, server: str) -> Response:
        await resolve(gateway, project, server)
        if (refused := sessionless_stateless()) is not None:
            return refused
        found = session_for(project, server)
        if isinstance(found, Response):
            return found
        found.close("terminated by the client (DELETE)")
        return Response("", status=200)
