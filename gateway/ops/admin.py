"""The admin REST API under ``/admin/``: projects (their tool policy and rate limits too),
servers, keys, import, apply, audit.

Every route needs the admin token (``Authorization: Bearer``), which is
separate from project keys. Bodies and answers are JSON; a body that does
not validate is ``422`` with the field named (``{"error": {"field": …,
"message": …}}``); a missing project or server is ``404``; a name already
taken is ``409``. A project is addressed by its name or its numeric id.
Every write goes through the store (one transaction, one audit row) and the
running gateway applies it before answering, so a server added here is
reachable as soon as the answer arrives. ``env`` and ``headers`` values are
never returned, only ``${VAR}`` references. ``GET /admin/openapi.json``
describes all of it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from quart import Response, request
from quart_trio import QuartTrio

from config import (
    ConfigError,
    NotFoundError,
    StoreError,
    parse_server,
    redacted_spec,
    server_spec,
)
from config.importing import parse_mcp_servers
from config.loading import settings_table, settings_view
from config.store import ProjectRow

ACTOR = "admin-api"


def register_admin(
    app: QuartTrio, gateway: Any, authorize_admin: Callable[[Any], Awaitable[None]],
    json_response: Callable[..., Response],
) -> None:
    """Add the ``/admin/`` routes to ``app``."""
    store = gateway.store

    async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def error(status: int, message: str, field: str | None = None) -> Response:
        body: dict[str, Any] = {"message": message}
        if field is not None:
            body["field"] = field
        return json_response({"error": body}, status)

    def invalid(exc: ConfigError) -> Response:
        # The field and what it should be, when the error names a field; else the whole text.
        if exc.field is not None and exc.expectation is not None:
            return error(422, exc.expectation, exc.field)
        return error(422, str(exc))

    async def body_object() -> dict[str, Any] | Response:
        data = await request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            return error(422, "expected a JSON object", "body")
        return data

    async def project_row(ref: str) -> ProjectRow:
        """The project named ``ref`` — or, failing that, whose id it is; 404 otherwise."""
        rows = await run(store.projects)
        found = next((p for p in rows if p.name == ref), None)
        if found is None and ref.isdigit():
            found = next((p for p in rows if p.id == int(ref)), None)
        if found is None:
            raise NotFoundError(f"no project {ref!r}")
        return found

    def key_view(k: Any) -> dict[str, Any]:
        return {"prefix": k.prefix, "name": k.name, "created_at": k.created_at,
                "expires_at": k.expires_at, "revoked": k.revoked_at is not None,
                "allow": list(k.allow) if k.allow is not None else None}

    async def applied(status: int, body: Any) -> Response:
        await gateway.sync_from_store("the admin API")
        return json_response(body, status)

    def project_view(p: ProjectRow, servers: list[Any]) -> dict[str, Any]:
        return {"id": p.id, "name": p.name, "auth": p.auth, "source": p.source,
                "servers": [s.name for s in servers if s.project == p.name]}

    def server_view(row: Any) -> dict[str, Any]:
        return {"project": row.project, "name": row.name, "source": row.source,
                **redacted_spec(row.spec)}

    def admin(path: str, methods: list[str]) -> Callable[[Any], Any]:
        def wrap(handler: Callable[..., Awaitable[Response]]) -> Any:
            @functools.wraps(handler)
            async def guarded(**kwargs: Any) -> Response:
                await authorize_admin(gateway)
                try:
                    return await handler(**kwargs)
                except ConfigError as exc:
                    return invalid(exc)
                except StoreError as exc:
                    return error(exc.status, str(exc))

            return app.route(path, methods=methods, endpoint=f"admin_{handler.__name__}")(guarded)

        return wrap

    @admin("/admin/projects", ["GET"])
    async def list_projects() -> Response:
        rows, servers = await run(store.projects), await run(store.servers)
        return json_response([project_view(p, servers) for p in rows], 200)

    @admin("/admin/projects", ["POST"])
    async def create_project() -> Response:
        data = await body_object()
        if isinstance(data, Response):
            return data
        name, auth = data.get("name"), data.get("auth", "api-key")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            return error(422, "expected a name of letters, digits, '_', '.', '-'", "name")
        if auth not in ("api-key", "none"):
            return error(422, "expected 'api-key' or 'none'", "auth")
        unknown = sorted(set(data) - {"name", "auth"})
        if unknown:
            return error(422, "unknown field", unknown[0])
        await run(store.create_project, name, auth, actor=ACTOR)
        row = await project_row(name)
        return await applied(201, project_view(row, []))

    @admin("/admin/projects/<ref>", ["GET"])
    async def show_project(ref: str) -> Response:
        row = await project_row(ref)
        servers = await run(store.servers, row.name)
        keys = await run(store.list_keys, row.name)
        view = project_view(row, servers)
        view.update(settings_view(row.name, row.settings, row.settings_source))
        view["servers"] = [server_view(s) for s in servers]
        view["keys"] = [key_view(k) for k in keys]
        return json_response(view, 200)

    @admin("/admin/projects/<ref>", ["DELETE"])
    async def delete_project(ref: str) -> Response:
        row = await project_row(ref)
        await run(store.delete_project, row.name, actor=ACTOR)
        return await applied(200, {"deleted": row.name})

    def table_view(row: ProjectRow, table: str) -> dict[str, Any]:
        view = settings_view(row.name, row.settings, row.settings_source)
        return {**view[table], "set_by": view["set_by"][table]}

    async def show_settings(ref: str, table: str) -> Response:
        return json_response(table_view(await project_row(ref), table), 200)

    async def put_settings(ref: str, table: str) -> Response:
        """Replace the table with the body, validated as the config file's table is
        (``{}`` removes it); one store write, applied before the answer."""
        row = await project_row(ref)
        data = await body_object()
        if isinstance(data, Response):
            return data
        data.pop("set_by", None)  # what a GET answers may be PUT back as it is
        new = settings_table(row.name, table, data, "body")
        await run(store.update_project_settings, row.name, table, lambda _: new, actor=ACTOR)
        return await applied(200, table_view(await project_row(row.name), table))

    @admin("/admin/projects/<ref>/policy", ["GET"])
    async def show_policy(ref: str) -> Response:
        return await show_settings(ref, "policy")

    @admin("/admin/projects/<ref>/policy", ["PUT"])
    async def put_policy(ref: str) -> Response:
        return await put_settings(ref, "policy")

    @admin("/admin/projects/<ref>/limits", ["GET"])
    async def show_limits(ref: str) -> Response:
        return await show_settings(ref, "limits")

    @admin("/admin/projects/<ref>/limits", ["PUT"])
    async def put_limits(ref: str) -> Response:
        return await put_settings(ref, "limits")

    @admin("/admin/projects/<ref>/servers", ["GET"])
    async def list_servers(ref: str) -> Response:
        row = await project_row(ref)
        return json_response([server_view(s) for s in await run(store.servers, row.name)], 200)

    async def put_server(ref: str, name: str, create: bool) -> Response:
        row = await project_row(ref)
        data = await body_object()
        if isinstance(data, Response):
            return data
        data = {k: v for k, v in data.items() if k != "name"}
        server = parse_server(row.name, name, data, "body")
        verb = await run(store.put_server, row.name, name, server_spec(server), actor=ACTOR,
                         create_only=create)
        stored = next(s for s in await run(store.servers, row.name) if s.name == name)
        return await applied(201 if verb == "created" else 200, server_view(stored))

    @admin("/admin/projects/<ref>/servers", ["POST"])
    async def add_server(ref: str) -> Response:
        data = await request.get_json(force=True, silent=True)
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str):
            return error(422, "expected the server's name", "name")
        return await put_server(ref, name, create=True)

    @admin("/admin/projects/<ref>/servers/<name>", ["PUT"])
    async def replace_server(ref: str, name: str) -> Response:
        return await put_server(ref, name, create=False)

    @admin("/admin/projects/<ref>/servers/<name>", ["GET"])
    async def show_server(ref: str, name: str) -> Response:
        row = await project_row(ref)
        found = [s for s in await run(store.servers, row.name) if s.name == name]
        if not found:
            return error(404, f"no server {ref}/{name}")
        return json_response(server_view(found[0]), 200)

    @admin("/admin/projects/<ref>/servers/<name>", ["DELETE"])
    async def remove_server(ref: str, name: str) -> Response:
        row = await project_row(ref)
        await run(store.remove_server, row.name, name, actor=ACTOR)
        return await applied(200, {"removed": f"{row.name}/{name}"})

    @admin("/admin/projects/<ref>/servers/<name>/<action>", ["POST"])
    async def toggle_server(ref: str, name: str, action: str) -> Response:
        if action not in ("enable", "disable"):
            return error(404, f"no action {action!r}")
        row = await project_row(ref)
        await run(store.set_enabled, row.name, name, action == "enable", actor=ACTOR)
        return await applied(200, {f"{action}d": f"{row.name}/{name}"})

    @admin("/admin/projects/<ref>/import", ["POST"])
    async def import_servers(ref: str) -> Response:
        row = await project_row(ref)
        data = await request.get_json(force=True, silent=True)
        specs = parse_mcp_servers(data, row.name, "body")
        result = await run(store.import_servers, row.name, specs, actor=ACTOR)
        return await applied(200, result)

    @admin("/admin/projects/<ref>/keys", ["GET"])
    async def list_keys(ref: str) -> Response:
        row = await project_row(ref)
        keys = await run(store.list_keys, row.name)
        return json_response([key_view(k) for k in keys], 200)

    @admin("/admin/projects/<ref>/keys", ["POST"])
    async def create_key(ref: str) -> Response:
        row = await project_row(ref)
        data = await body_object()
        if isinstance(data, Response):
            return data
        name = data.get("name", "default")
        expires_in = data.get("expires_in_s")
        if not isinstance(name, str) or not name:
            return error(422, "expected a non-empty string", "name")
        if expires_in is not None and (
            isinstance(expires_in, bool) or not isinstance(expires_in, (int, float))
            or expires_in <= 0
        ):
            return error(422, "expected a number of seconds > 0", "expires_in_s")
        allow = data.get("allow")
        if allow is not None and (not isinstance(allow, list) or not all(
                isinstance(g, str) and g for g in allow)):
            return error(422, "expected an array of non-empty glob strings", "allow")
        expires_at = time.time() + expires_in if expires_in else None
        key = await run(functools.partial(store.create_key, row.name, name, expires_at,
                                          actor=ACTOR, allow=allow))
        # The only time the key is ever shown.
        return json_response({"key": key, "prefix": key[:12], "name": name,
                              "project": row.name, "expires_at": expires_at,
                              "allow": allow}, 201)

    @admin("/admin/keys/<prefix>", ["DELETE"])
    async def revoke_key(prefix: str) -> Response:
        if not await run(store.revoke_key, prefix, actor=ACTOR):
            return error(404, f"no active key with prefix {prefix!r}")
        return json_response({"revoked": prefix}, 200)

    @admin("/admin/apply", ["POST"])
    async def apply_config() -> Response:
        changes = await gateway.reload()
        return json_response(changes, 200)

    @admin("/admin/audit", ["GET"])
    async def audit() -> Response:
        limit = min(1000, max(1, int(request.args.get("limit", "100") or 100)))
        entries = await run(store.audit_log, limit)
        return json_response([{"at": e.at, "actor": e.actor, "action": e.action,
                               "target": e.target, "detail": e.detail} for e in entries], 200)

    @app.get("/admin/openapi.json")
    async def openapi() -> Response:
        return json_response(OPENAPI, 200)


def _op(summary: str, status: str = "200", body: str | None = None,
        answer: str | None = None) -> dict[str, Any]:
    content: dict[str, Any] = (
        {"schema": {"$ref": f"#/components/schemas/{answer}"}} if answer else {})
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"adminToken": []}],
        "responses": {
            status: {"description": "success", "content": {"application/json": content}},
            "401": {"description": "missing or wrong admin token"},
            "404": {"description": "no such project, server or key"},
            "422": {"description": "invalid body",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{body}"}}}}
    return op


_REF = {"name": "ref", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "project name or numeric id"}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mcp-orch admin API", "version": "1"},
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "field": {"type": "string"}, "message": {"type": "string"}}}}},
            "Project": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_.-]+$"},
                "auth": {"type": "string", "enum": ["api-key", "none"]}}},
            "Server": {"type": "object", "description": "the config file's server table",
                       "properties": {
                           "name": {"type": "string"}, "command": {"type": "string"},
                           "args": {"type": "array", "items": {"type": "string"}},
                           "env": {"type": "object", "additionalProperties": {"type": "string"}},
                           "cwd": {"type": "string"}, "url": {"type": "string"},
                           "transport": {"type": "string", "enum": ["streamable-http", "sse"]},
                           "headers": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                           "isolation": {"type": "string", "enum": ["shared", "session"]},
                           "request_timeout_s": {"type": "number", "exclusiveMinimum": 0},
                           "enabled": {"type": "boolean"},
                           "tools": {"type": "object", "description": "per-tool overrides "
                                     "on the project endpoint, by the server's own tool name",
                                     "additionalProperties": {"type": "object", "properties": {
                                         "rename": {"type": "string",
                                                    "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                                         "description": {"type": "string"},
                                         "title": {"type": "string"}}}},
                           "restart": {"type": "object", "properties": {
                               "max_restarts": {"type": "integer", "minimum": 0},
                               "window_s": {"type": "number"},
                               "backoff_initial_s": {"type": "number"},
                               "backoff_max_s": {"type": "number"},
                               "failed_retry_s": {"type": "number"}}}}},
            "Policy": {"type": "object", "additionalProperties": False,
                       "description": "the config file's [projects.P.policy] table; PUT "
                                      "replaces it ({} removes it); a policy the config "
                                      "file declares is set back by the next reload/apply",
                       "properties": {
                           "allow": {"type": ["array", "null"], "items": {"type": "string"},
                                     "description": "fnmatch globs on exposed tool names; "
                                                    "null: every name"},
                           "deny": {"type": "array", "items": {"type": "string"},
                                    "description": "fnmatch globs; deny wins"},
                           "read_only": {"type": "boolean", "description": "only tools "
                                         "annotated readOnlyHint: true"},
                           "set_by": {"type": ["string", "null"], "readOnly": True,
                                      "description": "in answers: config, api, or null; "
                                                     "ignored in a body"}}},
            "Limits": {"type": "object", "additionalProperties": False,
                       "description": "the config file's [projects.P.limits] table; PUT "
                                      "replaces it ({} removes it); limits the config file "
                                      "declares are set back by the next reload/apply",
                       "properties": {
                           "rate": {"type": ["number", "null"], "exclusiveMinimum": 0,
                                    "description": "requests per second per API key"},
                           "burst": {"type": ["integer", "null"], "minimum": 1,
                                     "description": "needs rate"},
                           "project_rate": {"type": ["number", "null"], "exclusiveMinimum": 0,
                                            "description": "all keys of the project together"},
                           "project_burst": {"type": ["integer", "null"], "minimum": 1,
                                             "description": "needs project_rate"},
                           "max_concurrent": {"type": ["integer", "null"], "minimum": 1,
                                              "description": "calls in flight per server"},
                           "set_by": {"type": ["string", "null"], "readOnly": True,
                                      "description": "in answers: config, api, or null; "
                                                     "ignored in a body"}}},
            "McpServers": {"type": "object", "required": ["mcpServers"], "properties": {
                "mcpServers": {"type": "object"}}},
            "NewKey": {"type": "object", "properties": {
                "name": {"type": "string"}, "expires_in_s": {"type": "number"},
                "allow": {"type": "array", "items": {"type": "string", "minLength": 1},
                          "description": "narrow the key to project-endpoint tools whose "
                                         "exposed name matches one of these fnmatch globs "
                                         "(within the project's policy); absent: not "
                                         "narrowed. Fixed at creation; audited."}}},
        },
    },
    "paths": {
        "/admin/projects": {
            "get": _op("List projects"),
            "post": _op("Create a project", "201", "Project"),
        },
        "/admin/projects/{ref}": {
            "parameters": [_REF],
            "get": _op("Show a project with its servers and keys"),
            "delete": _op("Delete a project, its servers and keys; its sessions end"),
        },
        "/admin/projects/{ref}/policy": {
            "parameters": [_REF],
            "get": _op("The project endpoint's tool policy", "200", None, "Policy"),
            "put": _op("Replace the tool policy (applied to live sessions before the answer; "
                       "they get notifications/tools/list_changed)", "200", "Policy", "Policy"),
        },
        "/admin/projects/{ref}/limits": {
            "parameters": [_REF],
            "get": _op("The project's rate limits", "200", None, "Limits"),
            "put": _op("Replace the rate limits (applied before the answer)", "200", "Limits",
                       "Limits"),
        },
        "/admin/projects/{ref}/servers": {
            "parameters": [_REF],
            "get": _op("List a project's servers (env values redacted)"),
            "post": _op("Add a server (starts at once)", "201", "Server"),
        },
        "/admin/projects/{ref}/servers/{name}": {
            "parameters": [_REF, _NAME],
            "get": _op("Show a server"),
            "put": _op("Replace a server's definition (restarts only it)", "200", "Server"),
            "delete": _op("Remove a server; its sessions end"),
        },
        "/admin/projects/{ref}/servers/{name}/enable": {
            "parameters": [_REF, _NAME], "post": _op("Enable a server")},
        "/admin/projects/{ref}/servers/{name}/disable": {
            "parameters": [_REF, _NAME], "post": _op("Disable a server; its sessions end")},
        "/admin/projects/{ref}/import": {
            "parameters": [_REF],
            "post": _op("Import mcpServers JSON (all or nothing)", "200", "McpServers")},
        "/admin/projects/{ref}/keys": {
            "parameters": [_REF],
            "get": _op("List keys (never the secret)"),
            "post": _op("Create a key; the answer is the only time it is shown", "201", "NewKey"),
        },
        "/admin/keys/{prefix}": {
            "parameters": [{"name": "prefix", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "delete": _op("Revoke a key; its live sessions end"),
        },
        "/admin/apply": {"post": _op("Re-read the config file and apply it")},
        "/admin/audit": {"get": _op("The audit log, newest first")},
    },
}
