"""The HTTP face: a Quart-Trio app with the legacy SSE transport, health and auth.

Legacy HTTP+SSE (MCP 2024-11-05 "Transports"), as the reference SDKs speak it:

* ``GET …/sse`` opens a session and its stream. The first event is
  ``event: endpoint`` whose data is a plain URI (not JSON-RPC) carrying
  ``sessionId``; clients resolve it against the SSE URL, so it is a path
  without scheme or host (never ``0.0.0.0`` or an internal name).
* ``POST …/messages?sessionId=`` (the Python SDK says ``session_id``; both
  are accepted) takes one message — or a batch — and answers ``202``. Every
  response travels on the stream as ``event: message``. A well-formed message
  that leads to a JSON-RPC error still gets ``202``: the Python SDK client
  dies on any non-2xx POST, so the error goes on the stream.
* Keep-alive comments every ``keepalive_s`` keep idle streams open through
  Node's 5-minute idle timeout and proxies.

The stream generator only moves frames from the session's outbox; the session
actor owns all cleanup (see ``actors/session.py``), because Quart-Trio cancels
the generator the moment the client disconnects.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Response, make_response, request
from quart_trio import QuartTrio

from upstream import jsonrpc

from . import sse
from .auth import bearer_token
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .origin import OriginPolicy, cors_headers, preflight_headers
from .runtime import Gateway, is_loopback
from .streamable import register_streamable

log = logging.getLogger(__name__)


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def rpc_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An HTTP error whose body is a JSON-RPC error (id null), readable by any MCP client."""
    return json_response(jsonrpc.error_response(None, code, message), status, headers)


class Rejection(Exception):
    """Raised by checks to answer the request with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def authorize(gateway: Gateway, project_name: str) -> None:
    """Apply the project's auth rule to the current request, or raise :class:`Rejection`."""
    project = gateway.project(project_name)
    if project is not None and project.auth == "none":
        return
    key = bearer_token(request.headers.get("Authorization"))
    if key is None:
        gateway.metrics.rejected.labels("auth").inc()
        raise Rejection(
            rpc_error(
                401, -32001, "missing API key: send 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": 'Bearer realm="mcp-orch"'},
            )
        )
    owner = await gateway.keys.project_for(key)
    if owner is None:
        gateway.metrics.rejected.labels("auth").inc()
        raise Rejection(
            rpc_error(
                401, -32001, "invalid API key",
                {"WWW-Authenticate": 'Bearer realm="mcp-orch", error="invalid_token"'},
            )
        )
    if project is None or owner != project_name:
        gateway.metrics.rejected.labels("auth").inc()
        raise Rejection(rpc_error(404, -32001, f"no project {project_name!r}"))


async def authorize_admin(gateway: Gateway) -> None:
    """Require the admin token (``Authorization: Bearer``), or raise :class:`Rejection`."""
    token = bearer_token(request.headers.get("Authorization"))
    ok = False
    if token is not None:
        if gateway.admin_token is not None:
            ok = hmac.compare_digest(token.encode(), gateway.admin_token.encode())
        else:
            ok = await trio.to_thread.run_sync(gateway.store.is_admin_token, token)
    if not ok:
        gateway.metrics.rejected.labels("auth").inc()
        raise Rejection(
            rpc_error(
                401, -32001, "this endpoint needs the admin token (Authorization: Bearer)",
                {"WWW-Authenticate": 'Bearer realm="mcp-orch-admin"'},
            )
        )


async def resolve(gateway: Gateway, project: str, server: str) -> Any:
    await authorize(gateway, project)
    found = gateway.server(project, server)
    if found is None:
        raise Rejection(rpc_error(404, -32001, f"no server {server!r} in project {project!r}"))
    return found


def create_app(gateway: Gateway) -> QuartTrio:
    """Build the app around a running :class:`Gateway`."""
    app = QuartTrio("mcp_orch")
    settings = gateway.config.gateway
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    app.config["RESPONSE_TIMEOUT"] = 120  # streams switch it off per response

    policy = OriginPolicy(
        loopback_listener=is_loopback(settings.host),
        allowed_origins=tuple(settings.allowed_origins),
        allowed_hosts=tuple(settings.allowed_hosts),
    )

    @app.before_request
    async def check_origin() -> Response | None:
        if not request.path.startswith(("/projects/", "/status")):
            return None
        host = request.headers.get("Host")
        if not policy.host_ok(host):
            gateway.metrics.rejected.labels("host").inc()
            return rpc_error(421, jsonrpc.INVALID_REQUEST, f"Host {host!r} is not served here")
        origin = request.headers.get("Origin")
        if origin is not None and not policy.origin_ok(origin, host):
            gateway.metrics.rejected.labels("origin").inc()
            return rpc_error(403, jsonrpc.INVALID_REQUEST, f"Origin {origin!r} is not allowed")
        if request.method == "OPTIONS" and origin is not None:
            requested = request.headers.get("Access-Control-Request-Headers")
            return Response("", status=204, headers=preflight_headers(origin, requested))
        return None

    @app.after_request
    async def add_cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and request.path.startswith(("/projects/", "/status")):
            if policy.origin_ok(origin, request.headers.get("Host")):
                for name, value in cors_headers(origin).items():
                    response.headers.setdefault(name, value)
        return response

    @app.errorhandler(Rejection)
    async def rejected(exc: Rejection) -> Response:
        return exc.response

    @app.errorhandler(413)
    async def too_large(_: Any) -> Response:
        gateway.metrics.rejected.labels("size").inc()
        return rpc_error(
            413, jsonrpc.INVALID_REQUEST, f"request body exceeds {settings.max_body_bytes} bytes"
        )

    @app.errorhandler(404)
    async def not_found(_: Any) -> Response:
        return rpc_error(404, -32001, "not found")

    @app.errorhandler(405)
    async def not_allowed(_: Any) -> Response:
        return rpc_error(405, -32001, "method not allowed")

    @app.get("/health")
    async def health() -> Response:
        return json_response(gateway.health(), 200)

    @app.get("/ready")
    async def ready() -> Response:
        is_ready, reason = gateway.readiness()
        return json_response({"ready": is_ready, "reason": reason}, 200 if is_ready else 503)

    @app.get("/status")
    async def status() -> Response:
        await authorize_admin(gateway)
        return json_response(gateway.status(), 200)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), status=200, content_type=METRICS_CONTENT_TYPE)

    @app.route("/.well-known/<path:rest>", methods=["GET", "POST", "OPTIONS"])
    async def well_known(rest: str) -> Response:
        # No OAuth here: answer fast so OAuth-aware clients stop looking.
        return rpc_error(404, -32001, "this gateway uses API keys (Authorization: Bearer), not OAuth")

    @app.get("/projects/<project>/servers/<server>/sse")
    async def open_sse(project: str, server: str) -> Response:
        config, supervisor = await resolve(gateway, project, server)
        if gateway.draining:
            gateway.metrics.rejected.labels("draining").inc()
            return rpc_error(
                503, jsonrpc.UPSTREAM_UNAVAILABLE, "the gateway is shutting down",
                {"Retry-After": "5"},
            )
        registry = gateway.registry
        frames = gateway.metrics.stream_frames.labels("sse")
        sent_bytes = gateway.metrics.stream_bytes.labels("sse")
        session = registry.new_session(
            project, config, supervisor, "sse", outbox_size=settings.session_queue
        )
        endpoint = f"/projects/{project}/servers/{server}/messages?sessionId={session.session_id}"
        keepalive_s = settings.keepalive_s

        async def stream() -> AsyncIterator[bytes]:
            try:
                await registry.start(session)
                log.info("sse session %s opened for %s/%s", session.session_id, project, server)
                yield sse.event(endpoint, name="endpoint")
                receive = session.outbound_recv.receive
                while True:
                    message = None
                    with trio.move_on_after(keepalive_s):
                        message = await receive()
                    if message is None:
                        yield sse.KEEPALIVE
                    else:
                        frame = sse.event(jsonrpc.dumps(message), name="message")
                        frames.inc()
                        sent_bytes.inc(len(frame))
                        yield frame
            except trio.EndOfChannel:
                log.info("sse session %s ended: %s", session.session_id, session.close_reason)
            finally:
                session.close("the client disconnected")

        response = await make_response(stream(), 200, dict(sse.STREAM_HEADERS))
        response.timeout = None
        return response

    @app.post("/projects/<project>/servers/<server>/messages")
    async def post_message(project: str, server: str) -> Response:
        await resolve(gateway, project, server)
        session_id = request.args.get("sessionId") or request.args.get("session_id")
        if not session_id:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, "missing sessionId query parameter")
        session = gateway.registry.get(session_id)
        if session is None or session.project != project or session.config.name != server:
            gateway.metrics.rejected.labels("session").inc()
            return rpc_error(404, -32001, "unknown or ended session; open a new SSE stream")
        body = await request.get_data(cache=False)
        try:
            parsed = jsonrpc.loads(body)
        except jsonrpc.InvalidMessage as exc:
            return rpc_error(400, jsonrpc.PARSE_ERROR, f"parse error: {exc}")
        batch = parsed if isinstance(parsed, list) else [parsed]
        if not batch:
            return rpc_error(400, jsonrpc.INVALID_REQUEST, "empty batch")
        for message in batch:
            try:
                jsonrpc.classify(message)
            except jsonrpc.InvalidMessage as exc:
                return rpc_error(400, jsonrpc.INVALID_REQUEST, f"invalid JSON-RPC message: {exc}")
        for message in batch:
            if not await session.submit(message):
                if session.closing:
                    return rpc_error(404, -32001, "the session ended; open a new SSE stream")
                gateway.metrics.rejected.labels("busy").inc()
                return rpc_error(
                    503, jsonrpc.SESSION_BUSY, "session inbox full; retry",
                    {"Retry-After": "1"},
                )
        return Response("Accepted", status=202, content_type="text/plain")

    register_streamable(app, gateway, resolve, rpc_error)
    return app

