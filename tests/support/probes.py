"""What the test process can see of itself: child processes, open files, live trio tasks.

Leak checks compare these before and after a scenario.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import attrs
import trio


@attrs.frozen
class ProcStat:
    """The fields of ``/proc/PID/stat`` the leak checks read."""

    pid: int
    state: str
    ppid: int
    pgrp: int


def processes() -> Iterator[ProcStat]:
    """Every live (non-zombie) process on the machine."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z":
            yield ProcStat(int(entry), fields[0], int(fields[1]), int(fields[3]))


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def child_pids() -> set[int]:
    """Pids of this process's direct children (from /proc)."""
    me = os.getpid()
    return {p.pid for p in processes() if p.ppid == me}


def count_tasks() -> int:
    """All live trio tasks of the current run."""
    root = trio.lowlevel.current_root_task()
    total = 0
    stack = [root]
    while stack:
        task = stack.pop()
        total += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return total
