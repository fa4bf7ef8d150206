"""A stdio MCP server as a child process: spawn, line framing, and a clean kill.

The child runs in its own session and process group (``start_new_session``),
so stopping it signals the whole group: ``npx`` and the ``node`` it starts go
together, and a ``kill -9`` of the leader does not leave a grandchild holding
the pipes open.

Resource handling: :func:`open_stdio_link` owns the child; whatever way its
block exits (normally, by error or by cancellation) it closes stdin, gives the
child ``grace_s`` to exit on EOF, then sends SIGTERM and finally SIGKILL to the
group, from a shielded scope, so nothing is orphaned.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
import trio

from . import jsonrpc

log = logging.getLogger(__name__)

#: Variables a child inherits from the gateway's environment (what MCP clients
#: such as Claude Desktop pass); everything else must be named in ``env``, so
#: the gateway's own secrets never reach an upstream by accident.
INHERITED_ENV = (
    "HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "LC_ALL", "LC_CTYPE",
    "TMPDIR", "TZ", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT", "NODE_PATH",
    "npm_config_cache",
)
MAX_LINE_BYTES = 32 * 1024 * 1024
STDERR_TAIL_LINES = 200


@attrs.define(eq=False)
class Reaper:
    """Handle to the watchdog process (``upstream/reaper.py``): register process groups."""

    _send: trio.MemorySendChannel[bytes]

    def _tell(self, line: str) -> str | None:
        """Queue a line for the reaper; the reason it could not be, or ``None``."""
        try:
            self._send.send_nowait(line.encode())
        except trio.WouldBlock:
            return "its queue is full"
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return "closed"
        return None

    def watch(self, pgid: int) -> None:
        if (problem := self._tell(f"+{pgid}\n")) is not None:
            log.warning("reaper unavailable (%s); process group %d is not watched",
                        problem, pgid)

    def forget(self, pgid: int) -> None:
        """The group was stopped. A reaper already closed (the gateway is shutting
        down) has nothing left to unregister; a full queue leaves a stale entry."""
        if self._tell(f"-{pgid}\n") == "its queue is full":
            log.warning("reaper queue full; process group %d stays registered", pgid)


@contextlib.asynccontextmanager
async def open_reaper(grace_s: float) -> AsyncIterator[Reaper]:
    """Start the watchdog; yield the :class:`Reaper` to hand to every stdio link.

    The handle is passed explicitly (the gateway holds it and gives it to each
    supervisor), never found through a context variable: a task started
    outside this block — a reload triggered by a signal handler, say — would
    otherwise spawn processes nobody watches.

    Resource handling: on a normal exit the watchdog's stdin is closed, it
    finds no live group left, and exits; it is waited for (shielded).
    """
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "upstream.reaper", str(grace_s)],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    send, recv = trio.open_memory_channel[bytes](4096)
    reaper = Reaper(send)

    async def feed() -> None:
        assert proc.stdin is not None
        async with recv:
            async for line in recv:
                try:
                    await proc.stdin.send_all(line)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    log.error("the reaper process exited; upstreams are not watched")
                    return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            try:
                yield reaper
            finally:
                send.close()
    finally:
        await stop_process(proc, grace_s)


class UpstreamSpawnError(Exception):
    """The child could not be started (command not found, not executable, bad cwd)."""


class UpstreamProtocolError(Exception):
    """The child wrote something that is not newline-delimited JSON-RPC."""


def resolve_command(command: str) -> str:
    """Map the configured command to an executable path.

    ``python`` means the interpreter running the gateway, so the bundled demo
    server works inside the gateway's virtualenv on any machine.
    """
    if command in ("python", "python3"):
        return sys.executable
    found = shutil.which(command)
    if found is None:
        raise UpstreamSpawnError(f"command not found: {command!r}")
    return found


def child_environment(extra: Mapping[str, str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: the inherited allow-list plus the server's ``env``."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items() if k in INHERITED_ENV}
    env.update(extra)
    return env


@attrs.define(eq=False)
class StdioProcess:
    """A running stdio MCP server: send and receive JSON-RPC messages, read its stderr tail.

    Not safe for concurrent ``send`` from several tasks; the upstream actor
    feeds it from a single writer task.
    """

    process: trio.Process
    stderr_tail: collections.deque[str] = attrs.field(
        factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES)
    )
    _buffer: bytearray = attrs.field(factory=bytearray)

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, message: jsonrpc.Message) -> None:
        """Write one message as a line; a whole line or nothing (shielded write)."""
        data = jsonrpc.dumps(message) + b"\n"
        assert self.process.stdin is not None
        with trio.CancelScope(shield=True):
            await self.process.stdin.send_all(data)

    async def receive_line(self) -> bytes | None:
        """Return the next non-empty line from stdout, or ``None`` at EOF."""
        stdout = self.process.stdout
        assert stdout is not None
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                line = line.strip()
                if line:
                    return line
                continue
            if len(self._buffer) > MAX_LINE_BYTES:
                raise UpstreamProtocolError(f"a line longer than {MAX_LINE_BYTES} bytes")
            chunk = await stdout.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk

    async def pump_stderr(self, logger: logging.Logger) -> None:
        """Copy the child's stderr into the bounded tail buffer (and the debug log)."""
        stderr = self.process.stderr
        assert stderr is not None
        pending = b""
        while True:
            chunk = await stderr.receive_some(16384)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                text = raw.decode(errors="replace").rstrip()
                self.stderr_tail.append(text)
                logger.debug("stderr: %s", text)
            if len(pending) > 65536:  # a runaway line without newline: keep a bounded piece
                self.stderr_tail.append(pending[:4096].decode(errors="replace"))
                pending = b""
        if pending:
            self.stderr_tail.append(pending.decode(errors="replace").rstrip())

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is None:
            return "running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"


@attrs.define(eq=False)
class StdioLink:
    """A stdio server as a :class:`~upstream.link.Link`: JSON-RPC lines in and out."""

    process: StdioProcess
    _eof: trio.Event = attrs.field(factory=trio.Event)
    _logger: logging.Logger = attrs.field(factory=lambda: log)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        return self.process.process.returncode

    @property
    def stderr_tail(self) -> collections.deque[str]:
        return self.process.stderr_tail

    async def send(self, message: jsonrpc.Message) -> None:
        await self.process.send(message)

    async def receive(self) -> jsonrpc.Message | None:
        while True:
            line = await self.process.receive_line()
            if line is None:
                self._eof.set()
                await self.process.process.wait()
                return None
            try:
                return jsonrpc.loads(line)
            except jsonrpc.InvalidMessage:
                self._logger.warning("the server wrote a non-JSON line to stdout; ignored")

    def end_reason(self) -> str:
        return self.process.exit_description()

    async def background(self, logger: logging.Logger) -> None:
        """Copy stderr; if the leader exits but a grandchild holds stdout open
        (``npx`` → ``node``), end the whole group so the link ends too."""
        self._logger = logger
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.process.pump_stderr, logger)
            await self.process.process.wait()
            with trio.move_on_after(0.5):
                await self._eof.wait()
            if not self._eof.is_set():
                _signal_group(self.process.pid, signal.SIGKILL)
            nursery.cancel_scope.cancel()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop_process(proc: trio.Process, grace_s: float) -> None:
    """Close stdin, wait ``grace_s`` for exit, then SIGTERM and SIGKILL the group.

    Shielded: it runs to completion even inside a cancelled scope.
    """
    with trio.CancelScope(shield=True):
        if proc.stdin is not None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await proc.stdin.aclose()
        if proc.returncode is None:
            with trio.move_on_after(grace_s):
                await proc.wait()
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            with trio.move_on_after(max(grace_s, 1.0)):
                await proc.wait()
        # The leader may be gone while grandchildren of its group live on.
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream.aclose()


@contextlib.asynccontextmanager
async def open_stdio_link(
    command: str,
    args: tuple[str, ...] | list[str],
    env: Mapping[str, str],
    cwd: str | None = None,
    *,
    grace_s: float = 2.0,
    stderr_tail: collections.deque[str] | None = None,
    reaper: Reaper | None = None,
) -> AsyncIterator[StdioLink]:
    """Start the server and yield its link; stop it (and its group) when the block exits.

    ``reaper``: the gateway's watchdog; the child's process group is
    registered with it, so the group dies even if the gateway is SIGKILLed.
    ``None`` (tests, tools) leaves the group unwatched.

    Error handling: a command that cannot be started raises
    :class:`UpstreamSpawnError` with the reason.
    """
    executable = resolve_command(command)
    options: dict[str, Any] = {
        "stdin": subprocess.PIPE,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
        "start_new_session": True,
        "env": dict(env),
        "cwd": cwd,
    }
    try:
        proc = await trio.lowlevel.open_process([executable, *args], **options)
    except OSError as exc:
        raise UpstreamSpawnError(f"cannot start {command!r}: {exc.strerror or exc}") from exc
    if reaper is not None:
        reaper.watch(proc.pid)
    try:
        if stderr_tail is None:
            yield StdioLink(StdioProcess(proc))
        else:
            yield StdioLink(StdioProcess(proc, stderr_tail))
    finally:
        await stop_process(proc, grace_s)
        if reaper is not None:
            reaper.forget(proc.pid)
