"""Streamable HTTP for the stateless revision 2026-07-28, with its multi-round-trip
(MRTR) state: see :mod:`.endpoint` and :mod:`.request_state`."""

from .endpoint import STATELESS_VERSIONS as STATELESS_VERSIONS
from .endpoint import StatelessEndpoint as StatelessEndpoint
from .endpoint import wants_stateless as wants_stateless
