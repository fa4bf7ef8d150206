"""bench/spread.py: the per-run ratios with their machine context, and their min–max."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import spread
from tests.support import REPO


def result(ceiling: float, overhead: float, thr: float, *, new_format: bool = True) -> dict:
    """A result file as bench.run writes it (``new_format``) or as runs before it did."""
    levels = {"1": {"calls_per_s": ceiling / 4}, "32": {"calls_per_s": ceiling},
              "128": {"calls_per_s": ceiling * 0.9}}
    r = {"machine": {"cpus": 2, "python": "3.11.7"},
         "throughput": {"ceiling": levels},
         "ratios": {"overhead_vs_proxy_sse": overhead, "throughput_vs_proxy_sse_at_32": thr}}
    if new_format:
        r["machine"] |= {"affinity": 1, "loadgen_ceiling": {"calls_per_s": ceiling,
                                                            "sessions": 32}}
    return r


def write(tmp: Path, name: str, data: dict) -> Path:
    path = tmp / f"bench-{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_one_row_per_run_with_its_machine_then_the_min_max_of_each_column(tmp_path: Path) -> None:
    paths = [write(tmp_path, "a", result(36650, 0.912, 1.05)),
             write(tmp_path, "b", result(11600, 0.95, 1.20, new_format=False)),
             write(tmp_path, "c", result(38007, 0.93, 1.09))]
    lines = spread.table(spread.load(paths)).splitlines()
    assert lines[0] == ("| run | cores | Python | load generator ceiling, calls/s | "
                        "added latency ÷ mcp-proxy's, legacy SSE | "
                        "calls/s @32 ÷ mcp-proxy's, legacy SSE |")
    assert lines[2:] == [
        "| a | 2 (1 usable) | 3.11.7 | 36,650 | 0.91 | 1.05 |",
        "| b | 2 | 3.11.7 | 11,600 | 0.95 | 1.20 |",  # ceiling read from its throughput
        "| c | 2 (1 usable) | 3.11.7 | 38,007 | 0.93 | 1.09 |",
        "| **min–max of 3 runs** |  |  | 11,600–38,007 | 0.91–0.95 | 1.05–1.20 |",
    ]


def test_the_sdk_and_workers_ratios_have_headings_and_keep_latency_first() -> None:
    r = {"machine": {"cpus": 2, "python": "3.11.7"}, "throughput": {}, "_name": "x",
         "ratios": {"throughput_vs_proxy_sse_at_32_workers_2": 2.1,
                    "sdk_overhead_vs_proxy_http": 0.6, "throughput_vs_proxy_sse_at_32": 1.1,
                    "overhead_vs_proxy_sse": 0.9}}
    assert spread.table([r]).splitlines()[0] == (
        "| run | cores | Python | load generator ceiling, calls/s | "
        "added latency ÷ mcp-proxy's, legacy SSE | "
        "added latency ÷ mcp-proxy's, Python SDK client, Streamable HTTP | "
        "calls/s @32 ÷ mcp-proxy's, legacy SSE | "
        "calls/s @32 ÷ mcp-proxy's, legacy SSE, serve --workers 2 |")


def test_readme_block_is_rewritten_between_its_markers_only(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\nbefore\n{spread.BEGIN}\nold table\n{spread.END}\nafter\n")
    spread.rewrite_readme(readme, "| new |")
    assert readme.read_text() == f"# x\nbefore\n{spread.BEGIN}\n\n| new |\n\n{spread.END}\nafter\n"
    readme.write_text("# no markers\n")
    with pytest.raises(spread.SpreadError):
        spread.rewrite_readme(readme, "| new |")


def test_no_result_files_is_an_error_not_an_empty_table() -> None:
    with pytest.raises(spread.SpreadError, match="no result files"):
        spread.table([])


def test_the_readme_table_is_the_one_bench_spread_makes_from_bench_results() -> None:
    text = (REPO / "README.md").read_text()
    block = text[text.index(spread.BEGIN) + len(spread.BEGIN):text.index(spread.END)].strip()
    made = spread.table(spread.load(sorted(spread.RESULTS.glob("bench-*.json"))))
    assert block == made, "README is stale: run `python -m bench.spread --readme`"
