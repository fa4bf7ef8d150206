"""The session actor: one client session, whatever transport carries it.

A session owns a nursery, a bounded inbox (messages the client POSTed) and a
bounded outbox (messages for the client's stream). It answers ``initialize``
and ``ping`` itself, forwards every other request to its server's upstream in
a task of its own nursery, and routes what comes back.

Rules a real client depends on:

* A request on a session that never sent ``initialize`` is served anyway: the
  TypeScript SDK's EventSource reconnects into a new session and does not
  initialize again (typescript-sdk#510).
* ``notifications/cancelled`` from the client cancels that request's task,
  which tells the upstream; no response is sent for it (spec: cancellation).
* A client that does not read its stream fills its outlet (``actors/outlet.py``);
  the session is then ended rather than buffering without bound. Under
  pressure the outlet drops notifications (counted), never a response.
* Backpressure, not refusal: at most ``MAX_IN_FLIGHT`` requests (fewer if the
  outlet says so, :attr:`~actors.outlet.Outlet.answer_limit`) are *unanswered*
  at once — running, or answered but still in the outlet's
  :attr:`~actors.outlet.Outlet.backlog` for a slow reader. Further requests
  wait their turn in order, up to ``MAX_WAITING`` of them; a batch the
  transport accepted enters the waiting room whole (``submit`` takes it as one
  item) whenever fewer than ``MAX_WAITING`` wait, so every request of it is
  served. Only a request arriving when the room is full is answered
  ``SESSION_BUSY``. The inbox keeps being read meanwhile, so
  ``notifications/cancelled`` still reaches a running or waiting request.
* When the session ends — the client went away, overflow, shutdown — its
  nursery is cancelled: every in-flight upstream request is cancelled
  upstream, every pending server→client request is refused, the outbox closes
  (ending the client's stream), and the session leaves its server.
"""

from __future__ import annotations

import collections
import enum
import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from config import ServerConfig
from upstream import errors, jsonrpc

from .context import REQUEST_ID, SESSION_ID
from .naming import ProjectSettings
from .outlet import Outlet
from .policy import Access
from .supervisor import ServerSupervisor
from .tracing import RequestTracer
from .upstream import GATEWAY_INFO, Upstream, UpstreamError

log = logging.getLogger(__name__)

#: Revisions a session can negotiate through ``initialize``, oldest first.
SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
#: The server name a project session reports (registry counts, views, metric labels).
PROJECT_SERVER = "*"
MAX_IN_FLIGHT = 128
INBOX_SIZE = 64
#: Requests accepted but waiting for room (beyond it, ``SESSION_BUSY``); a batch is
#: let in whole while fewer than this wait, so the room holds at most this plus one batch.
MAX_WAITING = 64
#: How long a request waits for a (re)starting upstream before it gets an error.
READY_WAIT_S = 5.0

#: What the inbox carries: one client message, or a batch (a tuple) accepted whole.
Inbound = jsonrpc.Message | tuple[jsonrpc.Message, ...]

#: Called once per finished request: (project, server, method, outcome, total_s, upstream_s).
RequestObserver = Callable[[str, str, str, str, float, "float | None"], None]

_OUTCOMES = {
    errors.REQUEST_TIMEOUT: "timeout",
    errors.UPSTREAM_UNAVAILABLE: "unavailable",
    errors.UPSTREAM_CLOSED: "unavailable",
    errors.SESSION_BUSY: "busy",
}


#: Log levels in increasing severity (RFC 5424 names, as MCP uses them).
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def negotiate_version(requested: Any) -> str:
    """The version to answer ``initialize`` with: the client's if supported, else the latest."""
    return requested if requested in SUPPORTED_VERSIONS else LATEST_VERSION


class Transport(enum.StrEnum):
    """How a session's client reaches the gateway (the value labels metrics and logs)."""

    LEGACY_SSE = "sse"
    STREAMABLE_HTTP = "http"
    STATELESS = "stateless"
    WEBSOCKET = "ws"
    #: The operator console's playground (``gateway/ops/console.py``).
    CONSOLE = "console"


@attrs.frozen
class SessionOptions:
    """Everything a session is opened with, decided by its transport before it starts."""

    project: str
    #: The server; ``None`` for a session spanning the whole project (``servers``).
    config: ServerConfig | None
    #: The server's shared supervisor, or ``None`` for ``isolation = "session"``
    #: (the session then starts a private upstream of its own).
    server: ServerSupervisor | None
    transport: Transport
    #: Hash of the API key that opened the session; revoking the key ends it.
    key_hash: str | None = None
    #: End the session after this long with nothing in flight and no reader attached.
    idle_timeout_s: float | None = None
    #: Known before the first request (2026-07-28 clients declare them per request).
    client_capabilities: Mapping[str, Any] | None = None
    #: Set when the revision is known without ``initialize`` (2026-07-28).
    protocol_version: str | None = None
    #: A project session (``actors/project.py``): every enabled server of the
    #: project, name → (config, shared supervisor or ``None`` for isolation = "session").
    servers: Mapping[str, tuple[ServerConfig, ServerSupervisor | None]] | None = None
    #: A project session's naming and list fan-out settings.
    project_settings: ProjectSettings | None = None
    #: A project session's tool policy, its key's allow list and prefix, and the
    #: project's concurrency gate (``actors/policy.py``); ``None``: no narrowing.
    access: Access | None = None

    @property
    def server_name(self) -> str:
        """The server's name, or ``*`` for a session spanning the project."""
        return self.config.name if self.config is not None else PROJECT_SERVER


@attrs.define(eq=False)
class Session:
    """A client session actor; the gateway holds it as a handle.

    Opened from :class:`SessionOptions` with an :class:`~actors.outlet.Outlet`
    (where its messages for the client go) by
    :meth:`~actors.registry.SessionRegistry.open`. Handle methods (``submit``,
    ``close``, ``deliver``) never block on the client and are safe to call
    from any task.
    """

    session_id: str
    options: SessionOptions
    outlet: Outlet
    observer: RequestObserver | None = None
    new_supervisor: Callable[[str, ServerConfig], ServerSupervisor] = ServerSupervisor
    #: Traces each request served (``actors/tracing.py``); ``None`` when tracing is off.
    tracer: RequestTracer | None = None
    server: ServerSupervisor | None = attrs.field(init=False)
    initialized: bool = attrs.field(init=False)
    protocol_version: str | None = attrs.field(init=False)
    client_info: dict[str, Any] | None = None
    #: Capabilities the client declared (``initialize``, or the options).
    client_capabilities: Mapping[str, Any] | None = attrs.field(init=False)
    close_reason: str = ""
    #: The session ended because its client did not keep up with its outlet.
    overflowed: bool = False
    closed: trio.Event = attrs.field(factory=trio.Event)
    _inbound_send: trio.MemorySendChannel[Inbound] = attrs.field(init=False)
    _inbound_recv: trio.MemoryReceiveChannel[Inbound] = attrs.field(init=False)
    _tasks: dict[jsonrpc.Id, trio.CancelScope] = attrs.field(factory=dict)
    #: Requests accepted and waiting for room, in arrival order (see the module doc).
    _waiting: collections.deque[jsonrpc.Message] = attrs.field(factory=collections.deque)
    _feeding: bool = False
    #: Set when room may have been made (a request ended, a reader took an answer).
    _room: trio.Event = attrs.field(factory=trio.Event)
    _server_requests: dict[str, tuple[Upstream, jsonrpc.Id]] = attrs.field(factory=dict)
    _server_ids: itertools.count = attrs.field(factory=lambda: itertools.count(1))
    _scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    #: When set, new requests are refused with this reason (the gateway is draining).
    refusing: str = ""
    _idle: trio.Event = attrs.field(factory=trio.Event)
    last_activity: float = 0.0
    #: When the session was opened (``trio.current_time()``), for its age in the console.
    opened_at: float = attrs.field(factory=trio.current_time)
    _upstream_started: bool = False
    _nursery: trio.Nursery | None = None

    def __attrs_post_init__(self) -> None:
        options = self.options
        self.server = options.server
        self.protocol_version = options.protocol_version
        # A revision known up front has no initialize handshake to wait for.
        self.initialized = options.protocol_version is not None
        self.client_capabilities = options.client_capabilities
        self._inbound_send, self._inbound_recv = trio.open_memory_channel(INBOX_SIZE)
        self.outlet.on_taken = self._made_room

    @property
    def project(self) -> str:
        return self.options.project

    @property
    def config(self) -> ServerConfig:
        assert self.options.config is not None, "a project session has no single server"
        return self.options.config

    @property
    def server_name(self) -> str:
        return self.options.server_name

    @property
    def transport(self) -> Transport:
        return self.options.transport

    @property
    def key_hash(self) -> str | None:
        return self.options.key_hash

    # -- handle ---------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def waiting(self) -> int:
        """Requests accepted and waiting for room to run."""
        return len(self._waiting)

    @property
    def notifications_dropped(self) -> int:
        """Notifications for the client its outlet dropped under pressure."""
        return self.outlet.dropped

    @property
    def closing(self) -> bool:
        """Closed, or asked to close (its actor may still be cleaning up)."""
        return self.closed.is_set() or self._scope.cancel_called

    @property
    def outbox_depth(self) -> int:
        return self.outlet.depth

    async def wait_idle(self) -> None:
        """Return once no request of this session is in flight or waiting."""
        while (self._tasks or self._waiting) and not self.closed.is_set():
            await self._idle.wait()  # set when the last request ends, and when the session ends

    def touch(self) -> None:
        """Note client activity (keeps an idle Streamable HTTP session alive)."""
        self.last_activity = trio.current_time()

    async def submit(self, message: Inbound, timeout_s: float = 5.0) -> bool:
        """Queue a client message, or a batch as a tuple (accepted whole: every
        request of it will be answered); ``False`` if the session is gone or stays full."""
        if self.closing:
            return False
        self.touch()
        try:
            # Room at once (the usual case): no timeout scope to set up per message.
            self._inbound_send.send_nowait(message)
            return True
        except trio.WouldBlock:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        with trio.move_on_after(timeout_s):
            try:
                await self._inbound_send.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False
            return True
        return False

    def close(self, reason: str, *, fail_in_flight: bool = False) -> None:
        """End the session; its actor cleans up everything it owned.

        With ``fail_in_flight`` every request still in flight is first answered
        with a JSON-RPC error carrying ``reason`` (its stream delivers what was
        queued before it ends), so a client learns why instead of waiting.
        """
        if fail_in_flight and not self.closing:
            for msg_id in [*self._tasks, *(m["id"] for m in self._waiting)]:
                self.deliver(jsonrpc.error_response(msg_id, errors.UPSTREAM_UNAVAILABLE, reason))
            self._waiting.clear()
        if not self.close_reason:
            self.close_reason = reason
        self._scope.cancel()

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None = None) -> None:
        """Queue a message for the client on its outlet; a client that is not keeping
        up ends the session rather than growing its queue.

        ``related`` names the request the message is about (Streamable HTTP puts
        it on that request's stream).
        """
        if self.closed.is_set():
            return
        if not self.outlet.deliver(message, related):
            self.overflowed = True
            log.warning("session %s: client is not reading its stream; ending it", self.session_id)
            self.close("the client did not read its stream (outbound queue full)")

    def deliver_server_request(self, upstream: Upstream, message: jsonrpc.Message) -> None:
        """Forward an upstream's request to the client under an id of this session."""
        out_id = f"mcp-orch-{next(self._server_ids)}"
        self._server_requests[out_id] = (upstream, message["id"])
        # Made while serving a request of ours: it belongs on that request's stream.
        related = next(iter(self._tasks)) if len(self._tasks) == 1 else None
        self.deliver({**message, "id": out_id}, related)

    def server_request_origin(self, out_id: str) -> jsonrpc.Id | None:
        """The upstream's own id of the server→client request forwarded as ``out_id``."""
        target = self._server_requests.get(out_id)
        return target[1] if target is not None else None

    async def ready_upstream(self) -> Upstream:
        """This session's upstream once it is serving (starting a private one if needed).

        Raises :class:`UpstreamError` when it does not come up in time.
        """
        private = not self._upstream_started
        self._start_private_upstream(dict(self.client_capabilities or {}))
        assert self.server is not None
        # A process started just now may take its time; a running one that is
        # down gets the same short wait as any forwarded request.
        timeout_s = self.config.request_timeout_s
        return await self.server.wait_ready(timeout_s if private else min(READY_WAIT_S, timeout_s))

    async def describe(self) -> dict[str, Any]:
        """What ``server/discover`` tells of this session's server(s): ``capabilities``,
        ``instructions`` and ``serverInfo``, as an ``initialize`` result has them.

        Raises :class:`UpstreamError` when the upstream does not come up in time.
        """
        return (await self.ready_upstream()).init_result

    async def tool_headers(self, name: str) -> dict[str, str]:
        """The ``Mcp-Param-`` headers (argument → suffix) tool ``name`` requires."""
        upstream = await self.ready_upstream()
        with trio.move_on_after(self.config.request_timeout_s):
            await upstream.tools_listed.wait()
        return upstream.tool_headers.get(name, {})

    async def subscribe(self, uri: str, request_id: str) -> bool:
        """Subscribe to ``uri`` for this session (``subscriptions/listen``); whether the
        server accepted."""
        upstream = await self.ready_upstream()
        reply = await upstream.subscribe(
            self, jsonrpc.request(request_id, "resources/subscribe", {"uri": uri}),
            self.config.request_timeout_s)
        return "result" in reply

    @property
    def server_info(self) -> dict[str, Any] | None:
        """The ``serverInfo`` of the server behind this session, once known."""
        upstream = self.server.upstream if self.server is not None else None
        return upstream.server_info if upstream is not None else None

    def close_after(self, delay_s: float, reason: str) -> trio.CancelScope:
        """Close the session in ``delay_s`` unless the returned scope is cancelled first."""
        scope = trio.CancelScope()

        async def timer() -> None:
            with scope:
                await trio.sleep(delay_s)
                self.close(reason)

        if self._nursery is not None and not self.closing:
            self._nursery.start_soon(timer)
        return scope

    # -- actor ----------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the session until it is closed or cancelled; ``started`` once attached."""
        try:
            if self._scope.cancel_called:  # closed before it ever ran
                task_status.started(self)
                return
            SESSION_ID.set(self.session_id)
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self._attach()
                    if self.options.idle_timeout_s is not None:
                        self.touch()
                        nursery.start_soon(self._expire_when_idle, self.options.idle_timeout_s)
                    task_status.started(self)
                    async with self._inbound_recv:
                        async for message in self._inbound_recv:
                            self._dispatch(message, nursery)
        finally:
            self.closed.set()
            self._idle.set()
            self.outlet.close()
            self._detach()
            self._inbound_send.close()
            if self._server_requests:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    for upstream, upstream_id in self._server_requests.values():
                        await upstream.respond(
                            upstream_id,
                            jsonrpc.error_response(
                                None, errors.INTERNAL_ERROR, "the client session ended"
                            ),
                        )
                self._server_requests.clear()
            log.debug("session %s ended: %s", self.session_id, self.close_reason or "closed")

    def _attach(self) -> None:
        """Join the server(s) this session talks to (a hook: project sessions join many)."""
        if self.server is None:
            # isolation = "session": a private upstream, started at the
            # first request so it can be told the client's capabilities.
            self.server = self.new_supervisor(self.project, self.config)
        else:
            self._upstream_started = True
        self.server.attach(self)

    def _detach(self) -> None:
        """Leave what :meth:`_attach` joined (the session is ending)."""
        if self.server is not None:
            self.server.detach(self)

    def _start_private_upstream(self, capabilities: dict[str, Any]) -> None:
        """Start a private upstream with the client's capabilities (a hook)."""
        if self._upstream_started or self.server is None or self._nursery is None:
            return
        self._upstream_started = True
        self.server.client_capabilities = capabilities
        self._nursery.start_soon(self.server.run)

    async def _expire_when_idle(self, timeout_s: float) -> None:
        while True:
            await trio.sleep_until(self.last_activity + timeout_s)
            busy = self._tasks or self._waiting or self.outlet.busy
            if busy:
                self.touch()
            elif trio.current_time() >= self.last_activity + timeout_s:
                self.close(f"idle for {timeout_s:g} s")
                return

    def _dispatch(self, item: Inbound, nursery: trio.Nursery) -> None:
        if isinstance(item, tuple):  # a batch: its requests are let in whole, or not at all
            admit = len(self._waiting) < MAX_WAITING
            for message in item:
                self._dispatch_one(message, nursery, admit)
        else:
            self._dispatch_one(item, nursery, len(self._waiting) < MAX_WAITING)

    def _has_room(self) -> bool:
        """Fewer requests unanswered than allowed: running, or answered and still
        waiting in the outlet for a reader."""
        limit = self.outlet.answer_limit
        limit = MAX_IN_FLIGHT if limit is None else min(limit, MAX_IN_FLIGHT)
        return len(self._tasks) + self.outlet.backlog < limit

    def _made_room(self) -> None:
        """Room may have been made: wake the feeder of waiting requests, if any."""
        self._room.set()

    def _busy(self) -> None:
        if not self._tasks and not self._waiting:
            self._idle = trio.Event()

    def _maybe_idle(self) -> None:
        if not self._tasks and not self._waiting:
            self._idle.set()

    async def _feed(self, nursery: trio.Nursery) -> None:
        """Start waiting requests, in order, as room is made."""
        try:
            while self._waiting:
                if self._has_room():
                    self._answer(self._waiting.popleft(), nursery)
                    self._maybe_idle()
                else:
                    self._room = trio.Event()
                    await self._room.wait()
        finally:
            self._feeding = False

    def _dispatch_one(self, message: jsonrpc.Message, nursery: trio.Nursery, admit: bool) -> None:
        if "method" in message:
            method = message["method"]
            if not self._upstream_started and "id" in message:
                params = message.get("params")
                caps = params.get("capabilities") if isinstance(params, dict) else None
                is_init = method == "initialize" and isinstance(caps, dict)
                self._start_private_upstream(
                    caps if is_init else dict(self.client_capabilities or {})
                )
            if "id" not in message:
                self._on_notification(method, message, nursery)
                return
            if not self._waiting and self._has_room():
                self._answer(message, nursery)
            elif admit:
                self._busy()
                self._waiting.append(message)
                if not self._feeding:
                    self._feeding = True
                    nursery.start_soon(self._feed, nursery)
            else:
                self.deliver(
                    jsonrpc.error_response(
                        message["id"],
                        errors.SESSION_BUSY,
                        f"too many requests unanswered on this session ({MAX_IN_FLIGHT} at "
                        f"most, {MAX_WAITING} more waiting); retry later",
                    )
                )
            return
        # A response to one of the upstream's requests.
        out_id = message.get("id")
        target = self._server_requests.pop(out_id, None) if isinstance(out_id, str) else None
        if target is None:
            log.debug("session %s: response to unknown id %r dropped", self.session_id, out_id)
            return
        upstream, upstream_id = target
        nursery.start_soon(upstream.respond, upstream_id, message)

    def _answer(self, message: jsonrpc.Message, nursery: trio.Nursery) -> None:
        """Answer a request there is room for: at once, or in a task of its own."""
        msg_id = message["id"]
        method = message["method"]
        if method == "ping":
            self.deliver(jsonrpc.result_response(msg_id, {}))
        elif msg_id in self._tasks:
            self.deliver(
                jsonrpc.error_response(
                    msg_id, errors.INVALID_REQUEST, f"request id {msg_id!r} is already in use"
                )
            )
        elif self.refusing and method != "initialize":
            self.deliver(
                jsonrpc.error_response(msg_id, errors.UPSTREAM_UNAVAILABLE, self.refusing)
            )
        else:
            scope = trio.CancelScope()
            self._busy()
            self._tasks[msg_id] = scope
            nursery.start_soon(self._serve_request, message, scope)

    def _on_notification(self, method: str, message: jsonrpc.Message, nursery: trio.Nursery) -> None:
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if method == "notifications/initialized":
            self.initialized = True
            return
        if method == "notifications/cancelled":
            request_id = params.get("requestId")
            scope = self._tasks.get(request_id) if request_id is not None else None
            if scope is not None:
                scope.cancel()
                return
            waiting = next((m for m in self._waiting if m["id"] == request_id), None)
            if waiting is not None:  # cancelled before it ran: it never will
                self._waiting.remove(waiting)
                self.outlet.abandon(request_id)
                self._maybe_idle()
                return
            target = (
                self._server_requests.pop(request_id, None) if isinstance(request_id, str) else None
            )
            if target is not None:  # the client withdrew its answer to an upstream request
                upstream, upstream_id = target
                forwarded = {**message, "params": {**params, "requestId": upstream_id}}
                nursery.start_soon(upstream.notify, forwarded)
            return
        self._notify_upstream(message, nursery)

    def _notify_upstream(self, message: jsonrpc.Message, nursery: trio.Nursery) -> None:
        """Forward a client notification upstream (a hook: project sessions tell all)."""
        upstream = self.server.upstream if self.server is not None else None
        if upstream is not None:
            nursery.start_soon(upstream.notify, message)

    async def _serve_request(self, message: jsonrpc.Message, scope: trio.CancelScope) -> None:
        msg_id = message["id"]
        method = message["method"]
        REQUEST_ID.set(f"{self.session_id[:8]}:{msg_id}")
        trace = self.tracer.start(self, message) if self.tracer is not None else None
        started = trio.current_time()
        timing: list[float] = []
        reply: jsonrpc.Message | None = None
        outcome = "cancelled"  # unless it finishes: the client's cancel, or the session ended
        try:
            with scope:
                if method == "initialize":
                    reply = await self._initialize(message)
                else:
                    reply = await self._forward(
                        message if trace is None else trace.forwarded(message), timing)
            if scope.cancelled_caught:
                self.outlet.abandon(msg_id)
            elif reply is not None and "error" in reply:
                outcome = _OUTCOMES.get(reply["error"].get("code"), "error")
            else:
                outcome = "ok"
        finally:
            self._tasks.pop(msg_id, None)
            self._maybe_idle()
            self._made_room()
            # Also when the session's own end cancels this task: every request is
            # observed and its span ended, cancelled ones included.
            if self.observer is not None:
                total = trio.current_time() - started
                self.observer(
                    self.project, self.server_name, method, outcome, total,
                    timing[0] if timing else None,
                )
            if trace is not None:
                trace.end(outcome, reply)
        if reply is not None and not scope.cancelled_caught:
            self.deliver(reply)

    async def _upstream(self) -> Upstream:
        assert self.server is not None
        return await self.server.wait_ready(min(READY_WAIT_S, self.config.request_timeout_s))

    async def _forward(self, message: jsonrpc.Message, timing: list[float]) -> jsonrpc.Message:
        try:
            upstream = await self._upstream()
        except UpstreamError as exc:
            return jsonrpc.error_response(message["id"], exc.code, str(exc))
        sent = trio.current_time()
        method = message["method"]
        timeout_s = self.config.request_timeout_s
        if method == "resources/subscribe":
            reply = await upstream.subscribe(self, message, timeout_s)
        elif method == "resources/unsubscribe":
            reply = await upstream.unsubscribe(self, message, timeout_s)
        else:
            reply = await upstream.call(self, message, timeout_s)
        timing.append(trio.current_time() - sent)
        return reply

    async def _initialize(self, message: jsonrpc.Message) -> jsonrpc.Message:
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        try:
            # A freshly started upstream may still be in its own handshake.
            assert self.server is not None
            upstream = await self.server.wait_ready(self.config.request_timeout_s)
        except UpstreamError as exc:
            return jsonrpc.error_response(message["id"], exc.code, str(exc))
        self.protocol_version = negotiate_version(params.get("protocolVersion"))
        client_info = params.get("clientInfo")
        self.client_info = client_info if isinstance(client_info, dict) else None
        upstream_init = upstream.init_result
        result: dict[str, Any] = {
            "protocolVersion": self.protocol_version,
            "capabilities": upstream_init.get("capabilities") or {},
            "serverInfo": upstream_init.get("serverInfo") or GATEWAY_INFO,
        }
        if upstream_init.get("instructions"):
            result["instructions"] = upstream_init["instructions"]
        return jsonrpc.result_response(message["id"], result)
