"""The gateway's settings as frozen attrs classes: what a TOML config file describes.

Frozen is shallow, so collections are tuples and read-only mappings: a loaded
``Config`` is a value that every task can share without locks.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from typing import Literal

import attrs

from .errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
#: ``$${`` (escape), ``${NAME}`` (reference), or a bare ``${`` (malformed).
_ENV_TOKEN = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


def _frozen_mapping(value: Mapping) -> Mapping:
    return types.MappingProxyType(dict(value))


@attrs.frozen
class RestartPolicy:
    """How a crashed upstream is restarted (see ``actors/supervisor.py``)."""

    max_restarts: int = 5
    window_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    failed_retry_s: float = 300.0


@attrs.frozen
class ToolOverride:
    """``[projects.P.servers.S.tools.NAME]``: how the project endpoint shows one tool
    (``NAME`` is the server's own name, which is what still goes upstream).

    ``rename`` replaces the whole exposed name (prefix included); it must match
    the exposed-name pattern and is checked for collisions like any other name.
    """

    rename: str | None = None
    description: str | None = None
    title: str | None = None


@attrs.frozen
class ToolPolicy:
    """``[projects.P.policy]``: which tools the project endpoint shows and serves.

    ``allow`` and ``deny`` are ``fnmatch`` globs on exposed tool names; deny
    wins, no ``allow`` list allows every name. ``read_only`` hides every tool
    not annotated ``readOnlyHint: true``. A hidden tool is "unknown tool".
    """

    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()
    read_only: bool = False


@attrs.frozen
class RateLimits:
    """``[projects.P.limits]``: token buckets per API key (``rate``/``burst``) and for the
    whole project (``project_rate``/``project_burst``), in requests per second, and
    ``max_concurrent`` calls in flight per server of the project endpoint. Unset: no limit.
    A bucket's ``burst`` defaults to ``max(1, ceil(rate))``."""

    rate: float | None = None
    burst: int | None = None
    project_rate: float | None = None
    project_burst: int | None = None
    max_concurrent: int | None = None


@attrs.frozen
class ServerConfig:
    """One upstream MCP server: a stdio subprocess (``command``) or a remote endpoint (``url``).

    ``env`` and ``headers`` values may reference the gateway's environment as
    ``${VAR}``; they are expanded when the server is started or connected
    (:func:`expand_env`), so secrets never sit in the config object.
    """

    name: str
    #: A stdio server: the command to start (exactly one of ``command`` and ``url``).
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    cwd: str | None = None
    #: A remote server: its MCP endpoint (``http(s)://…``, or ``ws(s)://…`` for WebSocket).
    url: str | None = None
    #: How to reach ``url``: Streamable HTTP or the legacy HTTP+SSE transport for
    #: an ``http(s)://`` url, ``websocket`` for a ``ws(s)://`` one (the default
    #: there when the config names no transport; see ``config/loading.py``).
    transport: Literal["streamable-http", "sse", "websocket"] = "streamable-http"
    #: HTTP headers for ``url`` (e.g. ``Authorization``; on a WebSocket, sent with
    #: the opening handshake); values may use ``${VAR}``.
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    isolation: Literal["shared", "session"] = "shared"
    request_timeout_s: float = 60.0
    #: How long the very first start may take to answer ``initialize`` (an
    #: ``npx -y`` server may still be downloading); restarts use ``request_timeout_s``.
    first_start_timeout_s: float = 300.0
    restart: RestartPolicy = RestartPolicy()
    enabled: bool = True
    #: On the project endpoint, what this server's tool and prompt names are
    #: prefixed with (then ``gateway.tool_separator``): ``None`` means the
    #: server's name, ``""`` no prefix at all (see ``actors/naming.py``).
    prefix: str | None = None
    #: Per-tool overrides on the project endpoint, by the server's own tool name.
    tools: Mapping[str, ToolOverride] = attrs.field(factory=dict, converter=_frozen_mapping)


@attrs.frozen
class ProjectConfig:
    """A named group of servers sharing one set of API keys."""

    name: str
    auth: Literal["api-key", "none"] = "api-key"
    servers: Mapping[str, ServerConfig] = attrs.field(factory=dict, converter=_frozen_mapping)
    #: What the project endpoint shows and serves (``actors/policy.py``).
    policy: ToolPolicy = ToolPolicy()
    #: Request rates and concurrency (``actors/policy.py``, ``gateway/core.py``).
    limits: RateLimits = RateLimits()


@attrs.frozen
class TelemetrySettings:
    """OpenTelemetry tracing (``[gateway.telemetry]``): off unless ``endpoint`` is set.

    Spans go by OTLP/HTTP (protobuf) to ``endpoint`` (``http(s)://host:port``;
    ``/v1/traces`` is added unless the URL already names a path). Needs the
    ``telemetry`` extra (``pip install 'mcp-orch[telemetry]'``).
    """

    endpoint: str | None = None
    #: ``service.name`` of the spans' resource.
    service_name: str = "mcp-orch"
    #: Extra headers for the collector (``${VAR}`` allowed, e.g. an API key).
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)


#: The default of ``gateway.answer_window_s`` (the same 50 ms the 2026-07-28 path
#: gives a request's questions to gather, ``gateway/transports/stateless``).
ANSWER_WINDOW_S = 0.05


@attrs.frozen
class GatewaySettings:
    """Where the gateway listens, where it keeps state, and its global limits."""

    host: str = "127.0.0.1"
    port: int = 8000
    state_dir: str = "state"
    #: Where projects, servers and keys live: a ``postgresql://`` DSN (may be
    #: ``${VAR}``; several instances then share it) or unset, for SQLite in
    #: ``state_dir``.
    store: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    keepalive_s: float = 15.0
    #: Messages queued per legacy SSE / WebSocket session at most (half of it for
    #: answers); under pressure notifications are dropped, responses never.
    session_queue: int = 256
    #: A JSON-RPC batch of more messages than this is refused whole (400).
    max_batch: int = 10_000
    #: A legacy SSE / WebSocket stream that takes nothing this long while messages
    #: wait for it is not being read: under pressure its session ends.
    reader_stall_s: float = 30.0
    #: On SIGTERM, how long in-flight requests may run before streams are closed.
    drain_timeout_s: float = 30.0
    #: How long an upstream gets after stdin EOF and again after SIGTERM before SIGKILL.
    stop_grace_s: float = 3.0
    #: Token for /status (and the admin API); may be "${VAR}". Unset: one is
    #: generated at first start, printed once, and kept (hashed) in the store.
    admin_token: str | None = None
    #: Origins (``scheme://host[:port]``) browsers may call from, or "*". Loopback
    #: origins and same-origin requests are always allowed.
    allowed_origins: tuple[str, ...] = ()
    #: Accepted ``Host`` names (DNS-rebinding protection). Empty: on a loopback
    #: address only loopback names; elsewhere any.
    allowed_hosts: tuple[str, ...] = ()
    #: A Streamable HTTP session with nothing in flight and no stream open ends after this.
    http_session_idle_s: float = 900.0
    #: SSE polling (2025-11-25): close a request's stream after this long and let
    #: the client resume it with Last-Event-ID (0: keep streams open).
    sse_poll_s: float = 0.0
    #: The ``retry:`` hint (ms) in priming events: how soon a client should reconnect.
    sse_retry_ms: int = 1000
    #: Streamable HTTP 2025-11-25: how long a ``tools/call`` POST holds its answer
    #: before it becomes an SSE stream (priming event first, resumable); a result
    #: ready sooner, with nothing else before it, is a plain JSON body (0: always SSE).
    answer_window_s: float = ANSWER_WINDOW_S
    #: 2026-07-28 (MRTR): how long a request that asked the client for input
    #: waits for the retry carrying ``inputResponses`` before it is cancelled.
    input_wait_s: float = 300.0
    #: A connection that has not sent a complete request head this long after
    #: opening (or after the first byte of its next request) is closed.
    header_timeout_s: float = 10.0
    #: Open client connections at most; beyond it a new one gets 503 and is closed.
    max_connections: int = 4096
    #: Who may read ``/metrics`` and ``/admin/openapi.json``: anyone who reaches
    #: the port ("none", so scrapers need no token), or only the admin token ("admin").
    metrics_auth: Literal["none", "admin"] = "none"
    #: OpenTelemetry tracing; off unless ``telemetry.endpoint`` is set.
    telemetry: TelemetrySettings = TelemetrySettings()
    #: The project endpoint (``/projects/{p}/mcp``): between a server's prefix and a
    #: tool or prompt name.
    tool_separator: str = "__"
    #: The longest tool or prompt name the project endpoint exposes (longer ones are
    #: shortened with a hash; LLM function names allow 64).
    max_tool_name: int = 64
    #: The project endpoint's list fan-out: a server that has not answered a list
    #: request within this long is left out of that answer (with a warning).
    list_timeout_s: float = 2.0
    #: The host name or address other instances reach this one at (they forward
    #: requests for its sessions there). Unset: the listen address, or this
    #: machine's address when it listens on a wildcard.
    advertise_host: str | None = None


@attrs.frozen
class Config:
    """A whole loaded configuration; ``source`` is the file it came from."""

    gateway: GatewaySettings = GatewaySettings()
    projects: Mapping[str, ProjectConfig] = attrs.field(factory=dict, converter=_frozen_mapping)
    source: str | None = None


def env_refs(value: str) -> list[str]:
    """The variable names ``value`` refers to as ``${NAME}``, in order.

    ``$${`` is a literal ``${``. A ``${`` that does not form ``${NAME}``
    (NAME = ``[A-Za-z_][A-Za-z0-9_]*``) raises ``ValueError``: a typo such as
    ``${TOKEN`` must not reach a server as a literal placeholder.
    """
    names = []
    for match in _ENV_TOKEN.finditer(value):
        if match.group("name"):
            names.append(match.group("name"))
        elif match.group(0) != "$${":
            raise ValueError(
                f"malformed variable reference at {value[match.start():match.start() + 20]!r}: "
                "expected ${NAME} with NAME of letters, digits and '_' (write $${ for a literal ${)"
            )
    return names


def expand_env(
    env: Mapping[str, str], environ: Mapping[str, str], where: str = ""
) -> dict[str, str]:
    """Replace ``${VAR}`` in each value from ``environ``; ``$${`` stays a literal ``${``.

    Used when a server process is spawned, not at load time, so secrets
    never sit in the config object. Error handling: a variable that is not
    set (or a malformed reference) raises ``ConfigError`` naming it and
    ``where`` (e.g. the server), rather than passing an empty secret.
    """
    place = f"{where}: " if where else ""
    result = {}
    for key, value in env.items():
        try:
            env_refs(value)
        except ValueError as exc:
            raise ConfigError(f"{place}env.{key}: {exc}") from None

        def substitute(match: re.Match[str], key: str = key) -> str:
            name = match.group("name")
            if not name:
                return "${"
            if name not in environ:
                raise ConfigError(
                    f"{place}env.{key} refers to ${{{name}}}, which is not set in the "
                    "gateway's environment"
                )
            return environ[name]

        result[key] = _ENV_TOKEN.sub(substitute, value)
    return result
