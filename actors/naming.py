"""The names the project endpoint exposes for the tools and prompts of many servers.

An LLM sees tool names as function names: they must match
``^[a-zA-Z0-9_-]{1,N}$`` (OpenAI, Anthropic, VS Code; ``N`` is
``gateway.max_tool_name``, 64 by default), be unique across the project, and
stay the same from one day to the next — users of other gateways complain
when names change as servers are added or when two servers' names collide.

The rule, applied to every (server, name) pair a project's servers list:

1. the candidate is ``{prefix}{separator}{name}`` (``prefix`` is the server's
   name unless its config sets ``prefix``; ``prefix = ""`` gives the bare
   name), with every character outside ``[a-zA-Z0-9_-]`` replaced by ``_``;
2. a candidate longer than ``N`` becomes a readable head, ``_`` and the first
   8 hex digits of the SHA-256 of ``server + "\\x1f" + name`` (the original
   pair, so two long names with the same head still differ);
3. candidates that two or more pairs share are *all* rewritten the same way
   (head + hash of each pair's own identity), so none of them is favoured by
   the order in which the servers answered, and the collision is logged.

The result depends only on the configured prefixes and separator and on the
set of names — not on list order, timing, or (unless a new name collides
with an existing one) on other servers. The original name is what goes upstream.

Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import attrs

log = logging.getLogger(__name__)

_OUTSIDE = re.compile(r"[^a-zA-Z0-9_-]")
VALID = re.compile(r"^[a-zA-Z0-9_-]+$")
HASH_CHARS = 8

@attrs.frozen
class ProjectSettings:
    """The project endpoint's settings (from ``[gateway]``), handed to its sessions."""

    separator: str = "__"
    max_name: int = 64
    list_timeout_s: float = 2.0


#: One name of one server: (server, original name).
Pair = tuple[str, str]


def sanitize(text: str) -> str:
    """``text`` with every character outside ``[a-zA-Z0-9_-]`` replaced by ``_``."""
    return _OUTSIDE.sub("_", text)


def digest(server: str, name: str) -> str:
    """The first 8 hex digits of SHA-256 over ``server\\x1fname``."""
    return hashlib.sha256(f"{server}\x1f{name}".encode()).hexdigest()[:HASH_CHARS]


def candidate(prefix: str, separator: str, name: str) -> str:
    """Step 1 of the rule: the prefixed, sanitized name (``_`` when it would be empty)."""
    joined = f"{prefix}{separator}{name}" if prefix else name
    return sanitize(joined) or "_"


def hashed(head: str, server: str, name: str, limit: int) -> str:
    """``head`` cut to fit, ``_``, and the pair's hash: at most ``limit`` characters."""
    keep = max(0, limit - HASH_CHARS - 1)
    return f"{head[:keep]}_{digest(server, name)}"


def exposed_names(
    pairs: Iterable[Pair], prefixes: Mapping[str, str], separator: str, limit: int
) -> dict[Pair, str]:
    """The exposed name of every (server, name) pair (see the module docstring).

    ``prefixes`` maps a server to its prefix; a server missing from it uses
    its own name.
    """
    wanted: dict[Pair, str] = {}
    for server, name in set(pairs):
        prefix = prefixes.get(server, server)
        plain = candidate(prefix, separator, name)
        wanted[(server, name)] = (
            plain if len(plain) <= limit else hashed(plain, server, name, limit)
        )
    holders: dict[str, list[Pair]] = defaultdict(list)
    for pair, name in wanted.items():
        holders[name].append(pair)
    result: dict[Pair, str] = {}
    for name, owners in holders.items():
        if len(owners) == 1:
            result[owners[0]] = name
            continue
        log.warning(
            "names %s all map to %r: each is disambiguated with a hash",
            ", ".join(f"{s}/{n}" for s, n in sorted(owners)), name,
        )
        for server, original in owners:
            result[(server, original)] = hashed(name, server, original, limit)
    return result
