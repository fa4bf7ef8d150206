"""A watchdog process that stops the upstreams if the gateway dies without cleaning up.

A gateway killed with SIGKILL runs no ``finally``. Its upstreams see stdin
EOF, and well-behaved servers exit on it; this catches the others. The
gateway starts one reaper (``python -m upstream.reaper``) in a session of its
own and tells it, on the reaper's stdin, the process group of every upstream
it starts (``+PGID``) and stops (``-PGID``). When that pipe reaches EOF — the
gateway is gone, whatever the way — the reaper sends SIGTERM to each group
still alive, waits a grace period, then SIGKILLs what remains.

(``PR_SET_PDEATHSIG`` cannot do this job under Trio: it fires when the
*thread* that forked the child exits, and Trio spawns from worker threads
that come and go.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(groups: set[int], grace_s: float) -> None:
    """SIGTERM every live group, wait up to ``grace_s``, then SIGKILL the rest."""
    live = {g for g in groups if _alive(g)}
    for pgid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        time.sleep(0.05)  # a separate, single-purpose process: polling is fine here
        live = {g for g in live if _alive(g)}
    for pgid in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the gateway
    grace_s = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    groups: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if len(line) > 1 and line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    reap(groups, grace_s)


if __name__ == "__main__":
    main()
