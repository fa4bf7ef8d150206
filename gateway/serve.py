"""Serving wiring: one root nursery holding the supervisors, the sessions and Hypercorn.

Start-up: open the store, start the reaper (``upstream/reaper.py``), start a
supervisor per shared server, start the session registry, then serve HTTP
in-process with ``hypercorn.trio.serve(..., shutdown_trigger=...)`` so this
nursery — not Hypercorn's command line — decides when and how it stops.
``/ready`` turns 200 once every configured upstream has made its first start
attempt.

Shutdown (``Gateway.stop()``, on SIGTERM/SIGINT) drains: ``/ready`` turns 503
at once while the listener stays open, new sessions and new requests are
refused, requests in flight get up to ``drain_timeout_s`` to finish and be
delivered, then the sessions end (their streams close), the listener closes,
and the supervisors stop their processes (stdin EOF, SIGTERM, SIGKILL).
"""

from __future__ import annotations

import functools
import logging
import os

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from actors import run_registry
from config import Config, Store, declared_projects, expand_env, open_store
from upstream.stdio import open_reaper

from .app import create_asgi
from .core import Gateway, is_loopback, load_projects
from .http import hypercorn_patch
from .http.auth import KeyVerifier
from .http.connections import ConnectionGuard
from .ops.metrics import Metrics
from .ops.telemetry import Telemetry

log = logging.getLogger(__name__)

def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _pidfile(config: Config) -> str:
    return os.path.join(config.gateway.state_dir, "mcp-orch.pid")


async def run_gateway(
    config: Config,
    *,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole gateway until ``Gateway.stop()`` has drained it, or it is cancelled.

    ``started`` with the :class:`Gateway` once the HTTP listener is bound
    (``gateway.url`` holds the bound address, useful with port 0).
    """
    settings = config.gateway
    for project in config.projects.values():
        if project.auth == "none" and not is_loopback(settings.host):
            log.warning(
                "PROJECT %r HAS auth = \"none\" AND THE GATEWAY LISTENS ON %s: anyone who can "
                "reach this address can use its servers without a key",
                project.name, settings.host,
            )
    admin_token = None
    if settings.admin_token is not None:
        admin_token = expand_env({"admin_token": settings.admin_token}, os.environ, "gateway")[
            "admin_token"
        ]
    # Off (None) unless [gateway.telemetry] endpoint is set; a ConfigError before any nursery.
    telemetry = Telemetry.create(settings.telemetry)
    store = await trio.to_thread.run_sync(open_store, settings, config.source)
    try:
        # The file is declarative: make the store hold what it declares, then run
        # what the store holds (which includes what the CLI or admin API added).
        applied = await trio.to_thread.run_sync(
            functools.partial(store.apply_declared, declared_projects(config), actor="config")
        )
        for change in applied:
            log.info("config %s: %s", config.source, change)
        config = attrs.evolve(
            config, projects=await trio.to_thread.run_sync(load_projects, store)
        )
        if admin_token is None:
            created = await trio.to_thread.run_sync(store.ensure_admin_token)
            if created is not None:
                # Printed once, never logged: it is a credential.
                print(
                    f"mcp-orch: generated the admin token (shown once; stored hashed):\n{created}",
                    flush=True,
                )
        async with open_reaper(settings.stop_grace_s) as reaper, trio.open_nursery() as root:
            servers_nursery = await root.start(_run_nursery)
            registry = await root.start(run_registry)
            metrics = Metrics()
            gateway = Gateway(
                config, store, KeyVerifier(store), {}, registry, metrics, servers_nursery,
                admin_token=admin_token, reaper=reaper, telemetry=telemetry,
            )
            registry.observer = gateway.observe_request
            registry.tracer = telemetry
            registry.new_supervisor = gateway.new_supervisor
            metrics.attach(registry, gateway.servers)
            await gateway.start_servers()
            app = create_asgi(gateway)
            hypercorn_patch.apply()
            hyper = hypercorn.config.Config()
            # Header timeout, connection cap, framing rules (gateway/http/connections.py).
            gateway.connections = ConnectionGuard(
                settings.max_connections, settings.header_timeout_s, registry=metrics.registry,
                on_bad_framing=lambda reason: metrics.rejected.labels(reason).inc(),
            )
            hypercorn_patch.attach(hyper, gateway.connections)
            hyper.bind = [_bind(settings.host, settings.port)]
            hyper.graceful_timeout = 5.0
            hyper.keep_alive_timeout = 75.0
            # WebSocket clients: pings keep idle sockets open through proxies; a frame
            # is a request body, bounded alike (a bigger one is closed with 1009).
            hyper.websocket_ping_interval = settings.keepalive_s
            hyper.websocket_max_message_size = settings.max_body_bytes
            hyper.backlog = 2048  # bursts of clients connecting at once
            # An MCP session POSTs every message on one keep-alive connection;
            # Hypercorn's default closes it after 1,000 requests.
            hyper.keep_alive_max_requests = 1_000_000
            hyper.errorlog = logging.getLogger("hypercorn.error")
            hyper.accesslog = None

            async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn.trio.serve(
                    app, hyper, shutdown_trigger=gateway.listener_closed.wait,
                    task_status=task_status,
                )
                root.cancel_scope.cancel()

            async def lifecycle() -> None:
                await gateway.stopping.wait()
                log.info("draining (up to %g s)", settings.drain_timeout_s)
                await gateway.drain()
                gateway.listener_closed.set()

            root.start_soon(lifecycle)
            root.start_soon(gateway.watch_revocations)
            root.start_soon(gateway.heartbeat.run)
            root.start_soon(gateway.watch_store)
            root.start_soon(gateway.record_samples)
            binds = await root.start(serve)
            gateway.url = binds[0]
            pidfile = _pidfile(config)
            await trio.to_thread.run_sync(_write_pidfile, pidfile)
            log.info("mcp-orch listening on %s", gateway.url)
            task_status.started(gateway)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove_pidfile, _pidfile(config))
            await trio.to_thread.run_sync(store.close)
            if telemetry is not None:
                await trio.to_thread.run_sync(telemetry.shutdown)


async def _run_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


def _write_pidfile(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


def _remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return  # another gateway's
        os.unlink(path)
    except OSError:
        pass
