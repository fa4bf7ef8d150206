"""Benchmarks: mcp-orch against direct stdio and against mcp-proxy, measured in one run."""
