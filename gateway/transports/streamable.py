"""Streamable HTTP, the stateful revisions (MCP 2025-03-26, 2025-06-18, 2025-11-25).

Its rules on the session front (``gateway/transports/front.py``). Requests of
the stateless revision, 2026-07-28, arrive without a session on the same
endpoint and are handed to :mod:`gateway.transports.stateless`.

One endpoint per server, ``/projects/{project}/servers/{server}/mcp``:

* ``POST`` one JSON-RPC message (a batch only in 2025-03-26). ``initialize``
  creates a session and its response carries ``Mcp-Session-Id``; later
  requests must send it (missing → ``400``, unknown or ended → ``404``, so
  the client initializes again) and ``MCP-Protocol-Version`` (missing →
  2025-03-26 is assumed; unsupported → ``400``). Notifications and
  responses alone get ``202``. A request is answered with JSON when nothing
  else comes first, and with an SSE stream when the server has something to
  send before the result — progress, log messages, sampling or elicitation
  requests — or, for ``tools/call`` in 2025-11-25, when the result is not
  there within ``gateway.answer_window_s`` (50 ms): that stream starts with a
  priming event so the client can resume. The ``Accept`` header must list both
  ``application/json`` and ``text/event-stream`` (``406``); the body must
  be ``application/json`` (``415``).
* ``GET`` opens the session's standalone stream for server-initiated
  messages (one at a time: a second gets ``409``). With ``Last-Event-ID``
  it resumes any of the session's streams where the client lost it; the
  response it was waiting for arrives there, exactly once.
* ``DELETE`` ends the session (``200``).

Disconnecting is not cancelling (2025-11-25 "Cancellation"): a request whose
stream dropped runs on and its answer waits for the client to resume; only
``notifications/cancelled`` cancels. A client that leaves while its answer is
still held (before a JSON body or the stream's first event) has no event id
to resume with, so its requests are cancelled for it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from actors import Session, StreamSet, Transport
from actors.session import SUPPORTED_VERSIONS
from actors.streams import EventsLost, EventStream
from upstream import errors, jsonrpc

from ..http import sse
from ..http.asgi import HttpRequest
from .front import (
    Front,
    JsonReply,
    Parsed,
    Refused,
    Reply,
    StreamReply,
    Target,
    outlet_of,
    parse_json,
    validate,
)
from .stateless import STATELESS_VERSIONS, StatelessEndpoint, wants_stateless

log = logging.getLogger(__name__)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
DEFAULT_VERSION = "2025-03-26"
#: Revisions whose clients get a priming event and resumable tool calls.
RESUMABLE_FROM = "2025-11-25"
_HINT = "initialize again"


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
                # Live: notifications dropped under pressure are skipped, never a response.
                batch = stream.pending_after(last)
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



#: What :func:`await_answer` decided: ``("json", body)``, ``("sse", None)``,
#: ``("empty", None)`` (its requests were cancelled: nothing is due) or
#: ``("ended", None)`` (the session ended first).
Answer = tuple[str, Any]
#: How long a cancellation for a client that left may wait for room in the session's inbox.
_CANCEL_SUBMIT_S = 1.0


async def await_answer(
    session: Session, stream: EventStream, *, batch: bool, window_s: float | None
) -> Answer:
    """Hold the choice between a JSON body and an SSE stream until it is clear.

    JSON when every response of the POST has arrived and nothing else came
    before them; SSE as soon as anything else (a notification, a
    server→client request) is queued on the stream — it then goes first on
    the stream, the responses after it — or once ``window_s`` has passed
    without the whole answer (``None``: no such deadline). The responses
    stay queued on ``stream`` until the choice is made, so whatever it is
    each is delivered exactly once.

    Error handling: a client that leaves while its answer is held has no
    event id to resume from, so nothing can reach it any more: its requests
    still unanswered are cancelled, as by its own ``notifications/cancelled``
    (the upstream is told), before the cancellation goes on.
    """
    try:
        with (contextlib.nullcontext() if window_s is None else trio.move_on_after(window_s)):
            while not (stream.finished or stream.has_non_response()):
                await stream.wait_changed()
    except BaseException:
        await _cancel_held(session, stream)
        raise
    if stream.has_non_response() or not stream.finished:
        return ("sse", None)
    replies = stream.responses()
    if not replies:
        # Cancelled by the client (no response is due), or the session ended.
        return ("ended", None) if session.closing else ("empty", None)
    stream.delivered = stream.next_seq - 1
    return ("json", replies if batch else replies[0])


async def _cancel_held(session: Session, stream: EventStream) -> None:
    """Cancel the requests ``stream`` still waits for (its client left before it began)."""
    if session.closing or not stream.awaiting:
        return
    with trio.CancelScope(shield=True), trio.move_on_after(_CANCEL_SUBMIT_S):
        for request_id in list(stream.awaiting):
            log.debug("session %s: client left before the answer to %r began; cancelling it",
                      session.session_id, request_id)
            await session.submit(jsonrpc.notification("notifications/cancelled", {
                "requestId": request_id,
                "reason": "the client went away before its answer began"}))


def check_post_headers(http: HttpRequest) -> None:
    """``Accept`` and ``Content-Type`` rules of a POST (``406``, ``415``)."""
    if not _accepts(http.header("accept"), "application/json", "text/event-stream"):
        raise Refused(406, errors.INVALID_REQUEST,
                      "Accept must list application/json and text/event-stream")
    content_type = (http.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Refused(415, errors.INVALID_REQUEST, "Content-Type must be application/json")


def check_session_version(version: str | None) -> None:
    """A session's ``MCP-Protocol-Version`` must be one it can speak (``400``)."""
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise Refused(400, errors.INVALID_REQUEST,
                      f"unsupported {VERSION_HEADER} {version!r} for a session; supported: "
                      + ", ".join(SUPPORTED_VERSIONS)
                      + f" ({', '.join(STATELESS_VERSIONS)}: without a session)")


@attrs.define(eq=False)
class Streamable:
    """``POST``, ``GET`` and ``DELETE`` of ``…/mcp`` for one gateway."""

    front: Front
    stateless: StatelessEndpoint

    def _stream_reply(self, session: Session, stream: EventStream, after: int, *,
                      priming: bool, headers: list[tuple[bytes, bytes]] | None = None
                      ) -> StreamReply:
        return StreamReply(
            stream_frames(self.front.gateway, session, stream, after, priming=priming),
            headers or [])

    def _refuse_stateless_method(self, http: HttpRequest) -> None:
        """GET and DELETE have no meaning in 2026-07-28 (``subscriptions/listen`` replaces GET)."""
        if http.header(VERSION_HEADER) in STATELESS_VERSIONS and not http.header(SESSION_HEADER):
            raise Refused(405, errors.METHOD_NOT_ALLOWED,
                          f"{STATELESS_VERSIONS[0]} uses POST only (subscriptions/listen "
                          "for server notifications)", headers=[(b"allow", b"POST")])

    def _session(self, http: HttpRequest, target: Target) -> Session:
        session_id = http.header(SESSION_HEADER)
        if not session_id:
            raise Refused(400, errors.INVALID_REQUEST, f"missing {SESSION_HEADER} header")
        return self.front.find_session(session_id, target, Transport.STREAMABLE_HTTP)

    # -- POST ---------------------------------------------------------------------
    async def post(self, http: HttpRequest, project: str, server: str | None) -> Reply | None:
        """Answer a POST; ``None`` when answered already (``202``)."""
        front = self.front
        target = await front.admit(http, project, server)
        check_post_headers(http)
        version = http.header(VERSION_HEADER)
        session_id = http.header(SESSION_HEADER)
        raw = parse_json(await front.body(http))
        if wants_stateless(version, session_id, raw):
            return await self.stateless.handle(target, raw, http)
        check_session_version(version)
        parsed = validate(raw)
        if parsed.has_request("initialize"):
            if parsed.batch:
                raise Refused(400, errors.INVALID_REQUEST, "initialize must be sent alone")
            return await self._initialize(target, parsed.single)
        if not session_id:
            raise Refused(400, errors.INVALID_REQUEST, f"missing {SESSION_HEADER} header")
        return await self._in_session(http, target, parsed, version)

    async def _initialize(self, target: Target, message: jsonrpc.Message) -> Reply:
        front = self.front
        streams = StreamSet()
        session = await front.open_session(
            target.options(Transport.STREAMABLE_HTTP,
                           idle_timeout_s=front.gateway.config.gateway.http_session_idle_s),
            streams)
        stream = streams.open([message["id"]])
        headers = [(SESSION_HEADER.lower().encode(), session.session_id.encode())]
        try:
            await session.submit(message)
            kind, payload = await await_answer(session, stream, batch=False, window_s=None)
        except BaseException:
            # The client never learned this session's id: nobody can use it.
            session.close("the client went away during initialize")
            raise
        if kind == "json" and "error" in payload:
            session.close("initialize failed")
        log.info("http session %s opened for %s/%s", session.session_id, target.project,
                 target.server_name)
        if kind == "json":
            return JsonReply(payload, headers=headers)
        if kind == "ended":
            raise Refused(404, errors.NOT_FOUND, "the session ended before answering",
                          reason="session")
        return self._stream_reply(session, stream, 0, priming=False, headers=headers)

    async def _in_session(
        self, http: HttpRequest, target: Target, parsed: Parsed, version: str | None
    ) -> Reply | None:
        requests = parsed.requests
        ids = [m["id"] for m in requests]
        if len(set(map(repr, ids))) != len(ids):
            raise Refused(400, errors.INVALID_REQUEST, "duplicate request ids in the batch")
        session = self._session(http, target)
        streams = outlet_of(session, StreamSet)
        negotiated = session.protocol_version or version or DEFAULT_VERSION
        if parsed.batch and negotiated != "2025-03-26":
            raise Refused(400, errors.INVALID_REQUEST,
                          f"JSON-RPC batches are not part of {negotiated}")
        # A tool call may run long: a 2025-11-25 client gets a resumable stream unless
        # its answer is ready within the window.
        resumable = negotiated >= RESUMABLE_FROM and parsed.has_request("tools/call")
        if any(i in streams.by_request for i in ids):
            earlier = streams.by_request.get(ids[0])
            if (earlier is not None and not earlier.attached
                    and earlier.messages == parsed.messages):
                # The same POST again while nobody reads its answer: a load balancer
                # resending it after the instance that relayed it died (README,
                # "Several instances"). It gets the answer of the one in flight.
                log.info("http session %s: request %r sent again; answered from its stream",
                         session.session_id, ids[0])
                return self._stream_reply(session, earlier, 0, priming=resumable)
            raise Refused(400, errors.INVALID_REQUEST, "a request with this id is in flight")
        stream = streams.open(ids, parsed.messages) if requests else None
        try:
            await self.front.submit(session, parsed.messages, hint=_HINT)
        except BaseException:  # refused, or the client left while waiting for room
            for request_id in ids:
                streams.abandon(request_id)
            raise
        if stream is None:
            await http.reply(202, b"", content_type=b"text/plain")
            return None
        window_s = self.front.gateway.config.gateway.answer_window_s if resumable else None
        kind, payload = await await_answer(session, stream, batch=parsed.batch, window_s=window_s)
        if kind == "json":
            return JsonReply(payload)
        if kind == "ended":
            raise Refused(404, errors.NOT_FOUND, "the session ended before answering",
                          reason="session")
        # An empty stream (its requests were cancelled) gets no id to resume from.
        return self._stream_reply(session, stream, 0, priming=resumable and kind == "sse")

    # -- GET ----------------------------------------------------------------------
    async def get(self, http: HttpRequest, project: str, server: str | None) -> Reply:
        target = await self.front.admit(http, project, server)
        self._refuse_stateless_method(http)
        if not _accepts(http.header("accept"), "text/event-stream"):
            raise Refused(406, errors.INVALID_REQUEST, "Accept must list text/event-stream")
        session = self._session(http, target)
        streams = outlet_of(session, StreamSet)
        last_event_id = http.header("last-event-id")
        if last_event_id:
            try:
                stream, after = streams.resolve(last_event_id)
                stream.pending_after(after, strict=True)
            except (KeyError, ValueError):
                raise Refused(404, errors.INVALID_REQUEST,
                              f"unknown Last-Event-ID {last_event_id!r}: that stream is gone",
                              reason="session") from None
            except EventsLost as exc:
                # From ``resumeFrom`` on everything is still kept (a response always is).
                raise Refused(409, errors.INVALID_REQUEST, str(exc),
                              data={"resumeFrom": exc.resume_from}) from None
            if stream.attached:
                raise Refused(409, errors.INVALID_REQUEST, "that stream is already being read")
            return self._stream_reply(session, stream, after, priming=False)
        standalone = streams.standalone
        if standalone.attached:
            raise Refused(409, errors.INVALID_REQUEST, "this session's stream is already open")
        return self._stream_reply(session, standalone, standalone.delivered, priming=False)

    # -- DELETE -------------------------------------------------------------------
    async def delete(self, http: HttpRequest, project: str, server: str | None) -> None:
        target = await self.front.admit(http, project, server)
        self._refuse_stateless_method(http)
        self._session(http, target).close("terminated by the client (DELETE)")
        await http.reply(200, b"", content_type=b"text/plain")
