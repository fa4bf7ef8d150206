"""The wire formats clients speak, each turned into the same few steps of the session
front (:mod:`gateway.transports.front`): legacy HTTP+SSE, Streamable HTTP (stateful
revisions), the stateless 2026-07-28 revision, and WebSocket."""
