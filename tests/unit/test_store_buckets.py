"""The cluster's shared token buckets in the store (both backends): one limit for every
instance sharing the store."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from config import Store
from tests.support.postgres import StoreTarget


@pytest.fixture
def two(store_target: StoreTarget) -> Iterator[tuple[Store, Store]]:
    """Two connections to one store, as two instances have."""
    a, b = store_target.open(), store_target.open()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_bucket_is_shared_by_every_store_connection(two: tuple[Store, Store]) -> None:
    a, b = two
    key = [("key:demo:k1", 1.0, 3.0)]
    assert a.take_tokens(key, 2) is None
    assert b.take_tokens(key, 1) is None  # the same bucket: 3 tokens in all
    short = a.take_tokens(key, 1)
    assert short is not None and short[0] == 0
    assert 0.5 < short[1] <= 1.0  # about a second for one token at 1/s
    # Another key's bucket is its own.
    assert b.take_tokens([("key:demo:k2", 1.0, 3.0)], 3) is None


def test_all_buckets_or_none(two: tuple[Store, Store]) -> None:
    a, b = two
    key, project = ("key:p:k", 100.0, 10.0), ("project:p", 0.001, 2.0)
    assert a.take_tokens([key, project], 2) is None
    # The project bucket is empty: refused, naming it, and the key bucket keeps its tokens.
    assert b.take_tokens([key, project], 1) == (1, pytest.approx(1000.0, rel=0.01))
    assert a.take_tokens([key], 8) is None


def test_a_bucket_refills_at_its_rate(two: tuple[Store, Store]) -> None:
    a, _ = two
    bucket = [("project:fast", 50.0, 1.0)]
    assert a.take_tokens(bucket, 1) is None
    assert a.take_tokens(bucket, 1) is not None
    time.sleep(0.05)
    assert a.take_tokens(bucket, 1) is None
