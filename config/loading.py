"""Loading a TOML config file into :class:`~config.models.Config`, with errors people can act on.

Every error names the file, the field (as a dotted path such as
``projects.demo.servers.git.restart.max_restarts``) and what was expected.
Loading is strict on purpose: unknown keys are errors (typos do not pass
silently), ``true`` is not an integer, and a string is not a list (``args =
"npx"`` would otherwise become ``['n', 'p', 'x']``).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn

from .errors import ConfigError
from .models import (
    NAME_PATTERN,
    Config,
    GatewaySettings,
    ProjectConfig,
    RateLimits,
    ServerConfig,
    ToolOverride,
    ToolPolicy,
    env_refs,
)

HTTP_SCHEMES = ("http://", "https://")
#: What the project endpoint may expose as a tool name (a ``rename`` must match it).
EXPOSED_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
WS_SCHEMES = ("ws://", "wss://")


class _FieldError(ValueError):
    """A value of the wrong type or range; its text is the expectation."""


def default_config_path() -> Path:
    """The example config that ships with the package."""
    return Path(__file__).resolve().parent / "example.toml"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _strict_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _FieldError(f"expected int, got {_describe(value)}")
    return value


def _strict_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError(f"expected a number, got {_describe(value)}")
    return float(value)


def _strict_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise _FieldError(f"expected a string, got {_describe(value)}")
    return value


def _strict_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(f"expected true or false, got {_describe(value)}")
    return value


def _str_tuple(value: Any, _: type) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _FieldError(f"expected an array of strings, got {_describe(value)}")
    for item in value:
        if not isinstance(item, str):
            raise _FieldError(f"expected an array of strings, found {_describe(item)}")
    return tuple(value)


def _str_mapping(value: Any, _: type) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _FieldError(f"expected a table of strings, got {_describe(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _FieldError(f"expected a string for {key!r}, got {_describe(item)}")
    return dict(value)


def _overrides(conv: cattrs.Converter, value: Any) -> dict[str, ToolOverride]:
    if not isinstance(value, dict):
        raise _FieldError(f"expected a table of tool tables, got {_describe(value)}")
    return {name: conv.structure(item, ToolOverride) for name, item in value.items()}


def _is_literal(tp: Any) -> bool:
    return typing.get_origin(tp) is typing.Literal


def _literal_hook(tp: Any) -> Any:
    choices = typing.get_args(tp)

    def structure(value: Any, _: type) -> Any:
        if value not in choices or isinstance(value, bool):
            options = ", ".join(repr(c) for c in choices)
            raise _FieldError(f"expected one of {options}, got {_describe(value)}")
        return value

    return structure


def _table_hook(cl: type, conv: cattrs.Converter) -> Any:
    """Structure an attrs class, first checking that the value is a table at all.

    Without this, ``restart = 5`` fails deep inside cattrs with a TypeError
    about iteration instead of saying that a table was expected.
    """
    structure_fields = make_dict_structure_fn(cl, conv, _cattrs_forbid_extra_keys=True)

    def structure(value: Any, _: type) -> Any:
        if not isinstance(value, Mapping):
            raise _FieldError(f"expected a table, got {_describe(value)}")
        return structure_fields(value, cl)

    return structure


def _converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook_func(lambda t: t == tuple[str, ...], _str_tuple)
    conv.register_structure_hook_func(lambda t: t == Mapping[str, str], _str_mapping)
    conv.register_structure_hook_factory(_is_literal, _literal_hook)
    conv.register_structure_hook_func(lambda t: t == Mapping[str, ToolOverride],
                                      lambda v, _: _overrides(conv, v))
    conv.register_structure_hook_factory(attrs.has, _table_hook)
    return conv


_CONVERTER = _converter()
_KEY_IN_PATH = re.compile(r"\[['\"]([^'\"]*)['\"]\]")


def _dotted(path: str) -> str:
    path = _KEY_IN_PATH.sub(r".\1", path)
    return path.removeprefix("$").lstrip(".")


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, _FieldError):
        return str(exc)
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl) if a.name != "name"]
        parts = []
        for field in sorted(exc.extra_fields):
            close = difflib.get_close_matches(field, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"{field!r}{hint}")
        expected = ", ".join(known)
        return f"unknown field {', '.join(parts)}; expected one of: {expected}"
    return f"invalid value ({exc})"


def _problems(exc: BaseException, source: str, prefix: str) -> list[ConfigError]:
    problems = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format):
        text, _, path = line.rpartition(" @ ")
        field = _dotted(path)
        full = ".".join(p for p in (prefix, field) if p)
        problems.append(ConfigError.at(source, full or None, text))
    return problems


def _table(raw: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError.at(source, where, f"expected a table, got {_describe(raw)}")
    return raw


def _name(name: str, source: str, parent: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError.at(
            source, parent,
            f"invalid name {name!r}: expected only letters, digits, '_', '.', '-'",
        )


def _structure(raw: dict[str, Any], cls: type, source: str, prefix: str) -> Any:
    try:
        return _CONVERTER.structure(raw, cls)
    except Exception as exc:  # cattrs raises ClassValidationError groups
        problems = _problems(exc, source, prefix)
        if not problems:
            raise ConfigError.at(source, prefix or None, str(exc)) from None
        # Every problem in the message, one a line; the attributes are the first one's.
        first = problems[0]
        raise ConfigError("\n".join(str(p) for p in problems), source=source,
                          field=first.field, expectation=first.expectation) from None


def _check(condition: bool, source: str, field: str, expectation: str, value: Any) -> None:
    if not condition:
        raise ConfigError.at(source, field, f"expected {expectation}, got {_describe(value)}")


def _validate_server(server: ServerConfig, source: str, where: str) -> None:
    if server.url is None:
        _check(bool(server.command.strip()), source, f"{where}.command",
               "a command (or a url for a remote server)", server.command)
    else:
        if server.command:
            raise ConfigError.at(
                source, where,
                "expected either command (a stdio server) or url (a remote server), not both",
            )
        _check(server.url.startswith(HTTP_SCHEMES + WS_SCHEMES), source, f"{where}.url",
               "an http://, https://, ws:// or wss:// URL", server.url)
        if server.url.startswith(WS_SCHEMES):
            _check(server.transport == "websocket", source, f"{where}.transport",
                   "'websocket' for a ws:// or wss:// url (or no transport)", server.transport)
        else:
            _check(server.transport != "websocket", source, f"{where}.transport",
                   "'streamable-http' or 'sse' for an http:// or https:// url "
                   "('websocket' needs a ws:// or wss:// url)", server.transport)
    _check(server.request_timeout_s > 0, source, f"{where}.request_timeout_s",
           "a number > 0", server.request_timeout_s)
    _check(server.first_start_timeout_s > 0, source, f"{where}.first_start_timeout_s",
           "a number > 0", server.first_start_timeout_s)
    r = server.restart
    _check(r.max_restarts >= 0, source, f"{where}.restart.max_restarts", "an int >= 0",
           r.max_restarts)
    for field in ("window_s", "backoff_initial_s", "backoff_max_s", "failed_retry_s"):
        value = getattr(r, field)
        _check(value > 0, source, f"{where}.restart.{field}", "a number > 0", value)
    _check(r.backoff_max_s >= r.backoff_initial_s, source, f"{where}.restart.backoff_max_s",
           f"a number >= backoff_initial_s ({r.backoff_initial_s:g})", r.backoff_max_s)
    renames: dict[str, str] = {}
    for tool, override in server.tools.items():
        if override.rename is None:
            continue
        _check(EXPOSED_NAME.fullmatch(override.rename) is not None, source,
               f"{where}.tools.{tool}.rename", "1 to 64 of the characters A-Z a-z 0-9 _ -",
               override.rename)
        if override.rename in renames:
            raise ConfigError.at(source, f"{where}.tools.{tool}.rename",
                                 f"{override.rename!r} is already the rename of tool "
                                 f"{renames[override.rename]!r}")
        renames[override.rename] = tool


def _validate_project(project: ProjectConfig, source: str, where: str) -> None:
    """The policy and limits of a project, and that no two of its renames collide."""
    limits = project.limits
    for field in ("rate", "project_rate"):
        value = getattr(limits, field)
        if value is not None:
            _check(value > 0, source, f"{where}.limits.{field}", "a number > 0", value)
    for field, rate in (("burst", "rate"), ("project_burst", "project_rate")):
        value = getattr(limits, field)
        if value is not None:
            _check(value >= 1, source, f"{where}.limits.{field}", "an int >= 1", value)
            _check(getattr(limits, rate) is not None, source, f"{where}.limits.{field}",
                   f"{rate} to be set as well", value)
    if limits.max_concurrent is not None:
        _check(limits.max_concurrent >= 1, source, f"{where}.limits.max_concurrent",
               "an int >= 1", limits.max_concurrent)
    seen: dict[str, str] = {}
    for server in project.servers.values():
        for tool, override in server.tools.items():
            if override.rename is None:
                continue
            here = f"{server.name}.tools.{tool}"
            if override.rename in seen:
                raise ConfigError.at(source, f"{where}.servers.{here}.rename",
                                     f"{override.rename!r} is already the rename of "
                                     f"{seen[override.rename]}")
            seen[override.rename] = here


def parse_server(
    project: str, name: str, raw: Any, source: str, base_dir: Path | None = None
) -> ServerConfig:
    """Validate one server table (from a config file, the store, the CLI or the admin API).

    Error handling: raises :class:`ConfigError` naming ``source``, the field
    (``projects.P.servers.S.…``) and what was expected.
    """
    where = f"projects.{project}.servers.{name}"
    _name(name, source, f"projects.{project}.servers")
    raw = dict(_table(raw, source, where))
    if "name" in raw:
        raise ConfigError.at(source, where, "unknown field 'name' (the table key is the name)")
    if "transport" not in raw and isinstance(raw.get("url"), str) and (
        raw["url"].startswith(WS_SCHEMES)
    ):
        raw["transport"] = "websocket"  # a ws:// url says how to reach it
    server = _structure({**raw, "name": name}, ServerConfig, source, where)
    _validate_server(server, source, where)
    for table, values in (("env", server.env), ("headers", server.headers)):
        for key, value in values.items():
            try:
                env_refs(value)
            except ValueError as exc:
                raise ConfigError.at(source, f"{where}.{table}.{key}", str(exc)) from None
    if server.cwd is not None and base_dir is not None and not Path(server.cwd).is_absolute():
        server = attrs.evolve(server, cwd=str((base_dir / server.cwd).resolve()))
    return server


def server_spec(server: ServerConfig) -> dict[str, Any]:
    """A server as a config-file table (what the store keeps); the inverse of :func:`parse_server`."""
    spec: dict[str, Any] = {
        "args": list(server.args),
        "env": dict(server.env),
        "headers": dict(server.headers),
        "transport": server.transport,
        "isolation": server.isolation,
        "request_timeout_s": server.request_timeout_s,
        "first_start_timeout_s": server.first_start_timeout_s,
        "restart": attrs.asdict(server.restart),
        "enabled": server.enabled,
    }
    if server.prefix is not None:
        spec["prefix"] = server.prefix
    if server.tools:
        spec["tools"] = {name: {k: v for k, v in attrs.asdict(o).items() if v is not None}
                         for name, o in server.tools.items()}
    for field in ("command", "cwd", "url"):
        value = getattr(server, field)
        if value:
            spec[field] = value
    return spec


REDACTED = "[redacted]"


def redacted_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A server table fit to show: ``env`` and ``headers`` values hidden.

    A value made only of ``${VAR}`` references names where the secret lives,
    not the secret, so it is shown; any other value is replaced.
    """
    shown = dict(spec)
    for table in ("env", "headers"):
        if isinstance(spec.get(table), dict):
            shown[table] = {
                key: value if _only_refs(value) else REDACTED
                for key, value in spec[table].items()
            }
    return shown


def _only_refs(value: str) -> bool:
    return isinstance(value, str) and re.fullmatch(r"(\$\{[A-Za-z_][A-Za-z0-9_]*\})+", value) is not None


def project_settings(project: ProjectConfig) -> dict[str, Any]:
    """A project's ``policy`` and ``limits`` as config-file tables (what the store keeps
    in the project's ``settings``; unset values and empty tables are left out)."""
    settings: dict[str, Any] = {}
    for table in ("policy", "limits"):
        value = getattr(project, table)
        default = type(value)()
        fields = {k: list(v) if isinstance(v, (tuple, list)) else v
                  for k, v in attrs.asdict(value).items()
                  if v != getattr(default, k)}
        if fields:
            settings[table] = fields
    return settings


def parse_project_settings(
    name: str, raw: Any, source: str
) -> tuple[ToolPolicy, RateLimits]:
    """The inverse of :func:`project_settings`. Error handling: :class:`ConfigError`
    naming ``projects.NAME.policy…`` or ``…limits…``."""
    where = f"projects.{name}"
    raw = _table(raw, source, where)
    unknown = set(raw) - {"policy", "limits"}
    if unknown:
        raise ConfigError.at(source, where, f"unknown settings {sorted(unknown)}")
    policy = _structure(_table(raw.get("policy", {}), source, f"{where}.policy"), ToolPolicy,
                        source, f"{where}.policy")
    limits = _structure(_table(raw.get("limits", {}), source, f"{where}.limits"), RateLimits,
                        source, f"{where}.limits")
    project = ProjectConfig(name=name, policy=policy, limits=limits)
    _validate_project(project, source, where)
    return policy, limits


def settings_table(name: str, table: str, raw: Any, source: str) -> dict[str, Any] | None:
    """One settings table of project ``name`` (``policy`` or ``limits``, as the config file
    writes it — from the CLI or the admin API) validated exactly as the file's is, by
    :func:`parse_project_settings`; returned as the store keeps it (:func:`project_settings`:
    unset values left out), ``None`` when nothing is set.

    Error handling: :class:`ConfigError` naming ``projects.NAME.TABLE.FIELD`` and what
    was expected.
    """
    policy, limits = parse_project_settings(name, {table: raw}, source)
    return project_settings(ProjectConfig(name=name, policy=policy, limits=limits)).get(table)


def settings_view(
    name: str, settings: Mapping[str, Any], set_by: Mapping[str, str],
) -> dict[str, Any]:
    """A project's stored ``settings`` (``ProjectRow.settings`` and ``settings_source``) to
    show: ``policy`` and ``limits`` with every field (unset ones at their defaults), and
    ``set_by`` each table (``"config"``, ``"api"``, or ``None``: not set)."""
    policy, limits = parse_project_settings(name, dict(settings), "store")
    return {"policy": attrs.asdict(policy), "limits": attrs.asdict(limits),
            "set_by": {table: set_by.get(table) for table in ("policy", "limits")}}


def declared_projects(
    config: Config,
) -> dict[str, tuple[str, dict[str, dict[str, Any]], dict[str, Any]]]:
    """What a config file declares, in the form ``Store.apply_declared`` takes:
    name → (auth, {server: spec}, settings — :func:`project_settings`)."""
    return {
        name: (project.auth, {s.name: server_spec(s) for s in project.servers.values()},
               project_settings(project))
        for name, project in config.projects.items()
    }


def projects_from_store(projects: Any, servers: Any, source: str) -> dict[str, ProjectConfig]:
    """Build the run-time projects from store rows (``Store.projects()``, ``Store.servers()``);
    a project row's ``settings`` carry its policy and limits."""
    result: dict[str, ProjectConfig] = {}
    by_project: dict[str, dict[str, ServerConfig]] = {p.name: {} for p in projects}
    for row in servers:
        by_project.setdefault(row.project, {})[row.name] = parse_server(
            row.project, row.name, row.spec, source
        )
    for project in projects:
        policy, limits = parse_project_settings(project.name, project.settings, source)
        result[project.name] = ProjectConfig(
            name=project.name, auth=project.auth, servers=by_project[project.name],
            policy=policy, limits=limits,
        )
        _validate_project(result[project.name], source, f"projects.{project.name}")
    return result


def _check_store(value: str, source: str) -> None:
    """``gateway.store``: a PostgreSQL URL, or ``${VAR}`` references (expanded when
    the store is opened, so the DSN's password never sits in the config)."""
    try:
        names = env_refs(value)
    except ValueError as exc:
        raise ConfigError.at(source, "gateway.store", str(exc)) from None
    if not names and not value.startswith(("postgresql://", "postgres://")):
        raise ConfigError.at(
            source, "gateway.store", "expected a postgresql:// URL or ${VAR} (unset: SQLite in "
            f"state_dir), got {value.partition('://')[0] or value[:20]!r}")


def parse_config(data: dict[str, Any], source: str, base_dir: Path) -> Config:
    """Build a :class:`Config` from parsed TOML; relative paths resolve against ``base_dir``."""
    data = dict(data)
    unknown = set(data) - {"gateway", "projects"}
    if unknown:
        fields = ", ".join(repr(f) for f in sorted(unknown))
        raise ConfigError.at(
            source, None, f"unknown top-level field {fields} (expected gateway, projects)")
    gateway_raw = _table(data.get("gateway", {}), source, "gateway")
    gateway = _structure(gateway_raw, GatewaySettings, source, "gateway")
    _check(0 <= gateway.port <= 65535, source, "gateway.port", "a port 0..65535", gateway.port)
    _check(gateway.max_body_bytes >= 1024, source, "gateway.max_body_bytes", "an int >= 1024",
           gateway.max_body_bytes)
    _check(gateway.keepalive_s > 0, source, "gateway.keepalive_s", "a number > 0",
           gateway.keepalive_s)
    _check(gateway.session_queue >= 1, source, "gateway.session_queue", "an int >= 1",
           gateway.session_queue)
    _check(gateway.max_batch >= 1, source, "gateway.max_batch", "an int >= 1",
           gateway.max_batch)
    _check(gateway.reader_stall_s > 0, source, "gateway.reader_stall_s", "a number > 0",
           gateway.reader_stall_s)
    _check(gateway.drain_timeout_s >= 0, source, "gateway.drain_timeout_s", "a number >= 0",
           gateway.drain_timeout_s)
    _check(gateway.stop_grace_s > 0, source, "gateway.stop_grace_s", "a number > 0",
           gateway.stop_grace_s)
    _check(gateway.http_session_idle_s > 0, source, "gateway.http_session_idle_s",
           "a number > 0", gateway.http_session_idle_s)
    _check(gateway.input_wait_s > 0, source, "gateway.input_wait_s", "a number > 0",
           gateway.input_wait_s)
    _check(gateway.answer_window_s >= 0, source, "gateway.answer_window_s", "a number >= 0",
           gateway.answer_window_s)
    _check(gateway.header_timeout_s > 0, source, "gateway.header_timeout_s", "a number > 0",
           gateway.header_timeout_s)
    _check(gateway.max_connections >= 1, source, "gateway.max_connections", "an int >= 1",
           gateway.max_connections)
    _check(re.fullmatch(r"[A-Za-z0-9_-]{0,8}", gateway.tool_separator) is not None, source,
           "gateway.tool_separator", "at most 8 of the characters A-Z a-z 0-9 _ -",
           gateway.tool_separator)
    _check(gateway.max_tool_name >= 16, source, "gateway.max_tool_name", "an int >= 16",
           gateway.max_tool_name)
    _check(gateway.list_timeout_s > 0, source, "gateway.list_timeout_s", "a number > 0",
           gateway.list_timeout_s)
    if gateway.store is not None:
        _check_store(gateway.store, source)
    telemetry = gateway.telemetry
    if telemetry.endpoint is not None:
        _check(telemetry.endpoint.startswith(HTTP_SCHEMES), source, "gateway.telemetry.endpoint",
               "an http:// or https:// URL (the OTLP/HTTP collector)", telemetry.endpoint)
    _check(bool(telemetry.service_name.strip()), source, "gateway.telemetry.service_name",
           "a non-empty string", telemetry.service_name)
    for key, value in telemetry.headers.items():
        try:
            env_refs(value)
        except ValueError as exc:
            raise ConfigError.at(source, f"gateway.telemetry.headers.{key}", str(exc)) from None
    state_dir = Path(gateway.state_dir)
    if not state_dir.is_absolute():
        state_dir = (base_dir / state_dir).resolve()
    gateway = attrs.evolve(gateway, state_dir=str(state_dir))

    projects: dict[str, ProjectConfig] = {}
    for pname, praw in _table(data.get("projects", {}), source, "projects").items():
        where = f"projects.{pname}"
        _name(pname, source, "projects")
        praw = dict(_table(praw, source, where))
        servers_raw = _table(praw.pop("servers", {}), source, f"{where}.servers")
        if "name" in praw:
            raise ConfigError.at(source, where, "unknown field 'name' (the table key is the name)")
        project = _structure({**praw, "name": pname}, ProjectConfig, source, where)
        servers: dict[str, ServerConfig] = {}
        for sname, sraw in servers_raw.items():
            servers[sname] = parse_server(pname, sname, sraw, source, base_dir)
        project = attrs.evolve(project, servers=servers)
        _validate_project(project, source, where)
        for server in servers.values():
            for tool, override in server.tools.items():
                if override.rename is not None:
                    _check(len(override.rename) <= gateway.max_tool_name, source,
                           f"{where}.servers.{server.name}.tools.{tool}.rename",
                           f"at most gateway.max_tool_name ({gateway.max_tool_name}) "
                           "characters", override.rename)
        projects[pname] = project
    return Config(gateway=gateway, projects=projects, source=source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file.

    Error handling: any problem — unreadable file, TOML syntax, wrong type,
    unknown field, out-of-range value — raises :class:`ConfigError` whose
    text names the file, the field and what was expected.
    """
    source = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError.at(
            source, None, f"cannot read the config file: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError.at(source, None, f"not UTF-8 text ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError.at(source, None, f"TOML syntax error: {exc}") from None
    return parse_config(data, source, Path(path).resolve().parent)
