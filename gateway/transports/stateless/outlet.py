"""The outlet of a 2026-07-28 request's session: its streams, the request's ``logLevel``
opt-in, and its multi-round-trip (MRTR) state.

A 2026-07-28 request runs as a short-lived session of its own. What only this
revision needs — which log messages the request asked for (SEP-2577), and the
exchange parked while the client answers an ``InputRequiredResult``
(SEP-2322) — lives here, with the session's streams, rather than in the
session actor, which knows no revision.
"""

from __future__ import annotations

from typing import Any

import attrs

from actors import StreamSet
from actors.session import LOG_LEVELS
from upstream import jsonrpc


def wanted_log(message: jsonrpc.Message, threshold: str | None) -> bool:
    """Whether a message passes a request's ``logLevel`` opt-in (without one, no
    ``notifications/message`` reaches it)."""
    if message.get("method") != "notifications/message":
        return True
    if threshold not in LOG_LEVELS:
        return False
    params = message.get("params")
    level = params.get("level") if isinstance(params, dict) else None
    rank = LOG_LEVELS.index(level) if level in LOG_LEVELS else len(LOG_LEVELS) - 1
    return rank >= LOG_LEVELS.index(threshold)  # type: ignore[arg-type]


@attrs.define(eq=False)
class StatelessStreams(StreamSet):
    """A :class:`~actors.streams.StreamSet` that drops the log messages the request did
    not opt in to, and holds the request's MRTR state."""

    #: The ``logLevel`` the latest request of this exchange opted in to.
    log_level: str | None = None
    #: How many ``InputRequiredResult`` rounds the call has been through.
    mrtr_round: int = 0
    #: The exchange waiting for the client's ``inputResponses``
    #: (an :class:`~gateway.transports.stateless.endpoint.Exchange`), if any.
    parked: Any = None

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None) -> bool:
        if not wanted_log(message, self.log_level):
            return True
        return super().deliver(message, related)
