"""HTTP plumbing with no MCP rules in it: raw ASGI helpers, Origin/Host policy, bearer
auth, SSE framing, the keep-alive heartbeat, and the Hypercorn patches."""
