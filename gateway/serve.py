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

import logging
import os
import socket

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from actors import run_registry
from config import Config, Store, declared_projects, expand_env, open_store
from upstream.stdio import open_reaper

from .app import create_asgi
from .cluster.forward import Forwarder
from .cluster.ids import SessionIds, new_instance_id
from .cluster.peers import Peers
from .core import Gateway, is_loopback, load_projects
from .http import hypercorn_patch
from .http.auth import KeyVerifier
from .http.connections import ConnectionGuard
from .ops.metrics import Metrics
from .ops.telemetry import Telemetry

log = logging.getLogger(__name__)

def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def pidfile_path(config: Config) -> str:
    return os.path.join(config.gateway.state_dir, "mcp-orch.pid")


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A bound TCP socket (``SO_REUSEPORT`` for the workers of ``serve --workers``,
    which share one port and let the kernel spread connections over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    return sock


def advertised(url: str, advertise_host: str | None) -> str:
    """The address peers forward to: ``url`` with its host replaced by
    ``advertise_host``, or by this machine's address when it is a wildcard."""
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if advertise_host:
        host = advertise_host
    elif host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"{scheme}://{_bind(host, int(port))}"


def configured_admin_token(config: Config) -> str | None:
    """``[gateway] admin_token`` with ``${VAR}`` expanded; ``None`` when unset."""
    if config.gateway.admin_token is None:
        return None
    return expand_env({"admin_token": config.gateway.admin_token}, os.environ,
                      "gateway")["admin_token"]


def prepare_store(store: Store, config: Config, admin_token: str | None) -> Config:
    """Make the store hold what the config file declares and return the config with
    the store's projects (blocking: run it in a thread).

    The file is declarative: what it declares is created or updated; what the
    CLI or admin API added stays. Without a configured admin token one is
    generated at the first start and printed once (never logged: it is a
    credential). ``serve --workers`` runs this once in the parent, so the
    token is printed once for all workers.
    """
    for change in store.apply_declared(declared_projects(config), actor="config"):
        log.info("config %s: %s", config.source, change)
    config = attrs.evolve(config, projects=load_projects(store))
    if admin_token is None:
        created = store.ensure_admin_token()
        if created is not None:
            print(f"mcp-orch: generated the admin token (shown once; stored hashed):\n{created}",
                  flush=True)
    return config


async def run_gateway(
    config: Config,
    *,
    worker_port: int | None = None,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole gateway until ``Gateway.stop()`` has drained it, or it is cancelled.

    ``started`` with the :class:`Gateway` once the HTTP listener is bound
    (``gateway.url`` holds the bound address, useful with port 0).

    ``worker_port``: run as one worker of ``serve --workers N`` — listen on that
    port beside the other workers (``SO_REUSEPORT``) and on a private port of
    its own, which is the address peers forward to; no pid file (the parent's).
    """
    settings = config.gateway
    for project in config.projects.values():
        if project.auth == "none" and not is_loopback(settings.host):
            log.warning(
                "PROJECT %r HAS auth = \"none\" AND THE GATEWAY LISTENS ON %s: anyone who can "
                "reach this address can use its servers without a key",
                project.name, settings.host,
            )
    admin_token = configured_admin_token(config)
    # Off (None) unless [gateway.telemetry] endpoint is set; a ConfigError before any nursery.
    telemetry = Telemetry.create(settings.telemetry)
    store = await trio.to_thread.run_sync(open_store, settings, config.source)
    forwarder: Forwarder | None = None
    try:
        config = await trio.to_thread.run_sync(prepare_store, store, config, admin_token)
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
            # Session ids name this instance, signed with the cluster's secret
            # (gateway/cluster/ids.py): any instance can route a request to its owner.
            ids = SessionIds(new_instance_id(),
                             await trio.to_thread.run_sync(store.cluster_secret))
            registry.new_id = ids.mint
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
            if worker_port is None:
                hyper.bind = [_bind(settings.host, settings.port)]
            else:
                shared = listening_socket(settings.host, worker_port, reuse_port=True)
                private = listening_socket(settings.host, 0)
                # Hypercorn takes the descriptors over (and closes them).
                hyper.bind = [f"fd://{shared.detach()}", f"fd://{private.detach()}"]
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
            # The instance registry: peers find this instance at its own (for a
            # worker: private) address, and it finds theirs (gateway/cluster/).
            peers = Peers(store, ids, advertised(binds[-1], settings.advertise_host))
            gateway.peers = await root.start(peers.run)
            gateway.forwarder = forwarder = Forwarder(peers, metrics)
            if worker_port is None:
                await trio.to_thread.run_sync(write_pidfile, pidfile_path(config))
            log.info("mcp-orch listening on %s", gateway.url)
            task_status.started(gateway)
    finally:
        with trio.CancelScope(shield=True):
            if forwarder is not None:
                await forwarder.aclose()
            if worker_port is None:
                await trio.to_thread.run_sync(remove_pidfile, pidfile_path(config))
            await trio.to_thread.run_sync(store.close)
            if telemetry is not None:
                await trio.to_thread.run_sync(telemetry.shutdown)


async def _run_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


def write_pidfile(path: str) -> None:
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")


def remove_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return  # another gateway's
        os.unlink(path)
    except OSError:
        pass
