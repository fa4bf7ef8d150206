"""The HTTP face: the MCP routes (``gateway/transports/``) in front of the Quart-Trio
operations app (health, readiness, status, metrics, the admin API, OAuth discovery
answers), with its admin auth and Origin policy.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from upstream import errors, jsonrpc

from .core import Gateway, is_loopback
from .http.auth import bearer_token
from .http.origin import OriginPolicy, check_request, cors_headers, preflight_headers
from .ops.admin import register_admin
from .ops.console import register_console
from .ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .transports.routes import McpRoutes

log = logging.getLogger(__name__)


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def rpc_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An HTTP error whose body is a JSON-RPC error (id null), readable by any MCP client."""
    return json_response(jsonrpc.error_response(None, code, message), status, headers)


#: Paths ``gateway.metrics_auth = "admin"`` puts behind the admin token.
METRICS_AUTH_PATHS = ("/metrics", "/admin/openapi.json")
OAUTH_HINT = ("this gateway takes API keys (Authorization: Bearer <key>), not OAuth; "
              "create one with `mcp-orch keys create --project P`")


def oauth_error(status: int, error: str) -> Response:
    """An OAuth-shaped error (``{"error", "error_description"}``) saying the gateway takes API keys."""
    return json_response({"error": error, "error_description": OAUTH_HINT}, status,
                         {"Cache-Control": "no-store"})


class Rejection(Exception):
    """Raised by checks to answer the request with ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


async def admin_token_ok(gateway: Gateway, token: str | None) -> bool:
    """Whether ``token`` is the admin token (the configured one, else the store's)."""
    if token is None:
        return False
    if gateway.admin_token is not None:
        return hmac.compare_digest(token.encode(), gateway.admin_token.encode())
    return await trio.to_thread.run_sync(gateway.store.is_admin_token, token)


async def authorize_admin(gateway: Gateway) -> None:
    """Require the admin token (``Authorization: Bearer``), or raise :class:`Rejection`."""
    token = bearer_token(request.headers.get("Authorization"))
    if not await admin_token_ok(gateway, token):
        gateway.metrics.rejected.labels("auth").inc()
        raise Rejection(
            rpc_error(
                401, errors.UNAUTHORIZED, "this endpoint needs the admin token (Authorization: Bearer)",
                {"WWW-Authenticate": 'Bearer realm="mcp-orch-admin"'},
            )
        )


def origin_policy(gateway: Gateway) -> OriginPolicy:
    settings = gateway.config.gateway
    return OriginPolicy(
        loopback_listener=is_loopback(settings.host),
        allowed_origins=tuple(settings.allowed_origins),
        allowed_hosts=tuple(settings.allowed_hosts),
    )


def create_asgi(gateway: Gateway) -> Any:
    """The whole HTTP face: the MCP routes on the session front
    (``gateway/transports/``) in front of the operations app."""
    return McpRoutes(gateway, origin_policy(gateway), create_app(gateway))


def create_app(gateway: Gateway) -> QuartTrio:
    """Build the app around a running :class:`Gateway`."""
    app = QuartTrio("mcp_orch")
    settings = gateway.config.gateway
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    app.config["RESPONSE_TIMEOUT"] = 120  # streams switch it off per response

    policy = origin_policy(gateway)

    @app.before_request
    async def check_origin() -> Response | None:
        if not request.path.startswith(("/projects/", "/status", "/admin/")):
            return None
        origin = request.headers.get("Origin")
        refusal = check_request(policy, request.headers.get("Host"), origin)
        if refusal is not None:
            gateway.metrics.rejected.labels(refusal.reason).inc()
            return rpc_error(refusal.status, errors.INVALID_REQUEST, refusal.message)
        if request.method == "OPTIONS" and origin is not None:
            requested = request.headers.get("Access-Control-Request-Headers")
            return Response("", status=204, headers=preflight_headers(origin, requested))
        return None

    @app.after_request
    async def add_cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and request.path.startswith(("/projects/", "/status", "/admin/")):
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
            413, errors.INVALID_REQUEST, f"request body exceeds {settings.max_body_bytes} bytes"
        )

    @app.errorhandler(404)
    async def not_found(_: Any) -> Response:
        return rpc_error(404, errors.NOT_FOUND, "not found")

    @app.errorhandler(405)
    async def not_allowed(_: Any) -> Response:
        return rpc_error(405, errors.METHOD_NOT_ALLOWED, "method not allowed")

    @app.get("/health")
    async def health() -> Response:
        return json_response(gateway.health(), 200)

    @app.get("/ready")
    async def ready() -> Response:
        is_ready, reason = gateway.readiness()
        return json_response({"ready": is_ready, "reason": reason,
                              **gateway.cluster_view(addresses=False)},
                             200 if is_ready else 503)

    @app.get("/status")
    async def status() -> Response:
        await authorize_admin(gateway)
        return json_response(gateway.status(), 200)

    @app.before_request
    async def guard_metrics() -> None:
        # gateway.metrics_auth = "admin": the scrape and the API description need
        # the admin token, like /status ("none", the default: open, for scrapers).
        if settings.metrics_auth == "admin" and request.path in METRICS_AUTH_PATHS:
            await authorize_admin(gateway)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), status=200, content_type=METRICS_CONTENT_TYPE)

    # No OAuth here. OAuth-aware clients (MCP Inspector's web UI) answer a 401 by
    # probing /.well-known/*, then POST /register; each gets an OAuth-shaped
    # error (RFC 6749 §5.2) whose description the client shows the user.
    @app.route("/.well-known/<path:rest>", methods=["GET", "POST", "OPTIONS"])
    async def well_known(rest: str) -> Response:
        # 404 (no metadata): clients stop looking at once.
        return oauth_error(404, "not_found")

    @app.route("/register", methods=["GET", "POST"])
    async def register() -> Response:
        return oauth_error(400, "invalid_client_metadata")

    @app.route("/authorize", methods=["GET", "POST"])
    async def authorize_oauth() -> Response:
        return oauth_error(400, "invalid_request")

    @app.route("/token", methods=["POST", "GET"])
    async def token() -> Response:
        return oauth_error(400, "invalid_request")

    register_admin(app, gateway, authorize_admin, json_response)
    register_console(app, gateway, admin_token_ok, policy)
    return app
