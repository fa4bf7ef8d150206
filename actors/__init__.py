"""The runtime: upstream actors, their supervisors, session actors and the session registry.

Knows nothing of HTTP; the gateway drives it through the handles exported here.
"""

from .outlet import Outbox as Outbox
from .outlet import Outlet as Outlet
from .registry import SessionRegistry as SessionRegistry
from .registry import run_registry as run_registry
from .session import Session as Session
from .session import SessionOptions as SessionOptions
from .session import Transport as Transport
from .streams import StreamSet as StreamSet
from .supervisor import ServerSupervisor as ServerSupervisor
from .upstream import Upstream as Upstream
from .upstream import UpstreamError as UpstreamError
