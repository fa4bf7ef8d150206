"""The instance registry as one gateway sees it: itself, its live peers, their heartbeats.

Every instance registers in the store (``Store.register_instance``: its id and
the internal address peers forward to), renews its row every
:data:`HEARTBEAT_S` and reads everyone's. A peer whose heartbeat is older than
:data:`DEAD_AFTER_S` is dead: its sessions answer ``404`` at once (the
client initializes again through the load balancer). A peer that refuses a
forwarded connection is taken for dead at once, before its heartbeat ages
(:meth:`Peers.suspect`) — a ``kill -9`` shows within one request, not
seconds.

While the store is unreachable the last known peers are kept (forwarding to
them goes on; a dead one is still noticed by the refused connection), and
the failure is logged once per outage.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import attrs
import trio

from config import Store, StoreError

from .ids import SessionIds

log = logging.getLogger(__name__)

#: How often an instance renews its row and reads its peers'.
HEARTBEAT_S = 1.0
#: A peer whose last heartbeat is older than this is dead.
DEAD_AFTER_S = 5.0
#: An unknown owner makes the registry be read again, at most this often.
LOOKUP_EVERY_S = 0.25
#: Rows of instances silent this long are removed (by whichever instance sees them).
PRUNE_AFTER_S = 300.0


@attrs.frozen
class Peer:
    """Another live instance: where to forward to, and when it was last heard of."""

    instance_id: str
    address: str
    pid: int | None
    host: str | None
    started_at: float
    last_seen: float


@attrs.define(eq=False)
class Peers:
    """This instance's view of the cluster, kept fresh by :meth:`run`."""

    store: Store
    ids: SessionIds
    address: str
    clock: Callable[[], float] = time.time
    live: dict[str, Peer] = attrs.field(factory=dict)
    #: Instances whose connection was refused: ignored until they heartbeat again.
    _suspects: dict[str, float] = attrs.field(factory=dict)
    _store_down: bool = False
    _looked_up: float = 0.0

    @property
    def instance_id(self) -> str:
        return self.ids.instance_id

    @property
    def size(self) -> int:
        """Live instances, this one included."""
        return 1 + len(self.live)

    def peer(self, instance_id: str) -> Peer | None:
        """The live peer ``instance_id`` (never this instance)."""
        return self.live.get(instance_id)

    async def lookup(self, instance_id: str) -> Peer | None:
        """:meth:`peer`, reading the registry again (at most every
        :data:`LOOKUP_EVERY_S`) when it does not know ``instance_id``: an instance
        that joined since the last heartbeat serves sessions at once, and a
        request for one of them may come here first."""
        peer = self.live.get(instance_id)
        if peer is not None or instance_id in self._suspects:
            return peer
        now = self.clock()
        if now - self._looked_up < LOOKUP_EVERY_S:
            return None
        self._looked_up = now
        try:
            await self.refresh()
        except StoreError:
            return None
        return self.live.get(instance_id)

    def suspect(self, instance_id: str) -> None:
        """A forwarded connection to ``instance_id`` was refused: it is dead until its
        heartbeat moves past now."""
        peer = self.live.pop(instance_id, None)
        if peer is not None:
            log.warning("instance %s (%s) refused a forwarded request: taken for dead",
                        instance_id, peer.address)
            self._suspects[instance_id] = self.clock()

    async def run(self, *, task_status: trio.TaskStatus[Peers] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Register, then heartbeat and refresh until cancelled; leave the registry on
        the way out (a clean stop is noticed by peers at once)."""
        await trio.to_thread.run_sync(self.store.register_instance, self.instance_id,
                                      self.address)
        await self.refresh()
        log.info("instance %s registered at %s; %d peer(s)", self.instance_id, self.address,
                 len(self.live))
        task_status.started(self)
        try:
            while True:
                await trio.sleep(HEARTBEAT_S)
                await self.beat()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await trio.to_thread.run_sync(self.store.remove_instance, self.instance_id)
                except StoreError as exc:
                    log.warning("could not leave the instance registry: %s", exc)

    async def beat(self) -> None:
        """One heartbeat: renew this instance's row, read everyone's, prune the long dead."""
        try:
            await trio.to_thread.run_sync(self.store.heartbeat_instance, self.instance_id,
                                          self.address)
            await self.refresh()
            await trio.to_thread.run_sync(self.store.prune_instances, PRUNE_AFTER_S)
        except StoreError as exc:
            if not self._store_down:
                log.warning("instance registry unreachable (keeping %d known peer(s)): %s",
                            len(self.live), exc)
            self._store_down = True
            return
        if self._store_down:
            log.info("instance registry reachable again; %d peer(s)", len(self.live))
        self._store_down = False

    async def refresh(self) -> None:
        """Read the registry: the live peers are those heard of within :data:`DEAD_AFTER_S`."""
        rows = await trio.to_thread.run_sync(self.store.instances)
        now = self.clock()
        live: dict[str, Peer] = {}
        for row in rows:
            if row.id == self.instance_id or now - row.last_seen > DEAD_AFTER_S:
                continue
            suspected = self._suspects.get(row.id)
            if suspected is not None:
                if row.last_seen <= suspected:
                    continue
                del self._suspects[row.id]
            live[row.id] = Peer(row.id, row.address, row.pid, row.host, row.started_at,
                                row.last_seen)
        for gone in self.live.keys() - live.keys():
            log.info("instance %s left or stopped heartbeating", gone)
        for new in live.keys() - self.live.keys():
            log.info("instance %s joined at %s", new, live[new].address)
        self.live = live

    def describe(self) -> dict[str, object]:
        """For ``/ready`` and ``/status``: this instance and its peers' last heartbeat."""
        now = self.clock()
        return {
            "instance": self.instance_id,
            "address": self.address,
            "pid": os.getpid(),
            "peers": [
                {"instance": p.instance_id, "address": p.address, "host": p.host,
                 "pid": p.pid, "last_heartbeat_s": round(max(0.0, now - p.last_seen), 3)}
                for p in sorted(self.live.values(), key=lambda p: p.instance_id)
            ],
        }
