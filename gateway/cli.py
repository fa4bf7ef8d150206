"""The ``mcp-orch`` command line: serve the gateway, manage API keys, check a config.

The config is loaded synchronously before any nursery exists, so a bad file
fails fast with a message naming the file, the field and what was expected,
and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence

import attrs
import trio

from config import Config, ConfigError, Store, default_config_path, load_config

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


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _serve(config: Config) -> None:
    from .runtime import run_gateway

    async with trio.open_nursery() as nursery:
        gateway = await nursery.start(run_gateway, config)
        print(f"mcp-orch listening on {gateway.url}", file=sys.stderr, flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s; shutting down", signal.Signals(signum).name)
                gateway.stop()
                break


def cmd_serve(args: argparse.Namespace) -> int:
    config = _load(args)
    _setup_logging(args.log_level)
    trio.run(_serve, config)
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
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

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
