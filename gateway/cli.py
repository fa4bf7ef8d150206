"""The ``mcp-orch`` command line: serve the gateway, manage projects, servers, their
tool policy and rate limits, and API keys; check or apply a config.

The config is loaded synchronously before any nursery exists, so a bad file
fails fast with a message naming the file, the field and what was expected,
and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import getpass
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import trio

from config import (
    Config,
    ConfigError,
    NotFoundError,
    Store,
    StoreError,
    declared_projects,
    default_config_path,
    load_config,
    open_store,
    parse_server,
    redacted_spec,
    server_spec,
)
from config.importing import read_mcp_servers
from config.loading import settings_table, settings_view
from config.store import SETTINGS_TABLES, ProjectRow

from . import gc_tuning
from .ops.logs import setup_logging

log = logging.getLogger("mcp_orch")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config or default_config_path())
    changes = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    if changes:
        config = attrs.evolve(config, gateway=attrs.evolve(config.gateway, **changes))
    return config


async def _serve(config: Config, worker_port: int | None = None) -> None:
    from .cluster.workers import watch_parent
    from .serve import run_gateway

    # Signals are received from before start-up, so an early SIGTERM is not lost.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(
                functools.partial(run_gateway, config, worker_port=worker_port))
            if worker_port is not None:
                # A worker of `serve --workers`: a parent that dies takes it down too.
                nursery.start_soon(watch_parent, gateway.stop)
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        await gateway.reload()
                    except ConfigError as exc:
                        log.error("reload failed, keeping the running config: %s", exc)
                    continue
                log.info("received %s; shutting down", signal.Signals(signum).name)
                gateway.stop()
                break


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        setup_logging(args.log_format, args.log_level or ["info"])
    except ValueError as exc:
        print(f"mcp-orch: error: {exc}", file=sys.stderr)
        return 2
    from . import app, serve  # noqa: F401  (loaded first, so the freeze below covers them)

    gc_tuning.tune()
    if args.workers > 1 and args.worker_port is None:
        return _serve_workers(args, config)
    trio.run(_serve, config, args.worker_port)
    return 0


def _serve_workers(args: argparse.Namespace, config: Config) -> int:
    """``serve --workers N``: hold the port, prepare the store, run N workers
    (``gateway/cluster/workers.py``)."""
    from .cluster.workers import WorkerPool, stop_timeout
    from .serve import (
        configured_admin_token,
        listening_socket,
        pidfile_path,
        prepare_store,
        remove_pidfile,
        write_pidfile,
    )

    settings = config.gateway
    # Bound (not listening) for as long as the parent runs: port 0 becomes one
    # port for every worker, and nobody else takes it between worker restarts.
    holder = listening_socket(settings.host, settings.port, reuse_port=True)
    port = holder.getsockname()[1]
    store = open_store(settings, config.source)
    try:
        prepare_store(store, config, configured_admin_token(config))
    finally:
        store.close()
    argv = [sys.executable, "-m", "gateway", "serve", "--host", settings.host,
            "--log-format", args.log_format]
    if args.config:
        argv += ["--config", args.config]
    for level in args.log_level or []:
        argv += ["--log-level", level]
    pool = WorkerPool(argv, args.workers, port)
    write_pidfile(pidfile_path(config))
    log.info("starting %d workers on port %d (each says where it listens)", args.workers, port)
    try:
        trio.run(functools.partial(pool.run, stop_timeout_s=stop_timeout(
            settings.drain_timeout_s, settings.stop_grace_s)))
    finally:
        remove_pidfile(pidfile_path(config))
        holder.close()
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    config = _load(args)
    from .serve import pidfile_path

    pidfile = pidfile_path(config)
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"mcp-orch: error: no running gateway for {config.source} ({pidfile}: {exc})",
              file=sys.stderr)
        return 1
    print(f"asked the gateway (pid {pid}) to reload {config.source}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args)
    servers = sum(len(p.servers) for p in config.projects.values())
    print(f"{config.source}: OK ({len(config.projects)} projects, {servers} servers)")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    config = _load(args)
    store = open_store(config.gateway, config.source)
    try:
        # A project declared in the file (the gateway may not have applied it
        # yet) or created in the store.
        known = set(config.projects) | {p.name for p in store.projects()}
        if args.project not in known:
            raise ConfigError(f"{config.source}: no project {args.project!r} "
                              f"(projects: {', '.join(sorted(known)) or 'none'})")
        expires_at = time.time() + args.expires_in if args.expires_in else None
        allow = tuple(args.allow) if args.allow else None
        key = store.create_key(args.project, args.name, expires_at, actor=_actor(),
                               allow=allow)
    finally:
        store.close()
    narrowed = f", narrowed to tools {', '.join(allow)}" if allow else ""
    print(
        f"Created API key {args.name!r} for project {args.project!r}{narrowed}. "
        "It is shown once and stored only as a hash; keep it now."
    )
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    config = _load(args)
    store = open_store(config.gateway, config.source)
    try:
        keys = store.list_keys(args.project)
    finally:
        store.close()
    if args.json:
        print(json.dumps([attrs.asdict(k) for k in keys], indent=2))
        return 0
    for k in keys:
        state = "revoked" if k.revoked_at else "active"
        allow = f"  allow={','.join(k.allow)}" if k.allow is not None else ""
        print(f"{k.prefix}…  {k.project:<16} {k.name:<16} {state}{allow}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    config = _load(args)
    store = open_store(config.gateway, config.source)
    try:
        done = store.revoke_key(args.prefix, actor=_actor())
    finally:
        store.close()
    if not done:
        print(f"mcp-orch: error: no active key with prefix {args.prefix!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.prefix}")
    return 0


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextlib.contextmanager
def _store(args: argparse.Namespace) -> Iterator[Store]:
    config = _load(args)
    store = open_store(config.gateway, config.source)
    try:
        yield store
    finally:
        store.close()


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    result = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        result[key] = value
    return result


def cmd_projects_create(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.create_project(args.name, args.auth, actor=_actor())
    _emit(args, {"name": args.name, "auth": args.auth}, f"created project {args.name}")
    return 0


def cmd_projects_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = store.projects()
        servers = store.servers()
    data = [{"name": p.name, "auth": p.auth, "source": p.source,
             "servers": sum(1 for s in servers if s.project == p.name)} for p in rows]
    _emit(args, data, "\n".join(
        f"{d['name']:<20} auth={d['auth']:<8} servers={d['servers']:<3} from {d['source']}"
        for d in data) or "no projects")
    return 0


def _find_project(store: Store, name: str) -> ProjectRow:
    project = next((p for p in store.projects() if p.name == name), None)
    if project is None:
        raise NotFoundError(f"no project {name!r}")
    return project


def _settings_view(project: ProjectRow) -> dict[str, Any]:
    return settings_view(project.name, project.settings, project.settings_source)


def _table_line(view: dict[str, Any], table: str) -> str:
    fields = " ".join(f"{k}={json.dumps(v)}" for k, v in view[table].items())
    by = view["set_by"][table]
    return f"  {table}: {fields}" + (f" (set by {by})" if by else " (not set)")


def cmd_projects_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        project = _find_project(store, args.name)
        servers = store.servers(args.name)
        keys = store.list_keys(args.name)
    settings = _settings_view(project)
    data = {"name": project.name, "auth": project.auth, "source": project.source,
            **settings,
            "servers": {s.name: redacted_spec(s.spec) for s in servers},
            "keys": [{"prefix": k.prefix, "name": k.name, "revoked": k.revoked_at is not None}
                     for k in keys]}
    lines = [f"project {project.name} (auth={project.auth}, from {project.source})"]
    lines += [_table_line(settings, table) for table in SETTINGS_TABLES]
    lines += [f"  server {name}: {json.dumps(spec)}" for name, spec in data["servers"].items()]
    lines += [f"  key {k['prefix']}… {k['name']}{' (revoked)' if k['revoked'] else ''}"
              for k in data["keys"]]
    _emit(args, data, "\n".join(lines))
    return 0


#: The options of `projects policy` / `projects limits`, by table: option dest → field.
_SETTINGS_OPTIONS = {
    "policy": ("allow", "deny", "read_only"),
    "limits": ("rate", "burst", "project_rate", "project_burst", "max_concurrent"),
}


def cmd_projects_settings(args: argparse.Namespace) -> int:
    """`projects policy|limits NAME [options]`: change the fields given (``--clear`` first
    drops the whole table), validated as the config file's table is; no options: show."""
    table = args.projects_command
    updates = {field: getattr(args, field) for field in _SETTINGS_OPTIONS[table]
               if getattr(args, field) is not None}

    def change(current: dict[str, Any] | None) -> dict[str, Any] | None:
        merged = {} if args.clear or current is None else dict(current)
        merged.update(updates)
        return settings_table(args.name, table, merged, "command line")

    with _store(args) as store:
        if updates or args.clear:
            store.update_project_settings(args.name, table, change, actor=_actor())
        view = _settings_view(_find_project(store, args.name))
    _emit(args, {"project": args.name, table: view[table], "set_by": view["set_by"][table]},
          f"project {args.name}\n{_table_line(view, table)}")
    return 0


def cmd_projects_delete(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.delete_project(args.name, actor=_actor())
    _emit(args, {"deleted": args.name}, f"deleted project {args.name} (its keys are revoked)")
    return 0


def cmd_servers_add(args: argparse.Namespace) -> int:
    spec: dict[str, Any] = {}
    command = list(args.command or [])
    if args.url:
        spec.update(url=args.url, headers=_pairs(args.header, "--header"))
        if args.transport is not None:  # else the url's scheme decides (ws:// → websocket)
            spec["transport"] = args.transport
    if command:
        spec.update(command=command[0], args=command[1:])
    if args.env:
        spec["env"] = _pairs(args.env, "--env")
    for field, value in (("cwd", args.cwd), ("isolation", args.isolation),
                         ("request_timeout_s", args.timeout)):
        if value is not None:
            spec[field] = value
    if args.disabled:
        spec["enabled"] = False
    server = parse_server(args.project, args.name, spec, "command line")
    with _store(args) as store:
        store.put_server(args.project, args.name, server_spec(server), actor=_actor(),
                         create_only=True)
    _emit(args, {"project": args.project, "name": args.name}, f"added server {args.project}/{args.name}")
    return 0


def cmd_servers_list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = store.servers(args.project)
    data = [{"project": r.project, "name": r.name, "source": r.source,
             **redacted_spec(r.spec)} for r in rows]
    _emit(args, data, "\n".join(
        f"{d['project']}/{d['name']:<20} "
        f"{'enabled ' if d.get('enabled', True) else 'disabled'} "
        f"{d.get('url') or ' '.join([d.get('command', ''), *d.get('args', [])])}"
        for d in data) or "no servers")
    return 0


def cmd_servers_show(args: argparse.Namespace) -> int:
    with _store(args) as store:
        row = next((r for r in store.servers(args.project) if r.name == args.name), None)
    if row is None:
        raise NotFoundError(f"no server {args.project}/{args.name}")
    data = {"project": row.project, "name": row.name, "source": row.source,
            **redacted_spec(row.spec)}
    _emit(args, data, json.dumps(data, indent=2))
    return 0


def cmd_servers_remove(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.remove_server(args.project, args.name, actor=_actor())
    _emit(args, {"removed": f"{args.project}/{args.name}"}, f"removed server {args.project}/{args.name}")
    return 0


def cmd_servers_enable(args: argparse.Namespace) -> int:
    enabled = args.servers_command == "enable"
    with _store(args) as store:
        store.set_enabled(args.project, args.name, enabled, actor=_actor())
    verb = "enabled" if enabled else "disabled"
    _emit(args, {verb: f"{args.project}/{args.name}"}, f"{verb} server {args.project}/{args.name}")
    return 0


def cmd_servers_import(args: argparse.Namespace) -> int:
    specs = read_mcp_servers(args.file, args.project)
    with _store(args) as store:
        result = store.import_servers(args.project, specs, actor=_actor())
    _emit(args, result, "\n".join(f"{verb} server {args.project}/{name}"
                                  for name, verb in result.items()) or "nothing to import")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    config = _load(args)
    with _store(args) as store:
        changes = store.apply_declared(declared_projects(config), actor=_actor())
    _emit(args, changes, "\n".join(changes) or f"{config.source}: the store already matches")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-orch", description="A gateway for MCP servers.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="TOML config file (default: the bundled example)")
        return p

    serve = with_config(sub.add_parser("serve", help="run the gateway"))
    serve.add_argument("--host", help="listen address (overrides [gateway] host)")
    serve.add_argument("--port", type=int, help="listen port, 0 for any free one")
    serve.add_argument(
        "--log-level", action="append", default=None, metavar="[LOGGER=]LEVEL",
        help="log level, overall or per logger (repeatable): --log-level info "
        "--log-level actors=debug",
    )
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="run N gateway processes sharing the port (SO_REUSEPORT) and the store; "
        "requests for a session another worker holds are forwarded to it (default 1)",
    )
    # A worker of `serve --workers` (set by the parent): listen on this shared port.
    serve.add_argument("--worker-port", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    reload = with_config(sub.add_parser("reload", help="make the running gateway re-read its config"))
    reload.set_defaults(func=cmd_reload)

    check = with_config(sub.add_parser("check-config", help="validate a config file"))
    check.set_defaults(func=cmd_check_config)

    keys = sub.add_parser("keys", help="manage project API keys").add_subparsers(
        dest="keys_command", required=True
    )
    create = with_config(keys.add_parser("create", help="create a key; prints it on the last line"))
    create.add_argument("--project", required=True)
    create.add_argument("--name", default="default")
    create.add_argument("--expires-in", type=float, metavar="SECONDS",
                        help="the key stops working after this many seconds")
    create.add_argument("--allow", action="append", metavar="GLOB",
                        help="narrow the key to tools of the project endpoint whose exposed "
                             "name matches this glob (repeatable; within the project's policy)")
    create.set_defaults(func=cmd_keys_create)
    listing = with_config(keys.add_parser("list", help="list keys (never the secret)"))
    listing.add_argument("--project")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_keys_list)
    revoke = with_config(keys.add_parser("revoke", help="revoke a key by its prefix"))
    revoke.add_argument("prefix")
    revoke.set_defaults(func=cmd_keys_revoke)

    def with_json(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return with_config(p)

    projects = sub.add_parser("projects", help="manage projects").add_subparsers(
        dest="projects_command", required=True)
    p = with_json(projects.add_parser("create", help="create a project"))
    p.add_argument("name")
    p.add_argument("--auth", choices=["api-key", "none"], default="api-key")
    p.set_defaults(func=cmd_projects_create)
    p = with_json(projects.add_parser("list", help="list projects"))
    p.set_defaults(func=cmd_projects_list)
    p = with_json(projects.add_parser(
        "show", help="a project's tool policy, rate limits, servers and keys"))
    p.add_argument("name")
    p.set_defaults(func=cmd_projects_show)
    p = with_json(projects.add_parser(
        "policy", help="show or change the project endpoint's tool policy (live)",
        description="Change the fields given (the others keep their value; --clear first "
                    "drops the whole policy); no options: show it. A policy the config "
                    "file declares for the project is set back by the next reload/apply."))
    p.add_argument("name")
    p.add_argument("--allow", action="append", metavar="GLOB",
                   help="expose only tools whose exposed name matches (repeatable; "
                        "replaces the allow list)")
    p.add_argument("--deny", action="append", metavar="GLOB",
                   help="hide tools whose exposed name matches (repeatable; replaces the "
                        "deny list; deny wins)")
    p.add_argument("--read-only", dest="read_only", action=argparse.BooleanOptionalAction,
                   default=None, help="only tools annotated readOnlyHint: true")
    p.add_argument("--clear", action="store_true", help="drop the policy first")
    p.set_defaults(func=cmd_projects_settings)
    p = with_json(projects.add_parser(
        "limits", help="show or change the project's rate limits (live)",
        description="Change the fields given (the others keep their value; --clear first "
                    "drops all limits); no options: show them. Limits the config file "
                    "declares for the project are set back by the next reload/apply."))
    p.add_argument("name")
    p.add_argument("--rate", type=float, metavar="R", help="requests per second per API key")
    p.add_argument("--burst", type=int, metavar="B", help="bucket size per API key")
    p.add_argument("--project-rate", type=float, metavar="R",
                   help="requests per second for all keys of the project together")
    p.add_argument("--project-burst", type=int, metavar="B", help="the project bucket's size")
    p.add_argument("--max-concurrent", type=int, metavar="N",
                   help="calls in flight per server of the project endpoint")
    p.add_argument("--clear", action="store_true", help="drop all limits first")
    p.set_defaults(func=cmd_projects_settings)
    p = with_json(projects.add_parser("delete", help="delete a project, its servers and keys"))
    p.add_argument("name")
    p.set_defaults(func=cmd_projects_delete)

    servers = sub.add_parser("servers", help="manage servers").add_subparsers(
        dest="servers_command", required=True)
    p = with_json(servers.add_parser(
        "add", help="add a server: … NAME -- COMMAND ARGS…  or  … NAME --url URL",
        usage="mcp-orch servers add --project P NAME [options] (-- COMMAND [ARGS…] | --url URL)"))
    p.add_argument("--project", required=True)
    p.add_argument("name")
    p.add_argument("--url", help="a remote server's MCP endpoint")
    p.add_argument("--transport", choices=["streamable-http", "sse", "websocket"],
                   help="how to reach --url (default: websocket for ws:// and wss://, "
                        "else streamable-http)")
    p.add_argument("--header", action="append", metavar="K=V", help="HTTP header for --url")
    p.add_argument("--env", action="append", metavar="K=V", help="environment (${VAR} allowed)")
    p.add_argument("--cwd")
    p.add_argument("--isolation", choices=["shared", "session"])
    p.add_argument("--timeout", type=float, help="request timeout in seconds")
    p.add_argument("--disabled", action="store_true")
    p.set_defaults(func=cmd_servers_add)
    p = with_json(servers.add_parser("list", help="list servers (env values redacted)"))
    p.add_argument("--project")
    p.set_defaults(func=cmd_servers_list)
    for verb, helptext, func in (
        ("show", "show a server (env values redacted)", cmd_servers_show),
        ("remove", "remove a server (its sessions end)", cmd_servers_remove),
        ("enable", "enable a server", cmd_servers_enable),
        ("disable", "disable a server (its sessions end)", cmd_servers_enable),
    ):
        p = with_json(servers.add_parser(verb, help=helptext))
        p.add_argument("--project", required=True)
        p.add_argument("name")
        p.set_defaults(func=func)
    p = with_json(servers.add_parser(
        "import", help="import an mcpServers JSON file (Claude Desktop / Cursor format)"))
    p.add_argument("--project", required=True)
    p.add_argument("file")
    p.set_defaults(func=cmd_servers_import)

    p = with_json(sub.add_parser("apply", help="apply the config file's projects and servers to the store"))
    p.set_defaults(func=cmd_apply)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `servers add … -- COMMAND ARGS…`: what follows `--` is the server's command line,
    # options included, so it is split off before argparse sees it.
    tail: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, tail = argv[:at], argv[at + 1:]
    args = build_parser().parse_args(argv)
    args.command = tail
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mcp-orch: error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"mcp-orch: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
