"""The ``mcp-orch`` command line: serve the gateway, manage API keys, check a config.

The config is loaded synchronously before any nursery exists, so a bad file
fails fast with a message naming the file, the field and what was expected,
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

import attrs
import trio

from config import Config, ConfigError, Store, default_config_path, load_config

from .logs import setup_logging

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


async def _serve(config: Config) -> None:
    from .runtime import run_gateway

    # Signals are received from before start-up, so an early SIGTERM is not lost.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(run_gateway, config)
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
    trio.run(_serve, config)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    config = _load(args)
    pidfile = os.path.join(config.gateway.state_dir, "mcp-orch.pid")
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


def _project_or_fail(config: Config, name: str) -> None:
    if name not in config.projects:
        known = ", ".join(sorted(config.projects)) or "none"
        raise ConfigError(f"{config.source}: no project {name!r} (projects: {known})")


def cmd_keys_create(args: argparse.Namespace) -> int:
    config = _load(args)
    _project_or_fail(config, args.project)
    store = Store.open(config.gateway.state_dir)
    try:
        key = store.create_key(args.project, args.name)
    finally:
        store.close()
    print(
        f"Created API key {args.name!r} for project {args.project!r}. "
        "It is shown once and stored only as a hash; keep it now."
    )
    print(key)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    config = _load(args)
    store = Store.open(config.gateway.state_dir)
    try:
        keys = store.list_keys(args.project)
    finally:
        store.close()
    if args.json:
        print(json.dumps([attrs.asdict(k) for k in keys], indent=2))
        return 0
    for k in keys:
        state = "revoked" if k.revoked_at else "active"
        print(f"{k.prefix}…  {k.project:<16} {k.name:<16} {state}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    config = _load(args)
    store = Store.open(config.gateway.state_dir)
    try:
        done = store.revoke_key(args.prefix)
    finally:
        store.close()
    if not done:
        print(f"mcp-orch: error: no active key with prefix {args.prefix!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.prefix}")
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
    create.set_defaults(func=cmd_keys_create)
    listing = with_config(keys.add_parser("list", help="list keys (never the secret)"))
    listing.add_argument("--project")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_keys_list)
    revoke = with_config(keys.add_parser("revoke", help="revoke a key by its prefix"))
    revoke.add_argument("prefix")
    revoke.set_defaults(func=cmd_keys_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"mcp-orch: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
