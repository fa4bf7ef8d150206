"""The benchmark harness, run with tiny counts so it cannot rot (the figures are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_bench_smoke_runs_every_scenario_against_every_target(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| orch-sse |" in result.stdout and "| proxy-http |" in result.stdout
    (path,) = tmp_path.glob("smoke-*.json")
    data = json.loads(path.read_text())
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
        assert data["connect"][name]["n"] == 10
    assert data["recovery"]["orch-sse"]["recovered_s"] is not None
