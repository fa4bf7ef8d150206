"""Streamable HTTP, the stateful revisions (MCP 2025-03-26, 2025-06-18, 2025-11-25).

Requests of an open session (``Mcp-Session-Id``) are the hot path and are
served as raw ASGI by :class:`SessionPost`; ``initialize``, ``GET`` and
``DELETE`` go through the Quart routes of :func:`register_streamable`. Both
share :func:`stream_frames` and :func:`await_answer`. Requests of the
stateless revision, 2026-07-28, arrive without a session and are handed to
:mod:`gateway.stateless`.

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

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Response, make_response, request
from quart_trio import QuartTrio

from actors.session import SUPPORTED_VERSIONS, Session
from actors.streams import EventsLost, EventStream
from upstream import jsonrpc

from ..http import sse
from ..http.asgi import (
    Headers,
    Receive,
    Scope,
    Send,
    admit,
    cancel_on_disconnect,
    error_body,
    header_list,
    read_body,
    replay_body,
    reply,
)
from ..http.auth import key_fingerprint
from ..http.origin import OriginPolicy
from .stateless import STATELESS_VERSIONS, StatelessEndpoint, wants_stateless

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


async def stream_frames(
    gateway: Any, session: Session, stream: EventStream, after: int, *, priming: bool
) -> AsyncIterator[bytes]:
    """The SSE frames of ``stream`` after sequence number ``after``, until it is drained.

    With ``priming`` (2025-11-25 clients) the first frame is an empty event
    carrying an id and ``retry``, and ``gateway.sse_poll_s`` closes long
    streams so the client resumes with ``Last-Event-ID``. While a reader has
    the stream it is ``attached`` (a second reader gets ``409``).
    """
    settings = gateway.config.gateway
    # Polling (2025-11-25 only: older clients cannot resume a POST's stream).
    poll_s = settings.sse_poll_s if priming else 0.0
    frames = gateway.metrics.stream_frames.labels("http")
    sent_bytes = gateway.metrics.stream_bytes.labels("http")

    stream.attached = True
    stream.keepalive_due = False
    last = after
    close_at = trio.current_time() + poll_s if poll_s > 0 else None
    try:
        with gateway.heartbeat.watch(stream.nudge) as beat:
            if priming:
                yield sse.event(b"", event_id=stream.event_id(after),
                                retry_ms=settings.sse_retry_ms)
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
                    beat.sent()
                    stream.keepalive_due = False  # a frame just went: no comment needed
                    last = seq
                    stream.delivered = max(stream.delivered, seq)
                if stream.drained(last):
                    return
                if close_at is not None and trio.current_time() >= close_at:
                    return  # the client resumes with GET and Last-Event-ID
                if batch:
                    continue
                if stream.keepalive_due:
                    stream.keepalive_due = False
                    yield sse.KEEPALIVE
                    beat.sent()
                elif close_at is None:
                    await stream.wait_changed()
                else:
                    with trio.move_on_after(max(0.0, close_at - trio.current_time())):
                        await stream.wait_changed()
    finally:
        stream.attached = False
        session.touch()



#: What :func:`await_answer` decided: a JSON body, an SSE stream, or the session ended.
Answer = tuple[str, Any]


async def await_answer(session: Session, stream: EventStream, *, batch: bool, sse_now: bool) -> Answer:
    """JSON when the answer is all there is; SSE as soon as anything else comes first."""
    if sse_now:
        return ("sse", None)
    while not (stream.finished or stream.has_non_response()):
        await stream.wait_changed()
    if stream.finished and not stream.has_non_response():
        replies = [m for _, m in stream.events]
        if not replies:
            if session.closing:
                return ("ended", None)
            # Cancelled by the client: no response is due; the stream just ends.
            return ("sse", None)
        stream.delivered = stream.next_seq - 1
        return ("json", replies if batch else replies[0])
    return ("sse", None)


def check_headers(headers: Any) -> tuple[int, str] | None:
    """``Accept`` and ``Content-Type`` rules of a POST: ``(status, message)`` when broken."""
    if not _accepts(headers.get("Accept"), "application/json", "text/event-stream"):
        return 406, "Accept must list application/json and text/event-stream"
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return 415, "Content-Type must be application/json"
    return None


def unsupported_version(version: str | None) -> str | None:
    """Why a session's ``MCP-Protocol-Version`` is refused, or ``None``."""
    if version is not None and version not in SUPPORTED_VERSIONS:
        return (f"unsupported {VERSION_HEADER} {version!r} for a session; supported: "
                + ", ".join(SUPPORTED_VERSIONS)
                + f" ({', '.join(STATELESS_VERSIONS)}: without a session)")
    return None


def register_streamable(app: QuartTrio, gateway: Any, resolve: Any, rpc_error: Any) -> None:
    """Add the Streamable HTTP routes to ``app`` (requests of an open session are served
    by :class:`SessionPost` in front of it)."""
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
        if not belongs(session, project, server):
            gateway.metrics.rejected.labels("session").inc()
            return rpc_error(404, -32001, "unknown or ended session; initialize again")
        return session  # type: ignore[return-value]

    async def stream_response(
        session: Session, stream: EventStream, after: int, *, priming: bool,
        headers: dict[str, str] | None = None,
    ) -> Response:
        response = await make_response(
            stream_frames(gateway, session, stream, after, priming=priming), 200,
            {**sse.STREAM_HEADERS, **(headers or {})},
        )
        response.timeout = None
        return response

    @app.post(path)
    async def mcp_post(project: str, server: str) -> Response:
        """``initialize`` (a new session), 2026-07-28 requests, and what lacks a session."""
        config, supervisor = await resolve(gateway, project, server)
        broken = check_headers(request.headers)
        if broken is not None:
            return rpc_error(broken[0], jsonrpc.INVALID_REQUEST, broken[1])
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
        if (problem := unsupported_version(version)) is not None:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, problem)
        messages = parsed if isinstance(parsed, list) else [parsed]
        try:
            initialize = [m for m in messages if jsonrpc.classify(m) == "request"
                          and m["method"] == "initialize"]
        except jsonrpc.InvalidMessage as exc:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, f"invalid JSON-RPC message: {exc}")
        if not initialize:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, f"missing {SESSION_HEADER} header")
        if isinstance(parsed, list):
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
        stream = session.streams.open([parsed["id"]])
        headers = {SESSION_HEADER: session.session_id}
        try:
            await session.submit(parsed)
            kind, payload = await await_answer(session, stream, batch=False, sse_now=False)
        except BaseException:
            # The client never learned this session's id: nobody can use it.
            session.close("the client went away during initialize")
            raise
        if kind == "json" and "error" in payload:
            session.close("initialize failed")
        log.info("http session %s opened for %s/%s", session.session_id, project, server)
        if kind == "json":
            return Response(jsonrpc.dumps(payload), status=200, headers=headers,
                            content_type="application/json")
        if kind == "ended":
            return rpc_error(404, -32001, "the session ended before answering")
        return await stream_response(session, stream, 0, priming=False, headers=headers)

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


def belongs(session: Session | None, project: str, server: str) -> bool:
    """Whether a live Streamable HTTP session is one of this project's server's."""
    return (
        session is not None
        and session.streams is not None
        and session.transport == "http"
        and session.project == project
        and session.config.name == server
    )


ROUTE = re.compile(r"^/projects/([^/]+)/servers/([^/]+)/mcp$")
_STREAM_HEADERS = header_list(sse.STREAM_HEADERS)


class SessionPost:
    """ASGI app: ``POST …/mcp`` with ``Mcp-Session-Id`` — every request of an open
    session — served without Quart (the hot path); anything else goes to ``fallback``.

    A body that turns out to hold ``initialize`` (a new session) is handed to the
    Quart app after all, with the body replayed.
    """

    def __init__(self, fallback: Any, gateway: Any, policy: OriginPolicy) -> None:
        self.fallback = fallback
        self.gateway = gateway
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = ROUTE.match(scope["path"])
            if match is not None and any(k == b"mcp-session-id" for k, _ in scope["headers"]):
                await self._post(match[1], match[2], scope, receive, send)
                return
        await self.fallback(scope, receive, send)

    async def _post(self, project: str, server: str, scope: Scope, receive: Receive,
                    send: Send) -> None:
        gateway = self.gateway
        admitted = await admit(gateway, self.policy, scope, project, server, send)
        if admitted is None:
            return
        cors = admitted.cors

        async def fail(status: int, code: int, message: str, extra: Headers = ()) -> None:
            await reply(send, status, error_body(code, message), [*extra, *cors])

        lowered = _Lower(admitted.headers)
        broken = check_headers(lowered)
        if broken is not None:
            return await fail(broken[0], jsonrpc.INVALID_REQUEST, broken[1])
        body = await read_body(gateway, admitted.headers, receive, send, cors)
        if body is None:
            return
        try:
            parsed = jsonrpc.loads(body)
        except jsonrpc.InvalidMessage as exc:
            return await fail(400, jsonrpc.PARSE_ERROR, f"parse error: {exc}")
        is_batch = isinstance(parsed, list)
        messages = parsed if is_batch else [parsed]
        if not messages:
            return await fail(400, jsonrpc.INVALID_REQUEST, "empty batch")
        try:
            kinds = [jsonrpc.classify(m) for m in messages]
        except jsonrpc.InvalidMessage as exc:
            return await fail(400, jsonrpc.INVALID_REQUEST, f"invalid JSON-RPC message: {exc}")
        requests = [m for m, k in zip(messages, kinds, strict=True) if k == "request"]
        if any(m["method"] == "initialize" for m in requests):
            await self.fallback(scope, replay_body(body, receive), send)
            return
        version = lowered.get(VERSION_HEADER)
        if (problem := unsupported_version(version)) is not None:
            return await fail(400, jsonrpc.INVALID_REQUEST, problem)
        ids = [m["id"] for m in requests]
        if len(set(map(repr, ids))) != len(ids):
            return await fail(400, jsonrpc.INVALID_REQUEST, "duplicate request ids in the batch")
        session = gateway.registry.get(lowered.get(SESSION_HEADER) or "")
        if not belongs(session, project, server):
            gateway.metrics.rejected.labels("session").inc()
            return await fail(404, -32001, "unknown or ended session; initialize again")
        assert session is not None and session.streams is not None
        negotiated = session.protocol_version or version or DEFAULT_VERSION
        if is_batch and negotiated != "2025-03-26":
            return await fail(400, jsonrpc.INVALID_REQUEST,
                              f"JSON-RPC batches are not part of {negotiated}")
        if any(i in session.streams.by_request for i in ids):
            return await fail(400, jsonrpc.INVALID_REQUEST, "a request with this id is in flight")
        stream = session.streams.open(ids) if requests else None
        for message in messages:
            if not await session.submit(message):
                if stream is not None:
                    for request_id in ids:
                        session.streams.abandon(request_id)
                if session.closing:
                    return await fail(404, -32001, "the session ended; initialize again")
                gateway.metrics.rejected.labels("busy").inc()
                return await fail(503, jsonrpc.SESSION_BUSY, "session inbox full; retry",
                                  [(b"retry-after", b"1")])
        if stream is None:
            await reply(send, 202, b"", cors, b"text/plain")
            return
        sse_now = negotiated >= RESUMABLE_FROM and any(
            m["method"] == "tools/call" for m in requests
        )
        kind, payload = await await_answer(session, stream, batch=is_batch, sse_now=sse_now)
        if kind == "json":
            await reply(send, 200, jsonrpc.dumps(payload), cors)
        elif kind == "ended":
            await fail(404, -32001, "the session ended before answering")
        else:
            await self._stream(session, stream, sse_now, receive, send, cors)

    async def _stream(self, session: Session, stream: EventStream, priming: bool,
                      receive: Receive, send: Send, cors: Headers) -> None:
        """Send the request's stream as SSE until it is drained or the client goes away."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_disconnect, receive, nursery.cancel_scope)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*_STREAM_HEADERS, *cors]})
            frames = stream_frames(self.gateway, session, stream, 0, priming=priming)
            async with contextlib.aclosing(frames):
                async for frame in frames:
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()


class _Lower:
    """``headers.get("Name")`` over ASGI's lower-case byte headers, as the checks shared
    with the Quart routes expect."""

    def __init__(self, headers: dict[bytes, bytes]) -> None:
        self._headers = headers

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self._headers.get(name.lower().encode())
        return value.decode("latin-1") if value is not None else default
