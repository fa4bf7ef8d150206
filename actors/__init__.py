"""The runtime: upstream actors, their supervisors, session actors and the session registry.

Knows nothing of HTTP; the gateway drives it through the handles exported here.
"""

from .registry import SessionRegistry as SessionRegistry
from .registry import run_registry as run_registry
from .session import Session as Session
from .supervisor import ServerSupervisor as ServerSupervisor
from .upstream import Upstream as Upstream
from .upstream import UpstreamError as UpstreamError
