"""The gateway's root: one nursery holding the supervisors, the sessions and Hypercorn.

Start-up order: open the store, start a supervisor per shared server, start
the session registry, then serve HTTP in-process with
``hypercorn.trio.serve(..., shutdown_trigger=...)`` so this nursery — not
Hypercorn's command line — decides when and how the gateway stops.
Shutdown order is the reverse: stop accepting, end the sessions (their
streams close), then cancel the supervisors, which stop their processes.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from typing import Any

import attrs
import hypercorn.config
import hypercorn.trio
import trio

from actors import ServerSupervisor, SessionRegistry, run_registry
from config import Config, ProjectConfig, ServerConfig, Store

from .auth import KeyVerifier

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@attrs.define(eq=False)
class Gateway:
    """What the HTTP layer needs of the runtime: config, keys, servers and sessions."""

    config: Config
    store: Store
    keys: KeyVerifier
    servers: dict[tuple[str, str], ServerSupervisor]
    registry: SessionRegistry
    stopping: trio.Event = attrs.field(factory=trio.Event)
    url: str = ""

    def project(self, name: str) -> ProjectConfig | None:
        return self.config.projects.get(name)

    def server(self, project: str, name: str) -> tuple[ServerConfig, ServerSupervisor | None] | None:
        """The server's config and its shared supervisor (``None`` when isolated per session)."""
        proj = self.config.projects.get(project)
        if proj is None:
            return None
        server = proj.servers.get(name)
        if server is None or not server.enabled:
            return None
        return server, self.servers.get((project, name))

    def health(self) -> dict[str, Any]:
        projects: dict[str, Any] = {}
        isolated: dict[tuple[str, str], list[ServerSupervisor]] = {}
        for session in self.registry.sessions.values():
            if session.config.isolation == "session" and session.server is not None:
                isolated.setdefault((session.project, session.config.name), []).append(
                    session.server
                )
        for project in self.config.projects.values():
            servers: dict[str, Any] = {}
            for server in project.servers.values():
                if not server.enabled:
                    servers[server.name] = {"state": "disabled"}
                    continue
                supervisor = self.servers.get((project.name, server.name))
                if supervisor is not None:
                    servers[server.name] = supervisor.snapshot()
                    continue
                instances = isolated.get((project.name, server.name), [])
                servers[server.name] = {
                    "state": "on-demand",
                    "isolation": "session",
                    "instances": len(instances),
                    "restarts": sum(s.restarts for s in instances),
                }
            projects[project.name] = {"servers": servers}
        return {"status": "ok", "projects": projects}

    def stop(self) -> None:
        self.stopping.set()


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def run_gateway(
    config: Config,
    *,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole gateway until ``Gateway.stop()`` is called or it is cancelled.

    ``started`` with the :class:`Gateway` once the HTTP listener is bound
    (``gateway.url`` holds the bound address, useful with port 0).
    """
    from .app import create_app  # the app imports the runtime's types

    settings = config.gateway
    for project in config.projects.values():
        if project.auth == "none" and not is_loopback(settings.host):
            log.warning(
                "PROJECT %r HAS auth = \"none\" AND THE GATEWAY LISTENS ON %s: anyone who can "
                "reach this address can use its servers without a key",
                project.name, settings.host,
            )
    store = await trio.to_thread.run_sync(Store.open, settings.state_dir)
    try:
        async with trio.open_nursery() as root:
            servers: dict[tuple[str, str], ServerSupervisor] = {}
            for project in config.projects.values():
                for server in project.servers.values():
                    if server.enabled and server.isolation == "shared":
                        supervisor = ServerSupervisor(project.name, server)
                        await root.start(supervisor.run)
                        servers[(project.name, server.name)] = supervisor
            registry = await root.start(run_registry)
            gateway = Gateway(config, store, KeyVerifier(store), servers, registry)
            app = create_app(gateway)
            hyper = hypercorn.config.Config()
            hyper.bind = [_bind(settings.host, settings.port)]
            hyper.graceful_timeout = 5.0
            hyper.keep_alive_timeout = 75.0
            hyper.errorlog = logging.getLogger("hypercorn.error")
            hyper.accesslog = None

            async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn.trio.serve(
                    app, hyper, shutdown_trigger=gateway.stopping.wait, task_status=task_status
                )
                root.cancel_scope.cancel()

            async def end_sessions_on_stop() -> None:
                await gateway.stopping.wait()
                registry.close_all("the gateway is shutting down")

            root.start_soon(end_sessions_on_stop)
            binds = await root.start(functools.partial(serve))
            gateway.url = binds[0]
            log.info("mcp-orch listening on %s", gateway.url)
            task_status.started(gateway)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)
