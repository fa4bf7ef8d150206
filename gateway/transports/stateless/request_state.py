"""Tamper-proof ``requestState`` tokens for multi-round-trip requests (MCP 2026-07-28, SEP-2322).

When a stateful upstream asks the client something (sampling, elicitation,
roots) while serving a 2026-07-28 request, the gateway answers the client with
an ``InputRequiredResult`` and keeps the upstream call waiting. The
``requestState`` it hands out names that waiting call and the round it is in,
and is bound to the request (method and tool/prompt/resource name) and to the
API key that made it: a client that edits it, replays an old round, or uses it
with another request or key gets an error (spec, MRTR: servers MUST reject
state that fails integrity verification).

The key is random per gateway process: parked calls do not survive a restart,
so neither need their tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

import attrs


class BadRequestState(Exception):
    """The token was altered, is malformed, or was made for another request."""


@attrs.frozen
class RequestState:
    """What a ``requestState`` token says: which parked call, which round, for what."""

    session_id: str
    round: int
    binding: str


def binding_of(method: str, name: str | None, key_hash: str | None) -> str:
    """A digest of what a token is valid for: the request's method and target, and the key."""
    text = "\x1f".join((method, name or "", key_hash or ""))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@attrs.define
class StateSigner:
    """Signs and verifies ``requestState`` tokens with a per-process secret."""

    key: bytes = attrs.field(factory=lambda: secrets.token_bytes(32))

    def _mac(self, payload: bytes) -> str:
        return hmac.new(self.key, payload, hashlib.sha256).hexdigest()

    def sign(self, state: RequestState) -> str:
        payload = json.dumps(
            [state.session_id, state.round, state.binding], separators=(",", ":")
        ).encode()
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._mac(payload)}"

    def verify(self, token: object) -> RequestState:
        """The state a token carries; :class:`BadRequestState` unless it is intact."""
        if not isinstance(token, str) or token.count(".") != 1:
            raise BadRequestState("requestState is not one this gateway issued")
        body, mac = token.split(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (ValueError, TypeError):
            raise BadRequestState("requestState is not one this gateway issued") from None
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise BadRequestState("requestState failed integrity verification")
        session_id, round_, binding = json.loads(payload)
        return RequestState(session_id, round_, binding)


def session_named_by(token: object) -> str | None:
    """The session id a token names, read without verifying it (``None`` if it names
    none): another instance routes the retry to the session's owner by it, and the
    owner verifies the token, whose secret only it holds."""
    if not isinstance(token, str) or token.count(".") != 1:
        return None
    body = token.split(".")[0]
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return None
    if isinstance(payload, list) and payload and isinstance(payload[0], str):
        return payload[0]
    return None
