"""The Gateway core: what the HTTP layer needs of the runtime.

Lookups (projects, servers), health and status views, applying the store's
projects and servers (start, restart or stop only what changed — on reload,
on a change another process committed, on an admin API call), revocation of
keys in use, and the drain on shutdown. It owns no nursery of its own: the
serving wiring (:mod:`gateway.serve`) gives it the nursery its supervisors
run in.

Limits (``[projects.P.limits]``): the token buckets per API key and per
project (:attr:`Gateway.limiter`) and each project's concurrency gate
(:meth:`Gateway.gate`) live here, not in a session, so a limit follows its key
across reconnects and sessions; a change of a project's policy or limits is
applied live to its sessions.

Reload (``Gateway.reload()``, on SIGHUP): the config file is read again and
only servers whose definition changed are started, restarted or stopped;
sessions of untouched servers carry on.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from actors import ServerSupervisor, SessionRegistry
from actors.policy import (
    ConcurrencyGate,
    Limited,
    RateLimiter,
    SharedBucket,
    shared_buckets,
)
from actors.project import ProjectSession
from actors.session import PROJECT_SERVER
from config import (
    Config,
    ConfigError,
    ProjectConfig,
    ServerConfig,
    Store,
    StoreError,
    declared_projects,
    load_config,
    projects_from_store,
)
from upstream.stdio import Reaper

from .http.auth import KeyVerifier
from .http.connections import ConnectionGuard
from .http.keepalive import Heartbeat
from .ops.metrics import SAMPLE_INTERVAL_S, Metrics

log = logging.getLogger(__name__)
#: Keys whose ``allow`` list is remembered at most (it never changes after creation).
MAX_ALLOW_CACHE = 10_000


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
    """What the HTTP layer needs of the runtime: config, keys, servers, sessions, health."""

    config: Config
    store: Store
    keys: KeyVerifier
    servers: dict[tuple[str, str], ServerSupervisor]
    registry: SessionRegistry
    metrics: Metrics
    _servers_nursery: trio.Nursery
    admin_token: str | None = None
    #: The open client connections (caps, timeouts; aborting a stuck one).
    connections: ConnectionGuard | None = None
    #: The watchdog every upstream process is registered with (``upstream/reaper.py``),
    #: handed to each supervisor this gateway makes — shared or per session.
    reaper: Reaper | None = None
    stopping: trio.Event = attrs.field(factory=trio.Event)
    draining: bool = False
    listener_closed: trio.Event = attrs.field(factory=trio.Event)
    url: str = ""
    reloads: int = 0
    #: OpenTelemetry tracing (``gateway/ops/telemetry.py``); ``None`` when it is off.
    telemetry: Any = None
    #: Sends the keep-alive comments of every idle SSE stream (``gateway/keepalive.py``).
    heartbeat: Heartbeat = attrs.field(
        default=attrs.Factory(lambda self: Heartbeat(self.config.gateway.keepalive_s),
                              takes_self=True)
    )
    #: This instance's view of the cluster (``gateway/cluster/peers.py``) and the
    #: router relaying requests for sessions peers own (``gateway/cluster/forward.py``);
    #: typed loosely because those modules import the transports, which import this one.
    peers: Any = None
    forwarder: Any = None
    _shared_limits_down: bool = False
    #: Token buckets per (project, key hash) and per project (``[projects.P.limits]``).
    limiter: RateLimiter = attrs.field(factory=RateLimiter)
    #: Project → its calls in flight per server (``max_concurrent``), see :meth:`gate`.
    _gates: dict[str, ConcurrencyGate] = attrs.field(factory=dict)
    #: Key hash → its ``allow`` list (fixed at creation, so kept; bounded).
    _key_allows: dict[str, tuple[str, ...] | None] = attrs.field(factory=dict)

    # -- policy and limits ----------------------------------------------------------
    def gate(self, project: str) -> ConcurrencyGate | None:
        """The project's concurrency gate (one for all its sessions); ``None`` when the
        project sets no ``max_concurrent``."""
        proj = self.config.projects.get(project)
        limit = proj.limits.max_concurrent if proj is not None else None
        gate = self._gates.get(project)
        if gate is None:
            if limit is None:
                return None
            gate = self._gates[project] = ConcurrencyGate(
                limit, self.metrics.rate_limited.labels(project, "server").inc)
        gate.limit = limit
        return gate

    async def key_allow(self, key_hash: str | None) -> tuple[str, ...] | None:
        """The ``allow`` list the key with this hash was created with (``None``: the key
        is not narrowed, or there is no key); asked of the store once per key."""
        if key_hash is None:
            return None
        if key_hash not in self._key_allows:
            allow = await trio.to_thread.run_sync(self.store.key_allow, key_hash)
            if len(self._key_allows) >= MAX_ALLOW_CACHE:
                self._key_allows.clear()
            self._key_allows[key_hash] = allow
        return self._key_allows[key_hash]

    async def check_rate(self, project: str, key_hash: str | None, n: int = 1
                         ) -> Limited | None:
        """Count ``n`` requests of a key to ``project`` against its ``[limits]`` buckets;
        ``None`` when allowed, else the refusal (counted in
        ``mcp_orch_rate_limited_total{project,scope}``).

        Alone, the buckets are this process's; with live peers they are the
        store's (``Store.take_tokens``), one per key and project for the whole
        cluster. Error handling: while the store is unreachable the local
        buckets count instead (a limit then holds per instance), logged once.
        """
        proj = self.config.projects.get(project)
        if proj is None:
            return None
        limited = None
        buckets = shared_buckets(project, key_hash, proj.limits)
        if buckets and self.peers is not None and self.peers.live:
            try:
                limited = await self._take_shared(buckets, n)
            except StoreError as exc:
                if not self._shared_limits_down:
                    log.warning("rate limits counted per instance while the store is "
                                "unreachable: %s", exc)
                self._shared_limits_down = True
                limited = self.limiter.check(project, key_hash, proj.limits,
                                             trio.current_time(), n)
            else:
                self._shared_limits_down = False
        elif buckets:
            limited = self.limiter.check(project, key_hash, proj.limits, trio.current_time(), n)
        if limited is not None:
            self.metrics.rate_limited.labels(project, limited.scope).inc()
        return limited

    async def _take_shared(self, buckets: list[SharedBucket], n: int) -> Limited | None:
        for bucket in buckets:
            if n > bucket.burst:
                return Limited(bucket.scope, 0.0, too_big=True)
        short = await trio.to_thread.run_sync(
            self.store.take_tokens, [(b.name, b.rate, b.burst) for b in buckets], n)
        if short is None:
            return None
        index, wait_s = short
        return Limited(buckets[index].scope, wait_s)

    # -- lookups -----------------------------------------------------------------
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

    def project_servers(
        self, project: str
    ) -> dict[str, tuple[ServerConfig, ServerSupervisor | None]] | None:
        """The project's enabled servers (for its project endpoint), name → (config, shared
        supervisor or ``None`` when isolated per session); ``None`` for no such project."""
        proj = self.config.projects.get(project)
        if proj is None:
            return None
        return {
            name: (server, self.servers.get((project, name)))
            for name, server in proj.servers.items() if server.enabled
        }

    def observe_request(self, *args: Any) -> None:
        self.metrics.observe_request(*args)

    # -- health --------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) for ``/ready``."""
        if self.draining:
            return False, "draining: the gateway is shutting down"
        waiting = [
            f"{project}/{name}" for (project, name), sup in self.servers.items()
            if not sup.first_attempt_done
        ]
        if waiting:
            return False, "upstreams still starting: " + ", ".join(sorted(waiting))
        return True, "ready"

    def _isolated(self) -> dict[tuple[str, str], list[ServerSupervisor]]:
        isolated: dict[tuple[str, str], list[ServerSupervisor]] = {}
        for session in self.registry.sessions.values():
            if isinstance(session, ProjectSession):
                for member in session.members.values():
                    if member.private and member.started:
                        isolated.setdefault((session.project, member.name), []).append(
                            member.supervisor)
            elif session.config.isolation == "session" and session.server is not None:
                isolated.setdefault((session.project, session.config.name), []).append(
                    session.server
                )
        return isolated

    def _servers_view(self, detail: Callable[[ServerSupervisor], dict[str, Any]]) -> dict[str, Any]:
        isolated = self._isolated()
        counts = self.registry.counts()
        projects: dict[str, Any] = {}
        for project in self.config.projects.values():
            servers: dict[str, Any] = {}
            for server in project.servers.values():
                key = (project.name, server.name)
                if not server.enabled:
                    view: dict[str, Any] = {"state": "disabled"}
                elif key in self.servers:
                    view = detail(self.servers[key])
                else:
                    instances = isolated.get(key, [])
                    view = {
                        "state": "on-demand",
                        "isolation": "session",
                        "instances": len(instances),
                        "restarts": sum(s.restarts for s in instances),
                    }
                servers[server.name] = view
            projects[project.name] = {"servers": servers}
        for (project, server, transport), count in counts.items():
            if server == PROJECT_SERVER and project in projects:
                # Sessions of the project endpoint, spanning its servers.
                projects[project].setdefault("project_sessions_by_transport", {})[
                    transport] = count
                continue
            view = projects.get(project, {}).get("servers", {}).get(server)
            if view is not None:
                view.setdefault("sessions_by_transport", {})[transport] = count
        return projects

    def health(self) -> dict[str, Any]:
        """Liveness view: states and restart counts, nothing secret."""
        return {"status": "ok", "projects": self._servers_view(ServerSupervisor.snapshot)}

    def status(self) -> dict[str, Any]:
        """The operator's view (admin token): everything about every server."""
        projects = self._servers_view(ServerSupervisor.status)
        for project, body in projects.items():
            for server, view in body["servers"].items():
                view["requests"] = self.metrics.tallies[(project, server, "requests")]
                view["errors"] = self.metrics.tallies[(project, server, "errors")]
        ready, reason = self.readiness()
        return {
            "ready": ready,
            "reason": reason,
            "sessions": len(self.registry.sessions),
            "reloads": self.reloads,
            "config": self.config.source,
            **self.cluster_view(addresses=True),
            "projects": projects,
        }

    def cluster_view(self, *, addresses: bool) -> dict[str, Any]:
        """This instance's id and its live peers with their last heartbeat (the internal
        addresses only for the operator's ``/status``)."""
        if self.peers is None:
            return {}
        view = self.peers.describe()
        if not addresses:
            view.pop("address")
            view.pop("pid")
            for peer in view["peers"]:
                peer.pop("address")
        return view

    # -- lifecycle -----------------------------------------------------------------
    def stop(self) -> None:
        """Begin a graceful shutdown (idempotent)."""
        self.stopping.set()

    def new_supervisor(self, project: str, server: ServerConfig) -> ServerSupervisor:
        """A supervisor for ``server`` with this gateway's reaper and stop grace.

        Every supervisor is made here — shared ones by :meth:`_start_server`,
        per-session ones (``isolation = "session"``) through the session
        registry — so no upstream process escapes the reaper.
        """
        return ServerSupervisor(
            project, server, grace_s=self.config.gateway.stop_grace_s, reaper=self.reaper
        )

    async def _start_server(self, project: str, server: ServerConfig) -> None:
        supervisor = self.new_supervisor(project, server)
        await self._servers_nursery.start(supervisor.run)
        self.servers[(project, server.name)] = supervisor

    def _stop_server(self, key: tuple[str, str], reason: str) -> None:
        supervisor = self.servers.pop(key, None)
        if supervisor is not None:
            supervisor.stop()
        for session in list(self.registry.sessions.values()):
            if (session.project, session.server_name) == key:
                session.close(reason, fail_in_flight=True)

    async def restart_server(self, project: str, name: str, why: str) -> bool:
        """Stop and start a shared server (its sessions end with ``why``); ``False`` when
        it is not running shared here (disabled, unknown, or isolated per session)."""
        key = (project, name)
        found = self.server(project, name)
        if found is None or key not in self.servers:
            return False
        self._stop_server(key, f"server {project}/{name} was restarted by {why}")
        await self._start_server(project, found[0])
        # Project sessions hold the supervisor too: hand them the new one.
        self._update_project_sessions(
            {"added": [], "changed": [f"{project}/{name}"], "removed": []})
        return True

    async def start_servers(self) -> None:
        for project in self.config.projects.values():
            for server in project.servers.values():
                if server.enabled and server.isolation == "shared":
                    await self._start_server(project.name, server)

    async def reload(self) -> dict[str, list[str]]:
        """Re-read the config file, apply it to the store, and apply what changed.

        Error handling: a config that does not load raises ``ConfigError`` and
        changes nothing.
        """
        assert self.config.source is not None
        new = await trio.to_thread.run_sync(load_config, self.config.source)
        if new.gateway != self.config.gateway:
            log.warning("reload: [gateway] settings changed; they apply at the next restart")
        applied = await trio.to_thread.run_sync(
            functools.partial(self.store.apply_declared, declared_projects(new), actor="reload")
        )
        for change in applied:
            log.info("reload: %s", change)
        self.reloads += 1
        return await self.sync_from_store("a config reload")

    async def sync_from_store(self, why: str) -> dict[str, list[str]]:
        """Make the running servers match the store's projects and servers."""
        projects = await trio.to_thread.run_sync(load_projects, self.store)
        return await self.apply_projects(projects, why)

    async def apply_projects(
        self, projects: Mapping[str, ProjectConfig], why: str
    ) -> dict[str, list[str]]:
        """Start, restart or stop only the servers whose definition changed.

        A changed or removed server is stopped and its sessions end with a
        clear reason; a changed or added one is started. Sessions of untouched
        servers are not disturbed; a project whose auth changed ends its
        sessions (they were admitted under the old rule).
        """
        new = attrs.evolve(self.config, projects=projects)
        for gone in self.config.projects.keys() - new.projects.keys():
            self.keys.forget_project(gone)  # its keys went with it
        old_servers = _servers_of(self.config)
        new_servers = _servers_of(new)
        changes: dict[str, list[str]] = {"added": [], "changed": [], "removed": []}
        for key in sorted(old_servers.keys() | new_servers.keys()):
            before, after = old_servers.get(key), new_servers.get(key)
            if before == after:
                continue
            kind = "added" if before is None else "removed" if after is None else "changed"
            changes[kind].append("/".join(key))
            if before is not None:
                self._stop_server(key, f"server {'/'.join(key)} was {kind} by {why}")
        policies: dict[str, Any] = {}
        for name, project in self.config.projects.items():
            after_project = new.projects.get(name)
            if after_project is not None and (after_project.policy, after_project.limits) != (
                    project.policy, project.limits):
                changes["changed"].append(f"{name} (policy and limits)")
                policies[name] = after_project.policy
            if name in new.projects and new.projects[name].auth != project.auth:
                changes["changed"].append(f"{name} (auth)")
                for session in list(self.registry.sessions.values()):
                    if session.project == name:
                        session.close(f"project {name} changed its auth by {why}")
        self.config = new
        for key, server in new_servers.items():
            if "/".join(key) in changes["added"] + changes["changed"]:
                if server.enabled and server.isolation == "shared":
                    await self._start_server(key[0], server)
        self._update_project_sessions(changes)
        for name in policies:
            gate = self.gate(name)
            for session in list(self.registry.sessions.values()):
                if isinstance(session, ProjectSession) and session.project == name:
                    session.set_policy(policies[name])
                    if gate is not session.access.gate:
                        session.access = attrs.evolve(session.access, gate=gate)
        if any(changes.values()):
            log.info(
                "applied %s: added %s, changed %s, removed %s", why,
                changes["added"] or "nothing", changes["changed"] or "nothing",
                changes["removed"] or "nothing",
            )
        return changes

    def _update_project_sessions(self, changes: dict[str, list[str]]) -> None:
        """Give project sessions their project's servers as they are now (a server
        added, changed or removed is a list change for them); a project that is gone
        ends its sessions."""
        touched = {entry.split("/", 1)[0] for kind in ("added", "changed", "removed")
                   for entry in changes[kind]}
        for session in list(self.registry.sessions.values()):
            if not isinstance(session, ProjectSession) or session.project not in touched:
                continue
            servers = self.project_servers(session.project)
            if servers is None:
                session.close(f"project {session.project} was removed", fail_in_flight=True)
            else:
                session.set_servers(servers)

    async def watch_store(self, interval_s: float = 1.0) -> None:
        """Apply changes anyone commits to the store — another instance, the CLI, the
        admin API — within a second.

        PostgreSQL announces every committed change (``NOTIFY``, heard at once);
        SQLite has no cross-process event, so its ``data_version`` is polled
        (``Store.wait_for_change`` does either, in a worker thread that ends
        with the store, so the wait is abandoned on cancellation). On a change:
        every cached key answer is stale (a key revoked or created elsewhere),
        the servers are synced, and sessions whose key is no longer active end.

        Error handling: while the store is unreachable a sync is skipped and
        logged; the running servers, sessions and cached keys are kept.
        """
        while True:
            changed = await trio.to_thread.run_sync(
                self.store.wait_for_change, interval_s, abandon_on_cancel=True)
            if not changed:
                continue
            self.keys.invalidate()
            try:
                await self.sync_from_store("a change in the store")
            except ConfigError as exc:
                log.error("the store holds a server that does not validate: %s", exc)
            except StoreError as exc:
                log.warning("the store changed but cannot be read now: %s", exc)
                continue
            try:
                await self.end_revoked_sessions()
            except StoreError as exc:
                log.warning("cannot check the keys of live sessions (kept meanwhile): %s", exc)

    async def watch_revocations(self, interval_s: float = 1.0) -> None:
        """End live sessions whose API key expired, within ``interval_s``.

        A revocation is a store change and ends its sessions at once
        (:meth:`watch_store`); an expiry changes nothing in the store, so the
        keys in use are checked once per interval as well.

        Error handling: while the store is unreachable nothing is ended (live
        sessions keep working through the outage); logged once per outage.
        """
        down = False
        while True:
            await trio.sleep(interval_s)
            try:
                await self.end_revoked_sessions()
            except StoreError as exc:
                if not down:
                    log.warning("cannot check the keys of live sessions (kept meanwhile): %s",
                                exc)
                down = True
                continue
            if down:
                log.info("the keys of live sessions are checked again")
            down = False

    async def end_revoked_sessions(self) -> None:
        """Ask the store which keys of live sessions are still active; end the others'
        sessions and forget their cached answers.

        Error handling: a :class:`StoreError` (unreachable) propagates, and
        nothing is ended.
        """
        in_use = {s.key_hash for s in self.registry.sessions.values() if s.key_hash}
        if not in_use:
            return
        active = await trio.to_thread.run_sync(self.store.active_hashes, in_use)
        for key_hash in in_use - active:
            self.keys.forget(key_hash)
            for session in list(self.registry.sessions.values()):
                if session.key_hash == key_hash:
                    log.info("session %s ended: its API key was revoked", session.session_id)
                    session.close("the API key of this session was revoked or expired")

    async def record_samples(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        """Close a metrics sample of every server each ``interval_s`` (the console's charts)."""
        while True:
            await trio.sleep(interval_s)
            self.metrics.take_sample(time.time(), interval_s, self.live_figures())

    def live_figures(self) -> dict[tuple[str, str], tuple[int, int, str]]:
        """(project, server) → (requests in flight, sessions, state), read now."""
        sessions: dict[tuple[str, str], int] = {}
        for (project, server, _), count in self.registry.counts().items():
            sessions[(project, server)] = sessions.get((project, server), 0) + count
        live: dict[tuple[str, str], tuple[int, int, str]] = {}
        for project in self.config.projects.values():
            for server in project.servers.values():
                key = (project.name, server.name)
                sup = self.servers.get(key)
                if sup is not None:
                    in_flight = sup.upstream.in_flight if sup.upstream is not None else 0
                    state = sup.state
                else:
                    in_flight, state = 0, "on-demand" if server.enabled else "disabled"
                live[key] = (in_flight, sessions.get(key, 0), state)
        return live

    async def drain(self) -> None:
        """Refuse new work, let in-flight requests finish (bounded), then end sessions."""
        self.draining = True
        reason = "the gateway is shutting down"
        for session in self.registry.sessions.values():
            session.refusing = reason
        with trio.move_on_after(self.config.gateway.drain_timeout_s) as scope:
            for session in list(self.registry.sessions.values()):
                await session.wait_idle()
        if scope.cancelled_caught:
            log.warning("drain timeout: ending sessions with requests still in flight")
        # Each stream still delivers what is in its outbox, then ends.
        self.registry.close_all(reason)


def load_projects(store: Store) -> dict[str, ProjectConfig]:
    """The projects and servers in the store, validated (blocking: call from a thread)."""
    return projects_from_store(store.projects(), store.servers(), f"{store.path}")


def _servers_of(config: Config) -> dict[tuple[str, str], ServerConfig]:
    return {
        (p.name, s.name): s for p in config.projects.values() for s in p.servers.values()
    }
