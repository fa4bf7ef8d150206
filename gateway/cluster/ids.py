"""Session ids that name the instance owning the session, signed so they cannot be forged.

An id is ``{instance}.{token}.{mac}``: the owner's instance id (12 hex), 128
random bits (32 hex) and the first 64 bits of an HMAC-SHA256 over the two,
keyed with the cluster's secret (``Store.cluster_secret``, shared by every
instance through the store). Any instance can tell from an id alone which
instance holds the session — no lookup, no sticky load balancing — and an id
whose owner part was edited fails the MAC, so a client cannot make a gateway
forward its requests to an instance of its choosing.

Visible ASCII only, as the Streamable HTTP spec requires of ``Mcp-Session-Id``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import attrs

INSTANCE_HEX = 12
_TOKEN_HEX = 32
_MAC_HEX = 16


def new_instance_id() -> str:
    """A fresh instance id: each process start is a new instance (its sessions die with it)."""
    return secrets.token_hex(INSTANCE_HEX // 2)


@attrs.frozen
class SessionIds:
    """Mints this instance's session ids and reads the owner out of anyone's."""

    instance_id: str
    secret: bytes = attrs.field(repr=False)

    def _mac(self, owner: str, token: str) -> str:
        digest = hmac.new(self.secret, f"{owner}.{token}".encode(), hashlib.sha256)
        return digest.hexdigest()[:_MAC_HEX]

    def mint(self) -> str:
        """A new unguessable session id owned by this instance."""
        token = secrets.token_hex(_TOKEN_HEX // 2)
        return f"{self.instance_id}.{token}.{self._mac(self.instance_id, token)}"

    def owner(self, session_id: str) -> str | None:
        """The instance id ``session_id`` names, or ``None`` when it is not an intact
        id of this cluster (malformed, or its MAC does not match)."""
        parts = session_id.split(".")
        if len(parts) != 3:
            return None
        owner, token, mac = parts
        if len(owner) != INSTANCE_HEX or len(token) != _TOKEN_HEX or len(mac) != _MAC_HEX:
            return None
        if not hmac.compare_digest(mac, self._mac(owner, token)):
            return None
        return owner
