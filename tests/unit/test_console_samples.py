"""The console's per-server sample ring (gateway/ops/metrics.py): rates and quantiles
from what observe_request counted, one sample per interval, 15 minutes kept."""

from __future__ import annotations

from gateway.ops.metrics import SAMPLES_KEPT, Metrics, quantile_ms


def test_samples_count_each_interval_and_forget_removed_servers() -> None:
    m = Metrics()
    key = ("p", "s")
    for _ in range(98):
        m.observe_request("p", "s", "tools/call", "ok", 0.004, 0.003)
    m.observe_request("p", "s", "tools/call", "error", 0.2, 0.2)
    m.observe_request("p", "s", "tools/call", "timeout", 2.0, 2.0)
    m.take_sample(1000.0, 5.0, {key: (3, 2, "running")})
    (sample,) = m.samples[key]
    view = sample.view()
    assert view["rps"] == 20.0 and view["eps"] == 0.4
    assert view["p50_ms"] == 5.0          # the 5 ms bucket holds the median
    assert view["p99_ms"] == 250.0        # the 99th of 100 is the 0.2 s request
    assert (view["in_flight"], view["sessions"], view["state"]) == (3, 2, "running")
    # The next interval starts empty.
    m.take_sample(1005.0, 5.0, {key: (0, 2, "running")})
    assert m.samples[key][-1].requests == 0
    assert m.recent(key)["rps"] == 10.0   # 100 requests over the two samples' 10 s
    for i in range(SAMPLES_KEPT + 5):
        m.take_sample(1010.0 + i, 5.0, {key: (0, 0, "running")})
    assert len(m.samples[key]) == SAMPLES_KEPT
    m.take_sample(2000.0, 5.0, {})
    assert key not in m.samples


def test_quantile_of_no_requests_is_none() -> None:
    assert quantile_ms([0] * 17, 0.5) is None
