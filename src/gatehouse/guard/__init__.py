"""The resource server's side: verify tokens and guard an MCP server (RFC 9728, RFC 6750, RFC 9068).

Five lines for an official-SDK server::

    from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy
    issuer, resource = "https://auth.example.com", "https://mcp.example.com/mcp"
    verifier = JWTVerifier(issuers=[issuer], audience=resource, keys=JWKSKeySource(f"{issuer}/jwks"))
    guard = Guard(resource=resource, authorization_servers=[issuer], verifier=verifier,
                  policy=Policy(tools={"add_note": ["notes:write"]}, default=["notes:read"]))
    app = guard.protect(mcp.streamable_http_app())

For an AS that issues opaque tokens, ``IntrospectionVerifier`` (RFC 7662) takes the verifier's place.
DPoP-bound tokens (RFC 9449) are checked with their proofs by default; ``ResourceDPoP`` sets the
proof window, nonces and replay-cache size (``Guard(..., dpop=ResourceDPoP(require_nonce=True))``).
A tool that calls an upstream API for the user (UP-3) awaits ``upstream_token("google", ctx)`` in a
guard built with ``upstream_tokens=UpstreamTokenClient(...)`` (RFC 8693 token exchange at the AS).
"""

from gatehouse.guard.caller import Caller, current_caller
from gatehouse.guard.dpop import ResourceDPoP
from gatehouse.guard.guard import Guard
from gatehouse.guard.introspection import IntrospectionVerifier
from gatehouse.guard.policy import Policy
from gatehouse.guard.upstream_tokens import UpstreamTokenClient, upstream_token
from gatehouse.guard.verifier import JWKSKeySource, JWTVerifier, TokenRejected
from gatehouse.upstream_errors import (
    UpstreamNotLinked,
    UpstreamReauthorizationRequired,
    UpstreamTokenError,
    UpstreamUnavailable,
)

__all__ = [
    "Caller", "Guard", "IntrospectionVerifier", "JWKSKeySource", "JWTVerifier", "Policy", "ResourceDPoP", "TokenRejected",
    "UpstreamNotLinked", "UpstreamReauthorizationRequired", "UpstreamTokenClient", "UpstreamTokenError", "UpstreamUnavailable",
    "current_caller", "upstream_token",
]
