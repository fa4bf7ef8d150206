"""A wrong or missing key, seen by an OAuth-aware client; who may read /metrics."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import StartGateway
from tests.support import demo_projects

ADMIN = "fault-admin-token-0123456789"


async def test_401_says_why_and_oauth_endpoints_answer_in_oauth_shape(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway()
    async with httpx.AsyncClient(timeout=10) as http:
        wrong = await http.get(gw.sse_url(), headers={"Authorization": "Bearer mcpo_wrong"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == (
            'Bearer realm="mcp-orch", error="invalid_token", '
            'error_description="invalid API key for project demo"')
        missing = await http.post(gw.url + "/projects/demo/servers/demo/mcp", json={})
        assert missing.status_code == 401
        challenge = missing.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="mcp-orch", error_description="')
        assert "API key of project demo" in challenge and "error=" not in challenge
        # What MCP Inspector's web UI does next: discovery, then dynamic registration.
        for method, path, status, error in [
            ("GET", "/.well-known/oauth-protected-resource/projects/demo/servers/demo/mcp",
             404, "not_found"),
            ("GET", "/.well-known/oauth-authorization-server", 404, "not_found"),
            ("POST", "/register", 400, "invalid_client_metadata"),
            ("GET", "/authorize?response_type=code&client_id=x", 400, "invalid_request"),
            ("POST", "/token", 400, "invalid_request"),
        ]:
            r = await http.request(method, gw.url + path, json={} if method == "POST" else None)
            assert r.status_code == status, (path, r.status_code, r.text)
            body = r.json()
            assert body["error"] == error, (path, body)
            assert "takes API keys (Authorization: Bearer <key>), not OAuth" in body[
                "error_description"]
            assert "mcp-orch keys create --project P" in body["error_description"]


@pytest.mark.parametrize("mode", ["none", "admin"])
async def test_metrics_auth(start_gateway: StartGateway, mode: str) -> None:
    gw = await start_gateway(demo_projects(), admin_token=ADMIN, metrics_auth=mode)
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/metrics", "/admin/openapi.json"):
            anonymous = await http.get(gw.url + path)
            project_key = await http.get(gw.url + path, headers=gw.auth())
            admin = await http.get(gw.url + path, headers={"Authorization": f"Bearer {ADMIN}"})
            assert admin.status_code == 200, (path, admin.text)
            if mode == "none":
                assert anonymous.status_code == 200 and project_key.status_code == 200
            else:
                assert anonymous.status_code == 401, (path, anonymous.text)
                assert project_key.status_code == 401
                assert "admin token" in anonymous.json()["error"]["message"]
        assert "mcp_orch_sessions_active" in admin.text or "openapi" in admin.text
