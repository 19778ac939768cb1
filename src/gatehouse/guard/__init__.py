"""The resource server's side: verify tokens and guard an MCP server (RFC 9728, RFC 6750, RFC 9068).

Five lines for an official-SDK server::

    from gatehouse.guard import Guard, Policy
    guard = Guard(resource="https://mcp.example.com/mcp", issuer="https://auth.example.com",
                  policy=Policy(tools={"add_note": ["notes:write"]}, default=["notes:read"]))
    app = guard.protect(mcp.streamable_http_app())
"""

from gatehouse.guard.caller import Caller, current_caller
from gatehouse.guard.guard import Guard
from gatehouse.guard.policy import Policy
from gatehouse.guard.verifier import JWKSKeySource, JWTVerifier, TokenRejected

__all__ = ["Caller", "Guard", "JWKSKeySource", "JWTVerifier", "Policy", "TokenRejected", "current_caller"]
