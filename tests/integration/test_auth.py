"""API-key authentication on every MCP route: 401 vs 404, and keys never in logs."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.conftest import StartGateway
from tests.support import DEMO_SERVER, open_sse_session

TWO_PROJECTS = {
    "demo": {"servers": {"demo": DEMO_SERVER}},
    "other": {"servers": {"demo": DEMO_SERVER}},
    "open": {"auth": "none", "servers": {"demo": DEMO_SERVER}},
}


async def test_auth_rules(start_gateway: StartGateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gw = await start_gateway(TWO_PROJECTS)
    async with httpx.AsyncClient(timeout=10) as http:
        url = gw.sse_url("demo")
        r = await http.get(url)
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["message"].startswith("missing API key")
        r = await http.get(url, headers={"Authorization": "Bearer mcpo_wrong"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        r = await http.get(url, headers={"Authorization": "Basic " + gw.keys["demo"]})
        assert r.status_code == 401
        # A valid key of another project: 404, exactly like a project that does not exist.
        r = await http.get(url, headers=gw.auth("other"))
        assert r.status_code == 404
        r2 = await http.get(gw.sse_url("nosuch"), headers=gw.auth("other"))
        assert r2.status_code == 404
        assert r.json()["error"]["code"] == r2.json()["error"]["code"]
        # An invalid key on an unknown project is still 401: nothing is revealed.
        r = await http.get(gw.sse_url("nosuch"), headers={"Authorization": "Bearer x"})
        assert r.status_code == 401
        # Unknown server of an authorised project.
        r = await http.get(gw.sse_url("demo", "nosuch"), headers=gw.auth("demo"))
        assert r.status_code == 404
        # The key in the query string is not a credential.
        r = await http.get(url + "?api_key=" + gw.keys["demo"])
        assert r.status_code == 401
        # POSTs need the key too, even with a valid session id.
        async with open_sse_session(url, gw.auth("demo"), http=http) as s:
            r = await http.post(gw.url + s.endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert r.status_code == 401
            r = await http.post(gw.url + s.endpoint, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                headers=gw.auth("other"))
            assert r.status_code == 404
            assert await s.call("ping") == {}
        # auth = "none" needs no key.
        async with open_sse_session(gw.sse_url("open"), {}, http=http) as s:
            assert await s.call("ping") == {}
    # Everything the gateway side logged (the test's own HTTP client logs URLs; it is not ours).
    logged = "\n".join(
        record.getMessage() for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    assert logged  # the gateway did log (the check below is not vacuous)
    for key in gw.keys.values():
        assert key not in logged
        assert key[5:20] not in logged


async def test_revoking_a_key_ends_its_live_sessions(start_gateway: StartGateway) -> None:
    import trio

    from config import Store

    gw = await start_gateway()
    other_key = None

    def revoke() -> None:
        nonlocal other_key
        store = Store.open(gw.gateway.config.gateway.state_dir)
        try:
            other_key = store.create_key("demo", "second")
            prefix = gw.keys["demo"][:12]
            assert store.revoke_key(prefix)
        finally:
            store.close()

    async with httpx.AsyncClient(timeout=10) as http:
        async with open_sse_session(gw.sse_url(), gw.auth(), http=http) as s:
            await s.initialize()
            revoked_at = trio.current_time()
            await trio.to_thread.run_sync(revoke)  # as `mcp-orch keys revoke` would, from outside
            with trio.fail_after(5):
                await s.ended.wait()
            assert trio.current_time() - revoked_at < 5
        r = await http.get(gw.sse_url(), headers=gw.auth())
        assert r.status_code == 401
        # Another key of the same project is unaffected.
        async with open_sse_session(gw.sse_url(), {"Authorization": f"Bearer {other_key}"},
                                    http=http) as s2:
            assert await s2.call("ping") == {}
