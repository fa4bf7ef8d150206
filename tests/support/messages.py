"""JSON-RPC messages as the tests send them, and the error a failed call raises."""

from __future__ import annotations

from typing import Any


def rpc(msg_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request (``params`` left out when ``None``)."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": msg_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def cancelled(request_id: Any, reason: str | None = None) -> dict[str, Any]:
    """``notifications/cancelled`` for the client's request ``request_id``."""
    params: dict[str, Any] = {"requestId": request_id}
    if reason is not None:
        params["reason"] = reason
    return notification("notifications/cancelled", params)


def client_info() -> dict[str, str]:
    return {"name": "mcp-orch-tests", "version": "0"}


class RpcError(Exception):
    """A JSON-RPC error response to a call; ``code`` and the whole ``error`` object."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.error = error
