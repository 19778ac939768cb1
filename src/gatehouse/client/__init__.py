"""Gatehouse's MCP client side: reach a guarded MCP server as a library, a CLI or a stdio bridge."""
