"""Supervision of upstream servers: restart with backoff, give up into ``failed``.

One :class:`ServerSupervisor` per configured server (or per client session
for ``isolation = "session"``). It keeps the server's upstream actor running:
when the process exits it is started again after an exponential backoff with
jitter (``min(backoff_max_s, backoff_initial_s * 2**n)``, ``n`` reset after a
run that outlived ``window_s``). More than ``max_restarts`` restarts within
``window_s`` marks the server ``failed``; it is then retried every
``failed_retry_s`` while the gateway stays up. All time comes from
``trio.current_time()`` so the behaviour is testable under ``MockClock``.

Sessions attach to the supervisor, not to one process, so they survive a
restart and receive the next process's notifications.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import attrs
import trio

from config import ServerConfig, expand_env
from upstream import errors
from upstream.http_link import open_remote_link
from upstream.link import Link
from upstream.stdio import STDERR_TAIL_LINES, Reaper, child_environment, open_stdio_link
from upstream.ws_link import open_websocket_link

from .upstream import SessionPeer, Upstream, UpstreamError, open_upstream

log = logging.getLogger(__name__)

STATUS_STDERR_LINES = 20
#: While an attempt is still starting, say so in the log this often (a first
#: ``npx -y`` start may be downloading its package for minutes).
STARTING_LOG_S = 15.0
State = Literal["starting", "running", "restarting", "failed", "stopped"]


def describe_failure(exc: BaseException) -> str:
    """One line for an exception, unwrapping single-exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text


@attrs.define(eq=False)
class ServerSupervisor:
    """Keeps one upstream server alive and tells how it is doing.

    Error handling: ``run`` catches ``Exception`` from a start or a run (spawn
    failures, a failed handshake, protocol errors) and turns it into a restart;
    it never catches ``BaseException``, so cancellation stops it.
    """

    project: str
    config: ServerConfig
    jitter: float = 0.2
    environ: Mapping[str, str] | None = None
    #: Starts one upstream (an async context manager); replaceable in tests.
    opener: Callable[..., AbstractAsyncContextManager[Upstream]] = open_upstream
    rng: random.Random = attrs.field(factory=random.Random)
    state: State = "starting"
    restarts: int = 0
    last_exit: str = ""
    pid: int | None = None
    started_at: float | None = None
    next_start_at: float | None = None
    first_attempt_done: bool = False
    upstream: Upstream | None = None
    sessions: dict[str, SessionPeer] = attrs.field(factory=dict)
    #: Resource URI → subscribed session ids; outlives restarts (see ``Upstream.subscribe``).
    subscriptions: dict[str, set[str]] = attrs.field(factory=dict)
    #: The last lines the server wrote to stderr, across restarts (crash output stays visible).
    stderr_tail: collections.deque[str] = attrs.field(
        factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES)
    )
    last_exit_code: int | None = None
    #: How long a stopping process gets after stdin EOF, then after SIGTERM.
    grace_s: float = 3.0
    #: Capabilities announced to the upstream as the client's: {} for a shared
    #: upstream (never claim what a real client may lack), the client's own for
    #: a per-session one.
    client_capabilities: dict[str, Any] = attrs.field(factory=dict)
    #: The gateway's watchdog (``upstream/reaper.py``): every process this
    #: supervisor starts is registered with it, so it dies with a SIGKILLed
    #: gateway. ``None`` only outside a gateway (tests, tools).
    reaper: Reaper | None = None
    #: When the current start attempt began (for ``starting_for_s``).
    attempt_started_at: float | None = None
    _changed: trio.Event = attrs.field(factory=trio.Event)
    _scope: trio.CancelScope | None = None

    @property
    def name(self) -> str:
        return self.config.name

    def _set_state(self, state: State) -> None:
        if state != self.state:
            log.info("server %s/%s: %s → %s", self.project, self.name, self.state, state)
        self.state = state
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    async def wait_changed(self) -> None:
        """Return at the next change of ``state`` (or of the upstream behind it)."""
        await self._changed.wait()

    def attach(self, session: SessionPeer) -> None:
        self.sessions[session.session_id] = session

    def detach(self, session: SessionPeer) -> None:
        self.sessions.pop(session.session_id, None)
        if self.upstream is not None:
            self.upstream.drop_subscriber(session.session_id)
        else:
            for uri, holders in list(self.subscriptions.items()):
                holders.discard(session.session_id)
                if not holders:
                    del self.subscriptions[uri]

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for ``/health``: state, restarts, pid, sessions."""
        now = trio.current_time()
        view: dict[str, Any] = {
            "state": self.state,
            "restarts": self.restarts,
            # While starting, the pid of the process being initialized (if spawned yet).
            "pid": self.pid if self.state in ("running", "starting") else None,
            "sessions": len(self.sessions),
            "in_flight": self.upstream.in_flight if self.upstream is not None else 0,
        }
        if self.state == "running" and self.started_at is not None:
            view["uptime_s"] = round(now - self.started_at, 3)
        if self.state == "starting" and self.attempt_started_at is not None:
            view["starting_for_s"] = round(now - self.attempt_started_at, 3)
        if self.last_exit:
            view["last_exit"] = self.last_exit
        if self.state in ("restarting", "failed") and self.next_start_at is not None:
            view["next_start_in_s"] = round(max(0.0, self.next_start_at - now), 3)
        return view

    def status(self) -> dict[str, Any]:
        """Everything an operator wants to see of this server (for ``/status``)."""
        view = self.snapshot()
        upstream = self.upstream
        view.update(
            command=self.config.command,
            isolation=self.config.isolation,
            last_exit_code=self.last_exit_code,
            stderr_tail=list(self.stderr_tail)[-STATUS_STDERR_LINES:],
            protocol_version=upstream.protocol_version if upstream else None,
            server_info=upstream.server_info if upstream else None,
            tools=upstream.tools_count if upstream else None,
            queue_depth=upstream.queue_depth if upstream else 0,
        )
        return view

    async def wait_ready(self, timeout_s: float) -> Upstream:
        """Return the running upstream, waiting up to ``timeout_s`` while it (re)starts.

        Error handling: raises :class:`UpstreamError` at once when the server
        is ``failed`` or ``stopped``, and after ``timeout_s`` otherwise.
        """
        with trio.move_on_after(timeout_s):
            while True:
                upstream = self.upstream
                if upstream is not None and not upstream.closed.is_set():
                    return upstream
                if self.state in ("failed", "stopped"):
                    break
                await self._changed.wait()
        detail = f": {self.last_exit}" if self.last_exit else ""
        if self.state == "failed":
            message = f"server '{self.name}' has failed and is retried slowly{detail}"
        elif self.state == "stopped":
            message = f"server '{self.name}' is stopped"
        else:
            message = f"server '{self.name}' is {self.state}{detail}; try again shortly"
        raise UpstreamError(errors.UPSTREAM_UNAVAILABLE, message)

    def stop(self) -> None:
        """Stop supervising (the process is stopped as the run unwinds)."""
        if self._scope is not None:
            self._scope.cancel()

    async def run(self, *, task_status: trio.TaskStatus[ServerSupervisor] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the restart loop until cancelled; ``started`` at once with ``self``."""
        policy = self.config.restart
        recent: collections.deque[float] = collections.deque()
        failures = 0
        with trio.CancelScope() as scope:
            self._scope = scope
            task_status.started(self)
            try:
                while True:
                    began = trio.current_time()
                    async with trio.open_nursery() as attempt:
                        attempt.start_soon(self._report_slow_start, began)
                        await self._run_once()
                        attempt.cancel_scope.cancel()
                    now = trio.current_time()
                    if now - began >= policy.window_s:
                        failures = 0
                    recent.append(now)
                    while recent and recent[0] < now - policy.window_s:
                        recent.popleft()
                    if len(recent) > policy.max_restarts:
                        delay = policy.failed_retry_s
                        recent.clear()
                        failures = 0
                        self.next_start_at = now + delay
                        self._set_state("failed")
                        log.error(
                            "server %s/%s failed: %d restarts within %g s; next try in %g s (%s)",
                            self.project, self.name, policy.max_restarts + 1,
                            policy.window_s, delay, self.last_exit,
                        )
                    else:
                        delay = min(policy.backoff_max_s, policy.backoff_initial_s * 2**failures)
                        delay *= 1 + self.jitter * self.rng.uniform(-1.0, 1.0)
                        failures += 1
                        self.next_start_at = now + delay
                        self._set_state("restarting")
                        log.warning(
                            "server %s/%s: %s; restarting in %.2f s",
                            self.project, self.name, self.last_exit, delay,
                        )
                    await trio.sleep(delay)
                    self.restarts += 1
            finally:
                self._set_state("stopped")

    async def _report_slow_start(self, began: float) -> None:
        """Log every :data:`STARTING_LOG_S` that the attempt is still starting, until it runs."""
        while True:
            await trio.sleep(STARTING_LOG_S)
            if self.state == "running":
                return
            if self.state == "starting":
                first = "" if self.restarts else " (a first start may still be installing it)"
                log.info("server %s/%s: still starting after %.0f s%s", self.project,
                         self.name, trio.current_time() - began, first)

    def _link_opener(self) -> Callable[[], AbstractAsyncContextManager[Link]]:
        config = self.config
        environ = os.environ if self.environ is None else self.environ
        where = f"projects.{self.project}.servers.{config.name}"
        if config.url is not None:
            headers = expand_env(config.headers, environ, where=where)
            if config.transport == "websocket":
                return functools.partial(
                    open_websocket_link, config.url, headers,
                    timeout_s=config.request_timeout_s, errors=self.stderr_tail,
                )
            return functools.partial(
                open_remote_link, config.transport, config.url, headers,
                timeout_s=config.request_timeout_s, errors=self.stderr_tail,
            )
        env = child_environment(expand_env(config.env, environ, where=where))
        return functools.partial(
            open_stdio_link, config.command, tuple(config.args), env, config.cwd,
            grace_s=self.grace_s, stderr_tail=self.stderr_tail, reaper=self.reaper,
        )

    def _tracked(
        self, open_link: Callable[[], AbstractAsyncContextManager[Link]]
    ) -> Callable[[], AbstractAsyncContextManager[Link]]:
        """``open_link`` that records the link's pid as soon as it exists (before
        ``initialize``), so ``/health`` shows the process of a server still starting."""

        @contextlib.asynccontextmanager
        async def tracked() -> AsyncIterator[Link]:
            async with open_link() as link:
                self.pid = link.pid
                yield link

        return tracked

    async def _run_once(self) -> None:
        config = self.config
        link = None
        # The first start gets its own budget: ``npx -y`` may still be downloading.
        first = not self.first_attempt_done
        self.attempt_started_at = trio.current_time()
        self.pid = None
        try:
            async with self.opener(
                config.name,
                self._tracked(self._link_opener()),
                init_timeout_s=config.first_start_timeout_s if first else config.request_timeout_s,
                sessions=self.sessions,
                client_capabilities=self.client_capabilities,
                subscriptions=self.subscriptions,
            ) as upstream:
                link = upstream.link
                self.upstream = upstream
                self.pid = upstream.pid
                self.started_at = trio.current_time()
                self.next_start_at = None
                self.first_attempt_done = True
                self._set_state("running")
                await upstream.closed.wait()
                self.last_exit = upstream.close_reason
                # The link is known broken: say so now, not once the process
                # has been stopped (stdin EOF, grace, SIGTERM can take seconds).
                self.pid = None
                self._set_state("restarting")
        except Exception as exc:
            self.last_exit = describe_failure(exc)
        finally:
            self.upstream = None
            self.pid = None
            self.first_attempt_done = True
            if link is not None:
                self.last_exit_code = link.exit_code
