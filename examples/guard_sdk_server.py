"""An official-SDK MCP server behind gatehouse.guard.

    GATEHOUSE_ISSUER=http://127.0.0.1:8000 python examples/guard_sdk_server.py

Tokens come from that issuer (``gatehouse serve``, or any AS that issues RFC 9068 JWTs)
for the resource http://127.0.0.1:9000/mcp, which the AS must know (``[[resources]]`` in
gatehouse.toml).
"""

import os

import uvicorn
from mcp.server.mcpserver import Context, MCPServer

from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy, current_caller


def build_app(issuer: str, resource: str):
    mcp = MCPServer(name="hello")

    @mcp.tool()
    async def hello(ctx: Context) -> str:
        """Greet the caller."""
        return f"Hello, {current_caller(ctx).subject}!"

    guard = Guard(resource=resource, authorization_servers=[issuer], policy=Policy(tools={"*": ["hello:read"]}),
                  verifier=JWTVerifier(issuers=[issuer], audience=resource, keys=JWKSKeySource(f"{issuer}/jwks")))
    return guard.protect(mcp.streamable_http_app())


if __name__ == "__main__":
    uvicorn.run(build_app(os.environ["GATEHOUSE_ISSUER"], "http://127.0.0.1:9000/mcp"), host="127.0.0.1", port=9000)
