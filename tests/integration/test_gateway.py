"""``gatehouse gateway`` in front of an unguarded Streamable HTTP MCP server (issue 3, RS-8)."""

from __future__ import annotations

import contextlib
import json
import secrets

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.config import ResourceConfig
from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy
from gatehouse.guard.gateway import HTTPUpstream, create_gateway_app
from tests.conftest import ThreadedServer, free_socket
from tests.support.mcp_client import with_session

IDENTITY_HEADER = "X-Gatehouse-Subject"
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}
LIST_TOOLS = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
ACCEPT = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def gateway_socket(extra_socket):
    return extra_socket


@pytest.fixture
def gateway_uri(extra_resource):
    return extra_resource


@pytest.fixture
def as_overrides(gateway_uri):
    return {"resources": [ResourceConfig(uri=gateway_uri, name="Upstream tools", scopes=["tools:read", "tools:write"])]}


def upstream_app():
    mcp = MCPServer(name="plain-upstream")
    seen: list[dict] = []

    @mcp.tool()
    async def whoami(ctx: Context) -> dict:
        """What the upstream received."""
        headers = dict(ctx.request_context.request.headers)
        seen.append(headers)
        return {"authorization": headers.get("authorization"), "subject": headers.get(IDENTITY_HEADER.lower())}

    @mcp.tool()
    async def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    sdk = mcp.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with mcp.session_manager.run():
            yield

    return Starlette(routes=[Route("/mcp", sdk)], lifespan=lifespan)


@contextlib.contextmanager
def running_gateway(live_as, gateway_socket, gateway_uri, upstream_url, upstream_headers=(), read_timeout=300.0, session_secret=None):
    """Serve the gateway in front of ``upstream_url``; yields its ASGI app."""
    guard = Guard(
        resource=gateway_uri,
        authorization_servers=[live_as.base_url],
        verifier=JWTVerifier(issuers=[live_as.base_url], audience=gateway_uri, keys=JWKSKeySource(f"{live_as.base_url}/jwks")),
        policy=Policy(tools={"shout": ["tools:write"], "*": ["tools:read"]}),
        session_secret=session_secret,
    )
    proxy = HTTPUpstream(upstream_url, identity_header=IDENTITY_HEADER, connect_timeout=2, upstream_headers=upstream_headers,
                         read_timeout=read_timeout)
    app = create_gateway_app(guard, proxy, "/mcp")
    with ThreadedServer(app, gateway_socket):
        yield app


async def test_gateway_proxies_sessions_and_strips_the_token(live_as, loopback_server, gateway_socket, gateway_uri):
    token, client_id = live_as.machine_token(gateway_uri, "tools:read")
    with loopback_server(upstream_app()) as upstream, running_gateway(live_as, gateway_socket, gateway_uri, f"{upstream}/mcp"):
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}", IDENTITY_HEADER: "forged"}, timeout=30) as http:
            async with streamable_http_client(gateway_uri, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = {t.name for t in (await session.list_tools()).tools}
                    result = await session.call_tool("whoami", {})
    assert tools == {"whoami"}, "tools/list hides the tool this token may not call"
    seen = json.loads(result.content[0].text)
    assert seen.get("authorization") is None, "the client's token never reaches the upstream (RS-8)"
    assert seen.get("subject") == client_id, "the caller's identity replaces any forged header"


def test_gateway_challenges_without_token(live_as, loopback_server, gateway_socket, gateway_uri):
    with loopback_server(upstream_app()) as upstream, running_gateway(live_as, gateway_socket, gateway_uri, f"{upstream}/mcp"):
        response = httpx2.post(gateway_uri, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "shout"}})
        metadata = httpx2.get(gateway_uri.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")).json()
    assert response.status_code == 401
    assert 'scope="tools:write"' in response.headers["www-authenticate"]
    assert metadata["resource"] == gateway_uri and metadata["authorization_servers"] == [live_as.base_url]


def test_gateway_reports_an_upstream_that_is_down(live_as, gateway_socket, gateway_uri):
    token, _ = live_as.machine_token(gateway_uri, "tools:read")
    dead = free_socket()
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/mcp"
    dead.close()
    with running_gateway(live_as, gateway_socket, gateway_uri, dead_url):
        response = httpx2.post(gateway_uri, headers={"Authorization": f"Bearer {token}"},
                               json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 502
    assert "cannot be reached" in response.json()["error"]["message"]
    assert response.json()["id"] == 1, "the error answers the request it was for"


def test_a_session_id_alone_lets_no_other_caller_in(live_as, loopback_server, gateway_socket, gateway_uri):
    """MCP security best practices, "Session Hijacking": the gateway binds each upstream session to its caller."""
    owner, _ = live_as.machine_token(gateway_uri, "tools:read")
    intruder, _ = live_as.machine_token(gateway_uri, "tools:read")
    with loopback_server(upstream_app()) as upstream, running_gateway(live_as, gateway_socket, gateway_uri, f"{upstream}/mcp"):
        started = httpx2.post(gateway_uri, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {owner}"})
        session = {"Mcp-Session-Id": started.headers["mcp-session-id"], **ACCEPT}
        hijack = httpx2.post(gateway_uri, json=LIST_TOOLS, headers={**session, "Authorization": f"Bearer {intruder}"})
        hijack_delete = httpx2.delete(gateway_uri, headers={**session, "Authorization": f"Bearer {intruder}"})
        own = httpx2.post(gateway_uri, json=LIST_TOOLS, headers={**session, "Authorization": f"Bearer {owner}"})
    assert started.status_code == 200
    assert hijack.status_code == 404 and hijack_delete.status_code == 404
    assert own.status_code == 200 and "whoami" in own.text, "the owner's session was left intact"


def test_a_session_holds_on_every_gateway_that_shares_the_session_secret(live_as, loopback_server, gateway_socket, gateway_uri):
    """The binding travels in the session id (an HMAC tag), not in a table of the process: another
    gateway instance given the same secret, or the same gateway after a restart, takes the
    session for its owner and for nobody else; one with another secret knows no such session."""
    owner, _ = live_as.machine_token(gateway_uri, "tools:read")
    intruder, _ = live_as.machine_token(gateway_uri, "tools:read")
    secret = secrets.token_bytes(32)

    def in_session(url: str, token: str) -> httpx2.Response:
        return httpx2.post(url, json=LIST_TOOLS, headers={**ACCEPT, "Mcp-Session-Id": session_id, "Authorization": f"Bearer {token}"})

    with loopback_server(upstream_app()) as upstream:
        with running_gateway(live_as, gateway_socket, gateway_uri, f"{upstream}/mcp", session_secret=secret):
            started = httpx2.post(gateway_uri, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {owner}"})
            session_id = started.headers["mcp-session-id"]
        twin_socket, stranger_socket = free_socket(), free_socket()
        twin, stranger = (f"http://127.0.0.1:{s.getsockname()[1]}/mcp" for s in (twin_socket, stranger_socket))
        with running_gateway(live_as, twin_socket, gateway_uri, f"{upstream}/mcp", session_secret=secret):
            own = in_session(twin, owner)
            hijack = in_session(twin, intruder)
        with running_gateway(live_as, stranger_socket, gateway_uri, f"{upstream}/mcp", session_secret=secrets.token_bytes(32)):
            unknown = in_session(stranger, owner)
    assert started.status_code == 200
    assert own.status_code == 200 and "whoami" in own.text, "the upstream got its own session id back"
    assert hijack.status_code == 404 and unknown.status_code == 404, (hijack.text, unknown.text)


async def test_configured_upstream_credentials_replace_the_clients_token(live_as, loopback_server, gateway_socket, gateway_uri):
    """RS-8: the upstream gets the gateway's own credential, never the client's token."""
    token, _ = live_as.machine_token(gateway_uri, "tools:read")
    credential = [("Authorization", "Bearer upstream-credential")]
    with loopback_server(upstream_app()) as upstream, \
            running_gateway(live_as, gateway_socket, gateway_uri, f"{upstream}/mcp", upstream_headers=credential):
        result = await with_session(gateway_uri, token, lambda session: session.call_tool("whoami", {}))
    assert json.loads(result.content[0].text)["authorization"] == "Bearer upstream-credential"


def test_answers_carry_one_date_and_one_server_header(live_as, loopback_server, gateway_socket, gateway_uri):
    """RFC 9110 section 5.3: the upstream's Date and Server are not repeated beside the gateway's own."""
    token, _ = live_as.machine_token(gateway_uri, "tools:read")
    with loopback_server(upstream_app()) as upstream, running_gateway(live_as, gateway_socket, gateway_uri, f"{upstream}/mcp"):
        response = httpx2.post(gateway_uri, headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
                               json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert len(response.headers.get_list("date")) == 1 and len(response.headers.get_list("server")) <= 1
