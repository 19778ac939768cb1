"""A tiny stdio MCP server (official SDK) for the gateway's stdio tests."""

import os

from mcp.server.mcpserver import MCPServer

mcp = MCPServer(name="stdio-echo")


@mcp.tool()
def echo(text: str) -> str:
    """Say it back."""
    return f"echo: {text}"


@mcp.tool()
def pid() -> int:
    """The server process id (one process per session)."""
    return os.getpid()


@mcp.tool()
def crash() -> str:
    """End the server process at once."""
    os._exit(3)


if __name__ == "__main__":
    mcp.run("stdio")
