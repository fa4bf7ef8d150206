"""The instance registry and the cluster secret in the store (both backends)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from config import InstanceRow, Store
from tests.support.postgres import StoreTarget


def test_register_heartbeat_list_remove(store: Store) -> None:
    before = time.time()
    store.register_instance("aaaa", "http://127.0.0.1:1001")
    store.register_instance("bbbb", "http://127.0.0.1:1002")
    rows = store.instances()
    assert [r.id for r in rows] == ["aaaa", "bbbb"]
    first = rows[0]
    assert isinstance(first, InstanceRow)
    assert (first.address, first.pid, first.host) == (
        "http://127.0.0.1:1001", os.getpid(), socket.gethostname())
    assert before <= first.started_at == first.last_seen <= time.time()

    time.sleep(0.01)
    store.heartbeat_instance("aaaa", "http://127.0.0.1:1001")
    again = {r.id: r for r in store.instances()}["aaaa"]
    assert again.started_at == first.started_at and again.last_seen > first.last_seen

    store.remove_instance("aaaa")
    assert [r.id for r in store.instances()] == ["bbbb"]
    # A heartbeat of a row that vanished (pruned while cut off) registers it again.
    store.heartbeat_instance("aaaa", "http://127.0.0.1:1003")
    assert {r.id: r.address for r in store.instances()} == {
        "aaaa": "http://127.0.0.1:1003", "bbbb": "http://127.0.0.1:1002"}


def test_prune_removes_only_the_silent(store: Store) -> None:
    store.register_instance("old", "http://127.0.0.1:1")
    time.sleep(0.05)
    store.register_instance("new", "http://127.0.0.1:2")
    assert store.prune_instances(0.04) == 1
    assert [r.id for r in store.instances()] == ["new"]
    assert store.prune_instances(60) == 0


def test_registry_is_not_audited(store: Store) -> None:
    store.register_instance("aaaa", "http://127.0.0.1:1")
    store.heartbeat_instance("aaaa", "http://127.0.0.1:1")
    store.prune_instances(0)
    store.remove_instance("aaaa")
    store.cluster_secret()
    assert store.audit_log() == []


def test_cluster_secret_made_once_and_shared(store: Store, reopen: Callable[[], Store]) -> None:
    secret = store.cluster_secret()
    assert isinstance(secret, bytes) and len(secret) == 32
    assert store.cluster_secret() == secret
    other = reopen()
    try:
        assert other.cluster_secret() == secret
    finally:
        other.close()


def test_instances_survive_reopen(store: Store, reopen: Callable[[], Store]) -> None:
    store.register_instance("aaaa", "http://127.0.0.1:1")
    other = reopen()
    try:
        assert [r.id for r in other.instances()] == ["aaaa"]
    finally:
        other.close()


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Store]:
    s = store_target.open()
    yield s
    s.close()


@pytest.fixture
def reopen(store_target: StoreTarget) -> Callable[[], Store]:
    """A second Store on the same database."""
    return store_target.open
