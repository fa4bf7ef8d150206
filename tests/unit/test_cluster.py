"""Signed session ids and the peer view (gateway/cluster/)."""

from __future__ import annotations

import attrs
import pytest

from gateway.cluster.ids import SessionIds, new_instance_id
from gateway.cluster.peers import DEAD_AFTER_S, Peers


def test_a_session_id_names_its_owner_and_cannot_be_forged() -> None:
    secret = b"s" * 32
    a = SessionIds(new_instance_id(), secret)
    b = SessionIds(new_instance_id(), secret)
    sid = a.mint()
    assert sid != a.mint()
    assert all(0x21 <= ord(c) <= 0x7E for c in sid)  # visible ASCII (Streamable HTTP)
    assert a.owner(sid) == b.owner(sid) == a.instance_id
    _, token, mac = sid.split(".")
    assert b.owner(f"{b.instance_id}.{token}.{mac}") is None  # owner edited: MAC fails
    assert SessionIds(a.instance_id, b"t" * 32).owner(sid) is None  # another cluster's
    for bad in ("", "abc", "a.b.c", sid + ".x", sid.upper(), "0" * 32):
        assert a.owner(bad) is None


@attrs.define
class Row:
    id: str
    address: str
    last_seen: float
    pid: int = 1
    host: str = "h"
    started_at: float = 0.0


@attrs.define
class FakeStore:
    rows: list[Row]

    def instances(self) -> list[Row]:
        return list(self.rows)


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


async def test_peers_are_live_while_they_heartbeat(clock: list[float]) -> None:
    me = SessionIds("a" * 12, b"s" * 32)
    store = FakeStore([Row("a" * 12, "http://me", 1000.0), Row("b" * 12, "http://b", 999.0),
                       Row("c" * 12, "http://c", 1000.0 - DEAD_AFTER_S - 1)])
    peers = Peers(store, me, "http://me", clock=lambda: clock[0])  # type: ignore[arg-type]
    await peers.refresh()
    assert set(peers.live) == {"b" * 12}  # not itself, not the silent one
    assert peers.size == 2
    # A refused connection makes it dead at once, until it heartbeats again.
    peers.suspect("b" * 12)
    assert peers.peer("b" * 12) is None
    await peers.refresh()
    assert peers.peer("b" * 12) is None
    clock[0] += 1
    store.rows[1] = Row("b" * 12, "http://b", clock[0])
    await peers.refresh()
    assert peers.peer("b" * 12) is not None
    view = peers.describe()
    assert view["instance"] == "a" * 12
    assert [p["instance"] for p in view["peers"]] == ["b" * 12]  # type: ignore[index]
