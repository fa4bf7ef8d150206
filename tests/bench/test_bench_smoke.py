"""The benchmark harness, run with tiny counts so it cannot rot (the figures are not judged).

One smoke run with stderr a pipe (as in CI) serves the harness checks and the
progress checks; one more with ``--quiet`` checks that it silences them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

STEP_LINE = re.compile(r"^\[bench\] step (\d+) of (\d+): (.+); elapsed (\d+:\d\d), "
                       r"about (\d+:\d\d) left$")


def smoke(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    result = subprocess.run(  # stdout and stderr are pipes, not terminals, as in CI
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out), *extra],
        cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = out.glob("smoke-*.json")
    return result, json.loads(path.read_text())


@pytest.fixture(scope="module")
def piped(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    return smoke(tmp_path_factory.mktemp("bench"))


def test_bench_smoke_runs_every_scenario_against_every_target(piped) -> None:
    result, data = piped
    assert "| orch-sse |" in result.stdout and "| proxy-http |" in result.stdout
    assert data["machine"]["cpus"] and data["versions"]["mcp-proxy"]
    for name in ("direct", "orch-sse", "orch-http", "proxy-sse", "proxy-http"):
        assert data["sequential"][name]["p50_ms"] > 0
        assert len(data["sequential"][name]["raw_ms"][0]) == 30
    for name in ("orch-sse", "orch-http", "proxy-sse", "proxy-http", "ceiling"):
        for level in ("1", "8"):
            assert data["throughput"][name][level]["calls_per_s"] > 0
            assert data["throughput"][name][level]["errors"] == 0
    for name in ("orch-sse", "proxy-sse"):
        assert data["idle"][name]["50"]["connected"] == 50
    for name in ("ceiling", "orch-sse", "proxy-sse"):  # the load generator's own connect ceiling
        assert data["connect"][name]["n"] == 10
    assert data["recovery"]["orch-sse"]["recovered_s"] is not None


def test_the_python_sdk_client_scenario_measures_every_target_and_the_ratios(piped) -> None:
    result, data = piped
    assert data["sdk_upstream"] == "bench/echo_server.py"  # the smoke run needs no npm peers
    sdk = data["sdk"]
    assert list(sdk) == ["direct", "orch-sse", "orch-http", "proxy-sse", "proxy-http"]
    for v in sdk.values():
        assert len(v["raw_ms"]) == 1 and len(v["raw_ms"][0]) == 20  # one round of 20 calls
        assert v["p99_ms"] >= v["p50_ms"] > 0
        assert v["overhead_ms"] == round(v["p50_ms"] - sdk["direct"]["p50_ms"], 3)
    for transport in ("sse", "http"):
        orch, proxy = sdk[f"orch-{transport}"], sdk[f"proxy-{transport}"]
        assert data["ratios"][f"sdk_overhead_vs_proxy_{transport}"] == round(
            orch["overhead_ms"] / proxy["overhead_ms"], 3)
    assert "| Python SDK client, tools/call in front of bench/echo_server.py |" in result.stdout


def test_the_workers_scenario_runs_or_says_it_is_not_available(piped) -> None:
    result, data = piped
    workers = data["workers"]
    help_text = subprocess.run([sys.executable, "-m", "gateway", "serve", "--help"], cwd=REPO,
                               capture_output=True, text=True).stdout
    assert workers["available"] == ("--workers" in help_text) and workers["workers"] == 2
    if not workers["available"]:
        assert workers["throughput"] == {} and "no --workers" in workers["note"]
        assert "mcp-orch serve --workers 2: not available" in result.stdout
        return
    for name in ("orch-sse", "orch-http"):
        assert workers["throughput"][name]["sessions"] == 32
        assert workers["throughput"][name]["calls_per_s"] > 0
    forwarded = workers["forwarded"]
    assert forwarded["share"] is None or 0 <= forwarded["share"] <= 1


def test_each_result_says_what_the_machine_could_do(piped) -> None:
    result, data = piped
    m = data["machine"]
    assert m["affinity"] >= 1 and m["python"].count(".") == 2
    top = max(data["throughput"]["ceiling"].values(), key=lambda v: v["calls_per_s"])
    assert m["loadgen_ceiling"]["calls_per_s"] == top["calls_per_s"] > 0
    # every table of the printed result carries the same context line, ceiling included
    context = [line for line in result.stdout.splitlines()
               if line.startswith("(this run's machine:")]
    assert len(context) == 4 and len(set(context)) == 1
    assert f"load generator ceiling {top['calls_per_s']:,.0f} calls/s" in context[0]
    assert f"Python {m['python']}" in context[0] and f"{m['cpus']} cores" in context[0]


def test_progress_on_a_pipe_is_one_plain_line_per_step(piped) -> None:
    result, data = piped
    assert "\x1b" not in result.stderr and "\r" not in result.stderr  # no terminal control
    lines = result.stderr.splitlines()
    steps = [STEP_LINE.match(line) for line in lines if line.startswith("[bench] step ")]
    assert all(steps), [line for line in lines if line.startswith("[bench] step ")]
    n = data["plan"]["steps"]
    # start + 5 sequential + 5 SDK + 10 throughput (+ start and 2 with --workers)
    # + 2 idle + 3 connect + 2 recovery
    workers = 3 if data["workers"]["available"] else 0
    assert n == 28 + workers
    assert [(int(s[1]), int(s[2])) for s in steps] == [(k, n) for k in range(1, n + 1)]
    labels = [s[3] for s in steps]
    targets = ("direct", "orch-sse", "orch-http", "proxy-sse", "proxy-http")
    assert labels[0].startswith("start targets")
    assert labels[1:6] == [f"sequential {t} 30 calls" for t in targets]
    assert labels[6:11] == [f"sdk {t} 20 calls through the Python SDK client, round 1 of 1"
                            for t in targets]
    assert labels[11] == "throughput orch-sse 1 session for 0.5 s"
    assert sum(label.startswith("throughput ") for label in labels) == 10
    assert sum(label.startswith("workers ") for label in labels) == (2 if workers else 0)
    assert [label.split()[0] for label in labels[-7:]] == ["idle"] * 2 + ["connect"] * 3 + \
        ["recovery"] * 2
    assert labels[-5] == "connect ceiling 10 clients at once"
    # the first estimate is the plan's total; by the last step little is left
    assert f"about {steps[0][5]} by the plan" in lines[0]

    def seconds(text: str) -> int:
        m, s = text.split(":")
        return int(m) * 60 + int(s)

    assert seconds(steps[-1][5]) < seconds(steps[0][5])
    assert seconds(steps[-1][4]) >= seconds(steps[0][4])
    assert lines[-1].startswith(f"[bench] done: {n} steps in ")


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    result, data = smoke(tmp_path, "--quiet")
    assert result.stderr == ""
    assert "| orch-sse |" in result.stdout and data["plan"]["steps"] >= 28
