"""Changes committed through one Store reach another (another instance, the CLI):
``wait_for_change`` — NOTIFY on PostgreSQL, ``data_version`` polling on SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from config import Store
from config.store import CHANGES, INSTANCES
from tests.support.postgres import StoreTarget


@pytest.fixture
def pair(store_target: StoreTarget) -> Iterator[tuple[Store, Store]]:
    writer, watcher = store_target.open(), store_target.open()
    yield writer, watcher
    writer.close()
    watcher.close()


def settle(store: Store, channel: str = CHANGES) -> None:
    """Until nothing is pending (PostgreSQL reports every channel when it starts listening)."""
    while store.wait_for_change(0.3, channel):
        pass


def test_a_write_elsewhere_is_seen_within_a_second(pair: tuple[Store, Store]) -> None:
    writer, watcher = pair
    settle(watcher)
    writer.create_project("demo", "api-key", actor="test")
    assert watcher.wait_for_change(1.0)
    assert not watcher.wait_for_change(0.3)  # reported once
    key = writer.create_key("demo")
    assert watcher.wait_for_change(1.0)
    writer.revoke_key(key[:12])
    assert watcher.wait_for_change(1.0)
    assert watcher.project_for_key(key) is None


def test_a_write_that_changes_nothing_is_not_announced(pair: tuple[Store, Store]) -> None:
    writer, watcher = pair
    settle(watcher)
    assert not writer.revoke_key("mcpo_nothing")
    assert not watcher.wait_for_change(0.5)


def test_instances_have_their_own_channel(pair: tuple[Store, Store]) -> None:
    writer, watcher = pair
    settle(watcher, INSTANCES)
    settle(watcher, CHANGES)
    writer.register_instance("aaaa", "http://127.0.0.1:1")
    assert watcher.wait_for_change(1.0, INSTANCES)
    assert not watcher.wait_for_change(0.3, CHANGES)  # not a config change
    writer.heartbeat_instance("aaaa", "http://127.0.0.1:1")
    assert not watcher.wait_for_change(0.3, INSTANCES)  # heartbeats are not announced
    writer.remove_instance("aaaa")
    assert watcher.wait_for_change(1.0, INSTANCES)


async def test_two_waiters_share_the_connection(pair: tuple[Store, Store]) -> None:
    writer, watcher = pair
    settle(watcher, INSTANCES)
    settle(watcher, CHANGES)
    seen: dict[str, bool] = {}

    async def wait(channel: str) -> None:
        seen[channel] = await trio.to_thread.run_sync(watcher.wait_for_change, 5.0, channel)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, CHANGES)
        nursery.start_soon(wait, INSTANCES)
        await trio.sleep(0.2)
        await trio.to_thread.run_sync(writer.register_instance, "aaaa", "http://127.0.0.1:1")
        await trio.to_thread.run_sync(
            lambda: writer.create_project("demo", "api-key", actor="test"))
    assert seen == {CHANGES: True, INSTANCES: True}


async def test_close_ends_a_waiting_thread(store_target: StoreTarget) -> None:
    store = store_target.open()
    settle(store)
    async with trio.open_nursery() as nursery:
        done = trio.Event()

        async def wait() -> None:
            await trio.to_thread.run_sync(store.wait_for_change, 30.0)
            done.set()

        nursery.start_soon(wait)
        await trio.sleep(0.2)
        await trio.to_thread.run_sync(store.close)
        with trio.fail_after(5):
            await done.wait()
