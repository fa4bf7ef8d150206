"""Prometheus metrics for ``GET /metrics``, with the official ``prometheus_client``.

Each gateway has its own ``CollectorRegistry`` (tests run several gateways in
one process). Counters and histograms are updated on the hot path; values
that already live in the runtime (sessions, upstream states, restarts, queue
depths) are read at scrape time by a custom collector instead of being kept
twice.

Latency is split in two: ``mcp_orch_upstream_seconds`` is the time a request
spent with the upstream (from queueing it for the process to its answer);
``mcp_orch_gateway_overhead_seconds`` is the rest of the request's time in
the gateway.

For the console (``gateway/ops/console.py``) each server also keeps a ring of
:class:`Sample` s — requests, errors, latency buckets, in-flight requests and
sessions per interval (5 s, the last 15 minutes). The hot path only bumps
three integers of the current interval's :class:`_Window`; the gateway's
sampler (:meth:`gateway.core.Gateway.record_samples`) closes the interval.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from actors import ServerSupervisor, SessionRegistry

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("starting", "running", "restarting", "failed", "stopped")
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                    10, 30, 60)
#: Seconds per console sample, and how many are kept (15 minutes).
SAMPLE_INTERVAL_S = 5.0
SAMPLES_KEPT = 180


#: A labelled child of a counter or histogram (``inc``/``observe``).
_Child = Any


@attrs.define(eq=False)
class _Window:
    """The current interval's figures of one server (bumped on the hot path)."""

    requests: int = 0
    errors: int = 0
    buckets: list[int] = attrs.field(factory=lambda: [0] * (len(_LATENCY_BUCKETS) + 1))


@attrs.frozen
class Sample:
    """One closed interval of one server, as the console charts it."""

    at: float
    interval_s: float
    requests: int
    errors: int
    #: Requests per latency bucket (upper bounds ``_LATENCY_BUCKETS``, then +Inf).
    buckets: tuple[int, ...]
    in_flight: int
    sessions: int
    state: str

    def view(self) -> dict[str, object]:
        return {"at": self.at, "rps": round(self.requests / self.interval_s, 3),
                "eps": round(self.errors / self.interval_s, 3),
                "p50_ms": quantile_ms(self.buckets, 0.5),
                "p99_ms": quantile_ms(self.buckets, 0.99),
                "in_flight": self.in_flight, "sessions": self.sessions, "state": self.state}


def quantile_ms(buckets: tuple[int, ...] | list[int], q: float) -> float | None:
    """The ``q`` quantile in ms, as the upper bound of the bucket it falls in
    (``None`` for no requests; the last bucket reports its lower bound)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank and count:
            bound = _LATENCY_BUCKETS[min(index, len(_LATENCY_BUCKETS) - 1)]
            return round(bound * 1000, 3)
    return round(_LATENCY_BUCKETS[-1] * 1000, 3)


@attrs.define(eq=False)
class Metrics:
    """The gateway's metric instruments and per-server request tallies (for ``/status``)."""

    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    requests: Counter = attrs.field(init=False)
    upstream_seconds: Histogram = attrs.field(init=False)
    overhead_seconds: Histogram = attrs.field(init=False)
    stream_bytes: Counter = attrs.field(init=False)
    stream_frames: Counter = attrs.field(init=False)
    rejected: Counter = attrs.field(init=False)
    notifications_dropped: Counter = attrs.field(init=False)
    rate_limited: Counter = attrs.field(init=False)
    forwarded: Counter = attrs.field(init=False)
    forwarding_seconds: Histogram = attrs.field(init=False)
    tallies: collections.Counter[tuple[str, str, str]] = attrs.field(factory=collections.Counter)
    #: (project, server) → the interval being filled, and the closed ones (console charts).
    _windows: dict[tuple[str, str], _Window] = attrs.field(factory=dict)
    samples: dict[tuple[str, str], collections.deque[Sample]] = attrs.field(factory=dict)
    #: The labelled children :meth:`observe_request` bumps, looked up once per label set
    #: (``labels()`` validates and locks on every call: half of what a request cost here).
    _request_children: dict[tuple[str, str, str, str], _Child] = attrs.field(factory=dict)
    _latency_children: dict[tuple[str, str], tuple[_Child, _Child]] = attrs.field(
        factory=dict)

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "mcp_orch_requests", "JSON-RPC requests served, by outcome",
            ["project", "server", "method", "outcome"], registry=r,
        )
        self.upstream_seconds = Histogram(
            "mcp_orch_upstream_seconds", "Time a request spent with the upstream server",
            ["project", "server"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.overhead_seconds = Histogram(
            "mcp_orch_gateway_overhead_seconds",
            "Time a request spent in the gateway, excluding the upstream",
            ["project", "server"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stream_bytes = Counter(
            "mcp_orch_stream_bytes", "Bytes written to client streams", ["transport"], registry=r
        )
        self.stream_frames = Counter(
            "mcp_orch_stream_frames", "Events written to client streams", ["transport"], registry=r
        )
        self.rejected = Counter(
            "mcp_orch_rejected_requests", "HTTP requests refused, by reason", ["reason"],
            registry=r,
        )
        self.notifications_dropped = Counter(
            "mcp_orch_notifications_dropped",
            "Notifications for clients dropped because the client read too slowly "
            "(responses and server requests are never dropped)", ["transport"], registry=r,
        )
        self.rate_limited = Counter(
            "mcp_orch_rate_limited", "Requests refused by a [projects.P.limits] limit, by "
            "scope: key (per API key rate), project (project rate), server (max_concurrent)",
            ["project", "scope"], registry=r,
        )
        self.forwarded = Counter(
            "mcp_orch_forwarded_requests", "Requests for sessions another instance owns, "
            "relayed to it, by outcome: relayed, unreachable (the owner was taken for dead), "
            "cut (the owner ended the answer midway)", ["outcome"], registry=r,
        )
        self.forwarding_seconds = Histogram(
            "mcp_orch_forwarding_seconds", "Time from relaying a request to the owning "
            "instance until its answer began", buckets=_LATENCY_BUCKETS, registry=r,
        )

    def observe_request(
        self, project: str, server: str, method: str, outcome: str,
        total_s: float, upstream_s: float | None,
    ) -> None:
        """Record one finished request (called by session actors)."""
        key = (project, server, _method_label(method), outcome)
        counter = self._request_children.get(key)
        if counter is None:  # bounded like the labels: config names, known methods, outcomes
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.inc()
        if upstream_s is not None:
            latency = self._latency_children.get((project, server))
            if latency is None:
                latency = self._latency_children[(project, server)] = (
                    self.upstream_seconds.labels(project, server),
                    self.overhead_seconds.labels(project, server))
            latency[0].observe(upstream_s)
            latency[1].observe(max(0.0, total_s - upstream_s))
        self.tallies[(project, server, "requests")] += 1
        window = self._windows.get((project, server))
        if window is None:
            window = self._windows[(project, server)] = _Window()
        window.requests += 1
        window.buckets[bisect.bisect_left(_LATENCY_BUCKETS, total_s)] += 1
        if outcome != "ok":
            self.tallies[(project, server, "errors")] += 1
            window.errors += 1

    def take_sample(
        self, at: float, interval_s: float, live: Mapping[tuple[str, str], tuple[int, int, str]],
    ) -> None:
        """Close the current interval of every server: ``live`` maps (project, server)
        to (in_flight, sessions, state) read now. Servers gone from ``live`` and with
        no requests lose their ring."""
        windows, self._windows = self._windows, {}
        for key in live.keys() | windows.keys():
            window = windows.get(key) or _Window()
            in_flight, sessions, state = live.get(key, (0, 0, "removed"))
            ring = self.samples.get(key)
            if ring is None:
                ring = self.samples[key] = collections.deque(maxlen=SAMPLES_KEPT)
            ring.append(Sample(at, interval_s, window.requests, window.errors,
                               tuple(window.buckets), in_flight, sessions, state))
        for key in list(self.samples):
            if key not in live and key not in windows:
                del self.samples[key]

    def recent(self, key: tuple[str, str], last: int = 12) -> dict[str, object]:
        """Request and error rates and p50/p99 over the last ``last`` samples of a server."""
        ring = list(self.samples.get(key, ()))[-last:]
        seconds = sum(s.interval_s for s in ring)
        buckets = [sum(col) for col in zip(*(s.buckets for s in ring), strict=True)] if ring else []
        return {
            "rps": round(sum(s.requests for s in ring) / seconds, 3) if seconds else 0.0,
            "eps": round(sum(s.errors for s in ring) / seconds, 3) if seconds else 0.0,
            "p50_ms": quantile_ms(buckets, 0.5) if buckets else None,
            "p99_ms": quantile_ms(buckets, 0.99) if buckets else None,
            "window_s": seconds,
        }

    def attach(
        self, sessions: SessionRegistry, servers: Mapping[tuple[str, str], ServerSupervisor]
    ) -> None:
        """Read live values (sessions, upstream states) from these at every scrape."""
        self.registry.register(_RuntimeCollector(sessions, servers))

    def render(self) -> bytes:
        return generate_latest(self.registry)


_KNOWN_METHODS = frozenset({
    "initialize", "ping", "tools/list", "tools/call", "resources/list", "resources/read",
    "resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/list",
    "prompts/get", "completion/complete", "logging/setLevel",
})


def _method_label(method: str) -> str:
    # Bounded label cardinality: a client can send any method name.
    return method if method in _KNOWN_METHODS else "other"


@attrs.define(eq=False)
class _RuntimeCollector(Collector):
    sessions: SessionRegistry
    servers: Mapping[tuple[str, str], ServerSupervisor]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        sessions = GaugeMetricFamily(
            "mcp_orch_sessions_active", "Live client sessions",
            labels=["project", "server", "transport"],
        )
        for (project, server, transport), count in self.sessions.counts().items():
            sessions.add_metric([project, server, transport], count)
        yield sessions
        state = GaugeMetricFamily(
            "mcp_orch_upstream_state", "1 for the state each upstream is in",
            labels=["project", "server", "state"],
        )
        restarts = GaugeMetricFamily(
            "mcp_orch_upstream_restarts", "Restarts of each upstream since the gateway started",
            labels=["project", "server"],
        )
        in_flight = GaugeMetricFamily(
            "mcp_orch_upstream_in_flight", "Requests waiting for each upstream",
            labels=["project", "server"],
        )
        writer_queue = GaugeMetricFamily(
            "mcp_orch_upstream_queue_depth", "Messages queued for each upstream's stdin",
            labels=["project", "server"],
        )
        for (project, server), sup in self.servers.items():
            for name in STATES:
                state.add_metric([project, server, name], 1.0 if sup.state == name else 0.0)
            restarts.add_metric([project, server], sup.restarts)
            upstream = sup.upstream
            in_flight.add_metric([project, server], upstream.in_flight if upstream else 0)
            writer_queue.add_metric([project, server], upstream.queue_depth if upstream else 0)
        yield state
        yield restarts
        yield in_flight
        yield writer_queue
        outbox = GaugeMetricFamily(
            "mcp_orch_session_queue_depth", "Messages waiting in session outboxes",
            labels=["project", "server"],
        )
        depths: collections.Counter[tuple[str, str]] = collections.Counter()
        for session in self.sessions.sessions.values():
            depths[(session.project, session.server_name)] += session.outbox_depth
        for (project, server), depth in depths.items():
            outbox.add_metric([project, server], depth)
        yield outbox
