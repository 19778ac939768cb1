"""MCP servers guarded by other frameworks' auth, with Gatehouse as their authorization server.

- ``sdk_server``: the official SDK, ``MCPServer(token_verifier=..., auth=AuthSettings(...))`` with
  a joserfc verifier (as bench/apps/guard_sdk.py) and ``validate_token_resource=True``;
- ``fastmcp_server``: FastMCP's ``RemoteAuthProvider`` around its ``JWTVerifier``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx2
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

SCOPE = "notes:read"


class JoseVerifier:
    """An SDK ``TokenVerifier``: ES256 ``at+jwt`` tokens of ``issuer`` for ``audience``, keys fetched once."""

    def __init__(self, issuer: str, audience: str):
        self.issuer, self.audience = issuer, audience
        self.keys: KeySet | None = None
        self.registry = jwt.JWTClaimsRegistry(iss={"essential": True, "value": issuer},
                                              aud={"essential": True, "value": audience}, exp={"essential": True}, leeway=30)

    async def verify_token(self, token: str) -> AccessToken | None:
        if self.keys is None:
            async with httpx2.AsyncClient() as http:
                self.keys = KeySet.import_key_set((await http.get(f"{self.issuer.rstrip('/')}/jwks")).json())
        try:
            decoded = jwt.decode(token, self.keys, algorithms=["ES256"])
            self.registry.validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        return AccessToken(token=token, client_id=str(claims.get("client_id", "")), scopes=str(claims.get("scope", "")).split(),
                           expires_at=int(claims["exp"]), resource=self.audience, subject=str(claims.get("sub")), claims=claims)


def _echo(server):
    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text


def sdk_server(issuer: str, resource: str):
    mcp = MCPServer("doctor-sdk", token_verifier=JoseVerifier(issuer, resource), auth=AuthSettings(
        issuer_url=issuer, resource_server_url=resource, required_scopes=[SCOPE], validate_token_resource=True))
    _echo(mcp)
    return mcp.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


def fastmcp_server(issuer: str, resource: str):
    from fastmcp import FastMCP
    from fastmcp.server.auth import RemoteAuthProvider
    from fastmcp.server.auth.providers.jwt import JWTVerifier

    parts = urlsplit(resource)
    verifier = JWTVerifier(jwks_uri=f"{issuer}/jwks", issuer=issuer, audience=resource, algorithm="ES256", required_scopes=[SCOPE])
    auth = RemoteAuthProvider(token_verifier=verifier, authorization_servers=[issuer], base_url=f"{parts.scheme}://{parts.netloc}")
    mcp = FastMCP("doctor-fastmcp", auth=auth)

    @mcp.tool
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    return mcp.http_app(path="/mcp", host_origin_protection=False)
