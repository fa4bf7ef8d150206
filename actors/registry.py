"""The registry of live sessions and the nursery they run in.

Session actors run in the registry's nursery (a child of the gateway's root
nursery), never on the web framework's per-request or app nursery: a request
handler only holds a :class:`~actors.session.Session` handle, so a client that
disconnects cancels its HTTP task without tearing down the actor mid-cleanup,
and a crashing session cannot take the server down with it.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Callable

import attrs
import trio

from config import ServerConfig

from .outlet import Outlet
from .project import ProjectSession
from .session import RequestObserver, Session, SessionOptions
from .supervisor import ServerSupervisor
from .tracing import RequestTracer

log = logging.getLogger(__name__)


def new_session_id() -> str:
    """A fresh, unguessable session id (visible ASCII, as the spec requires)."""
    return secrets.token_hex(16)


@attrs.define(eq=False)
class SessionRegistry:
    """Opens session actors and finds them by id."""

    _nursery: trio.Nursery
    sessions: dict[str, Session] = attrs.field(factory=dict)
    #: Given to every new session: called once per finished request (metrics).
    observer: RequestObserver | None = None
    #: Given to every new session when tracing is on (``actors/tracing.py``).
    tracer: RequestTracer | None = None
    #: Makes the private supervisor of an ``isolation = "session"`` session
    #: (the gateway's, which hands it the reaper).
    new_supervisor: Callable[[str, ServerConfig], ServerSupervisor] = ServerSupervisor
    #: Mints session ids: the cluster's signed, owner-naming ids once the gateway
    #: has set it (``gateway/cluster/ids.py``); random ones otherwise.
    new_id: Callable[[], str] = new_session_id

    async def open(self, options: SessionOptions, outlet: Outlet) -> Session:
        """Open a session: run its actor in the registry's nursery and return its handle
        once it is attached.

        Closing a session before or while it starts is safe: it then ends at once.
        """
        kind = Session if options.servers is None else ProjectSession
        session = kind(self.new_id(), options, outlet, observer=self.observer,
                       new_supervisor=self.new_supervisor, tracer=self.tracer)
        await self._nursery.start(self._run, session)
        return session

    async def _run(self, session: Session, *, task_status: trio.TaskStatus[Session]) -> None:
        self.sessions[session.session_id] = session
        try:
            await session.run(task_status=task_status)
        except Exception:
            log.exception("session %s crashed", session.session_id)
        finally:
            self.sessions.pop(session.session_id, None)

    def get(self, session_id: str) -> Session | None:
        """The live session with this id; one that is closing counts as gone."""
        session = self.sessions.get(session_id)
        if session is None or session.closing:
            return None
        return session

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Live sessions by (project, server, transport); a project session's server is ``*``."""
        counter: collections.Counter[tuple[str, str, str]] = collections.Counter()
        for s in self.sessions.values():
            counter[(s.project, s.server_name, s.transport.value)] += 1
        return dict(counter)

    def close_all(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            session.close(reason)


async def run_registry(*, task_status: trio.TaskStatus[SessionRegistry] = trio.TASK_STATUS_IGNORED) -> None:
    """Own the sessions' nursery for the gateway's lifetime."""
    async with trio.open_nursery() as nursery:
        registry = SessionRegistry(nursery)
        task_status.started(registry)
        try:
            await trio.sleep_forever()
        finally:
            registry.close_all("the gateway is shutting down")
