"""Requests of the stateless revision 2026-07-28: ``_meta`` in every request, headers that mirror it.

No session, no ``initialize``: each POST carries ``MCP-Protocol-Version``,
``Mcp-Method`` and (for ``tools/call``, ``resources/read``, ``prompts/get``)
``Mcp-Name``, and its ``params._meta`` names the version, the client's
capabilities and the client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx

from tests.support.streamable import ACCEPT

VERSION = "2026-07-28"
ALL_CAPS: dict[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {}}


def meta(caps: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The per-request ``_meta`` (all client capabilities unless ``caps`` says otherwise)."""
    return {"io.modelcontextprotocol/protocolVersion": VERSION,
            "io.modelcontextprotocol/clientCapabilities": ALL_CAPS if caps is None else caps,
            "io.modelcontextprotocol/clientInfo": {"name": "tests", "version": "0"}, **extra}


def request(msg_id: Any, method: str, params: dict[str, Any] | None = None, *,
            caps: dict[str, Any] | None = None, **meta_extra: Any) -> dict[str, Any]:
    """A 2026-07-28 request: ``params`` plus ``_meta``."""
    return {"jsonrpc": "2.0", "id": msg_id, "method": method,
            "params": {**(params or {}), "_meta": meta(caps, **meta_extra)}}


def headers_for(auth: Mapping[str, str], message: dict[str, Any], **override: str
                ) -> dict[str, str]:
    """The headers that agree with ``message``, then ``override`` (to make them disagree)."""
    h = {**auth, "Accept": ACCEPT, "Content-Type": "application/json",
         "MCP-Protocol-Version": VERSION, "Mcp-Method": message["method"]}
    params = message.get("params") or {}
    target = params.get("uri") if message["method"] == "resources/read" else params.get("name")
    if isinstance(target, str):
        h["Mcp-Name"] = target
    h.update(override)
    return h


async def post(http: httpx.AsyncClient, url: str, auth: Mapping[str, str],
               message: dict[str, Any], **override: str) -> httpx.Response:
    """POST one request and read its whole answer."""
    return await http.post(url, headers=headers_for(auth, message, **override),
                           content=json.dumps(message))


@asynccontextmanager
async def stream(http: httpx.AsyncClient, url: str, auth: Mapping[str, str],
                 message: dict[str, Any], **override: str) -> AsyncIterator[httpx.Response]:
    """POST one request and read its answer as it streams; leaving closes the response stream."""
    async with http.stream("POST", url, headers=headers_for(auth, message, **override),
                           content=json.dumps(message)) as response:
        yield response
