"""The HTTP face of mcp-orch: the Quart-Trio app, auth, SSE framing, the root and the CLI."""
