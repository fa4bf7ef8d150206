"""Gateway config files for tests: the TOML writer and the stock upstream servers.

Tests describe projects as plain dicts (``{"demo": {"servers": {"demo": {...}}}}``)
and get a real config file, so the gateway under test loads exactly what an
operator's file would give it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
#: The bundled stdio demo server (``upstream/demo_server.py``).
DEMO_SERVER: dict[str, Any] = {"command": "python", "args": ["-m", "upstream.demo_server"]}
#: The conformance fixture server (``tests/servers/conformance_server.py``).
CONFORMANCE_SERVER: dict[str, Any] = {
    "command": "python", "args": ["-m", "tests.servers.conformance_server"], "cwd": str(REPO),
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_config(
    directory: Path,
    projects: Mapping[str, Mapping[str, Any]],
    **gateway: Any,
) -> Path:
    """Write a gateway TOML config; ``projects`` maps name → {"auth":…, "servers": {…}}."""
    lines = ["[gateway]"]
    settings = {"host": "127.0.0.1", "port": 0, "state_dir": "state", **gateway}
    lines += [f"{k} = {_toml_value(v)}" for k, v in settings.items()]
    for pname, project in projects.items():
        lines.append(f"\n[projects.{pname}]")
        if "auth" in project:
            lines.append(f"auth = {_toml_value(project['auth'])}")
        for sname, server in project.get("servers", {}).items():
            lines.append(f"\n[projects.{pname}.servers.{sname}]")
            restart = server.get("restart")
            for k, v in server.items():
                if k != "restart":
                    lines.append(f"{k} = {_toml_value(v)}")
            if restart:
                lines.append(f"\n[projects.{pname}.servers.{sname}.restart]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in restart.items()]
    path = directory / "mcp-orch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def demo_projects(**server_overrides: Any) -> dict[str, Any]:
    """One project ``demo`` with one server ``demo`` (the demo server, plus overrides)."""
    return {"demo": {"servers": {"demo": {**DEMO_SERVER, **server_overrides}}}}
