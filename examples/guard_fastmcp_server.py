"""A FastMCP server behind gatehouse.guard.

    GATEHOUSE_ISSUER=http://127.0.0.1:8000 python examples/guard_fastmcp_server.py
"""

import os

import uvicorn
from fastmcp import Context, FastMCP

from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy, current_caller


def build_app(issuer: str, resource: str):
    mcp = FastMCP("hello")

    @mcp.tool
    async def hello(ctx: Context) -> str:
        """Greet the caller."""
        return f"Hello, {current_caller(ctx).subject}!"

    guard = Guard(resource=resource, authorization_servers=[issuer], policy=Policy(tools={"*": ["hello:read"]}),
                  verifier=JWTVerifier(issuers=[issuer], audience=resource, keys=JWKSKeySource(f"{issuer}/jwks")))
    return guard.protect(mcp.http_app(path="/mcp"))


if __name__ == "__main__":
    uvicorn.run(build_app(os.environ["GATEHOUSE_ISSUER"], "http://127.0.0.1:9001/mcp"), host="127.0.0.1", port=9001)
