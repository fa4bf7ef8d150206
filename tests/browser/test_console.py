"""The operator console in a real browser: sign in, watch a restart, call a tool, keys.

Each scenario is a plain function driving chromium with Playwright's sync API
in a worker thread; the gateway is served by the test's trio loop. What the
page shows is checked against what the gateway and the store really did.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support import DEMO_SERVER, Recording

ADMIN = "console-test-admin-token-0123456789"


def _console_scenario(open_page: Any, url: str, shots: Path, docs_shot: Path | None) -> dict:
    seen: dict[str, Any] = {}
    with open_page() as page:
        page.goto(f"{url}/console")
        # A wrong token is refused, and nothing is signed in.
        page.fill("#token", "not-the-token")
        page.click("#sign-in-form button[type=submit]")
        page.wait_for_selector("#sign-in-error:has-text('not the admin token')")
        page.screenshot(path=str(shots / "01-wrong-token.png"))
        assert page.is_hidden("#nav")

        page.fill("#token", ADMIN)
        page.click("#sign-in-form button[type=submit]")
        row = page.locator("tr[data-server='demo/demo']")
        row.locator("[data-state=running]").wait_for()
        assert page.is_visible("tr[data-server='demo/other'] [data-state=running]")
        cookies = page.context.cookies()
        session_cookie = next(c for c in cookies if c["name"] == "mcpo_console")
        seen["cookie"] = session_cookie
        assert ADMIN not in page.content()
        page.screenshot(path=str(shots / "02-overview.png"))

        # Kill the upstream and watch the page show it restart with a new pid.
        pid = int(row.locator("td.pid").inner_text())
        seen["old_pid"] = pid
        os.kill(pid, signal.SIGKILL)
        page.wait_for_function(
            """(old) => { const r = document.querySelector("tr[data-server='demo/demo']");
                          return r && r.querySelector('.restarts').textContent === '1'
                            && r.querySelector('[data-state=running]')
                            && r.querySelector('td.pid').textContent !== String(old); }""",
            arg=pid, timeout=20_000)
        seen["new_pid"] = int(row.locator("td.pid").inner_text())
        page.screenshot(path=str(shots / "03-restarted.png"))

        # The playground: echo through the gateway's own MCP path.
        page.click("tr[data-server='demo/demo'] a")
        tool = page.locator("details.tool[data-tool=echo]")
        tool.locator("summary").click()
        tool.locator("#arg-text").fill("hello from the console")
        tool.locator("button[type=submit]").click()
        tool.locator("pre.result:has-text('hello from the console')").wait_for()
        seen["timing"] = tool.locator(".timing").inner_text()
        page.wait_for_selector("#stderr")
        page.screenshot(path=str(shots / "04-playground.png"), full_page=True)

        # Keys: create (shown once), then revoke.
        page.goto(f"{url}/console#/keys")
        page.select_option("#key-project", "demo")
        page.fill("#key-name", "browser-key")
        page.select_option("#key-expiry", "3600")
        page.click("#create-key button[type=submit]")
        created = page.locator("#created-key")
        created.wait_for()
        seen["key"] = created.inner_text().strip()
        prefix = seen["key"][:12]
        key_row = page.locator(f"tr[data-prefix='{prefix}']")
        key_row.wait_for()
        page.screenshot(path=str(shots / "05-key-created.png"))
        page.on("dialog", lambda dialog: dialog.accept())
        key_row.locator("button.revoke").click()
        key_row.locator(".key-state:has-text('revoked')").wait_for()
        page.screenshot(path=str(shots / "06-key-revoked.png"))

        page.goto(f"{url}/console#/")
        page.locator("tr[data-server='demo/demo'] [data-state=running]").wait_for()
        if docs_shot is not None:
            page.set_viewport_size({"width": 1100, "height": 360})
            page.screenshot(path=str(docs_shot))

        page.goto(f"{url}/console#/audit")
        page.fill("#actor", "console")
        page.click("#audit-filter button[type=submit]")
        page.locator("#audit td:has-text('key.revoke')").wait_for()
        seen["audit"] = page.locator("#audit tbody").inner_text()
        page.click("#sign-out")
        page.wait_for_selector("#sign-in:not([hidden])")
    return seen


async def test_console_in_a_browser(
    start_gateway: Any, browser_page: Any, artifacts: Path, tmp_path: Path
) -> None:
    recording = Recording(tmp_path / "demo.jsonl")
    gw = await start_gateway(
        {"demo": {"servers": {
            "demo": recording.server({**DEMO_SERVER, "restart": {"backoff_initial_s": 0.2}}),
            "other": {**DEMO_SERVER, "env": {"SECRET_TOKEN": "hunter2"}}}}},
        admin_token=ADMIN)
    docs = os.environ.get("MCP_ORCH_DOCS_SCREENSHOT")
    seen = await trio.to_thread.run_sync(
        _console_scenario, browser_page, gw.url, artifacts, Path(docs) if docs else None)

    cookie = seen["cookie"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console"
    # The restart the page showed is the supervisor's.
    supervisor = gw.gateway.servers[("demo", "demo")]
    assert supervisor.restarts == 1 and supervisor.pid == seen["new_pid"] != seen["old_pid"]
    # The playground's call reached the upstream, through a console session.
    calls = recording.tool_calls("echo")
    assert calls and calls[-1]["params"]["arguments"] == {"text": "hello from the console"}
    assert "done in" in seen["timing"]
    # The key the page created was real, and the page's revoke revoked it.
    keys = {k.prefix: k for k in gw.gateway.store.list_keys("demo")}
    key = keys[seen["key"][:12]]
    assert key.revoked_at is not None and key.expires_at is not None
    actions = {(e.actor, e.action) for e in gw.gateway.store.audit_log(50)}
    assert {("console", "key.create"), ("console", "key.revoke"), ("console", "console.sign_in"),
            ("console", "tool.call")} <= actions
    assert "key.revoke" in seen["audit"]


async def test_console_api_needs_session_and_csrf(start_gateway: Any) -> None:
    gw = await start_gateway(admin_token=ADMIN)
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        assert (await http.get("/console/api/overview")).status_code == 401
        assert (await http.post("/console/login", json={"token": "wrong"})).status_code == 401
        r = await http.post("/console/login", json={"token": ADMIN})
        assert r.status_code == 200
        csrf = r.json()["csrf"]
        set_cookie = r.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert (await http.get("/console/api/overview")).json()["projects"]["demo"]
        # A change without the CSRF token, or with a wrong one, is refused; nothing changes.
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            r = await http.post("/console/api/keys", json={"project": "demo"}, headers=headers)
            assert r.status_code == 403
        assert len(gw.gateway.store.list_keys("demo")) == 1
        # A foreign Origin is refused even with the cookie and the token.
        r = await http.post("/console/api/keys", json={"project": "demo"},
                            headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
        assert r.status_code == 403
        # So is another loopback page (same site to the cookie, not the console), even
        # for a read that starts upstream work.
        other = {"Origin": "http://localhost:5173", "Sec-Fetch-Site": "same-site"}
        r = await http.get("/console/api/servers/demo/demo/tools", headers=other)
        assert r.status_code == 403
        r = await http.get("/console/api/servers/demo/demo/tools",
                           headers={"Sec-Fetch-Site": "cross-site"})
        assert r.status_code == 403
        r = await http.post("/console/api/keys", json={"project": "demo"},
                            headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201
        assert len(gw.gateway.store.list_keys("demo")) == 2
        # Disable goes through the store like the admin API: the server stops.
        r = await http.post("/console/api/servers/demo/demo/disable", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        assert ("demo", "demo") not in gw.gateway.servers
        r = await http.post("/console/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200
        assert (await http.get("/console/api/overview")).status_code == 401
