"""Run every benchmark scenario against every target in one go; print a table, write JSON.

Targets: the stdio echo server driven directly (no gateway: the floor),
mcp-orch over legacy SSE and over Streamable HTTP, and mcp-proxy (PyPI, in
its own virtualenv ``.venv-baseline``) over the same two transports. The
load generator (``bench/loadgen.py``) runs in its own process for each
measurement, so it never shares a core's event loop with a target.

Two scenarios look past the lean load generator. ``sdk``: the official
Python SDK client (``bench/sdk_client.py``) calls a tool through each target
— what users see — in front of server-everything when the npm peers are
installed (the echo server otherwise, and always in the smoke run), rounds
interleaved over the targets. ``workers``: throughput at 32 sessions of
``mcp-orch serve --workers 2`` when the command line has that option
(recorded as not available otherwise), with the share of requests one
worker forwarded to another, from the workers' ``/metrics``.

The machine is shared and noisy, so latency scenarios run several times and
report medians, and every comparison is a ratio of figures measured in this
same run.

Every figure's absolute value moves with the machine (a load generator that
reaches 11,600 calls/s on one and 36,650 on another makes every target look
3x slower on the first), so each table and result file also says what the
machine could do in that run: cores, Python, the load generator's ceiling
against a trivial endpoint. ``python -m bench.spread`` shows the spread of the
same-run ratios over the result files in ``bench/results/``.

The run is a plan of steps (:func:`plan`), each with the seconds its
configuration implies; ``bench/progress.py`` shows them on stderr as they go.

    python -m bench.run            # the full run (ten minutes or so)
    python -m bench.run --smoke    # seconds: proves the harness works (CI)
    python -m bench.run --quiet    # no progress display on stderr
    python -m bench.run --only sdk,connect   # some scenarios (their own result file)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs

from .progress import Step, open_progress

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / ".venv-baseline" / "bin" / "mcp-proxy"
ECHO = [sys.executable, str(REPO / "bench" / "echo_server.py")]
#: server-everything as scripts/setup.sh installs it (the npm test peers), and the
#: Node 22 it may install beside it; ``MCP_ORCH_BENCH_EVERYTHING`` names another copy.
EVERYTHING = REPO / "tests" / "interop" / "node_modules" / ".bin" / "mcp-server-everything"
NODE22_BIN = REPO / ".tools" / "node22" / "node_modules" / ".bin"
#: An argument the echo server ignores, naming the copy the SDK scenario talks to.
SDK_LABEL = "--sdk-scenario"
#: How many worker processes the workers scenario asks ``mcp-orch serve`` for.
WORKERS = 2
JSON = dict[str, Any]
#: The keep-alive interval of both gateways' SSE streams: mcp-orch's default
#: ``keepalive_s`` and the ping interval of sse-starlette, which mcp-proxy uses.
KEEPALIVE_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TargetStartError(RuntimeError):
    """A target (gateway, baseline, trivial endpoint) did not start listening."""


def wait_port(port: int, timeout: float = 30, proc: subprocess.Popen[bytes] | None = None,
              log: Path | None = None) -> None:
    """Wait until ``port`` accepts; fail at once (with the log's tail) if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
                raise TargetStartError(
                    f"{' '.join(map(str, proc.args[:4]))} exited ({proc.returncode}) before "
                    f"listening on {port}:\n{tail}") from None
            time.sleep(0.05)
    raise TargetStartError(f"nothing listening on {port} after {timeout:g} s")


def proc_stat(pid: int) -> tuple[float, int]:
    """(cpu seconds, rss bytes) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def children(pid: int) -> list[int]:
    """Child pids of every thread of ``pid`` (trio spawns from worker threads)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return found


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def node_path() -> str:
    """PATH with the Node 22 scripts/setup.sh may have installed first (server-everything)."""
    extra = [str(NODE22_BIN)] if NODE22_BIN.is_dir() else []
    return os.pathsep.join([*extra, os.environ.get("PATH", "")])


def sdk_upstream(smoke: bool) -> JSON:
    """The upstream of the SDK scenario: server-everything if installed (not in the smoke
    run, which must not depend on the npm peers), else the echo server."""
    everything = Path(os.environ.get("MCP_ORCH_BENCH_EVERYTHING") or EVERYTHING)
    if not smoke and everything.exists():
        return {"name": "server-everything", "command": [str(everything)],
                "tool": "echo", "argument": "message"}
    # The label tells this echo server from the other one (the recovery scenario kills that).
    return {"name": "bench/echo_server.py", "command": [*ECHO, SDK_LABEL], "tool": "echo",
            "argument": "text"}


def workers_supported() -> bool:
    """Whether this mcp-orch's ``serve`` has ``--workers`` (another engineer's work)."""
    out = subprocess.run([sys.executable, "-m", "gateway", "serve", "--help"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    return out.returncode == 0 and "--workers" in out.stdout


@contextmanager
def gateway(tmp: Path, sdk: JSON, *, workers: int | None = None):  # noqa: ANN201
    port = free_port()
    name = "bench" if workers is None else f"bench-workers-{workers}"
    state = tmp / f"state-{name}"
    config = tmp / f"{name}.toml"
    command, *args = sdk["command"]
    config.write_text(
        f'[gateway]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = {json.dumps(str(state))}\n'
        # The idle scenario holds 10,000 streams: above the default connection cap.
        f'session_queue = 256\nmax_connections = 20000\n\n[projects.bench]\n'
        f'[projects.bench.servers.echo]\ncommand = "python"\nargs = [{json.dumps(ECHO[1])}]\n'
        # The SDK scenario's upstream, a server of its own (see sdk_upstream).
        f'[projects.bench.servers.sdk]\ncommand = {json.dumps(command)}\n'
        f'args = {json.dumps(args)}\nenv = {{ PATH = {json.dumps(node_path())} }}\n'
    )
    key = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--project", "bench",
         "--config", str(config)], capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.strip().splitlines()[-1]
    log = tmp / f"{name}.log"
    extra = [] if workers is None else ["--workers", str(workers)]
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config),
             "--log-level", "warning", *extra],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file,
        )
    try:
        wait_port(port, proc=proc, log=log)
        time.sleep(0.5)
        yield {"port": port, "pid": proc.pid, "key": key}
    finally:
        _stop(proc)


@contextmanager
def trivial():  # noqa: ANN201
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.trivial_server", str(port)], cwd=REPO)
    try:
        wait_port(port, proc=proc)
        yield {"port": port, "pid": proc.pid}
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def proxy(tmp: Path, command: list[str] = ECHO, name: str = "mcp-proxy"):  # noqa: ANN201
    port = free_port()
    log = tmp / f"{name}.log"
    with log.open("wb") as log_file:
        proc = subprocess.Popen(
            [str(BASELINE), "--port", str(port), "--host", "127.0.0.1", "--log-level", "WARNING",
             # the SDK scenario's upstream may be a Node script that needs PATH
             *([] if command is ECHO else ["--pass-environment"]), "--", *command],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file,
            env={**os.environ, "PATH": node_path()},
        )
    try:
        wait_port(port, proc=proc, log=log)
        time.sleep(0.5)
        yield {"port": port, "pid": proc.pid}
    finally:
        _stop(proc)


def sdk_calls(target: JSON, n: int) -> JSON:
    """``n`` tools/call round trips through the official Python SDK client (its own process)."""
    args = [sys.executable, "-m", "bench.sdk_client", "--target", json.dumps(target), "-n", str(n)]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PATH": node_path()})
    if out.returncode != 0:
        raise RuntimeError(f"sdk_client {target['kind']} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


#: The counters the workers scenario reads from each worker's /metrics.
FORWARDED = "mcp_orch_forwarded_requests_total"
REQUESTS = "mcp_orch_requests_total"


def metric_sums(text: str) -> tuple[dict[str, float], str | None]:
    """The sums over label sets of FORWARDED and REQUESTS in a Prometheus text page (a name
    absent there is absent here), and the ``instance``/``worker`` label they carry, if any."""
    sums: dict[str, float] = {}
    who = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        name, _, labels = sample.partition("{")
        if name in (FORWARDED, REQUESTS):
            sums[name] = sums.get(name, 0.0) + float(value)
            if m := re.search(r'\b(?:instance|worker)="([^"]+)"', labels):
                who = m[1]
    return sums, who


def forwarded_share(port: int, workers: int, tries: int = 0) -> JSON:
    """The share of requests the workers forwarded to each other, summed over the workers.

    Every worker answers ``/metrics`` for itself on the shared port, so each
    scrape (a fresh connection, which the kernel hands to one worker) sees one
    worker. Workers are told apart by an ``instance``/``worker`` label if the
    samples carry one, else by their counters (still once the load has
    stopped). A share is given only when every worker was seen and the
    forwarded counter exists; otherwise it is ``None`` with the reason. It
    covers all the workers served since they started (the readiness probe of
    :func:`wait_workers_serving` included: 16 sessions for 0.1 s).
    """
    seen: dict[str, dict[str, float]] = {}
    for _ in range(tries or 8 * workers):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
        except OSError as exc:
            return {"share": None, "note": f"GET /metrics failed: {exc}"}
        sums, who = metric_sums(text)
        seen[who or json.dumps(sorted(sums.items()))] = sums
        if len(seen) >= workers:
            break
    out: JSON = {"workers_seen": len(seen),
                 "forwarded": sum(v.get(FORWARDED, 0.0) for v in seen.values()),
                 "requests": sum(v.get(REQUESTS, 0.0) for v in seen.values())}
    if not any(FORWARDED in v for v in seen.values()):
        return {**out, "forwarded": None, "share": None,
                "note": f"{FORWARDED} is not in /metrics"}
    if len(seen) < workers:
        return {**out, "share": None,
                "note": f"/metrics reached {len(seen)} of {workers} workers"}
    out["share"] = round(out["forwarded"] / out["requests"], 4) if out["requests"] else None
    return out


def loadgen(scenario: str, target: JSON, **kw: Any) -> JSON:
    args = [sys.executable, "-m", "bench.loadgen", scenario, "--target", json.dumps(target)]
    for k, v in kw.items():
        args += [f"--{k}" if len(k) > 1 else f"-{k}", str(v)]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen {scenario} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def idle_run(target: JSON, pid: int, sessions: int, idle_s: float, settle_s: float) -> JSON:
    """Hold N idle SSE sessions; measure the server's RSS growth and idle CPU.

    The CPU window starts ``settle_s`` after the last session connected and
    lasts ``idle_s``: with both at the keep-alive interval (15 s for every
    target here), each session sends its keep-alive comments in the window as
    it would at any later time — the steady state, not the quiet first seconds.
    """
    _, rss_before = proc_stat(pid)
    lg = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", "idle", "--target", json.dumps(target),
         "--sessions", str(sessions)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert lg.stdout is not None and lg.stdin is not None
    ready = json.loads(lg.stdout.readline())
    time.sleep(settle_s)
    cpu0, _ = proc_stat(pid)
    time.sleep(idle_s)
    cpu1, rss_held = proc_stat(pid)
    lg.stdin.write("done\n")
    lg.stdin.flush()
    lg.wait(60)
    return {
        "sessions": sessions,
        "connected": sessions - ready["failures"],
        "connect_s": ready["connect_s"],
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_held_mb": round(rss_held / 2**20, 1),
        "kb_per_session": round((rss_held - rss_before) / 1024 / max(1, sessions), 1),
        "idle_cpu_pct": round(100 * (cpu1 - cpu0) / idle_s, 2),
    }


def machine() -> JSON:
    """What this machine is: cores (all, and those this process may run on), CPU, Python."""
    cpu = "unknown"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpus": os.cpu_count(), "affinity": affinity, "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def ceiling(throughput: JSON) -> JSON | None:
    """The load generator's best rate against the trivial endpoint, and at how many sessions."""
    levels = throughput.get("ceiling") or {}
    if not levels:
        return None
    level = max(levels, key=lambda k: levels[k]["calls_per_s"])
    return {"calls_per_s": levels[level]["calls_per_s"], "sessions": int(level)}


def context_line(r: JSON) -> str:
    """One line: what the machine could do in run ``r`` (old result files lack some fields)."""
    m = r.get("machine", {})
    cores = f"{m.get('cpus', '?')} cores"
    if m.get("affinity") is not None and m.get("affinity") != m.get("cpus"):
        cores += f" ({m['affinity']} usable)"
    elif m.get("affinity") is not None:
        cores += " (all usable)"
    parts = [cores, f"Python {m.get('python', '?')}"]
    if m.get("loadavg_start"):
        parts.append(f"load average {m['loadavg_start'][0]} at the start")
    top = m.get("loadgen_ceiling") or ceiling(r.get("throughput", {}))
    if top:
        parts.append(f"load generator ceiling {top['calls_per_s']:,.0f} calls/s "
                     f"(trivial endpoint, {top['sessions']} sessions)")
    return "this run's machine: " + ", ".join(parts)


def versions() -> JSON:
    from importlib.metadata import version

    out = {name: version(name) for name in ("mcp-orch", "trio", "hypercorn", "quart")}
    if BASELINE.exists():
        out["mcp-proxy"] = subprocess.run(
            [str(BASELINE.parent / "python"), "-c",
             "from importlib.metadata import version; print(version('mcp-proxy'))"],
            capture_output=True, text=True).stdout.strip()
    return out


#: Nominal costs the plan's estimates are built from, in seconds (about what the
#: 2-core machine of the README's run takes; the progress display scales them
#: by the pace it sees, see bench/progress.py).
LOADGEN_START_S = 0.5     # a load-generator process: interpreter, trio, first connect
CALL_S = 0.001            # one sequential call through a gateway
DIRECT_CALL_S = 0.0002    # one call to the stdio server itself
SESSION_S = 0.002         # opening one session before a throughput window
IDLE_SESSION_S = 0.0015   # opening one idle SSE session
CONNECT_CLIENT_S = 0.025  # one of N clients arriving at once, until initialized
SDK_START_S = 1.5         # an SDK client process: imports, initialize (and a stdio server)
SDK_CALL_S = 0.006        # one tools/call through the SDK client and a gateway
RECOVERY_S = 1.0          # kill -9 to the first successful call (one restart backoff)
START_S = 5.0             # starting mcp-orch (and its key), mcp-proxy, the trivial endpoint

#: The targets in the order every scenario visits them.
TARGETS = ("direct", "orch-sse", "orch-http", "proxy-sse", "proxy-http", "ceiling")
#: The gateway targets of the SDK and workers scenarios.
GATEWAYS = ("orch-sse", "orch-http", "proxy-sse", "proxy-http")


@attrs.frozen
class Settings:
    """How big each scenario is: the full run, or the seconds-long smoke run."""

    smoke: bool
    reps: int
    seq_n: int
    levels: tuple[int, ...]
    seconds: float
    idle_counts: tuple[int, ...]
    idle_s: float
    settle_s: float
    connect_n: int
    recovery_s: float
    sdk_n: int
    #: ``mcp-orch serve --workers N``: whether this mcp-orch has the option at all.
    workers: bool = False
    workers_sessions: int = 32

    @classmethod
    def of(cls, smoke: bool, *, workers: bool = False) -> Settings:
        if smoke:
            return cls(smoke=True, reps=1, seq_n=30, levels=(1, 8), seconds=0.5,
                       idle_counts=(50,), idle_s=1.0, settle_s=0.5, connect_n=10, recovery_s=3,
                       sdk_n=20, workers=workers)
        # Idle steady state: one keep-alive interval to settle, one to measure (see idle_run).
        return cls(smoke=False, reps=3, seq_n=2000, levels=(1, 8, 32, 128), seconds=5.0,
                   idle_counts=(1000, 10000), idle_s=KEEPALIVE_S, settle_s=KEEPALIVE_S + 1.0,
                   connect_n=100, recovery_s=10, sdk_n=300, workers=workers)


@attrs.frozen
class Measurement:
    """One step of the plan: a scenario against a target, with its parameters."""

    scenario: str  # start | sequential | sdk | throughput | workers | idle | connect | recovery
    target: str
    rep: int = 1
    reps: int = 1
    n: int = 0
    sessions: int = 0
    seconds: float = 0.0
    settle_s: float = 0.0

    def detail(self) -> str:
        run = f", run {self.rep} of {self.reps}" if self.reps > 1 else ""
        if self.scenario == "start":
            if self.target == "workers":
                return f"(mcp-orch serve --workers {WORKERS})"
            return "(mcp-orch, mcp-proxy, trivial endpoint)"
        if self.scenario == "sequential":
            return f"{self.n} calls{run}"
        if self.scenario == "sdk":
            return f"{self.n} calls through the Python SDK client, round {self.rep} of {self.reps}"
        if self.scenario in ("throughput", "workers"):
            return f"{_count(self.sessions, 'session')} for {self.seconds:g} s{run}"
        if self.scenario == "idle":
            return f"{_count(self.sessions, 'session')} held {self.settle_s + self.seconds:g} s"
        if self.scenario == "connect":
            return f"{self.n} clients at once"
        return "kill -9 of the upstream"

    def step(self) -> Step:
        return Step(self.scenario, self.target, self.detail(), planned_s(self))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def planned_s(m: Measurement) -> float:
    """The seconds a step's configuration implies (durations as set, counts × nominal costs)."""
    if m.scenario == "start":
        return START_S
    if m.scenario == "sequential":
        per_call = DIRECT_CALL_S if m.target == "direct" else CALL_S
        return LOADGEN_START_S + (m.n + min(50, m.n)) * per_call
    if m.scenario == "sdk":
        return SDK_START_S + m.n * (DIRECT_CALL_S * 5 if m.target == "direct" else SDK_CALL_S)
    if m.scenario in ("throughput", "workers"):
        return LOADGEN_START_S + m.sessions * SESSION_S + m.seconds
    if m.scenario == "idle":
        return LOADGEN_START_S + m.sessions * IDLE_SESSION_S + m.settle_s + m.seconds
    if m.scenario == "connect":
        return LOADGEN_START_S + m.n * CONNECT_CLIENT_S
    return LOADGEN_START_S + min(RECOVERY_S, m.seconds)


#: The scenarios ``--only`` may name.
SCENARIOS = ("sequential", "sdk", "throughput", "workers", "idle", "connect", "recovery")


def plan(s: Settings, only: frozenset[str] | None = None) -> list[Measurement]:
    """Every step of a run, in the order it runs (``only``: the start and those scenarios)."""
    steps = _plan(s)
    if only is None:
        return steps
    return [m for m in steps if m.scenario in only or (
        m.scenario == "start" and (m.target == "targets" or "workers" in only))]


def _plan(s: Settings) -> list[Measurement]:
    steps = [Measurement("start", "targets")]
    steps += [Measurement("sequential", name, rep=i, reps=s.reps, n=s.seq_n)
              for name in TARGETS if name != "ceiling" for i in range(1, s.reps + 1)]
    # Rounds interleaved over the targets, so a noisy minute hits them all alike.
    steps += [Measurement("sdk", name, rep=i, reps=s.reps, n=s.sdk_n)
              for i in range(1, s.reps + 1) for name in ("direct", *GATEWAYS)]
    steps += [Measurement("throughput", name, rep=i, reps=s.reps, sessions=level,
                          seconds=s.seconds)
              for name in TARGETS if name != "direct"
              for level in s.levels for i in range(1, s.reps + 1)]
    if s.workers:
        steps.append(Measurement("start", "workers"))
        steps += [Measurement("workers", name, rep=i, reps=s.reps, sessions=s.workers_sessions,
                              seconds=s.seconds)
                  for name in ("orch-sse", "orch-http") for i in range(1, s.reps + 1)]
    steps += [Measurement("idle", name, sessions=n, seconds=s.idle_s, settle_s=s.settle_s)
              for name in ("orch-sse", "proxy-sse") for n in s.idle_counts]
    # The load generator's own ceiling first: 100 clients connecting to a trivial endpoint.
    steps += [Measurement("connect", name, n=s.connect_n)
              for name in ("ceiling", "orch-sse", "proxy-sse")]
    steps += [Measurement("recovery", name, seconds=s.recovery_s)
              for name in ("orch-sse", "proxy-sse")]
    return steps


def make_targets(gw: JSON, px: JSON, tv: JSON) -> dict[str, JSON]:
    auth = {"Authorization": f"Bearer {gw['key']}"}
    base = {"host": "127.0.0.1"}
    return {
        "connect:ceiling": {**base, "kind": "sse", "port": tv["port"], "headers": {},
                            "sse_path": "/sse"},
        "direct": {"kind": "direct", "command": ECHO},
        "orch-sse": {**base, "kind": "sse", "port": gw["port"], "headers": auth,
                     "sse_path": "/projects/bench/servers/echo/sse"},
        "orch-http": {**base, "kind": "http", "port": gw["port"], "headers": auth,
                      "mcp_path": "/projects/bench/servers/echo/mcp"},
        "proxy-sse": {**base, "kind": "sse", "port": px["port"], "headers": {},
                      "sse_path": "/sse"},
        "proxy-http": {**base, "kind": "http", "port": px["port"], "headers": {},
                       "mcp_path": "/mcp"},
        "ceiling": {**base, "kind": "ceiling", "port": tv["port"]},
    }


def make_sdk_targets(gw: JSON, px: JSON, sdk: JSON) -> dict[str, JSON]:
    """The SDK scenario's targets: its upstream straight over stdio, and through both gateways."""
    tool = {"tool": sdk["tool"], "argument": sdk["argument"]}
    orch = f"http://127.0.0.1:{gw['port']}/projects/bench/servers/sdk"
    auth = {"Authorization": f"Bearer {gw['key']}"}
    return {
        "direct": {"kind": "direct", "command": sdk["command"], **tool},
        "orch-sse": {"kind": "sse", "url": f"{orch}/sse", "headers": auth, **tool},
        "orch-http": {"kind": "http", "url": f"{orch}/mcp", "headers": auth, **tool},
        "proxy-sse": {"kind": "sse", "url": f"http://127.0.0.1:{px['port']}/sse", **tool},
        "proxy-http": {"kind": "http", "url": f"http://127.0.0.1:{px['port']}/mcp", **tool},
    }


def wait_workers_serving(target: JSON, timeout: float = 30.0) -> None:
    """Until 16 legacy SSE sessions in a row initialize through ``serve --workers``.

    Each session's POSTs come on a connection of their own, which the kernel
    may hand to another worker than the stream's; that worker forwards them
    once it has read its sibling from the instance registry (a heartbeat
    after start) and answers 404 before. 16 sessions all served means the
    workers know each other (all 16 on one worker: one chance in 2^15).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            loadgen("throughput", target, sessions=16, seconds=0.1)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def make_workers_targets(gw: JSON) -> dict[str, JSON]:
    auth = {"Authorization": f"Bearer {gw['key']}"}
    base = {"host": "127.0.0.1", "port": gw["port"], "headers": auth}
    return {"workers:orch-sse": {**base, "kind": "sse",
                                 "sse_path": "/projects/bench/servers/echo/sse"},
            "workers:orch-http": {**base, "kind": "http",
                                  "mcp_path": "/projects/bench/servers/echo/mcp"}}


def measure(m: Measurement, targets: dict[str, JSON], pids: dict[str, int]) -> JSON:
    """Run one step of the plan (not ``start``) and return its raw result."""
    target = targets.get(f"{m.scenario}:{m.target}") or targets[m.target]
    if m.scenario == "sequential":
        return loadgen("sequential", target, n=m.n)
    if m.scenario == "sdk":
        return sdk_calls(target, m.n)
    if m.scenario in ("throughput", "workers"):
        return loadgen("throughput", target, sessions=m.sessions, seconds=m.seconds)
    if m.scenario == "idle":
        return idle_run(target, pids[m.target], m.sessions, m.seconds, m.settle_s)
    if m.scenario == "connect":
        return loadgen("connect", target, n=m.n)["latency"]
    kids = [p for p in children(pids[m.target])
            if "echo_server" in (line := _cmdline(p)) and SDK_LABEL not in line]
    if not kids:
        return {"recovered_s": None, "note": "upstream process not found"}
    return loadgen("recovery", target, pid=kids[0], seconds=m.seconds)


def collect(steps: list[Measurement], raw: dict[Measurement, JSON]) -> JSON:
    """Medians over repetitions, grouped as the tables and result files have them."""
    def runs(scenario: str, target: str, sessions: int = 0) -> list[JSON]:
        return [raw[m] for m in steps if m.scenario == scenario and m.target == target
                and m.sessions == sessions]

    seq: JSON = {}
    for name in dict.fromkeys(m.target for m in steps if m.scenario == "sequential"):
        rs = runs("sequential", name)
        seq[name] = {
            "p50_ms": statistics.median(r["latency"]["p50_ms"] for r in rs),
            "p90_ms": statistics.median(r["latency"]["p90_ms"] for r in rs),
            "p99_ms": statistics.median(r["latency"]["p99_ms"] for r in rs),
            "raw_ms": [r["raw_ms"] for r in rs],
        }
    for name in seq:
        seq[name]["overhead_ms"] = round(seq[name]["p50_ms"] - seq["direct"]["p50_ms"], 3)
    thr: JSON = {}
    for m in steps:
        if m.scenario != "throughput" or str(m.sessions) in thr.get(m.target, {}):
            continue
        rs = runs("throughput", m.target, m.sessions)
        thr.setdefault(m.target, {})[str(m.sessions)] = {
            "calls_per_s": statistics.median(r["calls_per_s"] for r in rs),
            "p99_ms": statistics.median(r["latency"].get("p99_ms", 0) for r in rs),
            "errors": sum(r["errors"] for r in rs),
        }
    sdk: JSON = {}
    for name in dict.fromkeys(m.target for m in steps if m.scenario == "sdk"):
        rs = runs("sdk", name)
        sdk[name] = {
            "p50_ms": statistics.median(r["latency"]["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["latency"]["p99_ms"] for r in rs),
            "rounds_p50_ms": [r["latency"]["p50_ms"] for r in rs],
            "raw_ms": [r["raw_ms"] for r in rs],
        }
    for name in sdk:
        sdk[name]["overhead_ms"] = round(sdk[name]["p50_ms"] - sdk["direct"]["p50_ms"], 3)
    workers: JSON = {}
    for name in dict.fromkeys(m.target for m in steps if m.scenario == "workers"):
        rs = runs("workers", name, next(m.sessions for m in steps if m.scenario == "workers"))
        workers[name] = {
            "sessions": rs[0]["sessions"],
            "calls_per_s": statistics.median(r["calls_per_s"] for r in rs),
            "p99_ms": statistics.median(r["latency"].get("p99_ms", 0) for r in rs),
            "errors": sum(r["errors"] for r in rs),
        }
    out: JSON = {"sequential": seq, "sdk": sdk, "throughput": thr, "workers": workers,
                 "idle": {}, "connect": {}, "recovery": {}}
    for m in steps:
        if m.scenario == "idle":
            out["idle"].setdefault(m.target, {})[str(m.sessions)] = raw[m]
        elif m.scenario in ("connect", "recovery"):
            out[m.scenario][m.target] = raw[m]
    return out


def run(smoke: bool, out_dir: Path, *, quiet: bool = False,
        only: frozenset[str] | None = None) -> JSON:
    settings = Settings.of(smoke, workers=workers_supported())
    steps = plan(settings, only)
    sdk = sdk_upstream(smoke)
    results: JSON = {"smoke": smoke, "only": sorted(only) if only else None,
                     "machine": machine(), "versions": versions(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = Path(tempfile.mkdtemp(prefix="mcp-orch-bench-"))
    raw: dict[Measurement, JSON] = {}
    workers: JSON = {"workers": WORKERS, "available": settings.workers}
    if not settings.workers:
        workers["note"] = "not available: `mcp-orch serve --help` has no --workers"
    with open_progress([m.step() for m in steps], quiet=quiet, stream=sys.stderr) as progress:
        with ExitStack() as stack:
            with progress.step(steps[0].step()):
                gw = stack.enter_context(gateway(tmp, sdk))
                px = stack.enter_context(proxy(tmp))
                sdk_px = stack.enter_context(proxy(tmp, sdk["command"], "mcp-proxy-sdk"))
                tv = stack.enter_context(trivial())
            targets = make_targets(gw, px, tv)
            results["targets"] = {k: {kk: vv for kk, vv in v.items() if kk != "headers"}
                                  for k, v in targets.items()}
            targets.update({f"sdk:{k}": v for k, v in make_sdk_targets(gw, sdk_px, sdk).items()})
            results["sdk_upstream"] = sdk["name"]
            pids = {"orch-sse": gw["pid"], "proxy-sse": px["pid"]}
            with ExitStack() as workers_stack:
                for i, m in enumerate(steps[1:], 1):
                    with progress.step(m.step()):
                        if m.scenario == "start":  # mcp-orch serve --workers N
                            wgw = workers_stack.enter_context(gateway(tmp, sdk, workers=WORKERS))
                            targets.update(make_workers_targets(wgw))
                            wait_workers_serving(targets["workers:orch-sse"])
                            continue
                        raw[m] = measure(m, targets, pids)
                    if m.scenario == "workers" and (
                            i + 1 == len(steps) or steps[i + 1].scenario != "workers"):
                        workers["forwarded"] = forwarded_share(wgw["port"], WORKERS)
                        workers_stack.close()  # the workers stop before the idle scenario
        results["plan"] = {"steps": len(steps), "planned_s": round(progress.planned_s, 1),
                           "elapsed_s": round(progress.elapsed_s(), 1)}
    results.update(collect(steps, raw))
    results["workers"] = {**workers, "throughput": results["workers"]}
    results["machine"]["loadgen_ceiling"] = ceiling(results["throughput"])
    results["ratios"] = ratios(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kind = "smoke" if smoke else "bench"
    if only:  # not a bench-*.json: bench.spread (and the README table) read full runs only
        kind = f"only-{'-'.join(sorted(only))}{'-smoke' if smoke else ''}"
    path = out_dir / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    results["path"] = str(path)
    return results


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ratios(r: JSON) -> JSON:
    seq = r["sequential"]
    out: JSON = {}
    sdk = r.get("sdk") or {}
    for transport in ("sse", "http"):
        orch, prox = sdk.get(f"orch-{transport}"), sdk.get(f"proxy-{transport}")
        if orch and prox and prox["overhead_ms"] > 0:
            out[f"sdk_overhead_vs_proxy_{transport}"] = round(
                orch["overhead_ms"] / prox["overhead_ms"], 3)
    for transport in ("sse", "http"):
        orch, prox = seq.get(f"orch-{transport}"), seq.get(f"proxy-{transport}")
        if orch and prox and prox["overhead_ms"] > 0:
            out[f"overhead_vs_proxy_{transport}"] = round(orch["overhead_ms"] / prox["overhead_ms"], 3)
        thr_orch = r["throughput"].get(f"orch-{transport}")
        thr_proxy = r["throughput"].get(f"proxy-{transport}", {})
        if not thr_orch:  # an --only run without the throughput scenario
            continue
        level = "32" if "32" in thr_orch else max(thr_orch, key=int)
        o = thr_orch[level]["calls_per_s"]
        p = thr_proxy[level]["calls_per_s"]
        if p:
            out[f"throughput_vs_proxy_{transport}_at_{level}"] = round(o / p, 2)
        w = (r.get("workers") or {}).get("throughput", {}).get(f"orch-{transport}")
        proxy_at = thr_proxy.get(str(w["sessions"])) if w else None
        if w and proxy_at and proxy_at["calls_per_s"]:
            out[f"throughput_vs_proxy_{transport}_at_{w['sessions']}_workers_{WORKERS}"] = round(
                w["calls_per_s"] / proxy_at["calls_per_s"], 2)
    return out


def table(r: JSON) -> str:
    """The run's tables (those of the scenarios it ran), each under the machine's context."""
    seq, thr = r["sequential"], r["throughput"]
    context = f"({context_line(r)})"
    sections = [_latency_table(seq, thr), _idle_table(r), _connect_table(r), _sdk_table(r)]
    lines: list[str] = []
    for section in filter(None, sections):
        lines += [context, "", *section, ""]
    w = r.get("workers") or {}
    if w and (w.get("throughput") or not w.get("available")):
        if not w.get("available"):
            lines.append(f"mcp-orch serve --workers {w.get('workers')}: {w.get('note')}")
        else:
            cells = ", ".join(f"{name} {v['calls_per_s']:.0f} calls/s @{v['sessions']}"
                              for name, v in w["throughput"].items())
            fwd = w.get("forwarded") or {}
            share = fwd.get("share")
            lines.append(f"mcp-orch serve --workers {w['workers']}: {cells}; forwarded "
                         + (f"{100 * share:.1f} % of requests" if share is not None
                            else f"share unknown ({fwd.get('note')})"))
        lines.append("")
    lines.append("ratios (mcp-orch ÷ mcp-proxy, same run): " + json.dumps(r["ratios"]))
    lines.append("Absolute figures move with the machine (see its ceiling above); the same-run "
                 "ratios are what compares across machines: python -m bench.spread")
    return "\n".join(lines)


def _latency_table(seq: JSON, thr: JSON) -> list[str]:
    if not seq and not thr:
        return []
    levels = list(next(iter(thr.values()))) if thr else []
    lines = ["| target | p50 ms | p99 ms | overhead p50 ms | " +
             " | ".join(f"calls/s @{k}" for k in levels) + " |",
             "|---|---|---|---|" + "---|" * len(levels)]
    for name in [*seq, "ceiling"]:
        t = thr.get(name, {})
        if name not in seq:
            if t:
                cells = " | ".join(f"{v['calls_per_s']:.0f}" for v in t.values())
                lines.append(f"| load generator ceiling (trivial endpoint) | — | — | — | {cells} |")
            continue
        cells = " | ".join(f"{v['calls_per_s']:.0f}" for v in t.values()) if t else \
            " | ".join("—" for _ in levels)
        lines.append(f"| {name} | {seq[name]['p50_ms']:.3f} | {seq[name]['p99_ms']:.3f} | "
                     f"{seq[name]['overhead_ms']:.3f} | {cells} |")
    return lines


def _idle_table(r: JSON) -> list[str]:
    if not r["idle"]:
        return []
    lines = ["| idle SSE sessions | connected | connect s | KB/session | idle CPU % |",
             "|---|---|---|---|---|"]
    for name, by_n in r["idle"].items():
        for n, v in by_n.items():
            lines.append(f"| {name} ×{n} | {v['connected']} | {v['connect_s']} | "
                         f"{v['kb_per_session']} | {v['idle_cpu_pct']} |")
    return lines


def _connect_table(r: JSON) -> list[str]:
    if not r["connect"] and not r["recovery"]:
        return []
    lines = ["| connect→initialized | p50 ms | p99 ms | recovery after kill -9 (s) |",
             "|---|---|---|---|"]
    for name in dict.fromkeys([*r["connect"], *r["recovery"]]):
        v = r["connect"].get(name, {})
        if name == "ceiling":
            lines.append(f"| load generator ceiling (trivial endpoint) | {v.get('p50_ms')} | "
                         f"{v.get('p99_ms')} | — |")
            continue
        rec = r["recovery"].get(name, {}).get("recovered_s")
        if rec is None:
            rec = "no recovery" if name in r["recovery"] else "—"
        lines.append(f"| {name} | {v.get('p50_ms', '—')} | {v.get('p99_ms', '—')} | {rec} |")
    return lines


def _sdk_table(r: JSON) -> list[str]:
    sdk = r.get("sdk") or {}
    if not sdk:
        return []
    lines = [f"| Python SDK client, tools/call in front of {r.get('sdk_upstream', '?')} | "
             "p50 ms | p99 ms | added p50 ms | p50 of each round |", "|---|---|---|---|---|"]
    for name, v in sdk.items():
        rounds = ", ".join(f"{x:.3f}" for x in v["rounds_p50_ms"])
        lines.append(f"| {name} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | "
                     f"{v['overhead_ms']:.3f} | {rounds} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny counts: seconds, for CI")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--quiet", action="store_true",
                   help="no progress display on stderr (the tables still go to stdout)")
    p.add_argument("--only", metavar="SCENARIO[,SCENARIO…]",
                   help=f"run only these scenarios (of {', '.join(SCENARIOS)}); the result "
                        "file is named only-…, which bench.spread does not read")
    args = p.parse_args()
    only = None
    if args.only:
        only = frozenset(x.strip() for x in args.only.split(",") if x.strip())
        if unknown := only - set(SCENARIOS):
            p.error(f"unknown scenario(s) {', '.join(sorted(unknown))}; "
                    f"choose from {', '.join(SCENARIOS)}")
    if not BASELINE.exists():
        sys.exit(f"{BASELINE} is missing: run scripts/bench.sh (it installs the baseline)")
    results = run(args.smoke, Path(args.out), quiet=args.quiet, only=only)
    print(table(results))
    print(f"\nraw results: {results['path']}")


if __name__ == "__main__":
    main()
