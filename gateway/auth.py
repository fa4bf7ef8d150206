"""Bearer-key authentication for project routes.

Rules (DESIGN.md, "Auth"): the key travels only in ``Authorization: Bearer``;
a missing or unknown key is ``401`` with ``WWW-Authenticate: Bearer``; a valid
key of another project is ``404``, the same answer as for a project that does
not exist, so a key holder learns nothing about other projects. Keys are
looked up by hash in the store; answers are cached for ``ttl_s`` so a hot path
does not hit SQLite per request, which also bounds how long a revoked key
keeps working.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import attrs
import trio

from config import Store

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


@attrs.define(eq=False)
class KeyVerifier:
    """Maps API keys to their project, through a short-lived cache in front of the store."""

    store: Store
    ttl_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    _cache: dict[bytes, tuple[str | None, float]] = attrs.field(factory=dict)

    async def project_for(self, key: str) -> str | None:
        digest = hashlib.sha256(key.encode()).digest()
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        project = await trio.to_thread.run_sync(self.store.project_for_key, key)
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[digest] = (project, now + self.ttl_s)
        return project
