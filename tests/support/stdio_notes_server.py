"""A tiny stdio MCP server (official SDK) for the gateway's stdio tests."""

import asyncio
import os
import sys
import warnings
from pathlib import Path

from pydantic import BaseModel

from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer(name="stdio-echo")
warnings.simplefilter("ignore")  # ctx.info is deprecated from protocol 2026-07-28 on; these tests speak 2025-11-25


class Answer(BaseModel):
    answer: str


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


@mcp.tool()
async def ask(question: str, ctx: Context) -> str:
    """Ask the client a question (a server-initiated elicitation/create request) and report the answer."""
    result = await ctx.elicit(question, Answer)
    return f"answer: {result.data.answer}" if result.action == "accept" else f"no answer: {result.action}"


@mcp.tool()
async def wait_for(path: str, ctx: Context, timeout: float = 20.0) -> str:
    """Log and report progress, then wait until ``path`` exists: only a client that got the progress can create it."""
    await ctx.info(f"waiting for {Path(path).name}")
    await ctx.report_progress(1, 2, "waiting for the client")
    for _ in range(int(timeout / 0.05)):
        if Path(path).exists():
            await ctx.report_progress(2, 2, "seen")
            return "seen"
        await asyncio.sleep(0.05)
    return "timed out: the progress notification did not reach the client before the result"


@mcp.tool()
def chatty(kilobytes: int) -> str:
    """Write ``kilobytes`` of log lines to stderr (far more than a pipe buffer holds), then answer."""
    line = "chatty child: " + "x" * 1009 + "\n"
    for _ in range(kilobytes):
        sys.stderr.write(line)
    sys.stderr.flush()
    return "still answering"


if __name__ == "__main__":
    mcp.run("stdio")
