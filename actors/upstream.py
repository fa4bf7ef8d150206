"""The upstream actor: one running MCP server process shared by many sessions.

It performs the ``initialize`` handshake once and keeps the result, then
multiplexes client requests onto the process. Every request forwarded gets a
gateway-unique integer id (and any ``progressToken`` a gateway-unique token),
so requests of different sessions never collide; responses and progress
notifications are routed back by those and restored to the client's original
id and token, keeping their JSON type (``"1"`` stays a string).

Routing of what the upstream sends on its own:

* responses → the waiting request (unknown ids are logged and dropped);
* ``notifications/progress`` → the session whose request owns the token, and
  that request's deadline is extended (long calls that report progress live);
* ``notifications/cancelled`` → the session that holds the upstream's request;
* ``notifications/resources/updated`` → the sessions subscribed to that URI;
* other notifications (``list_changed``, ``message``) → every attached session;
* requests (``sampling/createMessage``, ``roots/list``, ``elicitation/create``)
  → the one attached session with a request in flight on this upstream. When
  zero or several sessions qualify the request is ambiguous, and the upstream
  gets a JSON-RPC error instead of a guess.

Subscriptions are shared: the first session to subscribe to a URI sends
``resources/subscribe`` upstream, later ones are recorded by the gateway, and
``resources/unsubscribe`` goes upstream only when the last subscriber leaves
(or its session ends). The record outlives a restart, and a restarted
process is subscribed again.

Resource handling: :func:`open_upstream` owns the process and the actor's
tasks; leaving its block stops both. Requests still waiting when the process
dies are answered at once with a JSON-RPC error, never left hanging.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import attrs
import trio

from upstream import errors, jsonrpc
from upstream.errors import GatewayError
from upstream.link import Link
from upstream.stdio import UpstreamProtocolError

log = logging.getLogger(__name__)

#: The revision the gateway speaks to upstreams; a server that does not know it
#: answers with one it supports (spec: lifecycle, version negotiation).
UPSTREAM_PROTOCOL_VERSION = "2025-11-25"
GATEWAY_INFO = {"name": "mcp-orch", "version": "0.1.0"}
WRITER_QUEUE = 64


class UpstreamError(GatewayError):
    """A request could not be served by the upstream; ``code`` is the JSON-RPC error code
    (HTTP 503 where a transport answers in HTTP)."""

    status = 503

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message, code=code)


class SessionPeer(Protocol):
    """What an upstream needs of a client session: a way to deliver messages to it."""

    session_id: str

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None = None) -> None:
        """Queue a message for the client without blocking (the session decides on overflow).

        ``related`` is the client's id of the request the message belongs to, if known.
        """

    def deliver_server_request(self, upstream: Upstream, message: jsonrpc.Message) -> None:
        """Forward a server→client request; the session answers via ``Upstream.respond``."""


@attrs.define(eq=False)
class _Pending:
    session: SessionPeer
    client_id: jsonrpc.Id
    reply_send: trio.MemorySendChannel[jsonrpc.Message]
    progress_token: Any = None
    scope: trio.CancelScope | None = None
    timeout_s: float = 0.0


@attrs.define(eq=False)
class Upstream:
    """Handle to one initialized upstream process; methods are safe from any task."""

    name: str
    link: Link
    _writer_send: trio.MemorySendChannel[jsonrpc.Message]
    init_result: dict[str, Any] = attrs.field(factory=dict)
    sessions: dict[str, SessionPeer] = attrs.field(factory=dict)
    _pending: dict[int, _Pending] = attrs.field(factory=dict)
    _by_token: dict[int, int] = attrs.field(factory=dict)
    _ids: itertools.count = attrs.field(factory=lambda: itertools.count(1))
    closed: trio.Event = attrs.field(factory=trio.Event)
    close_reason: str = ""
    #: Number of tools the upstream lists (``None`` until known); kept fresh on list_changed.
    tools_count: int | None = None
    #: Tool name → {argument: ``Mcp-Param-`` header suffix} for arguments marked ``x-mcp-header``.
    tool_headers: dict[str, dict[str, str]] = attrs.field(factory=dict)
    #: Set once the first tools listing finished (or failed).
    tools_listed: trio.Event = attrs.field(factory=trio.Event)
    #: Resource URI → ids of the sessions subscribed to it (shared with the supervisor).
    subscriptions: dict[str, set[str]] = attrs.field(factory=dict)
    _nursery: trio.Nursery | None = None

    @property
    def pid(self) -> int | None:
        return self.link.pid

    @property
    def queue_depth(self) -> int:
        return self._writer_send.statistics().current_buffer_used

    @property
    def protocol_version(self) -> str | None:
        return self.init_result.get("protocolVersion")

    @property
    def server_info(self) -> dict[str, Any] | None:
        return self.init_result.get("serverInfo")

    async def request_internal(self, method: str, params: dict[str, Any] | None, timeout_s: float) -> jsonrpc.Message:
        """A request of the gateway's own (no client session behind it)."""
        reply_send, reply_recv = trio.open_memory_channel[jsonrpc.Message](1)
        gid = next(self._ids)
        self._pending[gid] = _Pending(_NoSession(), gid, reply_send)
        try:
            with trio.fail_after(timeout_s):
                await self._writer_send.send(jsonrpc.request(gid, method, params))
                return await reply_recv.receive()
        finally:
            self._pending.pop(gid, None)

    async def refresh_tools(self, timeout_s: float = 10.0) -> None:
        """List the upstream's tools (following pagination): their count for ``/status``
        and which arguments travel in ``Mcp-Param-*`` headers (``x-mcp-header``)."""
        try:
            if "tools" not in (self.init_result.get("capabilities") or {}):
                return
            count, cursor = 0, None
            headers: dict[str, dict[str, str]] = {}
            try:
                for _ in range(100):
                    reply = await self.request_internal(
                        "tools/list", {"cursor": cursor} if cursor else None, timeout_s
                    )
                    result = reply.get("result")
                    if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
                        return
                    count += len(result["tools"])
                    for tool in result["tools"]:
                        if isinstance(tool, dict) and (found := _header_params(tool)):
                            headers[str(tool.get("name"))] = found
                    cursor = result.get("nextCursor")
                    if not cursor:
                        break
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self.tools_count = count
            self.tool_headers = headers
        finally:
            self.tools_listed.set()

    @property
    def in_flight(self) -> int:
        """Client requests waiting for this upstream; the gateway's own (the tools
        listing after every start) are not counted."""
        return sum(1 for p in self._pending.values() if not isinstance(p.session, _NoSession))

    # -- sessions -----------------------------------------------------------
    def attach(self, session: SessionPeer) -> None:
        self.sessions[session.session_id] = session

    def detach(self, session: SessionPeer) -> None:
        self.sessions.pop(session.session_id, None)

    # -- client → upstream ----------------------------------------------------
    async def call(
        self, session: SessionPeer, message: jsonrpc.Message, timeout_s: float
    ) -> jsonrpc.Message:
        """Forward a client request and return the response with the client's id.

        Error handling: an upstream that dies, a timeout, or a closed upstream
        become JSON-RPC error responses. Cancellation (the client cancelled, or
        its session ended) sends ``notifications/cancelled`` upstream and
        re-raises.
        """
        client_id = message["id"]
        if self.closed.is_set():
            return jsonrpc.error_response(client_id, errors.UPSTREAM_CLOSED, self.close_reason)
        gid = next(self._ids)
        reply_send, reply_recv = trio.open_memory_channel[jsonrpc.Message](1)
        pending = _Pending(session, client_id, reply_send, timeout_s=timeout_s)
        outgoing = dict(message)
        outgoing["id"] = gid
        params = message.get("params")
        if isinstance(params, dict):
            meta = params.get("_meta")
            if isinstance(meta, dict) and "progressToken" in meta:
                pending.progress_token = meta["progressToken"]
                outgoing["params"] = {**params, "_meta": {**meta, "progressToken": gid}}
                self._by_token[gid] = gid
        self._pending[gid] = pending
        answered = False
        try:
            with trio.move_on_after(timeout_s) as scope:
                pending.scope = scope
                await self._writer_send.send(outgoing)
                reply = await reply_recv.receive()
                answered = True
                reply["id"] = client_id
                return reply
            answered = True  # timed out: we answer the client ourselves
            await self._cancel_upstream(gid, f"timed out after {timeout_s:g} s")
            return jsonrpc.error_response(
                client_id,
                errors.REQUEST_TIMEOUT,
                f"upstream '{self.name}' did not answer {message.get('method')!r} "
                f"within {timeout_s:g} s",
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.EndOfChannel):
            answered = True
            return jsonrpc.error_response(
                client_id, errors.UPSTREAM_CLOSED, self.close_reason or "upstream closed"
            )
        finally:
            self._pending.pop(gid, None)
            self._by_token.pop(gid, None)
            if not answered and not self.closed.is_set():
                # Cancelled from outside: tell the upstream, shielded and bounded.
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await self._cancel_upstream(gid, "cancelled by the client")

    async def subscribe(
        self, session: SessionPeer, message: jsonrpc.Message, timeout_s: float
    ) -> jsonrpc.Message:
        """``resources/subscribe``: sent upstream only for the URI's first subscriber."""
        uri = _uri_of(message)
        holders = self.subscriptions.get(uri) if uri is not None else None
        if holders:
            holders.add(session.session_id)
            return jsonrpc.result_response(message["id"], {})
        reply = await self.call(session, message, timeout_s)
        if uri is not None and "result" in reply:
            self.subscriptions.setdefault(uri, set()).add(session.session_id)
        return reply

    async def unsubscribe(
        self, session: SessionPeer, message: jsonrpc.Message, timeout_s: float
    ) -> jsonrpc.Message:
        """``resources/unsubscribe``: sent upstream only when the last subscriber leaves."""
        uri = _uri_of(message)
        holders = self.subscriptions.get(uri) if uri is not None else None
        if holders is None or session.session_id not in holders:
            return await self.call(session, message, timeout_s)
        holders.discard(session.session_id)
        if holders:
            return jsonrpc.result_response(message["id"], {})
        del self.subscriptions[uri]  # type: ignore[arg-type]
        return await self.call(session, message, timeout_s)

    def drop_subscriber(self, session_id: str) -> None:
        """A session ended: forget its subscriptions; unsubscribe URIs nobody holds now."""
        for uri, holders in list(self.subscriptions.items()):
            holders.discard(session_id)
            if not holders:
                del self.subscriptions[uri]
                if self._nursery is not None and not self.closed.is_set():
                    self._nursery.start_soon(self._unsubscribe_quietly, uri)

    async def _unsubscribe_quietly(self, uri: str) -> None:
        with contextlib.suppress(trio.TooSlowError, trio.BrokenResourceError,
                                 trio.ClosedResourceError):
            await self.request_internal("resources/unsubscribe", {"uri": uri}, 10.0)

    async def _resubscribe(self) -> None:
        for uri in list(self.subscriptions):
            with contextlib.suppress(trio.TooSlowError, trio.BrokenResourceError,
                                     trio.ClosedResourceError):
                await self.request_internal("resources/subscribe", {"uri": uri}, 10.0)

    async def _cancel_upstream(self, gid: int, reason: str) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._writer_send.send(
                jsonrpc.notification(
                    "notifications/cancelled", {"requestId": gid, "reason": reason}
                )
            )

    async def notify(self, message: jsonrpc.Message) -> None:
        """Forward a client notification (``roots/list_changed`` and the like)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._writer_send.send(message)

    async def respond(self, upstream_id: jsonrpc.Id, reply: jsonrpc.Message) -> None:
        """Answer a server→client request with the result or error a client gave."""
        outgoing = dict(reply)
        outgoing["id"] = upstream_id
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._writer_send.send(outgoing)

    # -- upstream → client ----------------------------------------------------
    def _dispatch(self, message: jsonrpc.Message) -> None:
        try:
            kind = jsonrpc.classify(message)
        except jsonrpc.InvalidMessage as exc:
            log.warning("upstream %s sent an invalid message (%s); dropped", self.name, exc)
            return
        if kind == "response":
            self._route_response(message)
        elif kind == "notification":
            self._route_notification(message)
        else:
            self._route_request(message)

    def _route_response(self, message: jsonrpc.Message) -> None:
        msg_id = message.get("id")
        pending = self._pending.get(msg_id) if isinstance(msg_id, int) else None
        if pending is None and isinstance(msg_id, str) and msg_id.isdigit():
            pending = self._pending.get(int(msg_id))  # servers that stringify ids
        if pending is None:
            log.debug("upstream %s answered unknown id %r; dropped", self.name, msg_id)
            return
        with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
            pending.reply_send.send_nowait(message)

    def _route_notification(self, message: jsonrpc.Message) -> None:
        method = message["method"]
        params = message.get("params") or {}
        if method == "notifications/progress" and isinstance(params, dict):
            token = params.get("progressToken")
            gid = self._by_token.get(token) if isinstance(token, int) else None
            pending = self._pending.get(gid) if gid is not None else None
            if pending is None:
                return
            if pending.scope is not None and pending.timeout_s:
                pending.scope.deadline = trio.current_time() + pending.timeout_s
            pending.session.deliver(
                {**message, "params": {**params, "progressToken": pending.progress_token}},
                pending.client_id,
            )
            return
        if method == "notifications/cancelled":
            # The upstream withdrew one of its own requests: tell whoever holds it.
            for session in list(self.sessions.values()):
                session.deliver(message)
            return
        if method == "notifications/resources/updated" and isinstance(params, dict):
            holders = self.subscriptions.get(params.get("uri"), ())  # type: ignore[arg-type]
            for session_id in list(holders):
                session = self.sessions.get(session_id)
                if session is not None:
                    session.deliver(message)
            return
        if method == "notifications/tools/list_changed" and self._nursery is not None:
            self._nursery.start_soon(self.refresh_tools)
        for session in list(self.sessions.values()):
            session.deliver(message)

    def _route_request(self, message: jsonrpc.Message) -> None:
        # The gateway's own requests (tools count, resubscribe) have no client to ask.
        owners = {
            p.session.session_id: p.session
            for p in self._pending.values()
            if not isinstance(p.session, _NoSession)
        }
        if len(owners) == 1:
            (session,) = owners.values()
            if session.session_id in self.sessions:
                session.deliver_server_request(self, message)
                return
        reason = (
            "no client session has a request in flight on this upstream"
            if not owners
            else "several client sessions share this upstream; the request is ambiguous "
            "(configure isolation = \"session\" for servers that call back)"
        )
        try:
            self._writer_send.send_nowait(
                jsonrpc.error_response(message["id"], errors.INTERNAL_ERROR, reason)
            )
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.warning("upstream %s: could not refuse %s", self.name, message["method"])

    def _fail_pending(self, reason: str) -> None:
        for pending in list(self._pending.values()):
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                pending.reply_send.send_nowait(
                    jsonrpc.error_response(pending.client_id, errors.UPSTREAM_CLOSED, reason)
                )


async def _writer(link: Link, recv: trio.MemoryReceiveChannel[jsonrpc.Message]) -> None:
    async with recv:
        try:
            async for message in recv:
                await link.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the server went away; the reader reports why


async def _initialize(
    upstream: Upstream, timeout_s: float, client_capabilities: dict[str, Any]
) -> None:
    params = {
        "protocolVersion": UPSTREAM_PROTOCOL_VERSION,
        # Only what the real client has: {} for a shared upstream, the client's
        # own for a per-session one.
        "capabilities": client_capabilities,
        "clientInfo": GATEWAY_INFO,
    }
    try:
        reply = await upstream.request_internal("initialize", params, timeout_s)
    except trio.TooSlowError:
        raise UpstreamError(
            errors.UPSTREAM_UNAVAILABLE,
            f"upstream '{upstream.name}' did not answer initialize within {timeout_s:g} s",
        ) from None
    if "error" in reply:
        raise UpstreamError(
            errors.UPSTREAM_UNAVAILABLE,
            f"upstream '{upstream.name}' refused initialize: {reply['error'].get('message')}",
        )
    result = reply.get("result")
    if not isinstance(result, dict):
        raise UpstreamError(errors.UPSTREAM_UNAVAILABLE, "initialize result is not an object")
    upstream.init_result = result
    await upstream._writer_send.send(jsonrpc.notification("notifications/initialized"))


def _header_params(tool: dict[str, Any]) -> dict[str, str]:
    """A tool's arguments whose schema names an ``Mcp-Param-`` header (SEP-2243)."""
    schema = tool.get("inputSchema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    if not isinstance(properties, dict):
        return {}
    return {
        name: spec["x-mcp-header"]
        for name, spec in properties.items()
        if isinstance(spec, dict) and isinstance(spec.get("x-mcp-header"), str)
    }


def _uri_of(message: jsonrpc.Message) -> str | None:
    params = message.get("params")
    uri = params.get("uri") if isinstance(params, dict) else None
    return uri if isinstance(uri, str) else None


@attrs.define(eq=False)
class _NoSession:
    session_id: str = ""

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None = None) -> None:
        pass

    def deliver_server_request(self, upstream: Upstream, message: jsonrpc.Message) -> None:
        pass


@contextlib.asynccontextmanager
async def open_upstream(
    name: str,
    open_link: Callable[[], AbstractAsyncContextManager[Link]],
    *,
    init_timeout_s: float = 60.0,
    sessions: dict[str, SessionPeer] | None = None,
    client_capabilities: dict[str, Any] | None = None,
    subscriptions: dict[str, set[str]] | None = None,
) -> AsyncIterator[Upstream]:
    """Connect to a server over ``open_link()`` and initialize it; yield its handle while it lives.

    The block's body should wait on ``upstream.closed``: it is set when the
    server goes away or stops speaking JSON-RPC (``close_reason`` says which).
    Leaving the block closes the link (stopping a process) and fails requests
    still waiting.
    """
    logger = logging.getLogger(f"mcp_orch.upstream.{name}")
    async with open_link() as link:
        writer_send, writer_recv = trio.open_memory_channel[jsonrpc.Message](WRITER_QUEUE)
        upstream = Upstream(name, link, writer_send)
        if sessions is not None:
            upstream.sessions = sessions  # shared with the supervisor across restarts
        if subscriptions is not None:
            upstream.subscriptions = subscriptions

        async def watch() -> None:
            reason = ""
            try:
                while (message := await link.receive()) is not None:
                    upstream._dispatch(message)
                reason = f"upstream '{name}' {link.end_reason()}"
            except UpstreamProtocolError as exc:
                reason = f"upstream '{name}' broke the protocol: {exc}"
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                reason = f"upstream '{name}' closed its output: {exc}"
            finally:
                upstream.close_reason = reason or f"upstream '{name}' stopped"
                upstream.closed.set()
                upstream._fail_pending(upstream.close_reason)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_writer, link, writer_recv)
                nursery.start_soon(watch)
                nursery.start_soon(link.background, logger)
                upstream._nursery = nursery
                with trio.CancelScope() as init_scope:
                    async def cancel_init_on_close() -> None:
                        await upstream.closed.wait()
                        init_scope.cancel()

                    nursery.start_soon(cancel_init_on_close)
                    await _initialize(upstream, init_timeout_s, client_capabilities or {})
                if init_scope.cancelled_caught:
                    tail = "; ".join(list(link.stderr_tail)[-3:])
                    raise UpstreamError(
                        errors.UPSTREAM_UNAVAILABLE,
                        f"{upstream.close_reason} during initialize"
                        + (f" (stderr: {tail})" if tail else ""),
                    )
                nursery.start_soon(upstream.refresh_tools)
                if upstream.subscriptions:  # a restart: subscribe the new server again
                    nursery.start_soon(upstream._resubscribe)
                try:
                    yield upstream
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if not upstream.closed.is_set():
                upstream.close_reason = upstream.close_reason or f"upstream '{name}' stopped"
                upstream.closed.set()
            upstream._fail_pending(upstream.close_reason)
            writer_send.close()
