"""A project's policy and limits written through the store (the CLI's and the admin API's
one write), and how a config apply treats them afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from config import ConfigError, NotFoundError, Store
from config.loading import projects_from_store, settings_table
from tests.support.postgres import StoreTarget

DENY = {"deny": ["git__push*"]}


@pytest.fixture
def store(store_target: StoreTarget) -> Iterator[Store]:
    """On both backends (``tests/support/postgres.py``)."""
    s = store_target.open()
    yield s
    s.close()


def project(store: Store, name: str = "demo") -> Any:
    return next(p for p in store.projects() if p.name == name)


def validated(table: str, raw: dict[str, Any]) -> Any:
    return lambda _current: settings_table("demo", table, raw, "test")


def test_one_write_one_audit_row_and_the_gateway_reads_it(store: Store) -> None:
    store.create_project("demo", "api-key", actor="t")
    assert store.update_project_settings("demo", "policy", validated("policy", DENY),
                                         actor="cli:me") == DENY
    row = project(store)
    assert row.settings == {"policy": DENY} and row.settings_source == {"policy": "api"}
    entry = store.audit_log(1)[0]
    assert (entry.actor, entry.action, entry.target) == ("cli:me", "project.policy", "demo")
    assert entry.detail == '{"deny": ["git__push*"]}'
    # What the running gateway builds from the row: the policy, not the bookkeeping.
    runtime = projects_from_store(store.projects(), store.servers(), "store")["demo"]
    assert runtime.policy.deny == ("git__push*",)
    # Writing the same again changes nothing and is not audited.
    before = len(store.audit_log())
    store.update_project_settings("demo", "policy", validated("policy", DENY), actor="cli:me")
    assert len(store.audit_log()) == before


def test_a_refused_change_rolls_back(store: Store) -> None:
    store.create_project("demo", "api-key", actor="t")
    store.update_project_settings("demo", "limits", validated("limits", {"rate": 1.0}),
                                  actor="t")
    before = len(store.audit_log())
    with pytest.raises(ConfigError) as info:
        store.update_project_settings("demo", "limits", validated("limits", {"rate": -1}),
                                      actor="t")
    assert info.value.field == "projects.demo.limits.rate"
    assert project(store).settings == {"limits": {"rate": 1.0}}
    assert len(store.audit_log()) == before
    with pytest.raises(NotFoundError):
        store.update_project_settings("nope", "limits", lambda _: None, actor="t")
    with pytest.raises(ValueError):
        store.update_project_settings("demo", "servers", lambda _: None, actor="t")


def test_the_file_is_declarative_for_the_tables_it_declares(store: Store) -> None:
    declared = {"policy": {"deny": ["x"]}, "limits": {"rate": 2.0}}
    store.apply_declared({"demo": ("api-key", {}, declared)}, actor="apply")
    assert project(store).settings_source == {"policy": "config", "limits": "config"}
    store.update_project_settings("demo", "policy", lambda _: DENY, actor="cli")
    store.update_project_settings("demo", "limits", lambda _: {"rate": 9.0}, actor="cli")
    # A table the file declares is set back; so on an apply both return to the file's.
    assert store.apply_declared({"demo": ("api-key", {}, declared)}, actor="apply")
    assert project(store).settings == declared
    # Set by the CLI again, then the file stops declaring policy: the CLI's stays.
    store.update_project_settings("demo", "policy", lambda _: DENY, actor="cli")
    store.apply_declared({"demo": ("api-key", {}, {"limits": {"rate": 2.0}})}, actor="apply")
    assert project(store).settings == {"policy": DENY, "limits": {"rate": 2.0}}
    assert project(store).settings_source == {"policy": "api", "limits": "config"}
    # The file stops declaring limits it had set: they are removed.
    store.apply_declared({"demo": ("api-key", {}, {})}, actor="apply")
    assert project(store).settings == {"policy": DENY}
    # Nothing left to do: the store already matches.
    assert store.apply_declared({"demo": ("api-key", {}, {})}, actor="apply") == []
