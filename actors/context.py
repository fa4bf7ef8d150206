"""Correlation ids carried in context variables, for logs.

Trio copies the context into every task it spawns, so a value set in a
session actor's task is seen by everything that session does; the log
formatter reads these to tag each line with its session and request.
"""

from __future__ import annotations

import contextvars

SESSION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
