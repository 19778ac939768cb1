"""Resource-server benchmark: one official-SDK MCP server (tool ``echo``) in three guises.

uvicorn factories (``--factory``), configured by the environment the benchmark sets:
``BENCH_RESOURCE`` (this server's ``/mcp`` URL, the tokens' ``aud``), ``BENCH_ISSUER``,
``BENCH_JWKS_URI``.

* ``unguarded``  - the bare server: stateless, JSON answers, no DNS-rebinding check;
* ``gatehouse``  - the same server behind :class:`gatehouse.guard.Guard`;
* ``sdk_auth``   - the same server behind the SDK's own bearer middleware, with a
  :class:`JoseVerifier` (ES256 JWTs verified with joserfc against the JWKS, no cache);
* ``by_port``    - one server instance answering on several ports (``BENCH_PORTS``, run with
  ``serve_ports.py``): bare on one, behind its own guard on each of the others, so the guard
  is compared with the very server it wraps, in the same process.
"""

from __future__ import annotations

import json
import os
import urllib.request

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

SCOPE = "notes:read"
NO_REBINDING_CHECK = TransportSecuritySettings(enable_dns_rebinding_protection=False)


def _env() -> tuple[str, str, str]:
    return (
        os.environ["BENCH_RESOURCE"],
        os.environ["BENCH_ISSUER"],
        os.environ["BENCH_JWKS_URI"],
    )


def _server(**kwargs) -> MCPServer:
    mcp = MCPServer("bench-echo", log_level="WARNING", **kwargs)

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    return mcp


def _sdk_app(mcp: MCPServer) -> Starlette:
    return mcp.streamable_http_app(
        stateless_http=True, json_response=True, transport_security=NO_REBINDING_CHECK
    )


def unguarded() -> Starlette:
    return _sdk_app(_server())


def _guard(resource: str, issuer: str, jwks_uri: str):
    from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy

    return Guard(
        resource=resource,
        authorization_servers=[issuer],
        verifier=JWTVerifier(
            issuers=[issuer], audience=resource, keys=JWKSKeySource(jwks_uri)
        ),
        policy=Policy(tools={"echo": [SCOPE]}),
    )


def gatehouse():
    resource, issuer, jwks_uri = _env()
    guard = _guard(resource, issuer, jwks_uri)
    # The guard hands non-HTTP scopes (the lifespan) to the SDK app, so the SDK app's lifespan,
    # which runs ``mcp.session_manager.run()``, runs as it would unguarded. (Mounted in a
    # Starlette app whose lifespan runs the session manager, as gatehouse/serve.py does, costs
    # Starlette's routing and middleware on top: about 10 us per call here.)
    return guard.protect(_sdk_app(_server()))


def by_port():
    """``BENCH_PORTS`` (JSON ``{"name": port}``): the port named ``sdk`` gets the bare server,
    every other port the same server instance behind a guard of its own whose resource is that
    port's ``/mcp`` URL. The lifespan (the SDK's session manager) runs once, through the bare app."""
    ports: dict[str, int] = json.loads(os.environ["BENCH_PORTS"])
    _, issuer, jwks_uri = _env()
    bare = _sdk_app(_server())
    apps = {
        port: bare if name == "sdk" else _guard(f"http://127.0.0.1:{port}/mcp", issuer, jwks_uri).protect(bare)
        for name, port in ports.items()
    }

    async def dispatch(scope, receive, send):
        if scope["type"] == "lifespan":
            return await bare(scope, receive, send)
        return await apps[scope["server"][1]](scope, receive, send)

    return dispatch


class JoseVerifier:
    """An SDK ``TokenVerifier``: ES256 ``at+jwt`` tokens checked with joserfc, keys fetched once."""

    def __init__(self, jwks_uri: str, issuer: str, audience: str):
        with urllib.request.urlopen(jwks_uri, timeout=10) as response:
            self.keys = KeySet.import_key_set(json.loads(response.read()))
        self.issuer = issuer
        self.audience = audience
        self.registry = jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "value": audience},
            exp={"essential": True},
            sub={"essential": True},
            leeway=30,
        )

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            decoded = jwt.decode(token, self.keys, algorithms=["ES256"])
            if str(decoded.header.get("typ", "")).lower() not in (
                "at+jwt",
                "application/at+jwt",
            ):
                return None
            self.registry.validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        claims = decoded.claims
        return AccessToken(
            token=token,
            client_id=str(claims.get("client_id", "")),
            scopes=str(claims.get("scope", "")).split(),
            expires_at=int(claims["exp"]),
            resource=self.audience,
            subject=str(claims["sub"]),
            claims=claims,
        )


def sdk_auth() -> Starlette:
    resource, issuer, jwks_uri = _env()
    mcp = _server(
        token_verifier=JoseVerifier(jwks_uri, issuer, resource),
        auth=AuthSettings(
            issuer_url=issuer,
            resource_server_url=resource,
            required_scopes=[SCOPE],
            validate_token_resource=True,
        ),
    )
    return _sdk_app(mcp)
