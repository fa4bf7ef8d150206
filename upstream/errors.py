"""The one table of JSON-RPC error codes the gateway sends, and the base of its errors.

Three kinds of codes meet in a gateway, and they must not be confused:

* JSON-RPC 2.0's own (``-32700``, ``-32600`` … ``-32603``);
* codes MCP gives a meaning: ``-32002`` resource not found, ``-32042`` URL
  elicitation required, and in 2026-07-28 ``-32020`` header mismatch,
  ``-32021`` missing client capability, ``-32022`` unsupported protocol
  version. The official SDKs also read ``-32000`` as "connection closed" and
  ``-32001`` as "request timeout". The gateway sends these only with exactly
  that meaning (an upstream's own ``-32002`` passes through untouched);
* the gateway's own, in the implementation range ``-32000 … -32099`` and
  clear of every code above (``-32050`` …).

Every refusal or failure is an exception carrying its code and the HTTP
status a transport answers with when it answers in HTTP; transports render
them in one place each and never look at the message text.
"""

from __future__ import annotations

from typing import Any

# -- JSON-RPC 2.0 ---------------------------------------------------------------
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# -- meanings MCP (and its SDKs) give to implementation-range codes ---------------
#: The connection to the server closed (SDKs' ``ConnectionClosed``): the
#: upstream is not running, is restarting, or the gateway is shutting down.
UPSTREAM_UNAVAILABLE = -32000
#: The request timed out (SDKs' ``RequestTimeout``).
REQUEST_TIMEOUT = -32001
#: A resource does not exist (MCP "Resources"; ``-32602`` from 2026-07-28 on).
RESOURCE_NOT_FOUND = -32002
#: 2026-07-28: an ``Mcp-*`` header disagrees with the body.
HEADER_MISMATCH = -32020
#: 2026-07-28: the request needs a client capability it did not declare.
MISSING_CLIENT_CAPABILITY = -32021
#: 2026-07-28: the protocol version is not supported.
UNSUPPORTED_VERSION = -32022
#: The server needs the user to visit a URL (MCP elicitation).
URL_ELICITATION_REQUIRED = -32042

#: Codes the gateway never uses for a meaning of its own.
MCP_DEFINED = frozenset({
    RESOURCE_NOT_FOUND, HEADER_MISMATCH, MISSING_CLIENT_CAPABILITY, UNSUPPORTED_VERSION,
    URL_ELICITATION_REQUIRED,
})

# -- the gateway's own -----------------------------------------------------------
#: The upstream ended (crashed, was stopped or restarted) while serving the request.
UPSTREAM_CLOSED = -32050
#: The session (or the gateway) has no room for the request now; retry.
SESSION_BUSY = -32051
#: No such route, project, server or session (HTTP 404).
NOT_FOUND = -32052
#: A missing or invalid API key or admin token (HTTP 401).
UNAUTHORIZED = -32053
#: The HTTP method is not served on this route (HTTP 405).
METHOD_NOT_ALLOWED = -32054
#: The gateway is shutting down (HTTP 503).
SHUTTING_DOWN = -32055
#: Over a rate or concurrency limit (``[projects.P.limits]``); ``data.retryAfterMs``
#: says when to retry (HTTP 429 with ``Retry-After`` where the answer is the POST's).
RATE_LIMITED = -32056
#: The route is closed by the project's tool policy or the key's allow list (HTTP 403):
#: per-server routes serve a server raw, so a narrowed project or key uses the
#: project endpoint.
POLICY_RESTRICTED = -32057

GATEWAY_CODES = frozenset({
    UPSTREAM_CLOSED, SESSION_BUSY, NOT_FOUND, UNAUTHORIZED, METHOD_NOT_ALLOWED, SHUTTING_DOWN,
    RATE_LIMITED, POLICY_RESTRICTED,
})


class GatewayError(Exception):
    """Base of the gateway's errors: a JSON-RPC ``code`` and the HTTP ``status`` for it.

    Subclasses set class defaults; an instance may override both. ``data``
    travels as the JSON-RPC error's ``data``.
    """

    code: int = INTERNAL_ERROR
    status: int = 500

    def __init__(
        self, message: str, *, code: int | None = None, status: int | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.data = data
