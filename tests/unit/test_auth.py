"""The API-key cache: answers from memory within its TTL, one store lookup at a time."""

from __future__ import annotations

import threading

import trio

from gateway.http.auth import KeyVerifier


class CountingStore:
    """Stands in for the SQLite store: a slow lookup that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def project_for_key(self, key: str) -> str | None:
        with self.lock:
            self.calls += 1
        self.release.wait(5)
        return "demo" if key == "good" else None


async def test_concurrent_misses_share_one_lookup() -> None:
    store = CountingStore()
    now = [0.0]
    verifier = KeyVerifier(store, ttl_s=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    answers: list[str | None] = []

    async def ask() -> None:
        answers.append(await verifier.project_for("good"))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(ask)
        await trio.sleep(0.1)
        store.release.set()
    assert answers == ["demo"] * 50
    assert store.calls == 1

    assert await verifier.project_for("good") == "demo"  # cached
    assert store.calls == 1
    now[0] = 3.0  # expired: asked again
    assert await verifier.project_for("good") == "demo"
    assert store.calls == 2
    assert await verifier.project_for("bad") is None
    assert store.calls == 3


async def test_a_deleted_projects_cached_keys_are_forgotten() -> None:
    # Regression (seen in CI): a key of a just-deleted project still answered 404
    # ("another project's key") from the cache instead of 401, for up to ttl_s.
    class Keys:
        owners = {"k-ops": "ops", "k-dev": "dev"}

        def project_for_key(self, key: str) -> str | None:
            return self.owners.get(key)

    store = Keys()
    verifier = KeyVerifier(store, ttl_s=60)  # type: ignore[arg-type]
    assert await verifier.project_for("k-ops") == "ops"
    assert await verifier.project_for("k-dev") == "dev"
    del store.owners["k-ops"]  # the project and its keys are deleted
    assert await verifier.project_for("k-ops") == "ops"  # still cached
    verifier.forget_project("ops")
    assert await verifier.project_for("k-ops") is None
    assert await verifier.project_for("k-dev") == "dev"  # other projects keep theirs
