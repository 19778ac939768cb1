"""``upstream_token(provider, ctx)`` inside tool handlers of guarded servers, official SDK and FastMCP (UP-3).

The guard keeps the caller's access token for the exchange only: the handler's Caller and request
carry no token, yet the exchange sends exactly the caller's token as ``subject_token``. The token
endpoint here is a loopback stand-in (test_upstream_token_client.py), so what it received can be
read back; the real AS is in test_token_exchange.py and test_calendar_flow.py.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from fastmcp import Context as FastMCPContext
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError as FastMCPToolError
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from gatehouse.config import ResourceConfig
from gatehouse.guard import (
    Guard,
    JWKSKeySource,
    JWTVerifier,
    Policy,
    UpstreamTokenClient,
    UpstreamTokenError,
    current_caller,
    upstream_token,
)
from tests.conftest import ThreadedServer
from tests.support.mcp_client import with_session
from tests.upstream_vault.test_upstream_token_client import TokenEndpointStandIn


@pytest.fixture
def as_overrides(extra_resource):
    return {"resources": [ResourceConfig(uri=extra_resource, name="Calendar", scopes=["calendar:read"])]}


@pytest.fixture
def token_endpoint(loopback_server):
    endpoint = TokenEndpointStandIn()
    with loopback_server(endpoint.app()) as base_url:
        endpoint.base_url = base_url
        yield endpoint


def what_the_handler_sees(ctx) -> dict:
    caller = current_caller(ctx)
    request = ctx.request_context.request
    return {
        "caller_fields": sorted(f.name for f in dataclasses.fields(caller)),
        "claims": dict(caller.claims),
        "headers": sorted({name.decode().lower() for name, _ in request.scope["headers"]}),
    }


def sdk_app(issuer: str, resource: str, exchange: UpstreamTokenClient):
    mcp = MCPServer(name="upstream-hook")

    @mcp.tool()
    async def google_token(ctx: Context) -> dict:
        """The user's Google token, as the guard gets it for the handler."""
        try:
            token = await upstream_token("google", ctx)
        except UpstreamTokenError as exc:
            raise ToolError(str(exc)) from None
        return {"token": token, **what_the_handler_sees(ctx)}

    return _guarded(mcp.streamable_http_app(), issuer, resource, exchange)


def fastmcp_app(issuer: str, resource: str, exchange: UpstreamTokenClient):
    mcp = FastMCP("upstream-hook")

    @mcp.tool
    async def google_token(ctx: FastMCPContext) -> dict:
        """The user's Google token, as the guard gets it for the handler."""
        try:
            token = await upstream_token("google", ctx)
        except UpstreamTokenError as exc:
            raise FastMCPToolError(str(exc)) from None
        return {"token": token, **what_the_handler_sees(ctx)}

    return _guarded(mcp.http_app(path="/mcp"), issuer, resource, exchange)


def _guarded(app, issuer: str, resource: str, exchange: UpstreamTokenClient):
    guard = Guard(resource=resource, authorization_servers=[issuer], policy=Policy(default=["calendar:read"]),
                  verifier=JWTVerifier(issuers=[issuer], audience=resource, keys=JWKSKeySource(f"{issuer}/jwks")),
                  upstream_tokens=exchange)
    return guard.protect(app)


@pytest.fixture(params=[sdk_app, fastmcp_app], ids=["official-sdk", "fastmcp"])
def guarded_server(request, live_as, token_endpoint, extra_socket, extra_resource):
    exchange = UpstreamTokenClient(token_endpoint=f"{token_endpoint.base_url}/token", client_id="calendar-rs", client_secret="s3cret")
    with ThreadedServer(request.param(live_as.base_url, extra_resource, exchange), extra_socket):
        yield extra_resource


async def test_the_tool_gets_the_upstream_token_for_the_callers_own_token(live_as, guarded_server, token_endpoint):
    token, _ = live_as.machine_token(guarded_server)
    result = await with_session(guarded_server, token, lambda s: s.call_tool("google_token", {}))
    assert not result.is_error, result.content
    seen = json.loads(result.content[0].text)
    assert seen["token"] == "upstream-google-1"
    [request] = token_endpoint.requests
    assert request["form"]["subject_token"] == token and request["form"]["audience"] == "google"
    # the handler learns who calls, never with what: no token field, no token in a claim, no Authorization header
    assert seen["caller_fields"] == ["claims", "client_id", "issuer", "scopes", "subject"]
    assert token not in str(seen["claims"]) and "authorization" not in seen["headers"]


async def test_a_vault_error_becomes_the_tools_error_result(live_as, guarded_server, token_endpoint):
    token_endpoint.answers.append((400, {"error": "upstream_not_linked", "error_description": "sign in with Google first"}))
    token, _ = live_as.machine_token(guarded_server)
    result = await with_session(guarded_server, token, lambda s: s.call_tool("google_token", {}))
    assert result.is_error and result.content[0].text.endswith("sign in with Google first")


def test_a_guard_without_upstream_tokens_hands_nothing_over():
    guard = Guard(resource="http://127.0.0.1:9/mcp", authorization_servers=["http://127.0.0.1:8"],
                  verifier=JWTVerifier(issuers=["http://127.0.0.1:8"], audience="http://127.0.0.1:9/mcp",
                                       keys=JWKSKeySource("http://127.0.0.1:8/jwks")))
    assert guard.upstream_tokens is None
