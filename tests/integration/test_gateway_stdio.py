"""``gatehouse gateway -- <command>``: a stdio MCP server behind the guard, one process per session."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from gatehouse.config import ResourceConfig
from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy
from gatehouse.guard.gateway import create_gateway_app
from gatehouse.guard.stdio import StdioUpstream
from tests.conftest import ThreadedServer
from tests.support.mcp_client import with_session

STDIO_SERVER = Path(__file__).resolve().parents[1] / "support" / "stdio_notes_server.py"


@pytest.fixture
def as_overrides(extra_resource):
    return {"resources": [ResourceConfig(uri=extra_resource, name="stdio tools", scopes=["tools:use"])]}


@pytest.fixture
def gateway(live_as, extra_socket, extra_resource):
    guard = Guard(
        resource=extra_resource,
        authorization_servers=[live_as.base_url],
        verifier=JWTVerifier(issuers=[live_as.base_url], audience=extra_resource, keys=JWKSKeySource(f"{live_as.base_url}/jwks")),
        policy=Policy(tools={"*": ["tools:use"]}),
    )
    upstream = StdioUpstream([sys.executable, str(STDIO_SERVER)])
    with ThreadedServer(create_gateway_app(guard, upstream, "/mcp"), extra_socket):
        yield upstream


async def test_stdio_server_behind_the_gateway(live_as, gateway, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:use")

    async def work(session):
        tools = {t.name for t in (await session.list_tools()).tools}
        echoed = await session.call_tool("echo", {"text": "hi"})
        pid = await session.call_tool("pid", {})
        return tools, echoed.content[0].text, pid.content[0].text

    tools, echoed, first_pid = await with_session(extra_resource, token, work)
    _, _, second_pid = await with_session(extra_resource, token, work)
    assert tools == {"echo", "pid", "crash"} and echoed == "echo: hi"
    assert first_pid != second_pid, "each MCP session gets its own process"
    assert gateway.sessions == {}, "closing a session (DELETE) ends its process"


async def test_a_crashed_child_is_reported_and_the_next_session_works(live_as, gateway, extra_resource):
    token, _ = live_as.machine_token(extra_resource, "tools:use")

    async def crash(session):
        try:
            await session.call_tool("crash", {})
        except MCPError as error:
            return error.message
        return "no error"

    reported = await with_session(extra_resource, token, crash)
    assert "the MCP server process exited (status 3)" in reported
    result = await with_session(extra_resource, token, lambda s: s.call_tool("echo", {"text": "again"}))
    assert result.content[0].text == "echo: again"


def test_stdio_gateway_still_challenges(live_as, gateway, extra_resource):
    response = httpx2.post(extra_resource, json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
    assert response.status_code == 401 and "resource_metadata=" in response.headers["www-authenticate"]
