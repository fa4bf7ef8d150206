"""Tool policy and rate limits of the project endpoint: pure rules, no I/O.

What a client of ``/projects/{p}/mcp`` may see and call is decided here, from
three sources that narrow each other:

* the project's ``[projects.P.policy]`` (:class:`~config.models.ToolPolicy`):
  ``allow``/``deny`` ``fnmatch`` globs on *exposed* tool names (deny wins; no
  allow list allows everything) and ``read_only`` (only tools annotated
  ``readOnlyHint: true``);
* the API key's own ``allow`` list (``mcp-orch keys create --allow``), which
  intersects the project's policy;
* per-tool overrides (``[projects.P.servers.S.tools.NAME]``,
  :class:`~config.models.ToolOverride`): a ``rename`` (the whole exposed name),
  ``description``, ``title``. The original name still goes upstream.

A hidden tool is "unknown tool" (``-32602``) exactly as if it did not exist;
the project session (``actors/project.py``) applies :meth:`Access.permits` to
``tools/list`` and ``tools/call`` alike.

Rate limits (``[projects.P.limits]``) are token buckets (:class:`TokenBucket`)
measured with ``trio.current_time()`` by the caller, so tests run them under
``autojump_clock``: :class:`RateLimiter` keeps one per API key hash and one
per project — held by the gateway, not by a session, so a limit follows its
key across reconnects and sessions. :class:`ConcurrencyGate` counts calls in
flight per server of one project, across that project's sessions.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from config.models import RateLimits, ServerConfig, ToolOverride, ToolPolicy

from .naming import Pair, exposed_names, hashed

log = logging.getLogger(__name__)

#: The retry hint (ms) of a call refused for want of a free slot at its server:
#: no slot frees at a known time, so this is a short back-off, not a promise.
CONCURRENCY_RETRY_MS = 100
#: Token buckets the limiter keeps at most; beyond, full (idle) ones are dropped.
MAX_BUCKETS = 100_000


def matches(name: str, globs: Iterable[str]) -> bool:
    """Whether ``name`` matches any of the ``fnmatch`` globs (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, glob) for glob in globs)


def read_only(tool: Mapping[str, Any] | None) -> bool:
    """Whether a listed tool is annotated ``readOnlyHint: true``."""
    annotations = tool.get("annotations") if tool is not None else None
    return isinstance(annotations, dict) and annotations.get("readOnlyHint") is True


@attrs.frozen
class Access:
    """What one project session may show and serve: its project's policy, its key's
    ``allow`` list (``None``: not narrowed) and the key's prefix (for log lines; never
    the key), and the project's concurrency gate (``None``: no ``max_concurrent``)."""

    policy: ToolPolicy = ToolPolicy()
    key_allow: tuple[str, ...] | None = None
    key_prefix: str | None = None
    gate: ConcurrencyGate | None = None

    def permits(self, name: str, tool: Mapping[str, Any] | None) -> bool:
        """Whether the tool exposed as ``name`` (listed as ``tool``, or ``None`` when its
        listing is not known) may be shown and called."""
        policy = self.policy
        if matches(name, policy.deny):
            return False
        if policy.allow is not None and not matches(name, policy.allow):
            return False
        if self.key_allow is not None and not matches(name, self.key_allow):
            return False
        return not policy.read_only or read_only(tool)

    @property
    def who(self) -> str:
        """The key as a log line names it."""
        return f"key {self.key_prefix}…" if self.key_prefix else "no key"


def override_tool(tool: dict[str, Any], override: ToolOverride | None) -> dict[str, Any]:
    """``tool`` (a listed tool, its name already exposed) with ``description`` and
    ``title`` replaced where ``override`` sets them."""
    if override is None:
        return tool
    changed = dict(tool)
    if override.description is not None:
        changed["description"] = override.description
    if override.title is not None:
        changed["title"] = override.title
    return changed


def renames(servers: Iterable[tuple[str, ServerConfig]]) -> dict[Pair, str]:
    """(server, original tool name) → its configured ``rename``."""
    return {
        (name, tool): override.rename
        for name, config in servers
        for tool, override in config.tools.items() if override.rename is not None
    }


def names_with_renames(
    pairs: Iterable[Pair], prefixes: Mapping[str, str], separator: str, limit: int,
    renamed: Mapping[Pair, str],
) -> dict[Pair, str]:
    """The exposed names of ``pairs`` (``actors/naming.py``), a renamed pair taking its
    ``rename``. A name two pairs would share — a rename colliding with another
    rename or with a derived name — is rewritten with each pair's hash, as
    :func:`~actors.naming.exposed_names` does (and logged)."""
    pairs = set(pairs)
    result = exposed_names([p for p in pairs if p not in renamed], prefixes, separator, limit)
    result.update({p: renamed[p] for p in pairs if p in renamed})
    holders: dict[str, list[Pair]] = defaultdict(list)
    for pair, name in result.items():
        holders[name].append(pair)
    for name, owners in holders.items():
        if len(owners) < 2:
            continue
        log.warning("tool names %s all map to %r (a rename collides): each is "
                    "disambiguated with a hash",
                    ", ".join(f"{s}/{n}" for s, n in sorted(owners)), name)
        for server, original in owners:
            result[(server, original)] = hashed(name, server, original, limit)
    return result


@attrs.define(eq=False)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; starts full. Time is the caller's
    (``trio.current_time()``), so a bucket is a value tests drive with a mock clock."""

    rate: float
    burst: float
    tokens: float = attrs.field(default=attrs.Factory(lambda self: self.burst, takes_self=True))
    stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now if self.stamp is None else max(self.stamp, now)

    def shortfall(self, now: float, n: float = 1) -> float:
        """Seconds until ``n`` tokens are there (``0.0``: now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= n else (n - self.tokens) / self.rate

    def take(self, now: float, n: float = 1) -> float:
        """Take ``n`` tokens if they are there (``0.0``), else take nothing and return
        the seconds until they will be."""
        wait = self.shortfall(now, n)
        if wait == 0.0:
            self.tokens -= n
        return wait

    def retune(self, rate: float, burst: float) -> None:
        """New settings (a config change), keeping what the bucket holds (capped)."""
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, burst)

    @property
    def full(self) -> bool:
        return self.tokens >= self.burst


def default_burst(rate: float, burst: int | None) -> float:
    """The configured burst, or ``max(1, ceil(rate))``."""
    return float(burst) if burst is not None else float(max(1, math.ceil(rate)))


@attrs.frozen
class Limited:
    """A refusal by a limit: which (``key``, ``project`` or ``server``) and when to retry."""

    scope: str
    retry_after_s: float
    #: More requests at once than the bucket ever holds: waiting does not help.
    too_big: bool = False

    @property
    def retry_after_ms(self) -> int:
        return max(1, math.ceil(self.retry_after_s * 1000))


@attrs.frozen
class SharedBucket:
    """A token bucket as the cluster's store keeps it (``Store.take_tokens``): one for
    every instance, so a limit holds across them, not once per instance."""

    scope: str
    name: str
    rate: float
    burst: float


def shared_buckets(project: str, key_hash: str | None, limits: RateLimits) -> list[SharedBucket]:
    """The buckets a request of ``key_hash`` to ``project`` counts against, as
    :meth:`RateLimiter.check` applies them."""
    buckets = []
    if limits.rate is not None and key_hash is not None:
        buckets.append(SharedBucket("key", f"key:{project}:{key_hash}", limits.rate,
                                    default_burst(limits.rate, limits.burst)))
    if limits.project_rate is not None:
        buckets.append(SharedBucket("project", f"project:{project}", limits.project_rate,
                                    default_burst(limits.project_rate, limits.project_burst)))
    return buckets


@attrs.define(eq=False)
class RateLimiter:
    """Token buckets per (project, API key hash) and per project, made on first use
    from the project's :class:`~config.models.RateLimits` and retuned when they change."""

    _keys: dict[tuple[str, str], TokenBucket] = attrs.field(factory=dict)
    _projects: dict[str, TokenBucket] = attrs.field(factory=dict)

    def check(
        self, project: str, key_hash: str | None, limits: RateLimits, now: float, n: int = 1,
    ) -> Limited | None:
        """Count ``n`` requests of ``key_hash`` (``None``: a project without keys) to
        ``project``; ``None`` when allowed (tokens taken from every bucket that
        applies), else the refusal (nothing taken)."""
        buckets: list[tuple[str, TokenBucket]] = []
        if limits.rate is not None and key_hash is not None:
            buckets.append(("key", self._bucket(self._keys, (project, key_hash),
                                                limits.rate, limits.burst)))
        if limits.project_rate is not None:
            buckets.append(("project", self._bucket(self._projects, project,
                                                    limits.project_rate, limits.project_burst)))
        for scope, bucket in buckets:
            if n > bucket.burst:
                return Limited(scope, 0.0, too_big=True)
        waits = [(bucket.shortfall(now, n), scope) for scope, bucket in buckets]
        worst = max(waits, default=(0.0, ""))
        if worst[0] > 0:
            return Limited(worst[1], worst[0])
        for _, bucket in buckets:
            bucket.take(now, n)
        return None

    @staticmethod
    def _bucket(table: dict[Any, TokenBucket], key: Any, rate: float,
                burst: int | None) -> TokenBucket:
        size = default_burst(rate, burst)
        bucket = table.get(key)
        if bucket is None:
            if len(table) >= MAX_BUCKETS:
                for stale in [k for k, b in table.items() if b.full]:
                    del table[stale]
            bucket = table[key] = TokenBucket(rate, size)
        elif (bucket.rate, bucket.burst) != (rate, size):
            bucket.retune(rate, size)
        return bucket


@attrs.define(eq=False)
class ConcurrencyGate:
    """Calls in flight per server of one project (``max_concurrent``), across all of
    the project's sessions. ``limit`` may change while calls run (a config change);
    ``on_limited`` is told each refusal (the gateway counts it)."""

    limit: int | None = None
    on_limited: Callable[[], None] | None = None
    _in_flight: dict[str, int] = attrs.field(factory=dict)

    def enter(self, server: str) -> Limited | None:
        """Take a slot at ``server``; ``None`` when taken (call :meth:`leave` after),
        else the refusal."""
        count = self._in_flight.get(server, 0)
        if self.limit is not None and count >= self.limit:
            if self.on_limited is not None:
                self.on_limited()
            return Limited("server", CONCURRENCY_RETRY_MS / 1000)
        self._in_flight[server] = count + 1
        return None

    def leave(self, server: str) -> None:
        count = self._in_flight.get(server, 0) - 1
        if count > 0:
            self._in_flight[server] = count
        else:
            self._in_flight.pop(server, None)

    def in_flight(self, server: str) -> int:
        return self._in_flight.get(server, 0)
