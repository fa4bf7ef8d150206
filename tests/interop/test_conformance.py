"""The MCP conformance suite's server scenarios, run through the gateway.

The suite talks Streamable HTTP to the gateway; the gateway talks stdio to
``tests/servers/conformance_server.py``, which implements the scenarios'
fixtures. Every scenario the 2025-11-25 revision requires must pass, and so
must the unscored ones the suite runs alongside (session lifecycle, SSE
polling, JSON Schema 2020-12).

The 2026-07-28 revision is stateless (per-request ``_meta``, multi-round-trip
requests); the fixture server stays stateful, so that run tests the gateway's
bridge (``gateway/stateless.py``). Every scenario the revision scores must
pass; the suite's unscored extras (the tasks extension, pending scenarios)
are reported in the output but not required.
"""

from __future__ import annotations

import re

import pytest
import trio

from tests.conftest import StartGateway
from tests.interop.peers import node_env, peer
from tests.support import REPO

pytestmark = pytest.mark.interop

SUMMARY_LINE = re.compile(r"^([✓✗]) ([\w./-]+): (\d+) passed, (\d+) failed", re.M)
TOTAL_LINE = re.compile(r"^Total: (\d+) passed, (\d+) failed", re.M)
NOT_SCORED_LINE = re.compile(r"^  [✓✗] ([\w./-]+) \((extension|pending|added-after-release)\)", re.M)

CONFORMANCE_PROJECT = {
    "conf": {
        "auth": "none",  # the suite's CLI sends no credentials
        "servers": {
            "everything": {
                "command": "python",
                "args": ["-m", "tests.servers.conformance_server"],
                "cwd": str(REPO),
                # Sampling and elicitation call back into the client: one upstream per session.
                "isolation": "session",
            }
        },
    }
}


def parse_summary(output: str) -> dict[str, tuple[int, int]]:
    return {
        name: (int(passed), int(failed))
        for _, name, passed, failed in SUMMARY_LINE.findall(output)
    }


def not_scored(output: str) -> set[str]:
    """The scenarios the suite ran for visibility only (its "Not scored" list)."""
    return {name for name, _ in NOT_SCORED_LINE.findall(output)}


def test_summary_parser_sees_failures() -> None:
    sample = ("=== SUMMARY ===\n✓ ping: 2 passed, 0 failed\n✗ tools-list: 1 passed, 2 failed\n"
              "✗ tasks-lifecycle: 2 passed, 7 failed\n\nNot scored for 2026-07-28: 1 scenario(s)"
              " run, 1 failing. These do not affect conformance.\n  ✗ tasks-lifecycle (extension)\n")
    assert parse_summary(sample) == {"ping": (2, 0), "tools-list": (1, 2),
                                     "tasks-lifecycle": (2, 7)}
    assert not_scored(sample) == {"tasks-lifecycle"}


async def run_suite(url: str, revision: str) -> str:
    binary = peer("conformance")
    with trio.fail_after(600):
        result = await trio.run_process(
            [str(binary), "server", "--url", url, "--requirements", revision],
            capture_stdout=True, capture_stderr=True, check=False, env=node_env(), stdin=b"",
        )
    return result.stdout.decode() + result.stderr.decode()


async def test_conformance_2025_11_25_through_the_gateway(start_gateway: StartGateway) -> None:
    gw = await start_gateway(CONFORMANCE_PROJECT, sse_poll_s=0.1)
    url = f"{gw.url}/projects/conf/servers/everything/mcp"
    output = await run_suite(url, "2025-11-25")
    summary = parse_summary(output)
    failed = {name: counts for name, counts in summary.items() if counts[1]}
    assert len(summary) >= 30, output[-3000:]
    assert not failed, f"failed scenarios: {failed}\n{output[-5000:]}"
    total = TOTAL_LINE.search(output)
    assert total is not None and total.group(2) == "0", output[-3000:]
    for required in ("server-initialize", "tools-call-sampling", "tools-call-elicitation",
                     "tools-call-with-progress", "resources-subscribe",
                     "dns-rebinding-protection", "server-sse-multiple-streams",
                     "server-sse-polling", "server-session-lifecycle"):
        assert required in summary, f"{required} did not run"


async def test_conformance_2026_07_28_stateless_through_the_gateway(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(CONFORMANCE_PROJECT)
    url = f"{gw.url}/projects/conf/servers/everything/mcp"
    output = await run_suite(url, "2026-07-28")
    summary = parse_summary(output)
    unscored = not_scored(output)
    scored = {name: counts for name, counts in summary.items() if name not in unscored}
    failed = {name: counts for name, counts in scored.items() if counts[1]}
    assert len(scored) >= 37, output[-3000:]
    assert not failed, f"failed scenarios: {failed}\n{output[-5000:]}"
    for required in ("server-stateless", "caching", "input-required-result-basic-elicitation",
                     "input-required-result-multiple-input-requests",
                     "input-required-result-multi-round", "input-required-result-tampered-state",
                     "input-required-result-capability-check", "tools-call-with-progress",
                     "sep-2164-resource-not-found", "dns-rebinding-protection"):
        assert required in scored, f"{required} did not run"
    # Unscored (pending for the suite's own reference server), but the gateway passes them.
    for extra in ("http-header-validation", "http-custom-header-server-validation"):
        assert summary.get(extra, (0, 1))[1] == 0, f"{extra}: {summary.get(extra)}\n{output[-3000:]}"
