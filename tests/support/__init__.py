"""Test support: config files, the gateway under test, one client per transport, recordings.

Everything the tests import from ``tests.support`` is re-exported here; the
modules say what lives where:

* :mod:`~tests.support.config` — ``write_config``, the stock servers;
* :mod:`~tests.support.gateway` — ``RunningGateway`` (the ``start_gateway``
  fixture's answer), ``gateway_process`` (``mcp-orch serve`` as a child);
* :mod:`~tests.support.sse` — the one SSE parser;
* :mod:`~tests.support.legacy_sse`, :mod:`~tests.support.streamable`,
  :mod:`~tests.support.stateless`, :mod:`~tests.support.websocket` — a client
  per transport;
* :mod:`~tests.support.recording` — what an upstream received;
* :mod:`~tests.support.probes` — processes, file descriptors, tasks (leak checks).
"""

from tests.support.config import CONFORMANCE_SERVER as CONFORMANCE_SERVER
from tests.support.config import DEMO_SERVER as DEMO_SERVER
from tests.support.config import REPO as REPO
from tests.support.config import demo_projects as demo_projects
from tests.support.config import write_config as write_config
from tests.support.gateway import GatewayProcess as GatewayProcess
from tests.support.gateway import RunningGateway as RunningGateway
from tests.support.gateway import gateway_process as gateway_process
from tests.support.legacy_sse import SseSession as SseSession
from tests.support.legacy_sse import open_sse_session as open_sse_session
from tests.support.messages import RpcError as RpcError
from tests.support.messages import cancelled as cancelled
from tests.support.messages import notification as notification
from tests.support.messages import rpc as rpc
from tests.support.probes import alive as alive
from tests.support.probes import child_pids as child_pids
from tests.support.probes import count_tasks as count_tasks
from tests.support.probes import open_fds as open_fds
from tests.support.recording import Recording as Recording
from tests.support.sse import SseComment as SseComment
from tests.support.sse import SseEvent as SseEvent
from tests.support.sse import SseParser as SseParser
from tests.support.sse import SseReader as SseReader
from tests.support.sse import aiter_sse as aiter_sse
from tests.support.sse import parse_events as parse_events
from tests.support.sse import sse_messages as sse_messages
from tests.support.streamable import ACCEPT as ACCEPT
from tests.support.streamable import StreamableClient as StreamableClient
