"""The embedded default: the authorization server in one process (``gatehouse serve``).

The guarded demo MCP server joins it at ``/mcp`` with the guard (issue 3); until then the
AS already declares ``<issuer>/mcp`` as a resource with ``notes:read`` and ``notes:write``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.authserver.app import create_authserver_app
from gatehouse.authserver.context import AuthServerContext


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_embedded_app(ctx: AuthServerContext) -> Starlette:
    return create_authserver_app(ctx, extra_routes=[Route("/healthz", healthz, methods=["GET"])])
