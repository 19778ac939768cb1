"""Talking to a guarded MCP server with the official SDK client, as a real client would."""

from __future__ import annotations

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


async def with_session(url: str, token: str, action):
    """Open an MCP session at ``url`` with ``token`` in the Authorization header and run ``action(session)``."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return await action(session)
