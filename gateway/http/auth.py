"""Bearer-key authentication for project routes.

Rules (DESIGN.md, "Auth"): the key travels only in ``Authorization: Bearer``;
a missing or unknown key is ``401`` with ``WWW-Authenticate: Bearer``; a valid
key of another project is ``404``, the same answer as for a project that does
not exist, so a key holder learns nothing about other projects. Keys are
looked up by hash in the store; answers are cached for ``ttl_s`` so a hot path
does not hit the store per request, which also bounds how long a revoked key
keeps working. A change committed to the store anywhere (another instance,
the CLI) expires every cached answer at once (:meth:`KeyVerifier.invalidate`,
called by ``Gateway.watch_store``), so a key created or revoked elsewhere is
seen at its next request.

While the store is unreachable, a key whose answer was cached before keeps
that answer (expired or not): clients already admitted keep working through
a database outage. A key never seen has no answer then: ``503``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from config import Store, StoreUnavailableError
from config.store import hash_key

MAX_CACHE = 10_000


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def key_fingerprint(authorization: str | None) -> str | None:
    """The stored hash of the bearer key in an ``Authorization`` header (or ``None``)."""
    key = bearer_token(authorization)
    return hash_key(key) if key is not None else None


@attrs.define(eq=False)
class KeyVerifier:
    """Maps API keys to their project, through a short-lived cache in front of the store."""

    store: Store
    ttl_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[bytes, tuple[str | None, float]] = attrs.field(factory=dict)
    _inflight: dict[bytes, trio.Event] = attrs.field(factory=dict)

    def forget(self, key_hash: str) -> None:
        """Drop a cached answer (the key was revoked): the next request asks the store."""
        self._cache.pop(bytes.fromhex(key_hash), None)

    def invalidate(self) -> None:
        """Expire every cached answer (the store changed: a key may have been created or
        revoked elsewhere). They stay as the answers of last resort during an outage;
        :meth:`forget` is for answers that must not survive."""
        self._cache = {digest: (owner, 0.0) for digest, (owner, _) in self._cache.items()}

    def forget_project(self, project: str) -> None:
        """Drop the cached answers naming ``project`` (it was deleted, and its keys
        with it): their next request asks the store, and gets ``401``."""
        for digest in [d for d, (owner, _) in self._cache.items() if owner == project]:
            del self._cache[digest]

    async def project_for(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).digest()
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        # One store lookup per key at a time: when the cached answer expires under
        # load, the requests arriving meanwhile wait for that lookup instead of
        # each taking a worker thread (seen as a thundering herd at 10k connects).
        pending = self._inflight.get(digest)
        if pending is not None:
            await pending.wait()
            hit = self._cache.get(digest)
            if hit is not None:
                return hit[0]
        done = self._inflight[digest] = trio.Event()
        try:
            try:
                project = await trio.to_thread.run_sync(self.store.project_for_key, key)
            except StoreUnavailableError:
                stale = self._cache.get(digest)
                if stale is None:
                    raise
                # Known before the outage: kept through it, and not asked again for
                # ttl_s (a server that does not answer costs a connect timeout).
                self._cache[digest] = (stale[0], self.clock() + self.ttl_s)
                return stale[0]
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            self._cache[digest] = (project, self.clock() + self.ttl_s)
            return project
        finally:
            del self._inflight[digest]
            done.set()


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def www_authenticate(project_name: str, error: str | None) -> str:
    """The ``WWW-Authenticate`` of a 401 (RFC 6750 §3), with an ``error_description``
    that MCP clients show the user: an OAuth-aware client (MCP Inspector) would
    otherwise go looking for an OAuth server and report only that it found none.

    A request with no key gets no ``error`` code (RFC 6750 §3.1), only the
    description; a wrong key gets ``invalid_token``.
    """
    # The name comes from the URL: only a plain name goes into the quoted string.
    project = f"project {project_name}" if _SAFE_NAME.match(project_name) else "this project"
    if error is None:
        description = (f"send the API key of {project} as 'Authorization: Bearer <key>' "
                       f"(this gateway takes API keys, not OAuth)")
        return f'Bearer realm="mcp-orch", error_description="{description}"'
    description = f"invalid API key for {project}"
    return f'Bearer realm="mcp-orch", error="{error}", error_description="{description}"'


@attrs.frozen
class Denied:
    """Why a request may not proceed: the HTTP status, a message, extra headers."""

    status: int
    message: str
    headers: dict[str, str] = attrs.field(factory=dict)


async def check_project_access(gateway: Any, project_name: str, authorization: str | None) -> Denied | None:
    """Apply the project's auth rule to an ``Authorization`` header value.

    ``None`` when allowed. A missing or invalid key is 401 with
    ``WWW-Authenticate``; a valid key of another project — or of no
    existing project — is 404, so nothing about other projects leaks. A key
    the store cannot be asked about now (unreachable, nothing cached) is 503.
    """
    project = gateway.project(project_name)
    if project is not None and project.auth == "none":
        return None
    key = bearer_token(authorization)
    if key is None:
        return Denied(401, "missing API key: send 'Authorization: Bearer <key>'",
                      {"WWW-Authenticate": www_authenticate(project_name, None)})
    try:
        owner = await gateway.keys.project_for(key)
    except StoreUnavailableError as exc:
        return Denied(503, f"this key cannot be checked now ({exc}); retry shortly",
                      {"Retry-After": "1"})
    if owner is None:
        return Denied(401, "invalid API key",
                      {"WWW-Authenticate": www_authenticate(project_name, "invalid_token")})
    if project is None or owner != project_name:
        return Denied(404, f"no project {project_name!r}")
    return None
