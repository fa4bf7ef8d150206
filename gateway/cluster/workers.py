"""``mcp-orch serve --workers N``: N gateway processes on one port, supervised by this one.

Each worker is a whole instance (``gateway/serve.py`` with ``worker_port``):
its own upstream processes and reaper, the shared store, a listener on the
public port beside its siblings (``SO_REUSEPORT``: the kernel spreads new
connections over them) and a private port that is its address in the
instance registry. A request reaching a worker that does not own its
session is forwarded to the owner, as between machines
(``gateway/cluster/forward.py``), so no affinity is needed anywhere.

The parent holds the port (so ``--port 0`` picks one for all), prepares the
store once (the config applied, the admin token generated and printed once),
starts the workers and keeps them running: a worker that exits is started
again after a backoff (1 s, doubling to 30 s; back to 1 s after a minute up).
SIGTERM or SIGINT drains every worker (each gets SIGTERM and its own drain)
and waits for them; SIGHUP is passed on (each re-reads the config). A worker
watches its stdin, a pipe from the parent: if the parent dies, even by
``kill -9``, the pipe closes and the worker drains and stops — and each
worker's reaper covers its own upstreams whatever happens to the worker.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

import attrs
import trio

log = logging.getLogger(__name__)

#: Restart backoff of a worker that exited: first, longest, and the uptime that resets it.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STEADY_S = 60.0


@attrs.define(eq=False)
class Worker:
    """One worker slot: the process in it and its restart backoff."""

    index: int
    process: trio.Process | None = None
    restarts: int = 0
    backoff_s: float = BACKOFF_FIRST_S


@attrs.define(eq=False)
class WorkerPool:
    """The parent's side of ``serve --workers N``."""

    argv: Sequence[str]  #: the worker command, without ``--worker-port``
    count: int
    port: int
    stopping: bool = False
    workers: list[Worker] = attrs.field(factory=list)
    _stop: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, *, stop_timeout_s: float) -> None:
        """Run the workers until a SIGTERM/SIGINT has drained them (or the parent is cancelled)."""
        self.workers = [Worker(i) for i in range(self.count)]
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                for worker in self.workers:
                    nursery.start_soon(self._keep_running, worker)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self._signal_all(signal.SIGHUP)
                        continue
                    log.info("received %s; draining %d worker(s)", signal.Signals(signum).name,
                             self.count)
                    self.stopping = True
                    self._stop.set()
                    self._signal_all(signal.SIGTERM)
                    break
                with trio.move_on_after(stop_timeout_s) as waited:
                    await self._all_exited()
                if waited.cancelled_caught:
                    log.warning("workers still running %g s after SIGTERM: killing them",
                                stop_timeout_s)
                    self._signal_all(signal.SIGKILL)
                    await self._all_exited()
                nursery.cancel_scope.cancel()

    def _signal_all(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    async def _all_exited(self) -> None:
        for worker in self.workers:
            if worker.process is not None:
                await worker.process.wait()

    async def _keep_running(self, worker: Worker) -> None:
        while not self.stopping:
            command = [*self.argv, "--worker-port", str(self.port)]
            # stdin is a pipe nobody writes to: it closes when this process dies.
            process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE)
            worker.process = process
            started = trio.current_time()
            log.info("worker %d started (pid %d)", worker.index, process.pid)
            with trio.CancelScope(shield=True):
                code = await process.wait()
            if self.stopping:
                log.info("worker %d (pid %d) stopped", worker.index, process.pid)
                return
            if trio.current_time() - started >= STEADY_S:
                worker.backoff_s = BACKOFF_FIRST_S
            worker.restarts += 1
            log.error("worker %d (pid %d) exited with %s; starting it again in %g s",
                      worker.index, process.pid, _describe(code), worker.backoff_s)
            with trio.move_on_after(worker.backoff_s):
                await self._stop.wait()
            worker.backoff_s = min(BACKOFF_MAX_S, worker.backoff_s * 2)


def _describe(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


async def watch_parent(on_gone: Callable[[], None]) -> None:
    """In a worker: wait until stdin (the parent's pipe) closes, then call ``on_gone``."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(4096):
            pass
    on_gone()


def stop_timeout(drain_timeout_s: float, stop_grace_s: float) -> float:
    """How long a worker may take to stop after SIGTERM: its drain, then its
    upstreams' EOF/SIGTERM grace, and a margin."""
    return drain_timeout_s + 2 * stop_grace_s + 10.0 if math.isfinite(drain_timeout_s) else 60.0
