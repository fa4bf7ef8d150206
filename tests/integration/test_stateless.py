"""MCP 2026-07-28 (stateless, per-request ``_meta``, MRTR) through the gateway, on the wire.

The upstreams are stateful stdio servers; what is tested is the bridge: header
and ``_meta`` checks, ``server/discover``, result decoration, multi-round-trip
requests with tamper-proof ``requestState``, parked calls that expire,
``subscriptions/listen`` and per-request log opt-in.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from tests.conftest import StartGateway
from tests.support import CONFORMANCE_SERVER, DEMO_SERVER, RunningGateway, SseReader, sse_messages
from tests.support import stateless as wire
from tests.support.stateless import VERSION, request
from tests.support.streamable import ACCEPT


def projects() -> dict[str, Any]:
    return {"p": {"servers": {"conf": CONFORMANCE_SERVER, "demo": DEMO_SERVER}}}


def url(gw: RunningGateway, server: str = "conf") -> str:
    return gw.mcp_url("p", server)


def headers_for(gw: RunningGateway, message: dict[str, Any], **override: str) -> dict[str, str]:
    return wire.headers_for(gw.auth("p"), message, **override)


async def post(http: httpx.AsyncClient, gw: RunningGateway, message: dict[str, Any],
               server: str = "conf", **override: str) -> httpx.Response:
    return await wire.post(http, url(gw, server), gw.auth("p"), message, **override)


def stateless_sessions(gw: RunningGateway) -> list[Any]:
    return [s for s in gw.gateway.registry.sessions.values() if s.transport == "stateless"]


async def settle(gw: RunningGateway, server: str = "conf") -> None:
    """Wait until no stateless session is left and the upstream has nothing in flight."""
    with trio.fail_after(5):
        while True:
            supervisor = gw.gateway.server("p", server)[1]
            upstream = supervisor.upstream
            if not stateless_sessions(gw) and (upstream is None or upstream.in_flight == 0):
                return
            await trio.sleep(0.02)


async def test_discover_and_results_carry_the_revision_fields(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects())
    async with httpx.AsyncClient(timeout=30) as http:
        r = await post(http, gw, request(1, "server/discover"))
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert VERSION in result["supportedVersions"] and "2025-11-25" in result["supportedVersions"]
        assert result["capabilities"]["tools"] == {"listChanged": True}
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == (
            "mcp-conformance-test-server")
        assert (result["resultType"], result["ttlMs"], result["cacheScope"]) == (
            "complete", 0, "private")

        r = await post(http, gw, request(2, "tools/list"))
        listed = r.json()["result"]
        assert "test_simple_text" in {t["name"] for t in listed["tools"]}
        assert (listed["resultType"], listed["ttlMs"], listed["cacheScope"]) == (
            "complete", 0, "private")

        r = await post(http, gw, request("three", "tools/call",
                                          {"name": "test_simple_text", "arguments": {}}))
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert body["id"] == "three"
        assert body["result"]["content"][0]["text"] == "This is a simple text response for testing."
        assert body["result"]["resultType"] == "complete"
        assert "ttlMs" not in body["result"]  # tool results are not cacheable

        # Resource not found: -32002 upstream, -32602 in 2026-07-28 (SEP-2164).
        r = await post(http, gw, request(4, "resources/read", {"uri": "test://nope"}))
        assert r.json()["error"]["code"] == -32602
    await settle(gw)


async def test_bad_requests_get_the_revision_errors_and_change_nothing(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(projects())
    async with httpx.AsyncClient(timeout=30) as http:
        no_meta = {"jsonrpc": "2.0", "id": 11, "method": "tools/list", "params": {}}
        r = await post(http, gw, no_meta)
        assert (r.status_code, r.json()["id"], r.json()["error"]["code"]) == (400, 11, -32602)

        no_caps = request(12, "tools/list")
        del no_caps["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"]
        r = await post(http, gw, no_caps)
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32602)
        assert "clientCapabilities" in r.json()["error"]["message"]

        unsupported = request(13, "tools/list")
        unsupported["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
        r = await post(http, gw, unsupported, **{"MCP-Protocol-Version": "2099-01-01"})
        error = r.json()["error"]
        assert (r.status_code, error["code"]) == (400, -32022)
        assert error["data"] == {"supported": [VERSION], "requested": "2099-01-01"}

        r = await post(http, gw, unsupported)  # header says 2026-07-28, _meta says otherwise
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32020)

        call = request(14, "tools/call", {"name": "test_simple_text", "arguments": {}})
        r = await post(http, gw, call, **{"Mcp-Method": "tools/list"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32020)
        r = await post(http, gw, call, **{"Mcp-Name": "test_image_content"})
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32020)

        for removed in ("initialize", "ping", "logging/setLevel", "resources/subscribe"):
            r = await post(http, gw, request(15, removed))
            assert (r.status_code, r.json()["error"]["code"], r.json()["id"]) == (404, -32601, 15)
        r = await post(http, gw, request(16, "no/such/method"))
        assert (r.status_code, r.json()["error"]["code"]) == (404, -32601)

        batch = [request(17, "tools/list"), request(18, "tools/list")]
        r = await http.post(url(gw), headers=headers_for(gw, batch[0]), content=json.dumps(batch))
        assert r.status_code == 400

        bad_inputs = request(19, "tools/call", {
            "name": "test_input_required_result_elicitation", "arguments": {},
            "inputResponses": None})
        r = await post(http, gw, bad_inputs)
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32602)

        r = await http.get(url(gw), headers={**gw.auth("p"), "Accept": ACCEPT,
                                             "MCP-Protocol-Version": VERSION})
        assert r.status_code == 405
    assert not stateless_sessions(gw)
    await settle(gw)


async def test_mrtr_round_trip_with_tamper_proof_state(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects())
    tool = {"name": "test_input_required_result_elicitation", "arguments": {}}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await post(http, gw, request(1, "tools/call", tool))
        first = r.json()["result"]
        assert first["resultType"] == "input_required"
        # The upstream asked with request id "user_name": that is the key the client sees.
        assert first["inputRequests"]["user_name"]["method"] == "elicitation/create"
        assert first["inputRequests"]["user_name"]["params"]["message"] == "What is your name?"
        state = first["requestState"]
        answer = {"user_name": {"action": "accept", "content": {"name": "Ada"}}}

        body, mac = state.split(".")
        tampered = body + "." + ("0" if mac[0] != "0" else "1") + mac[1:]
        r = await post(http, gw, request(2, "tools/call", {
            **tool, "inputResponses": answer, "requestState": tampered}))
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32602)
        assert "integrity" in r.json()["error"]["message"]

        other = {"name": "test_input_required_result_request_state", "arguments": {}}
        r = await post(http, gw, request(3, "tools/call", {
            **other, "inputResponses": answer, "requestState": state}))
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32602)

        # Extra keys are ignored; the parked upstream call gets its answer and finishes.
        r = await post(http, gw, request(4, "tools/call", {
            **tool, "requestState": state,
            "inputResponses": {**answer, "unrelated": {"action": "decline"}}}))
        done = r.json()
        assert done["id"] == 4
        assert done["result"]["content"][0]["text"] == "Hello, Ada!"
        assert done["result"]["resultType"] == "complete"

        r = await post(http, gw, request(5, "tools/call", {
            **tool, "inputResponses": answer, "requestState": state}))
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32602)
        assert "no longer waiting" in r.json()["error"]["message"]
    await settle(gw)


async def test_questions_asked_together_are_one_round(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects())
    tool = {"name": "test_input_required_result_multiple_inputs", "arguments": {}}
    async with httpx.AsyncClient(timeout=30) as http:
        first = (await post(http, gw, request(1, "tools/call", tool))).json()["result"]
        asked = first["inputRequests"]
        assert {k: v["method"] for k, v in asked.items()} == {
            "user_name": "elicitation/create", "greeting": "sampling/createMessage",
            "client_roots": "roots/list"}
        partial = {"user_name": {"action": "accept", "content": {"name": "Ada"}}}
        second = (await post(http, gw, request(2, "tools/call", {
            **tool, "inputResponses": partial, "requestState": first["requestState"]})
        )).json()["result"]
        # What was not answered is asked again, under a new state.
        assert second["resultType"] == "input_required"
        assert set(second["inputRequests"]) == {"greeting", "client_roots"}
        assert second["requestState"] != first["requestState"]
        rest = {"greeting": {"role": "assistant", "content": {"type": "text", "text": "Hi"},
                             "model": "m", "stopReason": "endTurn"},
                "client_roots": {"roots": []}}
        done = (await post(http, gw, request(3, "tools/call", {
            **tool, "inputResponses": rest, "requestState": second["requestState"]}))).json()
        assert done["result"]["content"][0]["text"] == "Hi, Ada!"
    await settle(gw)


async def test_a_parked_call_nobody_resumes_is_cancelled(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects(), input_wait_s=0.5)
    tool = {"name": "test_input_required_result_elicitation", "arguments": {}}
    async with httpx.AsyncClient(timeout=30) as http:
        first = (await post(http, gw, request(1, "tools/call", tool))).json()["result"]
        assert len(stateless_sessions(gw)) == 1
        upstream = gw.gateway.server("p", "conf")[1].upstream
        assert upstream.in_flight == 1
        await settle(gw)  # within 5 s: the wait expired, the upstream call was cancelled
        r = await post(http, gw, request(2, "tools/call", {
            **tool, "requestState": first["requestState"],
            "inputResponses": {"user_name": {"action": "accept", "content": {"name": "x"}}}}))
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32602)


async def test_undeclared_capability_is_32021(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects())
    async with httpx.AsyncClient(timeout=30) as http:
        r = await post(http, gw, request(1, "tools/call", {
            "name": "test_missing_capability", "arguments": {}}, caps={}))
        error = r.json()["error"]
        assert (r.status_code, error["code"]) == (400, -32021)
        assert error["data"] == {"requiredCapabilities": {"sampling": {}}}

        # Declared elicitation only: the server's fallback question is the one asked.
        r = await post(http, gw, request(2, "tools/call", {
            "name": "test_input_required_result_capabilities", "arguments": {}},
            caps={"sampling": {}}))
        asked = r.json()["result"]["inputRequests"]
        assert [v["method"] for v in asked.values()] == ["sampling/createMessage"]
    # The parked fallback waits for a retry that never comes; that is not a leak.
    assert len(stateless_sessions(gw)) == 1


async def test_log_messages_only_with_a_log_level(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects())
    tool = {"name": "test_logging_tool", "arguments": {}}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await post(http, gw, request(1, "tools/call", tool))
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["result"]["content"][0]["text"] == "logged"

        r = await post(http, gw, request(2, "tools/call", tool,
                                         **{"io.modelcontextprotocol/logLevel": "info"}))
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [data for _, data in sse_messages(r.text)]
        logs = [e for e in events if e and e.get("method") == "notifications/message"]
        assert [e["params"]["data"] for e in logs] == ["logging tool started",
                                                      "logging tool finished"]
        assert events[-1]["id"] == 2 and events[-1]["result"]["content"][0]["text"] == "logged"

        r = await post(http, gw, request(3, "tools/call", tool,
                                         **{"io.modelcontextprotocol/logLevel": "error"}))
        assert r.headers["content-type"].startswith("application/json")
    await settle(gw)


async def test_subscriptions_listen_delivers_what_was_asked_for(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway(projects())
    async with httpx.AsyncClient(timeout=30) as http:
        listen_tools = request("L1", "subscriptions/listen",
                               {"notifications": {"toolsListChanged": True}})
        listen_prompts = request("L2", "subscriptions/listen",
                                 {"notifications": {"promptsListChanged": True}})
        async with wire.stream(http, url(gw), gw.auth("p"), listen_tools) as s1, \
                wire.stream(http, url(gw), gw.auth("p"), listen_prompts) as s2:
            tools_only, prompts_only = SseReader(s1), SseReader(s2)
            ack = (await tools_only.until(1))[0]
            await prompts_only.until(1)
            assert ack["method"] == "notifications/subscriptions/acknowledged"
            assert ack["params"]["notifications"] == {"toolsListChanged": True}
            assert ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
            trigger = request(9, "tools/call", {"name": "test_trigger_tool_change",
                                                "arguments": {}})
            assert (await post(http, gw, trigger)).status_code == 200
            changed = (await tools_only.until(2))[1]
            assert changed["method"] == "notifications/tools/list_changed"
            assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "L1"
            prompt_trigger = request(10, "tools/call", {"name": "test_trigger_prompt_change",
                                                        "arguments": {}})
            assert (await post(http, gw, prompt_trigger)).status_code == 200
            # The prompts-only stream never saw the tools change.
            assert [e["method"] for e in await prompts_only.until(2)] == [
                "notifications/subscriptions/acknowledged", "notifications/prompts/list_changed"]

        # Resource subscriptions ride the listen stream too (demo server: "touch").
        uri = "demo://greeting"
        listen = request("L3", "subscriptions/listen",
                         {"notifications": {"resourceSubscriptions": [uri]}})
        async with wire.stream(http, url(gw, "demo"), gw.auth("p"), listen) as s3:
            got = SseReader(s3)
            assert (await got.until(1))[0]["params"]["notifications"] == {
                "resourceSubscriptions": [uri]}
            touch = request(11, "tools/call", {"name": "touch", "arguments": {"uri": uri}})
            assert (await post(http, gw, touch, server="demo")).status_code == 200
            updated = (await got.until(2))[1]
            assert updated["method"] == "notifications/resources/updated"
            assert updated["params"]["uri"] == uri
    await settle(gw)
    await settle(gw, "demo")
    assert gw.gateway.server("p", "demo")[1].subscriptions == {}


async def test_arguments_marked_for_headers_must_match_them(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects())
    call = request(1, "tools/call", {"name": "test_header_param", "arguments": {"region": "eu"}})
    async with httpx.AsyncClient(timeout=30) as http:
        r = await post(http, gw, call, **{"Mcp-Param-Region": "eu"})
        assert r.json()["result"]["content"][0]["text"] == "region: eu"
        r = await post(http, gw, call, **{"mcp-param-region": "=?base64?ZXU=?="})
        assert r.json()["result"]["content"][0]["text"] == "region: eu"
        for bad in ("us", "=?base64?ZXU?=", "=?base64?Z!U=?="):
            r = await post(http, gw, call, **{"Mcp-Param-Region": bad})
            assert (r.status_code, r.json()["error"]["code"]) == (400, -32020), bad
        r = await post(http, gw, call)  # the argument is in the body, its header is not
        assert (r.status_code, r.json()["error"]["code"]) == (400, -32020)
        # Mcp-Name may be Base64-encoded as well.
        r = await post(http, gw, call, **{"Mcp-Param-Region": "eu",
                                          "Mcp-Name": "=?base64?dGVzdF9oZWFkZXJfcGFyYW0=?="})
        assert r.status_code == 200, r.text
    await settle(gw)


async def test_an_upstream_that_is_down_gets_a_clear_error_not_a_hang(
    start_gateway: StartGateway,
) -> None:
    # A request waits min(5 s, request_timeout_s) for a server that is down.
    broken = {**DEMO_SERVER, "env": {"DEMO_SERVER_EXIT_AT_START": "3"}, "request_timeout_s": 1}
    gw = await start_gateway({"p": {"servers": {"demo": broken}}})
    async with httpx.AsyncClient(timeout=30) as http:
        with trio.fail_after(10):
            for msg in (request(1, "server/discover"),
                        request(2, "tools/call", {"name": "echo", "arguments": {"text": "x"}}),
                        request(3, "tools/list")):
                r = await post(http, gw, msg, server="demo")
                body = r.json()
                assert body["id"] == msg["id"]
                assert body["error"]["code"] in (-32000, -32002), body
                assert "demo" in body["error"]["message"]
    assert not stateless_sessions(gw)


async def test_an_idle_listen_stream_gets_keepalive_comments(start_gateway: StartGateway) -> None:
    gw = await start_gateway(projects(), keepalive_s=0.2)
    listen = request("L1", "subscriptions/listen", {"notifications": {"toolsListChanged": True}})
    async with httpx.AsyncClient(timeout=30) as http:
        async with wire.stream(http, url(gw), gw.auth("p"), listen) as s:
            assert s.status_code == 200
            pings = sum(c.line == ": ping" for c in await SseReader(s).comments(1.0))
            assert pings >= 2
    await settle(gw)
