"""Streamable HTTP for the stateless revision, MCP 2026-07-28, in front of stateful upstreams.

A 2026-07-28 client sends no ``initialize`` and no ``Mcp-Session-Id``: every
request carries the protocol version, client capabilities and client info in
``params._meta`` (SEP-2575) and names itself in the ``MCP-Protocol-Version``,
``Mcp-Method`` and ``Mcp-Name`` headers (SEP-2243). Upstream stdio servers
mostly speak the stateful revisions, so the gateway bridges:

* Each request runs as a short-lived session actor of transport
  ``"stateless"`` on the server's shared upstream (or on a private one for
  ``isolation = "session"``, started with the request's capabilities). The
  ``io.modelcontextprotocol/*`` keys are taken out of ``_meta`` before the
  request goes upstream; progress tokens are remapped as for any session.
* ``server/discover`` is answered from the upstream's ``initialize`` result
  (capabilities, instructions; its ``serverInfo`` goes into the result's
  ``_meta``). Removed methods (``initialize``, ``ping``, ``logging/setLevel``,
  ``resources/subscribe``/``unsubscribe``) and unknown ones are ``404`` with
  ``-32601``.
* Results get ``resultType: "complete"``; cacheable ones (lists, reads,
  discover) get ``ttlMs: 0`` and ``cacheScope: "private"`` (SEP-2549): the
  gateway cannot promise an upstream's list stays fresh, and answers depend on
  the project key. ``-32002`` (resource not found before 2026-07-28) becomes
  ``-32602`` (SEP-2164).
* Log messages reach a request only if it set ``_meta.logLevel`` (SEP-2577).
* Server→client requests become multi-round-trip requests (SEP-2322). When
  the upstream asks the client something while serving the request, the
  gateway waits a moment (:data:`COALESCE_S`) for further questions, then
  answers ``InputRequiredResult`` — ``inputRequests`` keyed by the upstream's
  own request id when it is a string (so a server chooses its keys), else
  ``input-N`` — and a signed ``requestState``. The upstream call stays
  parked; the client's retry carrying ``inputResponses`` and that
  ``requestState`` answers the upstream and the exchange continues to the
  final result or the next round. Unanswered keys are asked again; extra keys
  are ignored. A question needing a capability the client did not declare in
  that request is refused upstream with ``-32021``; if the request then fails,
  the client gets ``-32021`` (HTTP ``400``) naming the capability. A parked
  call nobody resumes within ``gateway.input_wait_s`` is cancelled upstream.
  A shared upstream's question is routed only while exactly one session has a
  request in flight on it (see ``actors/upstream.py``); otherwise the upstream
  gets an error — use ``isolation = "session"`` for servers that ask.
* ``subscriptions/listen`` opens an SSE stream: first
  ``notifications/subscriptions/acknowledged`` with what the upstream can
  honour, then only the notification types the client asked for, each tagged
  with ``_meta.subscriptionId``; ``resourceSubscriptions`` subscribe upstream
  (shared with other sessions). When the gateway ends the stream it sends the
  listen request's result.

Errors always echo the request's id. Header and ``_meta`` problems are
``400``: ``-32020`` header mismatch, ``-32022`` unsupported version (with
``supported`` and ``requested``), ``-32602`` invalid ``_meta``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import attrs
import trio

from actors import Session, Transport
from actors.session import LOG_LEVELS, SUPPORTED_VERSIONS
from actors.streams import EventsLost, EventStream, is_response
from actors.upstream import GATEWAY_INFO, UpstreamError
from upstream import errors, jsonrpc
from upstream.errors import HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY, UNSUPPORTED_VERSION

from ...http import sse
from ...http.asgi import HttpRequest
from ..front import (
    Front,
    JsonReply,
    Refused,
    Reply,
    StreamReply,
    Target,
    draining,
    outlet_of,
)
from .outlet import StatelessStreams
from .request_state import BadRequestState, RequestState, StateSigner, binding_of

log = logging.getLogger(__name__)

STATELESS_VERSION = "2026-07-28"
#: Every revision this endpoint serves (``server/discover``'s ``supportedVersions``).
ALL_VERSIONS = (*SUPPORTED_VERSIONS, STATELESS_VERSION)
#: Revisions served without a session, through per-request ``_meta``.
STATELESS_VERSIONS = (STATELESS_VERSION,)

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"
META_PREFIX = "io.modelcontextprotocol/"


REMOVED_METHODS = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
CACHEABLE = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/templates/list",
     "resources/read", "server/discover"}
)
#: Methods whose target goes in the ``Mcp-Name`` header, and the param holding it.
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
#: Server→client requests and the client capability each needs.
INPUT_CAPABILITY = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
#: After an upstream's first question, how long to wait for more before asking the client.
COALESCE_S = 0.05
LISTEN_FILTERS = {
    "toolsListChanged": ("tools", "notifications/tools/list_changed"),
    "promptsListChanged": ("prompts", "notifications/prompts/list_changed"),
    "resourcesListChanged": ("resources", "notifications/resources/list_changed"),
}


def wants_stateless(
    version_header: str | None, session_header: str | None, message: Any
) -> bool:
    """Whether a POST is for the stateless revision rather than a stateful session."""
    if session_header:
        return False
    if version_header in STATELESS_VERSIONS:
        return True
    if not isinstance(message, dict) or message.get("method") == "initialize":
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    if isinstance(meta, dict) and META_VERSION in meta:
        return True
    # An unknown version without a session: answer in the revision that can say so.
    return version_header is not None and version_header not in SUPPORTED_VERSIONS


def _header_value(header: str, raw: str) -> str:
    """A header's value: trimmed, and decoded when sent as ``=?base64?…?=`` (SEP-2243)."""
    value = raw.strip()
    if value.startswith("=?base64?") and value.endswith("?=") and len(value) >= len("=?base64??="):
        encoded = value[len("=?base64?"):-2]
        try:
            return base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise Refused(
                400, HEADER_MISMATCH, f"{header} header is not valid =?base64?…?= text") from None
    return value


def _check_param_headers(
    tool_headers: dict[str, dict[str, str]], params: dict[str, Any], http: HttpRequest
) -> None:
    """Arguments a tool marks ``x-mcp-header`` must come in matching ``Mcp-Param-*`` headers."""
    name = params.get("name")
    marked = tool_headers.get(name) if isinstance(name, str) else None
    if not marked:
        return
    arguments = params.get("arguments")
    arguments = arguments if isinstance(arguments, dict) else {}
    for argument, suffix in marked.items():
        header = f"Mcp-Param-{suffix}"
        raw = http.header(header)
        if argument not in arguments:
            if raw is not None:
                raise Refused(400, HEADER_MISMATCH,
                                     f"{header} header is set but argument {argument!r} is not")
            continue
        value = arguments[argument]
        expected = value if isinstance(value, str) else json.dumps(value)
        if raw is None:
            raise Refused(400, HEADER_MISMATCH,
                                 f"argument {argument!r} must also be sent in the {header} header")
        if _header_value(header, raw) != expected:
            raise Refused(400, HEADER_MISMATCH,
                                 f"{header} header does not match argument {argument!r}")


@contextlib.contextmanager
def _closed_on_failure(session: Session, reason: str) -> Iterator[None]:
    """Close ``session`` if the block fails; an upstream that is down becomes ``503``."""
    try:
        yield
    except UpstreamError as exc:
        session.close(reason)
        raise Refused(503, exc.code, str(exc), reason="unavailable") from None
    except BaseException:
        session.close(reason)
        raise


def _status_for(code: int) -> int:
    if code == errors.METHOD_NOT_FOUND:
        return 404
    if code in (HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY, UNSUPPORTED_VERSION):
        return 400
    return 200


def _upstream_params(params: dict[str, Any]) -> dict[str, Any] | None:
    """The params a stateful upstream gets: no per-request protocol keys, no MRTR fields."""
    out = {k: v for k, v in params.items() if k not in ("inputResponses", "requestState")}
    meta = out.get("_meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith(META_PREFIX)}
        if kept:
            out["_meta"] = kept
        else:
            del out["_meta"]
    return out or None


@attrs.define(eq=False)
class Exchange:
    """One 2026-07-28 request in flight on a stateful upstream, across its MRTR rounds."""

    session: Session
    stream: EventStream
    method: str
    binding: str
    after: int = 0
    #: Key → the session's id of an upstream question the client has not answered yet.
    asked: dict[str, str] = attrs.field(factory=dict)
    questions: dict[str, jsonrpc.Message] = attrs.field(factory=dict)
    #: Capabilities the upstream needed and the client had not declared.
    missing: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    timer: trio.CancelScope | None = None
    _keys: int = 0

    def key_for(self, out_id: str) -> str:
        origin = self.session.server_request_origin(out_id)
        if isinstance(origin, str) and origin and origin not in self.asked:
            return origin
        while True:
            self._keys += 1
            if (key := f"input-{self._keys}") not in self.asked:
                return key


def _outlet(session: Session) -> StatelessStreams:
    return outlet_of(session, StatelessStreams)


@attrs.define(eq=False)
class StatelessEndpoint:
    """Serves 2026-07-28 requests for one gateway (see the module docstring)."""

    front: Front
    signer: StateSigner = attrs.field(factory=StateSigner)

    @property
    def gateway(self) -> Any:
        return self.front.gateway

    # -- entry ----------------------------------------------------------------
    async def handle(self, target: Target, parsed: Any, http: HttpRequest) -> Reply | None:
        """Answer one POST of this revision; ``None`` once answered (``202``).

        Error handling: refusals raise :class:`~gateway.transports.front.Refused`
        carrying the request's id.
        """
        if isinstance(parsed, list):
            raise Refused(400, errors.INVALID_REQUEST,
                          f"JSON-RPC batches are not part of {STATELESS_VERSION}")
        try:
            kind = jsonrpc.classify(parsed)
        except jsonrpc.InvalidMessage as exc:
            raise Refused(400, errors.INVALID_REQUEST, f"invalid JSON-RPC message: {exc}") from None
        if kind == "notification":
            await http.reply(202, b"", content_type=b"text/plain")
            return None  # nothing to cancel or tell without a session
        if kind == "response":
            raise Refused(400, errors.INVALID_REQUEST,
                          f"{STATELESS_VERSION} has no server→client requests to answer: "
                          "send inputResponses with the retried request")
        msg_id = parsed["id"]
        try:
            params, meta = self._validate(parsed, http)
            method = parsed["method"]
            if method in REMOVED_METHODS:
                raise Refused(404, errors.METHOD_NOT_FOUND,
                              f"{method!r} is not part of {STATELESS_VERSION}")
            # A retry carrying requestState finishes work already in flight: served while draining.
            if self.gateway.draining and "requestState" not in params:
                raise draining()
            if method == "server/discover":
                return await self._discover(target, msg_id, meta)
            if method == "subscriptions/listen":
                return await self._listen(target, parsed, meta)
            return await self._call(target, parsed, params, meta, http)
        except Refused as exc:
            exc.msg_id = msg_id
            raise

    # -- validation -------------------------------------------------------------
    def _validate(self, message: jsonrpc.Message, http: HttpRequest) -> tuple[dict[str, Any], dict[str, Any]]:
        method = message["method"]
        params = message.get("params", {})
        if not isinstance(params, dict):
            raise Refused(400, errors.INVALID_PARAMS, "params must be an object")
        meta = params.get("_meta")
        if not isinstance(meta, dict):
            raise Refused(
                400, errors.INVALID_PARAMS,
                f"params._meta is required in {STATELESS_VERSION} (protocol version and "
                "client capabilities travel with every request)")
        version = meta.get(META_VERSION)
        if not isinstance(version, str):
            raise Refused(400, errors.INVALID_PARAMS, f"params._meta[{META_VERSION!r}] "
                                 "is required and must be a string")
        if not isinstance(meta.get(META_CAPABILITIES), dict):
            raise Refused(400, errors.INVALID_PARAMS, f"params._meta[{META_CAPABILITIES!r}] "
                                 "is required and must be an object")
        level = meta.get(META_LOG_LEVEL)
        if level is not None and level not in LOG_LEVELS:
            raise Refused(400, errors.INVALID_PARAMS, f"params._meta[{META_LOG_LEVEL!r}] "
                                 f"must be one of {', '.join(LOG_LEVELS)}")
        header_version = (http.header("MCP-Protocol-Version") or "").strip()
        if header_version != version:
            raise Refused(
                400, HEADER_MISMATCH,
                f"MCP-Protocol-Version header {header_version or '(missing)'!r} does not match "
                f"params._meta protocol version {version!r}")
        if version not in STATELESS_VERSIONS:
            raise Refused(
                400, UNSUPPORTED_VERSION,
                f"protocol version {version!r} is not served without a session "
                f"(supported: {', '.join(STATELESS_VERSIONS)}; older revisions: initialize)",
                data={"supported": list(STATELESS_VERSIONS), "requested": version})
        header_method = http.header("Mcp-Method")
        if header_method is None or header_method.strip() != method:
            raise Refused(
                400, HEADER_MISMATCH,
                f"Mcp-Method header {header_method!r} does not match the method {method!r}")
        if method in NAMED:
            target = params.get(NAMED[method])
            header_name = http.header("Mcp-Name")
            if header_name is not None:
                header_name = _header_value("Mcp-Name", header_name)
            if isinstance(target, str) and header_name != target:
                raise Refused(
                    400, HEADER_MISMATCH,
                    f"Mcp-Name header {header_name!r} does not match {NAMED[method]} {target!r}")
        responses = params.get("inputResponses")
        if "inputResponses" in params and not (
            isinstance(responses, dict) and all(isinstance(v, dict) for v in responses.values())
        ):
            raise Refused(400, errors.INVALID_PARAMS,
                                 "inputResponses must be an object mapping keys to result objects")
        if "requestState" in params and not isinstance(params["requestState"], str):
            raise Refused(400, errors.INVALID_PARAMS, "requestState must be a string")
        return params, meta

    # -- sessions ---------------------------------------------------------------
    async def _open_session(self, target: Target, meta: dict[str, Any]) -> Session:
        gateway = self.gateway
        return await self.front.open_session(
            target.options(
                Transport.STATELESS,
                protocol_version=STATELESS_VERSION,
                client_capabilities=meta[META_CAPABILITIES],
                # A safety net only: every path closes its session when the request ends.
                idle_timeout_s=gateway.config.gateway.http_session_idle_s,
            ),
            StatelessStreams(log_level=meta.get(META_LOG_LEVEL)),
        )

    def _decorate(self, method: str, result: dict[str, Any], server_info: Any) -> dict[str, Any]:
        result = dict(result)
        result.setdefault("resultType", "complete")
        if method in CACHEABLE:
            result.setdefault("ttlMs", 0)
            result.setdefault("cacheScope", "private")
        if isinstance(server_info, dict):
            meta = result.get("_meta")
            result["_meta"] = {**(meta if isinstance(meta, dict) else {}),
                               META_SERVER_INFO: server_info}
        return result

    # -- server/discover ----------------------------------------------------------
    async def _discover(self, target: Target, msg_id: jsonrpc.Id, meta: dict[str, Any]) -> Reply:
        session = await self._open_session(target, meta)
        try:
            init = await session.describe()
        except UpstreamError as exc:
            raise Refused(503, exc.code, str(exc), reason="unavailable") from None
        finally:
            session.close("server/discover answered")
        result: dict[str, Any] = {
            "supportedVersions": list(ALL_VERSIONS),
            "capabilities": init.get("capabilities") or {},
        }
        if init.get("instructions"):
            result["instructions"] = init["instructions"]
        result = self._decorate("server/discover", result, init.get("serverInfo") or GATEWAY_INFO)
        return JsonReply(jsonrpc.result_response(msg_id, result))

    # -- requests, and their MRTR rounds -------------------------------------------
    async def _call(
        self, target: Target, message: jsonrpc.Message, params: dict[str, Any],
        meta: dict[str, Any], http: HttpRequest,
    ) -> Reply:
        method = message["method"]
        named = params.get(NAMED.get(method, ""))
        binding = binding_of(method, named if isinstance(named, str) else None, target.key_hash)
        if "requestState" in params:
            exchange = await self._resume(target, params, binding, http)
        else:
            session = await self._open_session(target, meta)
            if method == "tools/call" and isinstance(named, str):
                with _closed_on_failure(session, "refused"):
                    _check_param_headers({named: await session.tool_headers(named)}, params, http)
            stream = _outlet(session).open([message["id"]])
            exchange = Exchange(session, stream, method, binding)
            upstream_message = {"jsonrpc": "2.0", "id": message["id"], "method": method}
            forwarded = _upstream_params(params)
            if forwarded is not None:
                upstream_message["params"] = forwarded
            try:
                # The front's submit: rate limits hold for this revision too (429).
                await self.front.submit(session, [upstream_message],
                                        hint="send the request again")
            except BaseException:
                session.close("could not start the request")
                raise
        # A retry may carry another logLevel; the latest request's opt-in applies.
        _outlet(exchange.session).log_level = meta.get(META_LOG_LEVEL)
        responses = params.get("inputResponses") or {}
        for key, out_id in list(exchange.asked.items()):
            if key in responses:
                del exchange.asked[key]
                exchange.questions.pop(key, None)
                await exchange.session.submit(
                    {"jsonrpc": "2.0", "id": out_id, "result": responses[key]})
        return await self._respond(exchange, message["id"])

    async def _resume(self, target: Target, params: dict[str, Any], binding: str,
                      http: HttpRequest) -> Exchange:
        try:
            state = self.signer.verify(params["requestState"])
        except BadRequestState as exc:
            raise Refused(400, errors.INVALID_PARAMS, str(exc)) from None
        if state.binding != binding:
            raise Refused(400, errors.INVALID_PARAMS,
                                 "requestState was issued for another request or key")
        session = self.gateway.registry.get(state.session_id)
        if session is not None and (session.project != target.project
                                    or session.server_name != target.server_name):
            session = None  # a call parked behind another endpoint is not this one's
        outlet = session.outlet if session is not None else None
        exchange = outlet.parked if isinstance(outlet, StatelessStreams) else None
        if exchange is None or outlet.mrtr_round != state.round:  # type: ignore[union-attr]
            raise Refused(
                400, errors.INVALID_PARAMS,
                "requestState names a request that is no longer waiting for input "
                "(answered already, expired, or the gateway restarted); send the request again "
                "without it")
        name = params.get("name")
        if exchange.method == "tools/call" and isinstance(name, str):
            try:
                required = await session.tool_headers(name)  # type: ignore[union-attr]
            except UpstreamError:
                required = {}
            _check_param_headers({name: required}, params, http)
        outlet.parked = None  # type: ignore[union-attr]
        if exchange.timer is not None:
            exchange.timer.cancel()
        return exchange

    def _park(self, exchange: Exchange, client_id: jsonrpc.Id) -> jsonrpc.Message:
        """End this round with an ``InputRequiredResult``; the call waits for the retry."""
        session = exchange.session
        outlet = _outlet(session)
        outlet.mrtr_round += 1
        outlet.parked = exchange
        wait_s = self.gateway.config.gateway.input_wait_s
        exchange.timer = session.close_after(
            wait_s, f"no retry with inputResponses within {wait_s:g} s")
        token = self.signer.sign(RequestState(session.session_id, outlet.mrtr_round,
                                              exchange.binding))
        result = {
            "resultType": "input_required",
            "inputRequests": dict(exchange.questions),
            "requestState": token,
        }
        return jsonrpc.result_response(client_id, result)

    def _final(self, exchange: Exchange, reply: jsonrpc.Message, client_id: jsonrpc.Id) -> jsonrpc.Message:
        reply = {**reply, "id": client_id}
        session = exchange.session
        failed = "error" in reply or (
            isinstance(reply.get("result"), dict) and reply["result"].get("isError") is True
        )
        if exchange.missing and failed:
            names = ", ".join(sorted(exchange.missing))
            detail = reply["error"].get("message") if "error" in reply else "the request failed"
            return jsonrpc.error_response(
                client_id, MISSING_CLIENT_CAPABILITY,
                f"the server needs client capabilities this request did not declare: {names} "
                f"({detail})",
                {"requiredCapabilities": dict(exchange.missing)},
            )
        if "error" in reply:
            error = dict(reply["error"])
            if error.get("code") == errors.RESOURCE_NOT_FOUND and exchange.method == "resources/read":
                error["code"] = errors.INVALID_PARAMS  # SEP-2164
            reply["error"] = error
            return reply
        result = reply.get("result")
        if isinstance(result, dict):
            reply["result"] = self._decorate(exchange.method, result, session.server_info)
        return reply

    async def _ask_or_refuse(self, exchange: Exchange, question: jsonrpc.Message) -> None:
        """Take an upstream question: keep it for the client, or refuse it upstream."""
        session = exchange.session
        out_id = question["id"]
        method = question["method"]
        capability = INPUT_CAPABILITY.get(method)
        refusal = None
        if capability is None:
            refusal = jsonrpc.error_response(
                out_id, errors.METHOD_NOT_FOUND,
                f"{method!r} cannot be asked of a {STATELESS_VERSION} client")
        elif capability not in (session.client_capabilities or {}):
            exchange.missing[capability] = {}
            refusal = jsonrpc.error_response(
                out_id, MISSING_CLIENT_CAPABILITY,
                f"the client did not declare the {capability!r} capability for this request",
                {"requiredCapabilities": {capability: {}}})
        if refusal is not None:
            await session.submit(refusal)
            return
        key = exchange.key_for(out_id)
        exchange.asked[key] = out_id
        request: dict[str, Any] = {"method": method}
        if "params" in question:
            request["params"] = question["params"]
        exchange.questions[key] = request

    async def _rounds(
        self, exchange: Exchange, client_id: jsonrpc.Id, keepalive_s: float
    ) -> AsyncIterator[jsonrpc.Message | None]:
        """What the client gets this round: notifications, then a final message.

        The final message is the request's answer, or an ``InputRequiredResult``
        (the exchange is then parked). ``None`` means nothing happened for
        ``keepalive_s`` (an SSE reader sends a keep-alive comment).
        """
        stream = exchange.stream
        ask_by: float | None = trio.current_time() + COALESCE_S if exchange.asked else None
        while True:
            try:
                batch = stream.pending_after(exchange.after)
            except EventsLost as exc:
                exchange.session.close("events lost")
                yield jsonrpc.error_response(client_id, errors.INTERNAL_ERROR, str(exc))
                return
            for seq, message in batch:
                exchange.after = seq
                if is_response(message):
                    yield self._final(exchange, message, client_id)
                    return
                if "id" in message:
                    await self._ask_or_refuse(exchange, message)
                    if exchange.asked and ask_by is None:
                        ask_by = trio.current_time() + COALESCE_S
                else:
                    yield message
            if stream.drained(exchange.after):
                reason = exchange.session.close_reason or "the request ended without an answer"
                yield jsonrpc.error_response(client_id, errors.UPSTREAM_UNAVAILABLE, reason)
                return
            if ask_by is not None and exchange.asked and trio.current_time() >= ask_by:
                yield self._park(exchange, client_id)
                return
            if exchange.after < stream.next_seq - 1:
                continue  # more came while the reader had a message: no waiting
            wait_s = max(0.0, ask_by - trio.current_time()) if ask_by is not None else keepalive_s
            with trio.move_on_after(min(wait_s, keepalive_s)) as idle:
                await stream.wait_changed()
            if idle.cancelled_caught and ask_by is None:
                yield None

    async def _respond(self, exchange: Exchange, client_id: jsonrpc.Id) -> Reply:
        """JSON when the final message comes first; SSE when notifications precede it."""
        keepalive_s = self.gateway.config.gateway.keepalive_s
        rounds = self._rounds(exchange, client_id, keepalive_s)
        done = False

        def finished(message: jsonrpc.Message) -> bool:
            nonlocal done
            if "id" in message:
                done = True
                if _outlet(exchange.session).parked is None:
                    exchange.session.close("request answered")
            return done

        try:
            first = None
            while first is None:  # keep-alive ticks mean nothing before a response starts
                first = await rounds.__anext__()
        except BaseException:
            exchange.session.close("the client went away")
            await rounds.aclose()
            raise
        if finished(first):
            await rounds.aclose()
            status = _status_for(first["error"]["code"]) if "error" in first else 200
            return JsonReply(first, status)

        async def body() -> AsyncIterator[bytes]:
            try:
                yield sse.event(jsonrpc.dumps(first))
                async for message in rounds:
                    if message is None:
                        yield sse.KEEPALIVE
                        continue
                    yield sse.event(jsonrpc.dumps(message))
                    if finished(message):
                        return
            finally:
                gone()
                await rounds.aclose()

        def gone() -> None:
            if not done:
                exchange.session.close("the client went away")

        return StreamReply(body(), on_close=gone)

    # -- subscriptions/listen -----------------------------------------------------
    async def _listen(self, target: Target, message: jsonrpc.Message,
                      meta: dict[str, Any]) -> Reply:
        msg_id = message["id"]
        wanted = message["params"].get("notifications")
        if not isinstance(wanted, dict):
            raise Refused(400, errors.INVALID_PARAMS,
                                 "params.notifications (the subscription filter) must be an object")
        uris = wanted.get("resourceSubscriptions", [])
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise Refused(400, errors.INVALID_PARAMS,
                                 "notifications.resourceSubscriptions must be a list of URIs")
        session = await self._open_session(target, meta)
        with _closed_on_failure(session, "listen failed"):
            capabilities = (await session.describe()).get("capabilities") or {}
            honored: dict[str, Any] = {}
            methods: set[str] = set()
            for flag, (capability, method) in LISTEN_FILTERS.items():
                offered = capabilities.get(capability)
                if wanted.get(flag) is True and isinstance(offered, dict) and offered.get("listChanged"):
                    honored[flag] = True
                    methods.add(method)
            resources = capabilities.get("resources")
            if uris and isinstance(resources, dict) and resources.get("subscribe"):
                subscribed = []
                for n, uri in enumerate(uris):
                    if await session.subscribe(uri, f"listen-{n}"):
                        subscribed.append(uri)
                honored["resourceSubscriptions"] = subscribed
                if subscribed:
                    methods.add("notifications/resources/updated")
        tag = {META_SUBSCRIPTION: msg_id}
        stream = _outlet(session).standalone

        def tagged(note: jsonrpc.Message) -> jsonrpc.Message:
            params = note.get("params")
            params = params if isinstance(params, dict) else {}
            meta_in = params.get("_meta")
            return {**note, "params": {**params, "_meta": {
                **(meta_in if isinstance(meta_in, dict) else {}), **tag}}}

        async def body() -> AsyncIterator[bytes]:
            try:
                with self.gateway.heartbeat.watch(stream.nudge) as beat:
                    yield sse.event(jsonrpc.dumps(tagged(jsonrpc.notification(
                        "notifications/subscriptions/acknowledged", {"notifications": honored}))))
                    after = stream.next_seq - 1
                    while True:
                        try:
                            batch = stream.pending_after(after)
                        except EventsLost:
                            after = stream.next_seq - 1
                            continue
                        for seq, note in batch:
                            after = seq
                            if note.get("method") in methods:
                                yield sse.event(jsonrpc.dumps(tagged(note)))
                                beat.sent()
                                stream.keepalive_due = False
                        if stream.drained(after):
                            # The gateway ended the subscription: say so with the listen result.
                            yield sse.event(jsonrpc.dumps(jsonrpc.result_response(
                                msg_id, {"resultType": "complete", "_meta": tag})))
                            return
                        if batch:
                            continue  # more may have come while a frame was being sent
                        if stream.keepalive_due:
                            stream.keepalive_due = False
                            yield sse.KEEPALIVE
                            beat.sent()
                        else:
                            await stream.wait_changed()
            finally:
                session.close("listen stream closed")

        return StreamReply(body(), on_close=lambda: session.close("listen stream closed"))
