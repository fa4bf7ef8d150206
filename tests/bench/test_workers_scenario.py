"""bench/run.py without running targets: the workers scenario's plan and the share of forwarded
requests read from /metrics pages as two workers behind one port would serve them; the plan
and tables of a partial (``--only``) run."""

from __future__ import annotations

import http.server
import itertools
import threading
from collections.abc import Iterator

import pytest

from bench import run

WORKER_A = """# HELP mcp_orch_requests_total JSON-RPC requests served, by outcome
# TYPE mcp_orch_requests_total counter
mcp_orch_requests_total{project="bench",server="echo",method="tools/call",outcome="ok"} 300.0
mcp_orch_requests_total{project="bench",server="echo",method="initialize",outcome="ok"} 16.0
mcp_orch_forwarded_requests_total{outcome="relayed"} 40.0
mcp_orch_forwarded_requests_total{outcome="cut"} 2.0
mcp_orch_forwarded_requests_created{outcome="relayed"} 1.7e+09
"""
WORKER_B = """mcp_orch_requests_total{project="bench",server="echo",method="tools/call",outcome="ok"} 200.0
mcp_orch_forwarded_requests_total{outcome="relayed"} 58.0
"""
NO_FORWARDING = """mcp_orch_requests_total{project="bench",server="echo",method="tools/call",outcome="ok"} 5.0
"""


@pytest.fixture
def metrics_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A /metrics endpoint answering with the given pages in turn, one per scrape."""
    pages = itertools.cycle(request.param)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = next(pages).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_metric_sums_adds_every_label_set_of_the_two_counters_only() -> None:
    sums, who = run.metric_sums(WORKER_A)
    assert sums == {run.REQUESTS: 316.0, run.FORWARDED: 42.0} and who is None
    sums, who = run.metric_sums('mcp_orch_forwarded_requests_total{instance="a1b2",outcome="x"} 3\n')
    assert sums == {run.FORWARDED: 3.0} and who == "a1b2"


@pytest.mark.parametrize("metrics_port", [[WORKER_A, WORKER_B]], indirect=True)
def test_the_share_is_summed_over_every_worker(metrics_port: int) -> None:
    out = run.forwarded_share(metrics_port, 2)
    assert out == {"workers_seen": 2, "forwarded": 100.0, "requests": 516.0,
                   "share": round(100 / 516, 4)}


@pytest.mark.parametrize("metrics_port", [[WORKER_A]], indirect=True)
def test_a_worker_never_reached_gives_no_share(metrics_port: int) -> None:
    out = run.forwarded_share(metrics_port, 2, tries=5)
    assert out["share"] is None and out["workers_seen"] == 1
    assert out["note"] == "/metrics reached 1 of 2 workers"


@pytest.mark.parametrize("metrics_port", [[NO_FORWARDING]], indirect=True)
def test_no_forwarded_counter_is_recorded_as_null(metrics_port: int) -> None:
    out = run.forwarded_share(metrics_port, 1)
    assert out["share"] is None and out["forwarded"] is None
    assert run.FORWARDED in out["note"]


def test_the_plan_has_the_workers_steps_only_when_the_cli_has_the_option() -> None:
    def labels(workers: bool) -> list[str]:
        return [m.step().label for m in run.plan(run.Settings.of(True, workers=workers))]

    without, with_workers = labels(False), labels(True)
    assert not [label for label in without if "workers" in label]
    extra = [label for label in with_workers if label not in without]
    assert extra == ["start workers (mcp-orch serve --workers 2)",
                     "workers orch-sse 32 sessions for 0.5 s",
                     "workers orch-http 32 sessions for 0.5 s"]
    # right after the throughput steps, before the idle ones
    i = with_workers.index(extra[0])
    assert with_workers[i - 1].startswith("throughput ") and with_workers[i + 3].startswith("idle ")


def test_the_workers_ratio_compares_with_mcp_proxy_at_the_same_sessions() -> None:
    r = {"sequential": {name: {"overhead_ms": 1.0} for name in run.GATEWAYS},
         "throughput": {f"{t}-{x}": {"32": {"calls_per_s": c}}
                        for t, c in (("orch", 400.0), ("proxy", 200.0)) for x in ("sse", "http")},
         "workers": {"throughput": {"orch-sse": {"sessions": 32, "calls_per_s": 900.0}}}}
    out = run.ratios(r)
    assert out["throughput_vs_proxy_sse_at_32_workers_2"] == 4.5
    assert "throughput_vs_proxy_http_at_32_workers_2" not in out  # not measured


def test_only_keeps_the_start_and_the_scenarios_named() -> None:
    settings = run.Settings.of(True, workers=True)
    labels = [m.step().label for m in run.plan(settings, frozenset({"sdk", "connect"}))]
    assert labels[0].startswith("start targets")
    assert [label.split()[0] for label in labels[1:]] == ["sdk"] * 5 + ["connect"] * 3
    labels = [m.step().label for m in run.plan(settings, frozenset({"workers"}))]
    assert [label.split()[:2] for label in labels] == [
        ["start", "targets"], ["start", "workers"], ["workers", "orch-sse"],
        ["workers", "orch-http"]]


def test_a_partial_run_prints_the_tables_it_has_and_its_ratios() -> None:
    r = {"machine": {"cpus": 2, "python": "3.11.7"}, "sequential": {}, "throughput": {},
         "idle": {}, "recovery": {}, "connect": {"ceiling": {"p50_ms": 9.5, "p99_ms": 10.2}},
         "sdk_upstream": "bench/echo_server.py",
         "sdk": {name: {"p50_ms": p50, "p99_ms": p50 * 2, "rounds_p50_ms": [p50],
                        "overhead_ms": p50 - 1.0}
                 for name, p50 in (("direct", 1.0), ("orch-sse", 5.0), ("orch-http", 6.0),
                                   ("proxy-sse", 9.0), ("proxy-http", 7.0))},
         "workers": {"workers": 2, "available": True, "throughput": {}}}
    r["ratios"] = run.ratios(r)
    assert r["ratios"] == {"sdk_overhead_vs_proxy_sse": 0.5, "sdk_overhead_vs_proxy_http": 0.833}
    text = run.table(r)
    assert "| target |" not in text and "| idle SSE sessions |" not in text
    assert "| load generator ceiling (trivial endpoint) | 9.5 | 10.2 | — |" in text
    assert "| orch-sse | 5.000 | 10.000 | 4.000 | 5.000 |" in text
    assert "--workers" not in text  # available, but not run
