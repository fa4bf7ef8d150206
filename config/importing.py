"""Import of the ``mcpServers`` JSON that MCP clients use (Claude Desktop, Cursor, Cline …).

Each entry becomes a server table: ``command``/``args``/``env``/``cwd`` for a
stdio server, ``url`` with ``type`` (``sse``; ``http`` or
``streamable-http``; ``ws`` or ``websocket``, also implied by a ``ws://`` or
``wss://`` url) and ``headers`` for a remote one. ``disabled`` and
``timeout`` (seconds) are understood; ``autoApprove`` and ``alwaysAllow``
are client-side UI preferences and are dropped. Anything else is an error
that names the entry and the field. Every entry is validated before any is
stored, so a file is imported whole or not at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .loading import ConfigError, parse_server, server_spec

_CLIENT_ONLY = {"autoApprove", "alwaysAllow"}
#: An entry's ``type`` → the server's ``transport`` (``None``: a stdio server).
_TRANSPORTS: dict[str, str | None] = {
    "stdio": None, "sse": "sse", "http": "streamable-http", "streamable-http": "streamable-http",
    "streamableHttp": "streamable-http", "ws": "websocket", "websocket": "websocket",
}
_KNOWN = {"command", "args", "env", "cwd", "url", "type", "transport", "headers", "disabled",
          "timeout"} | _CLIENT_ONLY


def read_mcp_servers(path: str | Path, project: str) -> dict[str, dict[str, Any]]:
    """Parse and validate a file; return server specs by name (nothing is stored here).

    Error handling: raises :class:`ConfigError` naming the file, the entry and the field.
    """
    source = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError.at(source, None, f"cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError.at(source, None, f"not valid JSON: {exc}") from None
    return parse_mcp_servers(data, project, source)


def parse_mcp_servers(data: Any, project: str, source: str) -> dict[str, dict[str, Any]]:
    """Validate parsed ``mcpServers`` JSON; return server specs by name."""
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ConfigError.at(source, None, 'expected an object with an "mcpServers" object')
    specs: dict[str, dict[str, Any]] = {}
    for name, entry in servers.items():
        where = f"mcpServers.{name}"
        if not isinstance(entry, dict):
            raise ConfigError.at(source, where, f"expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - _KNOWN)
        if unknown:
            raise ConfigError.at(source, f"{where}.{unknown[0]}", "unknown field; expected one "
                                 "of: " + ", ".join(sorted(_KNOWN - _CLIENT_ONLY)))
        raw: dict[str, Any] = {}
        for field in ("command", "args", "env", "cwd", "url", "headers"):
            if field in entry:
                raw[field] = entry[field]
        kind_field = "type" if "type" in entry else "transport"
        kind = entry.get(kind_field)
        if kind is not None:
            if not isinstance(kind, str) or kind not in _TRANSPORTS:
                raise ConfigError.at(source, f"{where}.{kind_field}", "expected stdio, sse, http, "
                                     f"streamable-http, ws or websocket, got {kind!r}")
            if _TRANSPORTS[kind] is not None:
                raw["transport"] = _TRANSPORTS[kind]
        if "disabled" in entry:
            if not isinstance(entry["disabled"], bool):
                raise ConfigError.at(source, f"{where}.disabled", "expected true or false")
            raw["enabled"] = not entry["disabled"]
        if "timeout" in entry:
            raw["request_timeout_s"] = entry["timeout"]
        try:
            server = parse_server(project, name, raw, source)
        except ConfigError as exc:
            # Name the entry as the file does: mcpServers.<name>.<field>.
            ours, theirs = f"projects.{project}.servers.{name}", where
            field = exc.field
            if field is not None and (field == ours or field.startswith(ours + ".")):
                field = theirs + field[len(ours):]
            message = str(exc).replace(ours, theirs)
            if kind is not None and field == f"{where}.transport":  # the file says "type"
                field = f"{where}.{kind_field}"
                message = message.replace(f"{where}.transport:", f"{field}:")
            raise ConfigError(message, source=exc.source, field=field,
                              expectation=exc.expectation) from None
        specs[name] = server_spec(server)
    return specs
