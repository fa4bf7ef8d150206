"""Two gateways on one PostgreSQL database, and the database going away under a gateway.

Real gateways (Hypercorn on 127.0.0.1, in the test's nursery) and a real
PostgreSQL (``tests/support/postgres.py``). A change made through one
instance's admin API reaches the other by NOTIFY: a key created works there,
a key revoked stops there (its live session ends, its cached answer is
dropped), a server added is served there. With PostgreSQL stopped, writes
fail with a clear 503 while admitted clients keep calling tools; after the
restart writes work again and changes flow again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from config import Store, StoreUnavailableError, load_config
from gateway.serve import run_gateway
from tests.support import DEMO_SERVER, demo_projects, open_sse_session, write_config
from tests.support.postgres import PostgresServer

ADMIN = "admin-token-for-postgres-tests-0123"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


def configure(directory: Path, dsn: str) -> Any:
    directory.mkdir()
    return load_config(write_config(directory, demo_projects(), admin_token=ADMIN, store=dsn))


async def start(nursery: trio.Nursery, directory: Path, dsn: str) -> Any:
    return await nursery.start(run_gateway, configure(directory, dsn))


async def sse_status(http: httpx.AsyncClient, url: str, key: str) -> int:
    async with http.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status_code


async def until_status(http: httpx.AsyncClient, url: str, key: str, status: int) -> None:
    while await sse_status(http, url, key) != status:
        await trio.sleep(0.02)


async def echo(session: Any, text: str) -> str:
    result = await session.call("tools/call", {"name": "echo", "arguments": {"text": text}})
    return result["content"][0]["text"]


async def test_changes_through_one_instance_reach_the_other(
    nursery: trio.Nursery, tmp_path: Path, pg_dsn: str,
) -> None:
    a = await start(nursery, tmp_path / "a", pg_dsn)
    b = await start(nursery, tmp_path / "b", pg_dsn)
    # Only a change notification can refresh B's cached answers within this test.
    b.keys.ttl_s = 3600
    sse_b = f"{b.url}/projects/demo/servers/demo/sse"
    async with httpx.AsyncClient(timeout=20) as http:
        # A key created through A's admin API works on B within a second.
        r = await http.post(f"{a.url}/admin/projects/demo/keys", headers=ADMIN_AUTH,
                            json={"name": "k1"})
        assert r.status_code == 201
        key = r.json()["key"]
        with trio.fail_after(1):
            await until_status(http, sse_b, key, 200)

        # A key B answered before (cached) and revoked through A: refused on B within 1 s.
        cached = (await http.post(f"{a.url}/admin/projects/demo/keys", headers=ADMIN_AUTH,
                                  json={"name": "k2"})).json()["key"]
        await until_status(http, sse_b, cached, 200)
        assert (await http.delete(f"{a.url}/admin/keys/{cached[:12]}",
                                  headers=ADMIN_AUTH)).status_code == 200
        with trio.fail_after(1):
            await until_status(http, sse_b, cached, 401)

        # A key with a live session on B, revoked through A: the session ends, and new
        # requests get 401, within a second.
        async with open_sse_session(sse_b, {"Authorization": f"Bearer {key}"}) as session:
            await session.initialize()
            assert await echo(session, "before") == "before"
            assert (await http.delete(f"{a.url}/admin/keys/{key[:12]}",
                                      headers=ADMIN_AUTH)).status_code == 200
            with trio.fail_after(1):
                await session.ended.wait()
                await until_status(http, sse_b, key, 401)

        # A server added through A's admin API is served by B.
        fresh = (await http.post(f"{a.url}/admin/projects/demo/keys", headers=ADMIN_AUTH,
                                 json={"name": "k3"})).json()["key"]
        r = await http.post(f"{a.url}/admin/projects/demo/servers", headers=ADMIN_AUTH,
                            json={"name": "added", **DEMO_SERVER})
        assert r.status_code == 201
        with trio.fail_after(10):  # the notification, then the server's own start
            await until_status(http, f"{b.url}/projects/demo/servers/added/sse", fresh, 200)
        async with open_sse_session(f"{b.url}/projects/demo/servers/added/sse",
                                    {"Authorization": f"Bearer {fresh}"}) as session:
            await session.initialize()
            assert await echo(session, "on b") == "on b"


async def test_postgres_outage_and_restart(
    nursery: trio.Nursery, tmp_path: Path, pg_dsn: str, postgres_server: PostgresServer,
) -> None:
    gw = await start(nursery, tmp_path / "a", pg_dsn)
    # Every request asks the store again: only the outage fallback keeps the session.
    gw.keys.ttl_s = 0.0
    other = Store.open(tmp_path / "cli", pg_dsn)  # the CLI, say
    key = other.create_key("demo")
    sse = f"{gw.url}/projects/demo/servers/demo/sse"
    try:
        async with httpx.AsyncClient(timeout=20) as http, \
                open_sse_session(sse, {"Authorization": f"Bearer {key}"}) as session:
            await session.initialize()
            assert await echo(session, "up") == "up"

            await trio.to_thread.run_sync(postgres_server.stop)
            with pytest.raises(StoreUnavailableError, match="is unreachable"):
                other.create_key("demo")
            r = await http.post(f"{gw.url}/admin/projects/demo/keys", headers=ADMIN_AUTH,
                                json={"name": "during"})
            assert r.status_code == 503
            assert "PostgreSQL store" in r.text and "unreachable" in r.text
            # The admitted session keeps calling tools through the outage.
            for i in range(3):
                assert await echo(session, f"down {i}") == f"down {i}"
                await trio.sleep(0.3)  # past the revocation check's interval, too
            assert not session.ended.is_set()

            await trio.to_thread.run_sync(postgres_server.start)
            r = await http.post(f"{gw.url}/admin/projects/demo/keys", headers=ADMIN_AUTH,
                                json={"name": "after"})
            assert r.status_code == 201
            assert await echo(session, "back") == "back"
            # Changes flow again: a key the CLI revokes now ends the session.
            other.revoke_key(key[:12])
            with trio.fail_after(5):  # the LISTEN connection may still be backing off
                await session.ended.wait()
    finally:
        postgres_server.ensure_running()
        other.close()
