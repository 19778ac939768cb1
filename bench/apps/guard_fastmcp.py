"""Resource-server benchmark: the same ``echo`` tool on FastMCP, without auth and with its
``JWTVerifier`` pointed at the benchmark's JWKS (uvicorn factories, ``--factory``).

Environment as in :mod:`apps.guard_sdk`: ``BENCH_RESOURCE``, ``BENCH_ISSUER``, ``BENCH_JWKS_URI``.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from fastmcp import FastMCP

SCOPE = "notes:read"


def _server(auth=None) -> FastMCP:
    mcp = FastMCP("bench-echo", auth=auth)

    @mcp.tool
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    return mcp


def _app(mcp: FastMCP):
    return mcp.http_app(
        path="/mcp",
        stateless_http=True,
        json_response=True,
        host_origin_protection=False,
    )


def plain():
    return _app(_server())


def jwt():
    from fastmcp.server.auth.providers.jwt import JWTVerifier

    resource = os.environ["BENCH_RESOURCE"]
    parts = urlsplit(resource)
    verifier = JWTVerifier(
        jwks_uri=os.environ["BENCH_JWKS_URI"],
        issuer=os.environ["BENCH_ISSUER"],
        audience=resource,
        algorithm="ES256",
        required_scopes=[SCOPE],
        base_url=f"{parts.scheme}://{parts.netloc}",
    )
    return _app(_server(verifier))
