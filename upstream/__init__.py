"""How to speak to one MCP server: JSON-RPC framing and the stdio process transport.

Knows nothing of sessions or HTTP.
"""
