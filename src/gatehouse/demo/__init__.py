"""The sample MCP server that ``gatehouse serve`` runs, guarded, at ``/mcp``."""
