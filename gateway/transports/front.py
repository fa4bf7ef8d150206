"""The session front: the steps every transport takes, written once.

Each transport (legacy SSE, Streamable HTTP, stateless 2026-07-28, WebSocket)
turns its wire format into the same few steps, as Hypercorn's protocol classes
turn HTTP/1.1, HTTP/2 and HTTP/3 into the same events:

1. **admit** — Origin/Host policy, the project's auth rule, the server lookup
   (:meth:`Front.check_origin`, :meth:`Front.admit`);
2. **parse** — the bounded body, JSON, one message or a batch, JSON-RPC shape
   (:meth:`Front.body`, :func:`parse`);
3. **open or find a session** — from frozen :class:`~actors.session.SessionOptions`
   and the transport's outlet, refused while draining; found only by the
   transport, project, server and key that opened it (:meth:`Front.open_session`,
   :meth:`Front.find_session`);
4. **submit** — the messages into the session's inbox (:meth:`Front.submit`),
   counted first against the project's rate limits (``[projects.P.limits]``);
5. **pump** — frames back to the client (:meth:`gateway.http.asgi.HttpRequest.stream`,
   :func:`outbox_frames`);
6. **refuse** — any step may raise :class:`Refused`; each transport renders it
   in one place (:meth:`Front.refuse` for HTTP).

Error handling: every refusal is a :class:`Refused` carrying the HTTP status,
the JSON-RPC code (``upstream/errors.py``), the message, extra headers and the
metric reason; nothing matches on message text.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import attrs
import trio

from actors import Outbox, Outlet, Session, SessionOptions, Transport
from actors.naming import ProjectSettings
from actors.policy import Access, Limited
from actors.session import PROJECT_SERVER
from actors.supervisor import ServerSupervisor
from config import ServerConfig
from upstream import errors, jsonrpc
from upstream.errors import GatewayError

from ..core import Gateway
from ..http import sse
from ..http.asgi import BodyTooLarge, Headers, HttpRequest, header_list
from ..http.auth import bearer_token, check_project_access, key_fingerprint
from ..http.origin import OriginPolicy, check_request, cors_headers

log = logging.getLogger(__name__)
#: The HTTP request's ``traceparent`` header, kept (only when tracing is on) by
#: :meth:`Front.check_origin` for :meth:`Front.submit` to put in ``params._meta``.
_TRACEPARENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "client_traceparent", default=None)

#: How long a stream of a client that stopped reading may take to drain before its
#: connection is closed.
STALL_GRACE_S = 5.0


class Refused(GatewayError):
    """A request the gateway answers itself, with an error, instead of serving it.

    ``reason`` labels ``mcp_orch_rejected_requests``; ``msg_id`` is the id of
    the request refused, when there is one to echo.
    """

    def __init__(
        self, status: int, code: int, message: str, *, headers: Headers | None = None,
        data: Any = None, reason: str = "invalid", msg_id: jsonrpc.Id | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, data=data)
        self.headers: Headers = headers or []
        self.reason = reason
        self.msg_id = msg_id

    def body(self) -> bytes:
        """The JSON-RPC error response carrying this refusal."""
        return jsonrpc.dumps(jsonrpc.error_response(self.msg_id, self.code, self.message,
                                                    self.data))


#: Requests no rate limit counts: the handshake and liveness checks.
UNCOUNTED = frozenset({"initialize", "ping"})


def key_prefix(authorization: str | None) -> str | None:
    """The shown prefix of the bearer key (what ``keys list`` and audit rows name)."""
    key = bearer_token(authorization)
    return key[:12] if key is not None else None


def rate_limited_message(limited: Limited) -> str:
    what = {"key": "this API key's", "project": "the project's"}.get(limited.scope,
                                                                    limited.scope)
    return f"rate limited: over {what} request rate; retry in {limited.retry_after_ms} ms"


def not_found(message: str) -> Refused:
    return Refused(404, errors.NOT_FOUND, message, reason="session")


def draining() -> Refused:
    return Refused(503, errors.SHUTTING_DOWN, "the gateway is shutting down",
                   headers=[(b"retry-after", b"5")], reason="draining")


@attrs.frozen
class JsonReply:
    """An answer that is one JSON-RPC message in a JSON body."""

    message: jsonrpc.Message
    status: int = 200
    headers: Headers = attrs.field(factory=list)


@attrs.frozen
class StreamReply:
    """An answer that is an SSE stream of ``frames``.

    ``on_close`` runs once the answer is over, however it ended — also when the
    client left before the first frame, when ``frames`` never started and so
    never ran its own ``finally``.
    """

    frames: AsyncIterator[bytes]
    headers: Headers = attrs.field(factory=list)
    on_close: Callable[[], None] | None = None


Reply = JsonReply | StreamReply
_STREAM_HEADERS = header_list(sse.STREAM_HEADERS)


async def send_reply(http: HttpRequest, reply: Reply) -> None:
    """Send a :data:`Reply` over HTTP (a stream until it ends or the client leaves)."""
    if isinstance(reply, JsonReply):
        await http.reply(reply.status, jsonrpc.dumps(reply.message), reply.headers)
        return
    try:
        await http.stream(reply.frames, [*_STREAM_HEADERS, *reply.headers])
    finally:
        if reply.on_close is not None:
            reply.on_close()


OutletT = TypeVar("OutletT")


def outlet_of(session: Session, kind: type[OutletT]) -> OutletT:
    """The session's outlet, which its transport made of ``kind``."""
    outlet = session.outlet
    assert isinstance(outlet, kind)
    return outlet


@attrs.frozen
class Target:
    """An admitted request's server: its project, config, shared supervisor (``None``
    for ``isolation = "session"``) and the hash of the key that was checked.

    A request to the project endpoint (:meth:`Front.admit_project`) has no
    ``config``; its ``servers`` are the project's enabled servers, name →
    (config, shared supervisor or ``None``), and ``settings`` their naming rule.
    """

    project: str
    config: ServerConfig | None
    supervisor: ServerSupervisor | None
    key_hash: str | None
    servers: Mapping[str, tuple[ServerConfig, ServerSupervisor | None]] | None = None
    settings: ProjectSettings | None = None
    #: The project endpoint's tool policy, the key's allow list and prefix, the gate.
    access: Access | None = None

    @property
    def server_name(self) -> str:
        """The server's name; ``*`` for the whole project (as its sessions report)."""
        return self.config.name if self.config is not None else PROJECT_SERVER

    @property
    def base_path(self) -> str:
        """The path the transports' endpoints hang off (``…/sse``, ``…/messages``)."""
        if self.config is None:
            return f"/projects/{self.project}"
        return f"/projects/{self.project}/servers/{self.config.name}"

    @property
    def request_timeout_s(self) -> float:
        """How long one request may take: the server's, or the longest of the project's."""
        if self.config is not None:
            return self.config.request_timeout_s
        return max((c.request_timeout_s for c, _ in (self.servers or {}).values()),
                   default=60.0)

    def options(self, transport: Transport, **more: Any) -> SessionOptions:
        """The options of a new session for this target."""
        return SessionOptions(self.project, self.config, self.supervisor, transport,
                              key_hash=self.key_hash, servers=self.servers,
                              project_settings=self.settings, access=self.access, **more)


@attrs.frozen
class Parsed:
    """A parsed, validated body: one message, or a batch of them."""

    messages: tuple[jsonrpc.Message, ...]
    kinds: tuple[jsonrpc.Kind, ...]
    batch: bool

    @property
    def requests(self) -> list[jsonrpc.Message]:
        return [m for m, k in zip(self.messages, self.kinds, strict=True) if k == "request"]

    def has_request(self, method: str) -> bool:
        return any(m["method"] == method for m in self.requests)

    @property
    def single(self) -> jsonrpc.Message:
        return self.messages[0]


def parse_json(body: bytes | str) -> Any:
    """JSON text, or :class:`Refused` ``400`` / ``-32700``."""
    try:
        return jsonrpc.loads(body)
    except jsonrpc.InvalidMessage as exc:
        raise Refused(400, errors.PARSE_ERROR, f"parse error: {exc}") from None


def validate(parsed: Any) -> Parsed:
    """Classify parsed JSON as one message or a batch; :class:`Refused` ``400`` /
    ``-32600`` naming the defect (an empty batch, a malformed message)."""
    batch = isinstance(parsed, list)
    messages = tuple(parsed) if batch else (parsed,)
    if not messages:
        raise Refused(400, errors.INVALID_REQUEST, "empty batch")
    try:
        kinds = tuple(jsonrpc.classify(m) for m in messages)
    except jsonrpc.InvalidMessage as exc:
        raise Refused(400, errors.INVALID_REQUEST, f"invalid JSON-RPC message: {exc}") from None
    return Parsed(messages, kinds, batch)


def parse(body: bytes | str) -> Parsed:
    """:func:`parse_json` then :func:`validate`."""
    return validate(parse_json(body))


async def outbox_frames(
    gateway: Gateway, outbox: Outbox, first: bytes, label: str
) -> AsyncIterator[bytes]:
    """SSE frames of a single-reader outbox: ``first``, then every message as
    ``event: message`` and a keep-alive comment whenever the heartbeat asks."""
    frames = gateway.metrics.stream_frames.labels(label)
    sent_bytes = gateway.metrics.stream_bytes.labels(label)
    yield first
    with gateway.heartbeat.watch(outbox.nudge) as beat:
        async for message in outbox.recv:
            if message is None:  # the heartbeat's nudge
                frame = sse.KEEPALIVE
            else:
                frame = sse.event(jsonrpc.dumps(message), name="message")
                frames.inc()
                sent_bytes.inc(len(frame))
            yield frame
            beat.sent()


@attrs.define(eq=False)
class Front:
    """The shared steps, bound to one gateway and its Origin policy."""

    gateway: Gateway
    policy: OriginPolicy

    # -- admit ------------------------------------------------------------------
    def check_origin(self, http: HttpRequest) -> None:
        """Origin/Host policy; on success every answer to ``http`` carries CORS headers."""
        origin = http.header("origin")
        refusal = check_request(self.policy, http.header("host"), origin)
        if refusal is not None:
            raise Refused(refusal.status, errors.INVALID_REQUEST, refusal.message,
                          reason=refusal.reason)
        if origin is not None:
            http.extra = header_list(cors_headers(origin))
        if self.gateway.telemetry is not None:
            _TRACEPARENT.set(http.header("traceparent"))

    async def admit(
        self, http: HttpRequest, project: str, server: str | None, *,
        authorization: str | None = None,
    ) -> Target:
        """Origin, auth and server lookup for a request to ``project``/``server``
        (``server`` ``None``: the project endpoint, :meth:`admit_project`).

        ``authorization`` overrides the ``Authorization`` header (a WebSocket
        client offers its key as a subprotocol).
        """
        if server is None:
            return await self.admit_project(http, project, authorization=authorization)
        key_hash = await self._check_access(http, project, authorization)
        await self._refuse_if_narrowed(project, key_hash)
        found = self.gateway.server(project, server)
        if found is None:
            raise Refused(404, errors.NOT_FOUND, f"no server {server!r} in project {project!r}",
                          reason="route")
        config, supervisor = found
        return Target(project, config, supervisor, key_hash)

    async def _refuse_if_narrowed(self, project: str, key_hash: str | None) -> None:
        """A per-server route serves its server raw, past the project's tool policy and
        the key's allow list; so it is closed (``403``) to a key with an allow list and
        to every key of a project with a tool policy — they use the project endpoint."""
        proj = self.gateway.project(project)
        policy = proj.policy if proj is not None else None
        if policy is not None and (policy.allow is not None or policy.deny or policy.read_only):
            why = f"project {project!r} has a tool policy"
        elif await self.gateway.key_allow(key_hash):
            why = "this API key is narrowed to some tools"
        else:
            return
        raise Refused(403, errors.POLICY_RESTRICTED,
                      f"{why}, which only the project endpoint applies: use "
                      f"/projects/{project}/mcp (or /sse, /ws)", reason="policy")

    async def admit_project(
        self, http: HttpRequest, project: str, *, authorization: str | None = None,
    ) -> Target:
        """Origin and auth for a request to the project endpoint: a target whose
        sessions span the project's enabled servers (``actors/project.py``), with
        the project's tool policy, the key's ``allow`` list and prefix (for log
        lines) and the project's concurrency gate (``actors/policy.py``)."""
        if authorization is None:
            authorization = http.header("authorization")
        key_hash = await self._check_access(http, project, authorization)
        servers = self.gateway.project_servers(project)
        proj = self.gateway.project(project)
        if servers is None or proj is None:
            raise Refused(404, errors.NOT_FOUND, f"no project {project!r}", reason="route")
        settings = self.gateway.config.gateway
        access = Access(proj.policy, await self.gateway.key_allow(key_hash),
                        key_prefix(authorization) if key_hash is not None else None,
                        self.gateway.gate(project))
        return Target(project, None, None, key_hash, servers=servers, settings=ProjectSettings(
            settings.tool_separator, settings.max_tool_name, settings.list_timeout_s),
            access=access)

    async def _check_access(
        self, http: HttpRequest, project: str, authorization: str | None,
    ) -> str | None:
        """Origin and the project's auth rule; the hash of the key the sessions are bound to."""
        self.check_origin(http)
        if authorization is None:
            authorization = http.header("authorization")
        denied = await check_project_access(self.gateway, project, authorization)
        if denied is not None:
            raise Refused(denied.status,
                          errors.UNAUTHORIZED if denied.status == 401 else errors.NOT_FOUND,
                          denied.message, headers=header_list(denied.headers), reason="auth")
        settings = self.gateway.project(project)
        keyed = settings is not None and settings.auth != "none"
        return key_fingerprint(authorization) if keyed else None

    # -- parse ------------------------------------------------------------------
    async def body(self, http: HttpRequest) -> bytes:
        """The request body, at most ``max_body_bytes`` (else ``413``).

        Error handling: :class:`~gateway.http.asgi.ClientGone` passes through.
        """
        try:
            return await http.read_body(self.gateway.config.gateway.max_body_bytes)
        except BodyTooLarge as exc:
            # The rest of the body stays unread, so the connection cannot carry another
            # request: say so, or a client reusing it meets a closed socket.
            raise Refused(413, errors.INVALID_REQUEST, str(exc), reason="size",
                          headers=[(b"connection", b"close")]) from None

    # -- sessions -----------------------------------------------------------------
    async def open_session(self, options: SessionOptions, outlet: Outlet) -> Session:
        """A new running session; ``503`` while the gateway drains.

        The outlet's notifications dropped under pressure are counted in
        ``mcp_orch_notifications_dropped_total{transport}``; a single-reader
        outbox gets ``gateway.reader_stall_s``.
        """
        if self.gateway.draining:
            raise draining()
        outlet.on_drop = self.gateway.metrics.notifications_dropped.labels(
            options.transport.value).inc
        if isinstance(outlet, Outbox):
            outlet.stall_s = self.gateway.config.gateway.reader_stall_s
        return await self.gateway.registry.open(options, outlet)

    def find_session(self, session_id: str, target: Target, transport: Transport) -> Session:
        """The live session ``session_id`` of this transport, server and key; anything
        else is ``404``, as for a session that never existed."""
        session = self.gateway.registry.get(session_id) if session_id else None
        if (
            session is None
            or session.transport is not transport
            or session.project != target.project
            or session.server_name != target.server_name
            or session.key_hash != target.key_hash
        ):
            hint = ("open a new SSE stream" if transport is Transport.LEGACY_SSE
                    else "initialize again")
            raise not_found(f"unknown or ended session; {hint}")
        return session

    async def submit(
        self, session: Session, messages: tuple[jsonrpc.Message, ...] | list[jsonrpc.Message],
        *, hint: str,
    ) -> None:
        """Queue client messages on the session, in order; several (a batch) go in
        as one item, so the session takes all of them or none and answers every
        request of it (``actors/session.py``).

        Error handling: ``400`` for a batch of more than ``gateway.max_batch``
        messages (nothing is queued; ``reason="batch"``); ``404`` when the
        session ended meanwhile (``hint`` says what the client should do),
        ``503`` with ``Retry-After`` when its inbox stays full — in every case
        nothing of the body was queued.
        """
        messages = await self._rate_limit(session, messages)
        if not messages:
            return
        limit = self.gateway.config.gateway.max_batch
        if len(messages) > limit:
            raise Refused(400, errors.INVALID_REQUEST,
                          f"a batch of {len(messages)} messages is over the limit of {limit} "
                          "(gateway.max_batch); send it in smaller batches", reason="batch")
        traceparent = _TRACEPARENT.get()
        if traceparent is not None:
            messages = [_with_traceparent(m, traceparent) if "id" in m and "method" in m else m
                        for m in messages]
        item = messages[0] if len(messages) == 1 else tuple(messages)
        if not await session.submit(item):
            if session.closing:
                raise not_found(f"the session ended; {hint}")
            raise Refused(503, errors.SESSION_BUSY, "session inbox full; retry",
                          headers=[(b"retry-after", b"1")], reason="busy")

    async def _rate_limit(
        self, session: Session, messages: tuple[jsonrpc.Message, ...] | list[jsonrpc.Message],
    ) -> tuple[jsonrpc.Message, ...] | list[jsonrpc.Message]:
        """Count the requests of ``messages`` (not ``initialize`` or ``ping``) against the
        project's rate limits, for the session's key (``Gateway.check_rate``).

        Error handling: over a limit, where the answer is the POST's (Streamable
        HTTP) :class:`Refused` ``429`` with ``Retry-After`` and ``RATE_LIMITED``
        (``data.retryAfterMs``), nothing of the body queued; where answers
        travel on a stream (legacy SSE, WebSocket) each counted request gets
        that error on the stream instead and the rest of the body is returned
        to be queued. Every refusal is a log line naming the key by prefix.
        """
        counted = [m for m in messages
                   if "id" in m and "method" in m and m["method"] not in UNCOUNTED]
        if not counted:
            return messages
        limited = await self.gateway.check_rate(session.project, session.key_hash,
                                                len(counted))
        if limited is None:
            return messages
        access = getattr(session, "access", None)
        who = access.who if isinstance(access, Access) else (
            "a key" if session.key_hash else "no key")
        log.info("session %s (%s): %d request(s) to %s refused: over the %s rate limit "
                 "(retry in %d ms)", session.session_id, who, len(counted), session.project,
                 limited.scope, limited.retry_after_ms)
        if limited.too_big:
            # No retry would pass: say so instead of a retry hint that lies.
            raise Refused(429, errors.RATE_LIMITED,
                          f"{len(counted)} requests at once are more than the "
                          f"{limited.scope} rate limit's burst: send fewer at a time",
                          data={"scope": limited.scope, "retryable": False}, reason="rate")
        text = rate_limited_message(limited)
        data = {"retryAfterMs": limited.retry_after_ms, "scope": limited.scope}
        if session.options.transport in (Transport.LEGACY_SSE, Transport.WEBSOCKET):
            for message in counted:
                session.deliver(jsonrpc.error_response(message["id"], errors.RATE_LIMITED,
                                                       text, data))
            return [m for m in messages if m not in counted]
        retry_after = str(max(1, -(-limited.retry_after_ms // 1000))).encode()
        raise Refused(429, errors.RATE_LIMITED, text, data=data,
                      headers=[(b"retry-after", retry_after)], reason="rate",
                      msg_id=counted[0]["id"] if len(messages) == 1 else None)

    async def cut_if_stalled(self, http: HttpRequest, session: Session) -> None:
        """Run beside a single-reader stream: once the session has ended because its
        client did not read, give the stream :data:`STALL_GRACE_S` to send what was
        queued (and its close), then close the connection — the socket a client
        does not read is not held."""
        await session.closed.wait()
        if not session.overflowed:
            return
        await trio.sleep(STALL_GRACE_S)
        connections = self.gateway.connections
        if connections is not None and await connections.abort(http.scope.get("client")):
            log.info("session %s: closed the connection of a client that did not read",
                     session.session_id)

    # -- refuse -------------------------------------------------------------------
    async def refuse(self, http: HttpRequest, exc: Refused) -> None:
        """Answer ``http`` with ``exc`` as an HTTP error whose body is a JSON-RPC error."""
        self.gateway.metrics.rejected.labels(exc.reason).inc()
        await http.reply(exc.status, exc.body(), exc.headers)

def _with_traceparent(message: jsonrpc.Message, traceparent: str) -> jsonrpc.Message:
    """``message`` carrying the HTTP header's ``traceparent`` in ``params._meta``
    (one already there wins)."""
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = meta if isinstance(meta, dict) else {}
    if "traceparent" in meta:
        return message
    return {**message, "params": {**params, "_meta": {**meta, "traceparent": traceparent}}}
