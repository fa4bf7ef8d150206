"""The project session: one client session spanning every enabled server of a project.

Served at ``/projects/{project}/mcp`` (and ``…/sse``, ``…/ws``) by the same
transports as a per-server session; only the routing differs, so this is a
:class:`~actors.session.Session` subclass overriding its hooks (``_attach``,
``_detach``, ``_start_private_upstream``, ``_notify_upstream``,
``_initialize``, ``_forward``, ``describe``, ``tool_headers``).

* Each server is a :class:`Member`: its shared supervisor, or a private one
  (``isolation = "session"``) started in the session's nursery on first use
  with the client's capabilities. The session attaches to each supervisor
  through a :class:`ServerPeer` with the session's id, and passes that peer to
  ``Upstream.call``, so progress and server→client requests (sampling,
  elicitation, roots) of a request come back through the server's peer, which
  labels log messages with the server, maps resource URIs and turns
  ``list_changed`` into one coalesced project notification.
* ``initialize`` / ``server/discover``: the union of the servers'
  capabilities, a ``serverInfo`` naming the project, each server's
  ``instructions`` under a ``## <server>`` heading.
* Lists fan out to every server in parallel, each under its own deadline
  (``gateway.list_timeout_s``); a server that fails, is restarting or is slow
  is left out of that answer with a ``notifications/message`` warning.
  Pagination merges the servers' cursors into one opaque cursor.
* Tools and prompts are exposed under the names of :mod:`actors.naming`;
  calls go to the owning server under the original name. Resource URIs stay
  as they are unless two servers list the same one; that one is exposed as
  ``mcp-orch://<server>/<percent-encoded URI>``. Reads, subscriptions and
  completions are routed by reference.
* Tool policy (``actors/policy.py``): the project's ``allow``/``deny``/
  ``read_only`` and the key's ``allow`` list decide which tools are listed
  and may be called — a hidden tool is "unknown tool", as if it did not
  exist, and each refused call is logged with the key's prefix. A tool's
  ``rename`` is its exposed name; ``description``/``title`` overrides are
  applied to the listing. ``max_concurrent`` bounds the calls in flight at
  each server across the project's sessions (``RATE_LIMITED`` beyond it).
  A policy change (:meth:`ProjectSession.set_policy`) is a tools list change.
* A server's ``list_changed``, restart, failure or removal sends one
  ``list_changed`` of each kind to the client (duplicates arriving together
  are coalesced).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import trio

from config import ServerConfig
from config.models import ToolPolicy
from upstream import errors, jsonrpc

from .naming import ProjectSettings, candidate
from .policy import Access, names_with_renames, override_tool, renames
from .session import READY_WAIT_S, Session, negotiate_version
from .supervisor import ServerSupervisor
from .upstream import GATEWAY_INFO, Upstream, UpstreamError

log = logging.getLogger(__name__)

#: List method → (capability, result key).
LISTS = {
    "tools/list": ("tools", "tools"),
    "prompts/list": ("prompts", "prompts"),
    "resources/list": ("resources", "resources"),
    "resources/templates/list": ("resources", "resourceTemplates"),
}
#: ``list_changed`` notification → the capability it is about.
CHANGED = {
    "notifications/tools/list_changed": "tools",
    "notifications/prompts/list_changed": "prompts",
    "notifications/resources/list_changed": "resources",
}
CHANGED_BY_KIND = {kind: method for method, kind in CHANGED.items()}
#: The scheme of a resource URI two servers share, rewritten to say whose it is.
SCHEME = "mcp-orch"
LOGGER = "mcp-orch"
#: Pages of one server followed when the session refreshes its name table.
MAX_PAGES = 20
#: How long list_changed notifications arriving together are gathered into one.
COALESCE_S = 0.05


class InvalidCursor(Exception):
    """A list cursor the gateway did not issue."""


class LeftOut(Exception):
    """A server could not answer a list request; the text says why."""


def encode_cursor(cursors: Mapping[str, str]) -> str:
    """The project's cursor: each server still paging, with that server's own cursor."""
    raw = json.dumps(dict(cursors), sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: A merged cursor holds one short cursor per server; anything longer is not one of ours.
MAX_CURSOR = 16_384


def decode_cursor(cursor: Any) -> dict[str, str]:
    """The inverse of :func:`encode_cursor`; :class:`InvalidCursor` for anything else."""
    if not isinstance(cursor, str):
        raise InvalidCursor("the cursor must be a string")
    if len(cursor) > MAX_CURSOR:
        raise InvalidCursor(f"invalid cursor: longer than {MAX_CURSOR} characters")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise InvalidCursor(f"invalid cursor: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidCursor("invalid cursor")
    return value


def merge_capabilities(into: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``more`` into ``into``: objects merge, booleans OR, other values keep
    the first seen."""
    for key, value in more.items():
        have = into.get(key)
        if isinstance(have, dict) and isinstance(value, dict):
            into[key] = merge_capabilities(dict(have), value)
        elif isinstance(have, bool) and isinstance(value, bool):
            into[key] = have or value
        elif key not in into:
            into[key] = merge_capabilities({}, value) if isinstance(value, dict) else value
    return into


def shared_uri(server: str, uri: str) -> str:
    """The exposed form of ``uri`` when more than one server lists it."""
    return f"{SCHEME}://{urllib.parse.quote(server, safe='')}/{urllib.parse.quote(uri, safe='')}"


def parse_shared_uri(uri: str) -> tuple[str, str] | None:
    """(server, original URI) of a :func:`shared_uri`, else ``None``."""
    head = f"{SCHEME}://"
    if not uri.startswith(head) or "/" not in uri[len(head):]:
        return None
    server, rest = uri[len(head):].split("/", 1)
    return urllib.parse.unquote(server), urllib.parse.unquote(rest)


def shared_template(server: str, template: str) -> str:
    """The exposed form of a URI template two servers share: like :func:`shared_uri`,
    with the ``{…}`` expressions left for the client to expand."""
    parts = re.split(r"(\{[^}]*\})", template)
    body = "".join(p if p.startswith("{") else urllib.parse.quote(p, safe="") for p in parts)
    return f"{SCHEME}://{urllib.parse.quote(server, safe='')}/{body}"


def template_regex(template: str) -> re.Pattern[str]:
    """A regex matching URIs expanded from an RFC 6570 template (simple and ``+``/``#``
    expressions; enough to route a read to the server that owns the template)."""
    out = []
    for part in re.split(r"(\{[^}]*\})", template):
        if part.startswith("{") and part.endswith("}"):
            out.append(".*" if part[1:2] in ("+", "#", "/", "?", "&", ";", ".") else "[^/]*")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$")


@attrs.define(eq=False)
class ServerPeer:
    """What one server's upstream sees of a project session: the session's id, and a
    ``deliver`` that rewrites what the server sends before the session gets it."""

    session: ProjectSession
    server: str

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def deliver(self, message: jsonrpc.Message, related: jsonrpc.Id | None = None) -> None:
        self.session._from_server(self.server, message, related)

    def deliver_server_request(self, upstream: Upstream, message: jsonrpc.Message) -> None:
        self.session.deliver_server_request(upstream, message)


@attrs.define(eq=False)
class Member:
    """One server of the project, as one project session uses it."""

    name: str
    config: ServerConfig
    supervisor: ServerSupervisor
    #: ``isolation = "session"``: the supervisor is this session's own.
    private: bool
    peer: ServerPeer
    started: bool = False
    #: Result key (``tools``, ``prompts``, ``resources``, ``resourceTemplates``) → the
    #: items this server listed last, as it sent them.
    listed: dict[str, list[dict[str, Any]]] = attrs.field(factory=dict)
    #: Set once a list answer left this server out (its return is a list change).
    missing: bool = False
    #: Cancels this member's watcher when it leaves.
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    @property
    def prefix(self) -> str:
        return self.name if self.config.prefix is None else self.config.prefix


@attrs.define(eq=False)
class ProjectSession(Session):
    """A session whose requests are routed among a project's servers (see the module
    docstring). Created by the registry for options that carry ``servers``."""

    members: dict[str, Member] = attrs.field(factory=dict)
    _client_caps: dict[str, Any] = attrs.field(factory=dict)
    #: Result key → exposed name → (server, original name); and the reverse.
    _names: dict[str, dict[str, tuple[str, str]]] = attrs.field(factory=dict)
    _exposed: dict[str, dict[tuple[str, str], str]] = attrs.field(factory=dict)
    _changed: set[str] = attrs.field(factory=set)
    #: What this session may show and serve (``actors/policy.py``); see :meth:`set_policy`.
    access: Access = attrs.field(init=False, default=attrs.Factory(
        lambda self: self.options.access or Access(), takes_self=True))

    @property
    def settings(self) -> ProjectSettings:
        return self.options.project_settings or ProjectSettings()

    def set_policy(self, policy: ToolPolicy) -> None:
        """The project's tool policy changed (a config or store change): later lists
        and calls follow it, and the client is told the tools list changed."""
        if policy == self.access.policy:
            return
        self.access = attrs.evolve(self.access, policy=policy)
        self._note_changed(("tools",))

    # -- hooks: membership --------------------------------------------------------
    def _attach(self) -> None:
        self._upstream_started = False
        self.set_servers(self.options.servers or {}, announce=False)

    def _detach(self) -> None:
        for member in list(self.members.values()):
            self._leave(member)

    def set_servers(
        self, servers: Mapping[str, tuple[ServerConfig, ServerSupervisor | None]], *,
        announce: bool = True,
    ) -> None:
        """Make the members match ``servers`` (the project's enabled servers now):
        members whose config or supervisor changed are replaced, removed ones leave.
        With ``announce`` a change sends ``list_changed`` to the client."""
        changed = False
        for name, member in list(self.members.items()):
            wanted = servers.get(name)
            if wanted is None or wanted[0] != member.config or (
                not member.private and wanted[1] is not member.supervisor
            ):
                self._leave(member)
                del self.members[name]
                changed = True
        for name, (config, supervisor) in servers.items():
            if name in self.members:
                continue
            private = supervisor is None
            if supervisor is None:
                supervisor = self.new_supervisor(self.project, config)
            member = Member(name, config, supervisor, private, ServerPeer(self, name))
            self.members[name] = member
            supervisor.attach(member.peer)
            if not private:
                member.started = True
                self._watch(member)
            changed = True
        if changed:
            for key in ("tools", "prompts"):
                self._rebuild_names(key)
            if announce:
                self._note_changed(("tools", "prompts", "resources"))

    def _leave(self, member: Member) -> None:
        member.scope.cancel()
        member.supervisor.detach(member.peer)
        if member.private:
            member.supervisor.stop()

    def _watch(self, member: Member) -> None:
        if self._nursery is not None and not self.closing:
            self._nursery.start_soon(self._watch_member, member)

    async def _watch_member(self, member: Member) -> None:
        """A restart, a failure or a return of ``member`` is a list change."""
        with member.scope:
            seen: Upstream | None = member.supervisor.upstream
            while True:
                upstream = member.supervisor.upstream
                if upstream is not None and not upstream.closed.is_set():
                    if upstream is not seen and (seen is not None or member.missing):
                        self._note_changed(("tools", "prompts", "resources"))
                    seen = upstream
                    await upstream.closed.wait()
                    for items in member.listed.values():
                        items.clear()
                    self._note_changed(("tools", "prompts", "resources"))
                    continue
                await member.supervisor.wait_changed()

    def _start_private_upstream(self, capabilities: dict[str, Any]) -> None:
        # Private upstreams start on first use (:meth:`_ready`); keep what to tell them.
        if not self._upstream_started:
            self._upstream_started = True
            self._client_caps = dict(capabilities)

    def _start_member(self, member: Member) -> None:
        if member.started or self._nursery is None or self.closing:
            return
        member.started = True
        member.supervisor.client_capabilities = dict(self._client_caps or
                                                     self.client_capabilities or {})

        # ``_leave`` stops it (``supervisor.stop()``); the member's scope is its watcher's.
        self._nursery.start_soon(member.supervisor.run)
        self._watch(member)

    async def _ready(self, member: Member, timeout_s: float, *, wait_restart: bool) -> Upstream:
        """``member``'s running upstream. Error handling: :class:`UpstreamError` when it
        does not come up within ``timeout_s`` — at once, without ``wait_restart``,
        when it is restarting or failed."""
        fresh = not member.started
        self._start_member(member)
        supervisor = member.supervisor
        upstream = supervisor.upstream
        if upstream is not None and not upstream.closed.is_set():
            return upstream
        if not wait_restart and supervisor.state in ("restarting", "failed", "stopped"):
            detail = f": {supervisor.last_exit}" if supervisor.last_exit else ""
            raise UpstreamError(errors.UPSTREAM_UNAVAILABLE,
                                f"server '{member.name}' is {supervisor.state}{detail}")
        if fresh:
            timeout_s = max(timeout_s, member.config.request_timeout_s)
        return await supervisor.wait_ready(timeout_s)

    def _note_changed(self, kinds: Iterable[str]) -> None:
        """Send one ``list_changed`` per kind, gathering those that arrive together."""
        if self._nursery is None or self.closing:
            return
        first = not self._changed
        self._changed.update(kinds)
        if first:
            self._nursery.start_soon(self._flush_changed)

    async def _flush_changed(self) -> None:
        await trio.sleep(COALESCE_S)  # a debounce, not a poll: runs once per burst
        kinds, self._changed = self._changed, set()
        for kind in ("tools", "prompts", "resources"):
            if kind in kinds:
                self.deliver(jsonrpc.notification(CHANGED_BY_KIND[kind]))

    # -- what servers send ----------------------------------------------------------
    def _from_server(self, server: str, message: jsonrpc.Message, related: jsonrpc.Id | None) -> None:
        method = message.get("method")
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if method in CHANGED:
            self._note_changed((CHANGED[method],))
            return
        if method == "notifications/message":
            logger = params.get("logger")
            label = f"{server}/{logger}" if isinstance(logger, str) and logger else server
            message = {**message, "params": {**params, "logger": label}}
        elif method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
            message = {**message, "params": {**params, "uri": self._expose_uri(server, params["uri"])}}
        self.deliver(message, related)

    # -- hooks: notifications from the client ---------------------------------------
    def _notify_upstream(self, message: jsonrpc.Message, nursery: trio.Nursery) -> None:
        for member in self.members.values():
            upstream = member.supervisor.upstream
            if member.started and upstream is not None:
                nursery.start_soon(upstream.notify, message)

    # -- initialize / discover ------------------------------------------------------
    async def _initialize(self, message: jsonrpc.Message) -> jsonrpc.Message:
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        self.protocol_version = negotiate_version(params.get("protocolVersion"))
        client_info = params.get("clientInfo")
        self.client_info = client_info if isinstance(client_info, dict) else None
        result = {"protocolVersion": self.protocol_version, **await self.describe()}
        return jsonrpc.result_response(message["id"], result)

    async def describe(self) -> dict[str, Any]:
        inits: dict[str, dict[str, Any]] = {}

        async def one(member: Member) -> None:
            with trio.move_on_after(max(READY_WAIT_S, self.settings.list_timeout_s)):
                try:
                    inits[member.name] = (await self._ready(
                        member, READY_WAIT_S, wait_restart=False)).init_result
                except UpstreamError as exc:
                    log.info("session %s: %s left out of initialize: %s", self.session_id,
                             member.name, exc)

        async with trio.open_nursery() as nursery:
            for member in self.members.values():
                nursery.start_soon(one, member)
        capabilities: dict[str, Any] = {"tools": {}}
        sections = []
        for name in self.members:
            init = inits.get(name)
            if init is None:
                continue
            offered = init.get("capabilities")
            if isinstance(offered, dict):
                merge_capabilities(capabilities, offered)
            if isinstance(init.get("instructions"), str) and init["instructions"].strip():
                sections.append(f"## {name}\n\n{init['instructions'].strip()}")
        # The gateway itself tells of list changes (a restart, a server added).
        for kind in ("tools", "prompts", "resources"):
            if isinstance(capabilities.get(kind), dict):
                capabilities[kind] = {**capabilities[kind], "listChanged": True}
        result: dict[str, Any] = {"capabilities": capabilities, "serverInfo": self.server_info}
        if sections:
            result["instructions"] = "\n\n".join(sections)
        return result

    @property
    def server_info(self) -> dict[str, Any]:
        return {"name": f"mcp-orch project {self.project}", "version": GATEWAY_INFO["version"]}

    async def tool_headers(self, name: str) -> dict[str, str]:
        found = await self._resolve("tools", name)
        if found is None or not self._permitted(*found, name):
            return {}
        member, original = found
        upstream = await self._ready(member, READY_WAIT_S, wait_restart=True)
        with trio.move_on_after(member.config.request_timeout_s):
            await upstream.tools_listed.wait()
        return upstream.tool_headers.get(original, {})

    # -- requests ---------------------------------------------------------------------
    async def _forward(self, message: jsonrpc.Message, timing: list[float]) -> jsonrpc.Message:
        method = message["method"]
        msg_id = message["id"]
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if method in LISTS:
            return await self._list(message, params)
        if method in ("tools/call", "prompts/get"):
            key = "tools" if method == "tools/call" else "prompts"
            name = params.get("name")
            found = await self._resolve(key, name) if isinstance(name, str) else None
            if found is None:
                return jsonrpc.error_response(
                    msg_id, errors.INVALID_PARAMS, f"unknown {key[:-1]}: {name}")
            member, original = found
            if key == "tools" and not self._permitted(member, original, name):
                log.info("session %s (%s): tools/call of %r refused by the tool policy",
                         self.session_id, self.access.who, name)
                return jsonrpc.error_response(msg_id, errors.INVALID_PARAMS,
                                              f"unknown tool: {name}")
            return await self._call(member, {**message, "params": {**params, "name": original}},
                                    timing)
        if method in ("resources/read", "resources/subscribe", "resources/unsubscribe"):
            uri = params.get("uri")
            found = await self._resolve_uri(uri) if isinstance(uri, str) else None
            if found is None:
                return jsonrpc.error_response(msg_id, errors.INVALID_PARAMS,
                                              f"unknown resource: {uri}")
            member, original = found
            reply = await self._call(member, {**message, "params": {**params, "uri": original}},
                                     timing)
            if method == "resources/read":
                self._expose_contents(member.name, reply)
            return reply
        if method == "completion/complete":
            return await self._complete(message, params, timing)
        if method == "logging/setLevel":
            return await self._set_level(message)
        return jsonrpc.error_response(msg_id, errors.METHOD_NOT_FOUND,
                                      f"method not found: {method}")

    def _permitted(self, member: Member, original: str, exposed: str) -> bool:
        """Whether the tool ``original`` of ``member``, exposed as ``exposed``, is shown
        and served under this session's :class:`~actors.policy.Access`."""
        listed = next((t for t in member.listed.get("tools", []) if t.get("name") == original),
                      None)
        return self.access.permits(exposed, listed)

    async def _call(self, member: Member, message: jsonrpc.Message,
                    timing: list[float]) -> jsonrpc.Message:
        gate = self.access.gate
        if gate is None:
            return await self._call_now(member, message, timing)
        limited = gate.enter(member.name)
        if limited is not None:
            log.info("session %s (%s): %s to server %s refused: max_concurrent (%s) reached",
                     self.session_id, self.access.who, message["method"], member.name,
                     gate.limit)
            return jsonrpc.error_response(
                message["id"], errors.RATE_LIMITED,
                f"server '{member.name}' already serves max_concurrent = {gate.limit} "
                "calls of this project; retry", {"retryAfterMs": limited.retry_after_ms,
                                                 "scope": limited.scope})
        try:
            return await self._call_now(member, message, timing)
        finally:
            gate.leave(member.name)

    async def _call_now(self, member: Member, message: jsonrpc.Message,
                        timing: list[float]) -> jsonrpc.Message:
        timeout_s = member.config.request_timeout_s
        try:
            upstream = await self._ready(member, min(READY_WAIT_S, timeout_s), wait_restart=True)
        except UpstreamError as exc:
            return jsonrpc.error_response(message["id"], exc.code, str(exc))
        sent = trio.current_time()
        method = message["method"]
        if method == "resources/subscribe":
            reply = await upstream.subscribe(member.peer, message, timeout_s)
        elif method == "resources/unsubscribe":
            reply = await upstream.unsubscribe(member.peer, message, timeout_s)
        else:
            reply = await upstream.call(member.peer, message, timeout_s)
        timing.append(trio.current_time() - sent)
        return reply

    async def subscribe(self, uri: str, request_id: str) -> bool:
        """Subscribe to ``uri`` (an exposed URI) at its server; whether it worked."""
        found = await self._resolve_uri(uri)
        if found is None:
            return False
        member, original = found
        reply = await self._call(
            member, jsonrpc.request(request_id, "resources/subscribe", {"uri": original}), [])
        return "result" in reply

    async def _complete(self, message: jsonrpc.Message, params: dict[str, Any],
                        timing: list[float]) -> jsonrpc.Message:
        ref = params.get("ref")
        ref = ref if isinstance(ref, dict) else {}
        found: tuple[Member, str] | None = None
        if ref.get("type") == "ref/prompt" and isinstance(ref.get("name"), str):
            found = await self._resolve("prompts", ref["name"])
            field = "name"
        elif ref.get("type") == "ref/resource" and isinstance(ref.get("uri"), str):
            found = await self._resolve_uri(ref["uri"], templates=True)
            field = "uri"
        if found is None:
            return jsonrpc.error_response(message["id"], errors.INVALID_PARAMS,
                                          f"unknown reference: {json.dumps(ref)}")
        member, original = found
        forwarded = {**message, "params": {**params, "ref": {**ref, field: original}}}
        return await self._call(member, forwarded, timing)

    async def _set_level(self, message: jsonrpc.Message) -> jsonrpc.Message:
        timeout_s = self.settings.list_timeout_s

        async def one(member: Member) -> None:
            with trio.move_on_after(timeout_s):
                try:
                    upstream = await self._ready(member, timeout_s, wait_restart=False)
                except UpstreamError:
                    return
                if "logging" in (upstream.init_result.get("capabilities") or {}):
                    await upstream.call(member.peer, message, timeout_s)

        async with trio.open_nursery() as nursery:
            for member in self.members.values():
                nursery.start_soon(one, member)
        return jsonrpc.result_response(message["id"], {})

    # -- lists ------------------------------------------------------------------------
    async def _list(self, message: jsonrpc.Message, params: dict[str, Any]) -> jsonrpc.Message:
        method = message["method"]
        capability, key = LISTS[method]
        try:
            cursors: dict[str, str | None] = (
                dict(decode_cursor(params["cursor"])) if params.get("cursor") is not None
                else dict.fromkeys(self.members)
            )
        except InvalidCursor as exc:
            return jsonrpc.error_response(message["id"], errors.INVALID_PARAMS, str(exc))
        wanted = {name: cursors[name] for name in self.members if name in cursors}
        pages, left_out = await self._fan_out(method, wanted)
        for name, reason in left_out.items():
            self.deliver(jsonrpc.notification("notifications/message", {
                "level": "warning", "logger": LOGGER,
                "data": f"server '{name}' is left out of this {method} answer: {reason}",
            }), message["id"])
        items: list[dict[str, Any]] = []
        next_cursors: dict[str, str] = {}
        for name, (found, next_cursor) in pages.items():
            for item in found:
                exposed = self._expose_item(key, name, item)
                if exposed is not None:
                    items.append(exposed)
            if next_cursor:
                next_cursors[name] = next_cursor
        result: dict[str, Any] = {key: items}
        if next_cursors:
            result["nextCursor"] = encode_cursor(next_cursors)
        return jsonrpc.result_response(message["id"], result)

    async def _fan_out(
        self, method: str, cursors: Mapping[str, str | None], *, all_pages: bool = False,
    ) -> tuple[dict[str, tuple[list[dict[str, Any]], str | None]], dict[str, str]]:
        """List ``method`` at each server in ``cursors`` in parallel, each under the
        deadline; the pages that came (in member order), and why the others did not.
        Updates the session's name tables."""
        capability, key = LISTS[method]
        timeout_s = self.settings.list_timeout_s
        pages: dict[str, tuple[list[dict[str, Any]], str | None]] = {}
        left_out: dict[str, str] = {}

        async def one(member: Member, cursor: str | None) -> None:
            with trio.move_on_after(timeout_s) as scope:
                try:
                    found: list[dict[str, Any]] = []
                    next_cursor = cursor
                    for _ in range(MAX_PAGES if all_pages else 1):
                        page, next_cursor = await self._page(member, method, next_cursor,
                                                             timeout_s)
                        found.extend(page)
                        if not next_cursor:
                            break
                    pages[member.name] = (found, next_cursor)
                except LeftOut as exc:
                    left_out[member.name] = str(exc)
            if scope.cancelled_caught:
                left_out[member.name] = f"no answer within {timeout_s:g} s"

        async with trio.open_nursery() as nursery:
            for name, cursor in cursors.items():
                nursery.start_soon(one, self.members[name], cursor)
        for name in cursors:
            member = self.members.get(name)
            if member is None:
                continue
            if name in left_out:
                member.missing = True
            elif name in pages:
                items = pages[name][0]
                if cursors[name] is None or all_pages:
                    member.listed[key] = list(items)
                else:
                    member.listed.setdefault(key, []).extend(items)
        if key in ("tools", "prompts"):
            self._rebuild_names(key)
        return {n: pages[n] for n in self.members if n in pages}, left_out

    async def _page(self, member: Member, method: str, cursor: str | None,
                    timeout_s: float) -> tuple[list[dict[str, Any]], str | None]:
        capability, key = LISTS[method]
        try:
            upstream = await self._ready(member, timeout_s, wait_restart=False)
        except UpstreamError as exc:
            raise LeftOut(str(exc)) from None
        if capability not in (upstream.init_result.get("capabilities") or {}):
            return [], None  # the server offers none: nothing to leave out
        request = jsonrpc.request(f"mcp-orch-list-{member.name}", method,
                                  {"cursor": cursor} if cursor else None)
        reply = await upstream.call(member.peer, request, timeout_s)
        if "error" in reply:
            raise LeftOut(f"{reply['error'].get('message')} ({reply['error'].get('code')})")
        result = reply.get("result")
        found = result.get(key) if isinstance(result, dict) else None
        if not isinstance(found, list):
            raise LeftOut(f"its {method} result has no {key!r} list")
        next_cursor = result.get("nextCursor")
        return ([item for item in found if isinstance(item, dict)],
                next_cursor if isinstance(next_cursor, str) and next_cursor else None)

    # -- names ------------------------------------------------------------------------
    def _rebuild_names(self, key: str) -> None:
        pairs = [
            (member.name, item["name"])
            for member in self.members.values()
            for item in member.listed.get(key, [])
            if isinstance(item.get("name"), str)
        ]
        prefixes = {member.name: member.prefix for member in self.members.values()}
        settings = self.settings
        renamed = renames((m.name, m.config) for m in self.members.values()) if (
            key == "tools") else {}
        names = names_with_renames(pairs, prefixes, settings.separator, settings.max_name,
                                   renamed)
        self._exposed[key] = names
        self._names[key] = {exposed: pair for pair, exposed in names.items()}

    async def _resolve(self, key: str, exposed: str) -> tuple[Member, str] | None:
        """(server, original name) of an exposed tool or prompt name; a name not seen
        yet lists the servers that could own it once."""
        pair = self._names.get(key, {}).get(exposed)
        if pair is None:
            settings = self.settings
            renamed = [m.name for m in self.members.values() if key == "tools" and any(
                o.rename == exposed for o in m.config.tools.values())]
            prefixed = [m.name for m in self.members.values() if m.prefix and exposed.startswith(
                candidate(m.prefix, settings.separator, ""))]
            bare = [m.name for m in self.members.values() if not m.prefix]
            method = "tools/list" if key == "tools" else "prompts/list"
            for group in (renamed, prefixed, bare):
                if group:
                    await self._fan_out(method, dict.fromkeys(group), all_pages=True)
                    pair = self._names.get(key, {}).get(exposed)
                    if pair is not None:
                        break
        if pair is None or pair[0] not in self.members:
            return None
        return self.members[pair[0]], pair[1]

    def _expose_item(self, key: str, server: str, item: dict[str, Any]) -> dict[str, Any] | None:
        if key in ("tools", "prompts"):
            exposed = self._exposed.get(key, {}).get((server, item.get("name")))  # type: ignore[arg-type]
            if exposed is None:
                return None
            if key == "tools":
                if not self.access.permits(exposed, item):
                    return None
                member = self.members.get(server)
                override = member.config.tools.get(item["name"]) if member else None
                return override_tool({**item, "name": exposed}, override)
            return {**item, "name": exposed}
        if key == "resources" and isinstance(item.get("uri"), str):
            return {**item, "uri": self._expose_uri(server, item["uri"])}
        if key == "resourceTemplates" and isinstance(item.get("uriTemplate"), str):
            template = item["uriTemplate"]
            if self._shared(server, "resourceTemplates", "uriTemplate", template):
                return {**item, "uriTemplate": shared_template(server, template)}
        return item

    def _shared(self, server: str, key: str, field: str, value: str) -> bool:
        """Whether another server lists the same ``value`` (a URI or template)."""
        return any(
            item.get(field) == value
            for member in self.members.values() if member.name != server
            for item in member.listed.get(key, [])
        )

    def _expose_uri(self, server: str, uri: str) -> str:
        return shared_uri(server, uri) if self._shared(server, "resources", "uri", uri) else uri

    def _expose_contents(self, server: str, reply: jsonrpc.Message) -> None:
        result = reply.get("result")
        contents = result.get("contents") if isinstance(result, dict) else None
        if isinstance(contents, list):
            result["contents"] = [  # type: ignore[index]
                {**c, "uri": self._expose_uri(server, c["uri"])}
                if isinstance(c, dict) and isinstance(c.get("uri"), str) else c
                for c in contents
            ]

    def _owner_of_uri(self, uri: str, templates: bool) -> tuple[Member, str] | None:
        shared = parse_shared_uri(uri)
        if shared is not None and shared[0] in self.members:
            return self.members[shared[0]], shared[1]
        for member in self.members.values():
            if any(item.get("uri") == uri for item in member.listed.get("resources", [])):
                return member, uri
        for member in self.members.values():
            for item in member.listed.get("resourceTemplates", []):
                template = item.get("uriTemplate")
                if not isinstance(template, str):
                    continue
                if templates and template == uri:
                    return member, uri
                if template_regex(template).match(uri):
                    return member, uri
        return None

    async def _resolve_uri(self, uri: str, *, templates: bool = False) -> tuple[Member, str] | None:
        """The server owning ``uri`` (an exposed URI, or a template with ``templates``) and
        the URI it knows; the resource lists are fetched once when nothing matches."""
        found = self._owner_of_uri(uri, templates)
        if found is None:
            everyone = dict.fromkeys(self.members)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: self._fan_out("resources/list", everyone,
                                                         all_pages=True))
                nursery.start_soon(lambda: self._fan_out("resources/templates/list", everyone,
                                                         all_pages=True))
            found = self._owner_of_uri(uri, templates)
        if found is None:
            offering = [
                m for m in self.members.values()
                if m.supervisor.upstream is not None and "resources" in (
                    m.supervisor.upstream.init_result.get("capabilities") or {})
            ]
            if len(offering) == 1:  # one server serves resources: it is the one asked
                found = offering[0], uri
        return found
