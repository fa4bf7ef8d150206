"""Origin and Host checks (DNS-rebinding protection) and CORS for browser clients.

A web page can make a victim's browser talk to a gateway on localhost; the
browser then sends the page's ``Origin`` (and, after DNS rebinding, a foreign
``Host``). So (MCP "Transports", security warning): a present but disallowed
``Origin`` gets ``403``; on a loopback listener a ``Host`` that is not a
loopback name gets ``421``. Allowed browser origins — loopback ones (MCP
Inspector's UI), same-origin, and those configured — get CORS headers so the
browser lets the page read the answers, including ``Mcp-Session-Id``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import attrs

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
ALLOWED_REQUEST_HEADERS = (
    "Authorization", "Content-Type", "Accept", "Mcp-Session-Id", "MCP-Protocol-Version",
    "Last-Event-ID", "Mcp-Method", "Mcp-Name",
)
EXPOSED_HEADERS = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate"


def host_name(host: str) -> str:
    """``example.com:8000`` → ``example.com``; ``[::1]:80`` → ``[::1]``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@attrs.frozen
class OriginPolicy:
    """Which ``Host`` and ``Origin`` values a gateway accepts."""

    loopback_listener: bool
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()

    def host_ok(self, host: str | None) -> bool:
        if not host:
            return not self.loopback_listener and not self.allowed_hosts
        name = host_name(host)
        if self.allowed_hosts:
            return name in {h.lower() for h in self.allowed_hosts}
        if self.loopback_listener:
            return name in LOOPBACK_NAMES
        return True

    def origin_ok(self, origin: str, host: str | None) -> bool:
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        if origin == "null":
            return False
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        if host_name(parts.netloc) in LOOPBACK_NAMES:
            return True
        return host is not None and parts.netloc.lower() == host.strip().lower()


@attrs.frozen
class Refusal:
    """A request refused by the Origin policy: status, message, and the metric reason."""

    status: int
    message: str
    reason: str


def check_request(policy: OriginPolicy, host: str | None, origin: str | None) -> Refusal | None:
    """Apply the policy to a request's ``Host`` and ``Origin``; ``None`` when it may proceed."""
    if not policy.host_ok(host):
        return Refusal(421, f"Host {host!r} is not served here", "host")
    if origin is not None and not policy.origin_ok(origin, host):
        return Refusal(403, f"Origin {origin!r} is not allowed", "origin")
    return None


def cors_headers(origin: str) -> dict[str, str]:
    """Headers for an actual (non-preflight) response to an allowed origin."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        "Vary": "Origin",
    }


def preflight_headers(origin: str, requested: str | None) -> dict[str, str]:
    """Headers answering an ``OPTIONS`` preflight from an allowed origin."""
    allowed = {h.lower() for h in ALLOWED_REQUEST_HEADERS}
    names = [h.strip() for h in (requested or "").split(",") if h.strip()]
    echo = [h for h in names if h.lower() in allowed or h.lower().startswith("mcp-param-")]
    return {
        **cors_headers(origin),
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": ", ".join(dict.fromkeys([*ALLOWED_REQUEST_HEADERS, *echo])),
        "Access-Control-Max-Age": "600",
    }
