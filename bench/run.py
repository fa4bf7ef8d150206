"""Run every benchmark scenario against every target in one go; print a table, write JSON.

Targets: the stdio echo server driven directly (no gateway: the floor),
mcp-orch over legacy SSE and over Streamable HTTP, and mcp-proxy (PyPI, in
its own virtualenv ``.venv-baseline``) over the same two transports. The
load generator (``bench/loadgen.py``) runs in its own process for each
measurement, so it never shares a core's event loop with a target.

The machine is shared and noisy, so latency scenarios run several times and
report medians, and every comparison is a ratio of figures measured in this
same run.

    python -m bench.run            # the full run (a few minutes)
    python -m bench.run --smoke    # seconds: proves the harness works (CI)
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / ".venv-baseline" / "bin" / "mcp-proxy"
ECHO = [sys.executable, str(REPO / "bench" / "echo_server.py")]
JSON = dict[str, Any]
#: The keep-alive interval of both gateways' SSE streams: mcp-orch's default
#: ``keepalive_s`` and the ping interval of sse-starlette, which mcp-proxy uses.
KEEPALIVE_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


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


@contextmanager
def gateway(tmp: Path):  # noqa: ANN201
    port = free_port()
    config = tmp / "bench.toml"
    config.write_text(
        f'[gateway]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = "state"\n'
        f'session_queue = 256\n\n[projects.bench]\n'
        f'[projects.bench.servers.echo]\ncommand = "python"\nargs = [{json.dumps(ECHO[1])}]\n'
    )
    key = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "create", "--project", "bench",
         "--config", str(config)], capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout.strip().splitlines()[-1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config),
         "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        time.sleep(0.5)
        yield {"port": port, "pid": proc.pid, "key": key}
    finally:
        _stop(proc)


@contextmanager
def trivial():  # noqa: ANN201
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.trivial_server", str(port)], cwd=REPO)
    try:
        wait_port(port)
        yield {"port": port, "pid": proc.pid}
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def proxy():  # noqa: ANN201
    port = free_port()
    proc = subprocess.Popen(
        [str(BASELINE), "--port", str(port), "--host", "127.0.0.1", "--log-level", "WARNING",
         "--", *ECHO],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        time.sleep(0.5)
        yield {"port": port, "pid": proc.pid}
    finally:
        _stop(proc)


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
    cpu = "unknown"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform()}


def versions() -> JSON:
    from importlib.metadata import version

    out = {name: version(name) for name in ("mcp-orch", "trio", "hypercorn", "quart")}
    if BASELINE.exists():
        out["mcp-proxy"] = subprocess.run(
            [str(BASELINE.parent / "python"), "-c",
             "from importlib.metadata import version; print(version('mcp-proxy'))"],
            capture_output=True, text=True).stdout.strip()
    return out


def run(smoke: bool, out_dir: Path) -> JSON:
    reps = 1 if smoke else 3
    seq_n = 30 if smoke else 2000
    levels = [1, 8] if smoke else [1, 8, 32, 128]
    seconds = 0.5 if smoke else 5.0
    idle_counts = [50] if smoke else [1000, 10000]
    # Steady state: one keep-alive interval to settle, one to measure (see idle_run).
    idle_s, settle_s = (1.0, 0.5) if smoke else (KEEPALIVE_S, KEEPALIVE_S + 1.0)
    connect_n = 10 if smoke else 100
    results: JSON = {"smoke": smoke, "machine": machine(), "versions": versions(),
                     "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = Path(tempfile.mkdtemp(prefix="mcp-orch-bench-"))
    targets: dict[str, JSON] = {"direct": {"kind": "direct", "command": ECHO}}
    with gateway(tmp) as gw, proxy() as px, trivial() as tv:
        auth = {"Authorization": f"Bearer {gw['key']}"}
        base = {"host": "127.0.0.1"}
        targets["orch-sse"] = {**base, "kind": "sse", "port": gw["port"], "headers": auth,
                               "sse_path": "/projects/bench/servers/echo/sse"}
        targets["orch-http"] = {**base, "kind": "http", "port": gw["port"], "headers": auth,
                                "mcp_path": "/projects/bench/servers/echo/mcp"}
        targets["proxy-sse"] = {**base, "kind": "sse", "port": px["port"], "headers": {},
                                "sse_path": "/sse"}
        targets["proxy-http"] = {**base, "kind": "http", "port": px["port"], "headers": {},
                                 "mcp_path": "/mcp"}
        targets["ceiling"] = {**base, "kind": "ceiling", "port": tv["port"]}
        results["targets"] = {k: {kk: vv for kk, vv in v.items() if kk != "headers"}
                              for k, v in targets.items()}

        # 1. sequential round trips
        seq: JSON = {}
        for name, target in targets.items():
            if name == "ceiling":
                continue
            runs = [loadgen("sequential", target, n=seq_n) for _ in range(reps)]
            seq[name] = {
                "p50_ms": statistics.median(r["latency"]["p50_ms"] for r in runs),
                "p90_ms": statistics.median(r["latency"]["p90_ms"] for r in runs),
                "p99_ms": statistics.median(r["latency"]["p99_ms"] for r in runs),
                "raw_ms": [r["raw_ms"] for r in runs],
            }
        for name in seq:
            seq[name]["overhead_ms"] = round(seq[name]["p50_ms"] - seq["direct"]["p50_ms"], 3)
        results["sequential"] = seq

        # 2. throughput
        thr: JSON = {}
        for name, target in targets.items():
            if name == "direct":
                continue
            thr[name] = {}
            for level in levels:
                runs = [loadgen("throughput", target, sessions=level, seconds=seconds)
                        for _ in range(reps)]
                thr[name][str(level)] = {
                    "calls_per_s": statistics.median(r["calls_per_s"] for r in runs),
                    "p99_ms": statistics.median(r["latency"].get("p99_ms", 0) for r in runs),
                    "errors": sum(r["errors"] for r in runs),
                }
        results["throughput"] = thr

        # 3. idle SSE sessions
        idle: JSON = {}
        for name, pid in (("orch-sse", gw["pid"]), ("proxy-sse", px["pid"])):
            idle[name] = {str(n): idle_run(targets[name], pid, n, idle_s, settle_s)
                          for n in idle_counts}
        results["idle"] = idle

        # 4. connect-to-initialized with N clients at once
        results["connect"] = {
            name: loadgen("connect", targets[name], n=connect_n)["latency"]
            for name in ("orch-sse", "proxy-sse")
        }

        # 5. recovery after kill -9 of the upstream
        rec: JSON = {}
        for name, server_pid in (("orch-sse", gw["pid"]), ("proxy-sse", px["pid"])):
            kids = [p for p in children(server_pid) if "echo_server" in _cmdline(p)]
            if not kids:
                rec[name] = {"recovered_s": None, "note": "upstream process not found"}
                continue
            rec[name] = loadgen("recovery", targets[name], pid=kids[0],
                                seconds=3 if smoke else 10)
        results["recovery"] = rec

    results["ratios"] = ratios(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{'smoke' if smoke else 'bench'}-{stamp}.json"
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
    for transport in ("sse", "http"):
        orch, prox = seq[f"orch-{transport}"], seq[f"proxy-{transport}"]
        if prox["overhead_ms"] > 0:
            out[f"overhead_vs_proxy_{transport}"] = round(orch["overhead_ms"] / prox["overhead_ms"], 3)
        level = "32" if "32" in r["throughput"][f"orch-{transport}"] else max(
            r["throughput"][f"orch-{transport}"], key=int)
        o = r["throughput"][f"orch-{transport}"][level]["calls_per_s"]
        p = r["throughput"][f"proxy-{transport}"][level]["calls_per_s"]
        if p:
            out[f"throughput_vs_proxy_{transport}_at_{level}"] = round(o / p, 2)
    return out


def table(r: JSON) -> str:
    seq, thr = r["sequential"], r["throughput"]
    lines = ["| target | p50 ms | p99 ms | overhead p50 ms | " +
             " | ".join(f"calls/s @{k}" for k in next(iter(thr.values()))) + " |",
             "|---|---|---|---|" + "---|" * len(next(iter(thr.values())))]
    for name in [*seq, "ceiling"]:
        t = thr.get(name, {})
        if name not in seq:
            cells = " | ".join(f"{v['calls_per_s']:.0f}" for v in t.values())
            lines.append(f"| load generator ceiling (trivial endpoint) | — | — | — | {cells} |")
            continue
        cells = " | ".join(f"{v['calls_per_s']:.0f}" for v in t.values()) if t else \
            " | ".join("—" for _ in next(iter(thr.values())))
        lines.append(f"| {name} | {seq[name]['p50_ms']:.3f} | {seq[name]['p99_ms']:.3f} | "
                     f"{seq[name]['overhead_ms']:.3f} | {cells} |")
    lines.append("")
    lines.append("| idle SSE sessions | connected | connect s | KB/session | idle CPU % |")
    lines.append("|---|---|---|---|---|")
    for name, by_n in r["idle"].items():
        for n, v in by_n.items():
            lines.append(f"| {name} ×{n} | {v['connected']} | {v['connect_s']} | "
                         f"{v['kb_per_session']} | {v['idle_cpu_pct']} |")
    lines.append("")
    lines.append("| connect→initialized | p50 ms | p99 ms | recovery after kill -9 (s) |")
    lines.append("|---|---|---|---|")
    for name, v in r["connect"].items():
        rec = r["recovery"].get(name, {}).get("recovered_s")
        lines.append(f"| {name} | {v.get('p50_ms')} | {v.get('p99_ms')} | "
                     f"{rec if rec is not None else 'no recovery'} |")
    lines.append("")
    lines.append("ratios (mcp-orch ÷ mcp-proxy, same run): " + json.dumps(r["ratios"]))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny counts: seconds, for CI")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args()
    if not BASELINE.exists():
        sys.exit(f"{BASELINE} is missing: run scripts/bench.sh (it installs the baseline)")
    results = run(args.smoke, Path(args.out))
    print(table(results))
    print(f"\nraw results: {results['path']}")


if __name__ == "__main__":
    main()
