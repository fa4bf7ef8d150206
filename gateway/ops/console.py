"""The operator console at ``/console``: the gateway seen in a browser.

Plain HTML, CSS and JavaScript from ``gateway/ops/console/`` (package data; no
build step), served by the operations app, fed by a JSON API under
``/console/api/`` and one live SSE stream, ``/console/events``.

Sign-in: the page posts the admin token to ``/console/login`` (checked like
``Authorization: Bearer`` on ``/admin/``); the answer sets an ``HttpOnly``,
``SameSite=Strict`` cookie naming a random, server-side
:class:`ConsoleSession` (bounded in number, expiring when idle and after a
fixed lifetime) and gives the page that session's CSRF token. Every change
(POST/DELETE) must carry it in ``X-CSRF-Token``; a present ``Origin`` must
pass the gateway's Origin policy. Nothing secret is ever in a URL or the page
source: the token travels in a POST body, the CSRF token in a JSON answer.

Changes go the same way as the CLI's and the admin API's: through the
store's audited writes (``actor = "console"``) and
:meth:`~gateway.core.Gateway.sync_from_store`; restarts and ended sessions
get an audit row of their own (:meth:`~config.Store.record`).

The playground calls a tool through the gateway's own MCP path: a
short-lived session of transport ``console`` opened on the server's
supervisor by the session front (:meth:`gateway.transports.front.Front.open_session`),
which answers ``initialize``, forwards ``tools/call`` with a progress token,
and streams progress and the result back to the page.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio

from actors import Outbox, SessionOptions, Transport
from actors.session import LATEST_VERSION
from config import ConfigError, StoreError, redacted_spec
from upstream import errors, jsonrpc

from ..http.origin import OriginPolicy, Refusal, check_request
from ..transports.front import Front

ACTOR = "console"
COOKIE = "mcpo_console"
CSRF_HEADER = "X-CSRF-Token"
#: Console sessions at most; the least recently used is dropped beyond it.
MAX_SESSIONS = 32
IDLE_TIMEOUT_S = 30 * 60.0
LIFETIME_S = 12 * 3600.0
EVENTS_INTERVAL_S = 2.0
_ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


@attrs.define(eq=False)
class ConsoleSession:
    """A signed-in browser: its CSRF token and when it was made and last seen."""

    csrf: str
    created_at: float
    last_seen: float


@attrs.define(eq=False)
class ConsoleSessions:
    """Server-side console sessions by cookie id: bounded, expiring.

    ``clock`` is ``time.monotonic`` (sign-ins outlive any trio run's clock).
    """

    max_sessions: int = MAX_SESSIONS
    idle_timeout_s: float = IDLE_TIMEOUT_S
    lifetime_s: float = LIFETIME_S
    clock: Callable[[], float] = time.monotonic
    _sessions: dict[str, ConsoleSession] = attrs.field(factory=dict)

    def create(self) -> tuple[str, ConsoleSession]:
        self._expire()
        while len(self._sessions) >= self.max_sessions:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
            del self._sessions[oldest]
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        session = self._sessions[session_id] = ConsoleSession(secrets.token_urlsafe(32), now, now)
        return session_id, session

    def get(self, session_id: str | None) -> ConsoleSession | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        now = self.clock()
        if session is None:
            return None
        if now - session.last_seen > self.idle_timeout_s or now - session.created_at > self.lifetime_s:
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self) -> None:
        now = self.clock()
        for key, s in list(self._sessions.items()):
            if now - s.last_seen > self.idle_timeout_s or now - s.created_at > self.lifetime_s:
                del self._sessions[key]


class ConsoleRefusal(Exception):
    """A console request refused with ``status`` and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def asset(name: str) -> bytes:
    """A file of ``gateway/ops/console/`` (package data)."""
    return resources.files("gateway.ops").joinpath("console", name).read_bytes()


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json",
                    headers={**_SECURITY_HEADERS, **(headers or {})})


def overview(gateway: Any) -> dict[str, Any]:
    """What the overview shows: ``Gateway.status()`` with each server's recent rates,
    latency quantiles and its ring of samples."""
    status = gateway.status()
    for project, body in status["projects"].items():
        for name, view in body["servers"].items():
            key = (project, name)
            view.update(gateway.metrics.recent(key))
            view["samples"] = [s.view() for s in gateway.metrics.samples.get(key, ())]
    status["telemetry"] = gateway.telemetry is not None
    return status


async def call_through_gateway(
    gateway: Any, front: Any, project: str, server: str, method: str, params: dict[str, Any],
) -> AsyncIterator[dict[str, Any]]:
    """Serve one request through a short-lived ``console`` session on the server's
    supervisor: yields ``{"progress": …}`` notifications, then ``{"reply": …}``.

    Error handling: an unknown or disabled server raises :class:`ConsoleRefusal`
    (404); the request's own failures are JSON-RPC errors in the reply. The
    session is closed on every exit (its in-flight request is cancelled upstream).
    """
    found = gateway.server(project, server)
    if found is None:
        raise ConsoleRefusal(404, f"no enabled server {project}/{server}")
    config, supervisor = found
    outbox = Outbox(64)
    session = await front.open_session(
        SessionOptions(project, config, supervisor, Transport.CONSOLE), outbox)
    deadline = trio.current_time() + config.request_timeout_s + 10
    try:
        with trio.move_on_at(deadline) as started:
            await session.submit(jsonrpc.request("console-init", "initialize", {
                "protocolVersion": LATEST_VERSION, "capabilities": {},
                "clientInfo": {"name": "mcp-orch-console", "version": "0.1.0"}}))
            await session.submit(jsonrpc.notification("notifications/initialized"))
            await session.submit(jsonrpc.request("console-1", method, {
                **params, "_meta": {"progressToken": "console-progress"}}))
        if started.cancelled_caught:
            yield {"reply": jsonrpc.error_response("console-1", errors.SESSION_BUSY,
                                                   "the console session did not take the request")}
            return
        replies = aiter(outbox.recv)
        while True:
            # The deadline around each wait, never around a yield (a cancel scope
            # must not span an async generator's suspension).
            message = None
            with trio.move_on_at(deadline):
                try:
                    message = await anext(replies)
                except StopAsyncIteration:
                    message = jsonrpc.error_response(
                        "console-1", errors.UPSTREAM_CLOSED,
                        session.close_reason or "the session ended")
            if message is None and trio.current_time() >= deadline:
                message = jsonrpc.error_response(
                    "console-1", errors.REQUEST_TIMEOUT,
                    f"no answer within {config.request_timeout_s + 10:g} s")
            if message is None:
                continue
            if message.get("id") == "console-1" and "method" not in message:
                yield {"reply": message}
                return
            if message.get("method") == "notifications/progress":
                yield {"progress": message.get("params")}
    finally:
        session.close("the console call finished")


def register_console(
    app: QuartTrio, gateway: Any, admin_token_ok: Callable[[Any, str | None], Awaitable[bool]],
    policy: OriginPolicy,
) -> None:
    """Add ``/console`` (page, assets, sign-in, API, live events) to ``app``."""
    store = gateway.store
    sessions = ConsoleSessions()
    front = Front(gateway, policy)

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def check_origin() -> None:
        """The gateway's Origin/Host policy, and more: the console answers only its own
        pages. SameSite does not tell ports apart, so a page on another loopback port
        would send the cookie; its Origin (or ``Sec-Fetch-Site``) gives it away."""
        host, origin = request.headers.get("Host"), request.headers.get("Origin")
        refusal = check_request(policy, host, origin)
        if refusal is None and origin is not None and (
                urlsplit(origin).netloc.lower() != (host or "").strip().lower()):
            refusal = Refusal(403, f"Origin {origin!r} is not this console's", "origin")
        if refusal is None and request.headers.get("Sec-Fetch-Site") not in (
                None, "same-origin", "none"):
            refusal = Refusal(403, "the console answers its own pages only", "origin")
        if refusal is not None:
            gateway.metrics.rejected.labels(refusal.reason).inc()
            raise ConsoleRefusal(refusal.status, refusal.message)

    def signed_in(change: bool) -> ConsoleSession:
        check_origin()
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise ConsoleRefusal(401, "sign in with the admin token")
        if change:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                gateway.metrics.rejected.labels("csrf").inc()
                raise ConsoleRefusal(403, f"missing or wrong {CSRF_HEADER}")
        return session

    def console(path: str, methods: list[str]) -> Callable[[Any], Any]:
        def wrap(handler: Callable[..., Awaitable[Response]]) -> Any:
            @functools.wraps(handler)
            async def guarded(**kwargs: Any) -> Response:
                try:
                    signed_in(change=request.method != "GET")
                    return await handler(**kwargs)
                except ConsoleRefusal as exc:
                    return _json({"error": exc.message}, exc.status)
                except ConfigError as exc:
                    return _json({"error": str(exc), "field": exc.field}, 422)
                except StoreError as exc:
                    return _json({"error": str(exc)}, exc.status)

            return app.route(path, methods=methods, endpoint=f"console_{handler.__name__}")(guarded)

        return wrap

    async def body() -> dict[str, Any]:
        data = await request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            raise ConsoleRefusal(422, "expected a JSON object")
        return data

    # -- page and sign-in ---------------------------------------------------------
    @app.get("/console")
    @app.get("/console/")
    async def console_page() -> Response:
        return Response(asset("index.html"), content_type="text/html; charset=utf-8",
                        headers=_SECURITY_HEADERS)

    @app.get("/console/static/<name>")
    async def console_asset(name: str) -> Response:
        if name not in _ASSETS:
            return _json({"error": "not found"}, 404)
        return Response(asset(name), content_type=_ASSETS[name],
                        headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.post("/console/login")
    async def console_login() -> Response:
        try:
            check_origin()
        except ConsoleRefusal as exc:
            return _json({"error": exc.message}, exc.status)
        form = await request.get_json(force=True, silent=True)
        token = form.get("token") if isinstance(form, dict) else None
        if not isinstance(token, str) or not await admin_token_ok(gateway, token):
            gateway.metrics.rejected.labels("auth").inc()
            await trio.sleep(0.2)  # a little friction for guessing
            return _json({"error": "that is not the admin token"}, 401)
        session_id, session = sessions.create()
        await run(store.record, ACTOR, "console.sign_in", "admin",
                  f"from {request.remote_addr or '?'}")
        response = _json({"csrf": session.csrf})
        response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", path="/console",
                            secure=request.scheme == "https", max_age=int(LIFETIME_S))
        return response

    @app.get("/console/api/session")
    async def console_whoami() -> Response:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return _json({"error": "sign in with the admin token"}, 401)
        return _json({"csrf": session.csrf})

    @console("/console/logout", ["POST"])
    async def logout() -> Response:
        sessions.drop(request.cookies.get(COOKIE))
        await run(store.record, ACTOR, "console.sign_out", "admin")
        response = _json({"signed_out": True})
        response.delete_cookie(COOKIE, path="/console")
        return response

    # -- overview and live events -------------------------------------------------------
    @console("/console/api/overview", ["GET"])
    async def api_overview() -> Response:
        return _json(overview(gateway))

    @app.get("/console/events")
    async def console_events() -> Response:
        try:
            signed_in(change=False)
        except ConsoleRefusal as exc:
            return _json({"error": exc.message}, exc.status)
        cookie = request.cookies.get(COOKIE)

        async def frames() -> AsyncIterator[bytes]:
            while sessions.get(cookie) is not None and not gateway.draining:
                yield b"event: overview\ndata: " + json.dumps(overview(gateway)).encode() + b"\n\n"
                await trio.sleep(EVENTS_INTERVAL_S)
            yield b"event: signed_out\ndata: {}\n\n"

        response = Response(frames(), content_type="text/event-stream",
                            headers={**_SECURITY_HEADERS, "X-Accel-Buffering": "no"})
        response.timeout = None
        return response

    # -- a server ---------------------------------------------------------------------
    def server_config(project: str, name: str) -> Any:
        proj = gateway.project(project)
        server = proj.servers.get(name) if proj is not None else None
        if server is None:
            raise ConsoleRefusal(404, f"no server {project}/{name}")
        return server

    @console("/console/api/servers/<project>/<name>", ["GET"])
    async def api_server(project: str, name: str) -> Response:
        server_config(project, name)
        rows = [s for s in await run(store.servers, project) if s.name == name]
        view = overview(gateway)["projects"].get(project, {}).get("servers", {}).get(name, {})
        return _json({"project": project, "name": name, "status": view,
                      "definition": redacted_spec(rows[0].spec) if rows else None})

    @console("/console/api/servers/<project>/<name>/tools", ["GET"])
    async def api_tools(project: str, name: str) -> Response:
        server_config(project, name)
        reply: dict[str, Any] = {}
        async for event in call_through_gateway(gateway, front, project, name, "tools/list", {}):
            reply = event.get("reply", reply)
        if "error" in reply:
            return _json({"error": reply["error"].get("message"), "tools": []}, 502)
        return _json({"tools": reply.get("result", {}).get("tools", [])})

    @console("/console/api/servers/<project>/<name>/call", ["POST"])
    async def api_call(project: str, name: str) -> Response:
        server_config(project, name)
        data = await body()
        tool, arguments = data.get("tool"), data.get("arguments", {})
        if not isinstance(tool, str) or not isinstance(arguments, dict):
            raise ConsoleRefusal(422, "expected {\"tool\": name, \"arguments\": {…}}")
        await run(store.record, ACTOR, "tool.call", f"{project}/{name}", f"tool={tool}")
        started = trio.current_time()
        events = call_through_gateway(gateway, front, project, name, "tools/call",
                                      {"name": tool, "arguments": arguments})

        async def frames() -> AsyncIterator[bytes]:
            async with contextlib.aclosing(events):
                async for event in events:
                    event["elapsed_ms"] = round((trio.current_time() - started) * 1000, 1)
                    yield b"data: " + json.dumps(event).encode() + b"\n\n"

        response = Response(frames(), content_type="text/event-stream", headers=_SECURITY_HEADERS)
        response.timeout = None
        return response

    @console("/console/api/servers/<project>/<name>/<action>", ["POST"])
    async def api_server_action(project: str, name: str, action: str) -> Response:
        server_config(project, name)
        if action in ("enable", "disable"):
            # The admin API's and the CLI's path: one audited store write, then apply.
            await run(store.set_enabled, project, name, action == "enable", actor=ACTOR)
            await gateway.sync_from_store("the console")
            return _json({f"{action}d": f"{project}/{name}"})
        if action == "restart":
            if not await gateway.restart_server(project, name, "an operator (console)"):
                raise ConsoleRefusal(409, f"{project}/{name} is not running as a shared server")
            await run(store.record, ACTOR, "server.restart", f"{project}/{name}")
            return _json({"restarted": f"{project}/{name}"})
        raise ConsoleRefusal(404, f"no action {action!r}")

    # -- keys ---------------------------------------------------------------------------
    def key_view(k: Any) -> dict[str, Any]:
        return {"prefix": k.prefix, "name": k.name, "project": k.project,
                "created_at": k.created_at, "expires_at": k.expires_at,
                "revoked": k.revoked_at is not None}

    @console("/console/api/keys", ["GET"])
    async def api_keys() -> Response:
        return _json([key_view(k) for k in await run(store.list_keys)])

    @console("/console/api/keys", ["POST"])
    async def api_create_key() -> Response:
        data = await body()
        project, name = data.get("project"), data.get("name") or "default"
        expires_in = data.get("expires_in_s")
        if not isinstance(project, str) or gateway.project(project) is None:
            raise ConsoleRefusal(422, "expected the name of a project")
        if not isinstance(name, str):
            raise ConsoleRefusal(422, "expected a key name")
        if expires_in is not None and (
            isinstance(expires_in, bool) or not isinstance(expires_in, (int, float))
            or expires_in <= 0
        ):
            raise ConsoleRefusal(422, "expected a number of seconds > 0 for the expiry")
        expires_at = time.time() + expires_in if expires_in else None
        key = await run(store.create_key, project, name, expires_at, actor=ACTOR)
        # The only time the key is ever shown.
        return _json({"key": key, "prefix": key[:12], "name": name, "project": project,
                      "expires_at": expires_at}, 201)

    @console("/console/api/keys/<prefix>", ["DELETE"])
    async def api_revoke_key(prefix: str) -> Response:
        if not await run(store.revoke_key, prefix, actor=ACTOR):
            raise ConsoleRefusal(404, f"no active key with prefix {prefix!r}")
        return _json({"revoked": prefix})

    # -- audit ----------------------------------------------------------------------------
    @console("/console/api/audit", ["GET"])
    async def api_audit() -> Response:
        project = request.args.get("project") or None
        actor = request.args.get("actor") or None
        action = request.args.get("action") or None
        entries = await run(store.audit_log, 1000)
        shown = []
        for e in entries:
            if actor and e.actor != actor:
                continue
            if action and not e.action.startswith(action):
                continue
            if project and not (
                e.target == project or e.target.startswith(f"{project}/")
                or re.search(rf"(^|\s|,)project={re.escape(project)}(\s|,|$)", e.detail or "")
            ):
                continue
            shown.append({"at": e.at, "actor": e.actor, "action": e.action,
                          "target": e.target, "detail": e.detail})
        return _json(shown[:200])

    # -- live sessions ----------------------------------------------------------------------
    @console("/console/api/sessions", ["GET"])
    async def api_sessions() -> Response:
        live = list(gateway.registry.sessions.values())
        prefixes = await run(store.prefixes_of, {s.key_hash for s in live if s.key_hash})
        now = trio.current_time()
        return _json([{
            "id": s.session_id[:12], "project": s.project, "server": s.server_name,
            "transport": str(s.transport), "client": s.client_info,
            "protocol_version": s.protocol_version, "age_s": round(now - s.opened_at, 1),
            "in_flight": s.in_flight, "key_prefix": prefixes.get(s.key_hash or ""),
        } for s in live])

    @console("/console/api/sessions/<short_id>", ["DELETE"])
    async def api_end_session(short_id: str) -> Response:
        matches = [s for s in gateway.registry.sessions.values()
                   if len(short_id) >= 8 and s.session_id.startswith(short_id)]
        if len(matches) != 1:
            raise ConsoleRefusal(404, f"no live session {short_id!r}")
        session = matches[0]
        session.close("ended by an operator (console)")
        await run(store.record, ACTOR, "session.end", f"{session.project}/{session.server_name}",
                  f"session={short_id} transport={session.transport}")
        return _json({"ended": short_id})
