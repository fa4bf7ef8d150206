"""Forwarding: a request for a session another live instance owns is relayed to it.

The router (:class:`Forwarder`) looks at an MCP request before any transport
does: the session it names — ``Mcp-Session-Id`` (Streamable HTTP), the
``sessionId`` query parameter (legacy SSE POSTs) or, for a 2026-07-28 retry,
the session its ``requestState`` names — carries its owner
(``gateway/cluster/ids.py``). When the owner is a live peer, the request goes
to the peer's internal address as it came (method, path, query, headers,
body; the key is checked again there) and the answer comes back as it is
produced: a JSON body whole (read to its end first, sent with its length),
or an SSE stream relayed chunk by chunk until either side ends it. A client that leaves cancels the relay, which closes the peer
connection, which the owner sees as that client leaving.

A request that arrives forwarded (``mcp-orch-forwarded-by``) is never
forwarded again, so two instances that disagree about who is alive cannot
bounce a request between them: the receiver serves it or answers ``404``.
A session whose owner is not a live peer is served locally, which answers
``404`` (unknown session) — what a client of a dead instance must see to
initialize again. A peer that refuses the connection is taken for dead at
once (:meth:`Peers.suspect`) and the client gets that ``404`` too.
"""

from __future__ import annotations

import logging
import time

import attrs
import httpx
import trio

from ..http.asgi import HttpRequest
from ..ops.metrics import Metrics
from ..transports.front import Front, Refused, not_found, parse_json
from ..transports.stateless.request_state import session_named_by
from .peers import Peer, Peers

log = logging.getLogger(__name__)

FORWARDED_BY = b"mcp-orch-forwarded-by"
SESSION_HEADER = b"mcp-session-id"
#: Not passed on in either direction: they describe one hop, or Hypercorn sets them.
_HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
    b"trailer", b"upgrade", b"content-length", b"host", b"date", b"server",
})
#: How long connecting to a peer may take before it is taken for dead.
CONNECT_TIMEOUT_S = 2.0


@attrs.define(eq=False)
class Forwarder:
    """Finds the owner of a request's session and relays the request to it."""

    peers: Peers
    metrics: Metrics
    client: httpx.AsyncClient = attrs.field(factory=lambda: httpx.AsyncClient(
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=None, write=30.0, pool=10.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
    ))

    async def owner(self, front: Front, http: HttpRequest, route: str) -> Peer | None:
        """The live peer owning the session ``http`` names, or ``None`` to serve it here.

        Reads the body (bounded, ``413`` as the transports would) only for a POST
        to ``…/mcp`` without a session header that mentions ``requestState``;
        the transport then gets the same bytes (``HttpRequest.read_body`` keeps them).
        """
        if FORWARDED_BY in http.headers:
            return None
        session_id: str | None = None
        if route == "mcp":
            value = http.headers.get(SESSION_HEADER)
            if value is not None:
                session_id = value.decode("latin-1")
            elif http.method == "POST":
                session_id = await self._state_session(front, http)
        elif route == "messages":
            session_id = http.query("sessionId", "session_id") or None
        if not session_id:
            return None
        owner = self.peers.ids.owner(session_id)
        if owner is None or owner == self.peers.instance_id:
            return None
        return await self.peers.lookup(owner)

    async def _state_session(self, front: Front, http: HttpRequest) -> str | None:
        body = await front.body(http)
        if b'"requestState"' not in body:
            return None
        try:
            message = parse_json(body)
        except Refused:  # the transport refuses it, with the same error
            return None
        params = message.get("params") if isinstance(message, dict) else None
        if not isinstance(params, dict):
            return None
        return session_named_by(params.get("requestState"))

    async def relay(self, front: Front, http: HttpRequest, peer: Peer) -> None:
        """Send ``http`` to ``peer`` and its answer back, streamed both ways.

        Error handling: a peer that cannot be reached is taken for dead and the
        client gets ``404`` (its session is gone with the peer), and so does a
        client whose JSON answer the peer died before finishing; a peer that dies
        mid-stream ends the client's SSE stream (it resumes, reconnects or
        initializes again, as after any dropped stream).
        """
        body = await front.body(http) if http.method == "POST" else b""
        scope = http.scope
        url = peer.address.rstrip("/") + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [(k, v) for k, v in scope["headers"] if k not in _HOP_BY_HOP
                   and k != FORWARDED_BY]
        host = http.headers.get(b"host")
        if host is not None:
            headers.append((b"host", host))  # the owner checks it as this instance would
        headers.append((FORWARDED_BY, self.peers.instance_id.encode()))
        started = time.perf_counter()
        request = self.client.build_request(http.method, url, headers=headers, content=body)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            log.info("forwarding to instance %s failed: %r", peer.instance_id, exc)
            self.peers.suspect(peer.instance_id)
            self.metrics.forwarded.labels("unreachable").inc()
            raise not_found("the gateway instance holding this session is gone; "
                            "initialize again (or open a new SSE stream)") from None
        self.metrics.forwarding_seconds.observe(time.perf_counter() - started)
        self.metrics.forwarded.labels("relayed").inc()
        try:
            start = {
                "type": "http.response.start", "status": response.status_code,
                "headers": [(k.lower(), v) for k, v in response.headers.raw
                            if k.lower() not in _HOP_BY_HOP],
            }
            chunks = response.aiter_raw()
            streamed = response.headers.get("content-type", "").startswith("text/event-stream")
            # Nothing goes to the client before the owner's first bytes (all of them for
            # a JSON answer): if this instance dies before that, the client's load
            # balancer sees no answer and may resend the request to another instance,
            # which reaches the owner again; an answer cut halfway could not be resent.
            # A POST's SSE stream always starts with an event (the priming event or
            # the answer); a GET stream may stay quiet, so its head goes at once.
            held: list[bytes] = []
            try:
                if not streamed:
                    held = [chunk async for chunk in chunks]
                    body = b"".join(held)
                    start["headers"].append((b"content-length", str(len(body)).encode()))
                    held = [body]
                elif http.method == "POST":
                    held = [await anext(chunks, b"")]
            except httpx.TransportError as exc:
                log.info("instance %s died before its answer was relayed: %r",
                         peer.instance_id, exc)
                self.peers.suspect(peer.instance_id)
                self.metrics.forwarded.labels("cut").inc()
                raise not_found("the gateway instance holding this session is gone; "
                                "initialize again (or open a new SSE stream)") from None
            await http.send(start)
            for chunk in held:
                await http.send({"type": "http.response.body", "body": chunk,
                                 "more_body": streamed})
            if streamed:
                try:
                    async for chunk in chunks:
                        await http.send({"type": "http.response.body", "body": chunk,
                                         "more_body": True})
                except httpx.TransportError as exc:
                    log.info("instance %s ended a relayed answer: %r", peer.instance_id, exc)
                    self.metrics.forwarded.labels("cut").inc()
                await http.send({"type": "http.response.body", "body": b"",
                                 "more_body": False})
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await response.aclose()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self.client.aclose()
