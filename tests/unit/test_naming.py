"""The project endpoint's naming rule (``actors/naming.py``): valid, unique, stable names."""

from __future__ import annotations

import hashlib
import re

import pytest

from actors.naming import candidate, digest, exposed_names, sanitize

PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@pytest.mark.parametrize(("text", "expected"), [
    ("plain_name-1", "plain_name-1"),
    ("a.b/c d", "a_b_c_d"),
    ("ünï", "_n_"),
    ("", ""),
])
def test_sanitize_maps_outside_characters_to_underscore(text: str, expected: str) -> None:
    assert sanitize(text) == expected


def test_digest_is_sha256_of_server_and_name() -> None:
    assert digest("s", "n") == hashlib.sha256(b"s\x1fn").hexdigest()[:8]


@pytest.mark.parametrize(("prefix", "name", "expected"), [
    ("demo", "echo", "demo__echo"),
    ("", "echo", "echo"),
    ("my.server", "get/thing", "my_server__get_thing"),
    ("", "", "_"),
])
def test_candidate(prefix: str, name: str, expected: str) -> None:
    assert candidate(prefix, "__", name) == expected


def test_plain_names_keep_their_readable_form() -> None:
    names = exposed_names([("demo", "echo"), ("git", "status")], {}, "__", 64)
    assert names == {("demo", "echo"): "demo__echo", ("git", "status"): "git__status"}


def test_prefix_override_and_empty_prefix() -> None:
    names = exposed_names([("a", "x"), ("b", "y")], {"a": "", "b": "bee"}, "-", 64)
    assert names == {("a", "x"): "x", ("b", "y"): "bee-y"}


def test_long_names_are_shortened_with_a_hash_of_the_original() -> None:
    long_a, long_b = "t" * 100, "t" * 99 + "u"
    names = exposed_names([("s", long_a), ("s", long_b)], {}, "__", 64)
    assert all(len(n) == 64 and PATTERN.match(n) for n in names.values())
    assert names[("s", long_a)] == ("s__" + long_a)[:55] + "_" + digest("s", long_a)
    assert names[("s", long_a)] != names[("s", long_b)]


@pytest.mark.parametrize("limit", [16, 32, 64])
def test_every_name_matches_the_pattern_and_is_unique(limit: int) -> None:
    pairs = [("srv", n) for n in ("a.b", "a/b", "a b", "a_b", "x" * 200, "é", "", "ok")]
    pairs += [("srv.2", "a.b"), ("srv_2", "a.b")]
    names = exposed_names(pairs, {}, "__", limit)
    pattern = re.compile(rf"^[a-zA-Z0-9_-]{{1,{limit}}}$")
    assert all(pattern.match(n) for n in names.values()), names
    assert len(set(names.values())) == len(pairs)


def test_colliding_names_are_all_disambiguated() -> None:
    names = exposed_names([("s", "a.b"), ("s", "a/b"), ("s", "a_c")], {}, "__", 64)
    assert names[("s", "a.b")] == "s__a_b_" + digest("s", "a.b")
    assert names[("s", "a/b")] == "s__a_b_" + digest("s", "a/b")
    assert names[("s", "a_c")] == "s__a_c"


def test_names_do_not_depend_on_order_or_on_other_servers() -> None:
    own = [("s", "a.b"), ("s", "a/b"), ("s", "q" * 90), ("s", "plain")]
    alone = exposed_names(own, {}, "__", 64)
    reordered = exposed_names(list(reversed(own)), {}, "__", 64)
    with_more = exposed_names(own + [("other", "plain"), ("other", "a.b")], {}, "__", 64)
    assert alone == reordered
    assert {p: with_more[p] for p in own} == alone
