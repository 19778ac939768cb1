"""Scenario A, the ceiling of the HTTP stack: Starlette with one POST endpoint and a small JSON."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def echo(request: Request) -> JSONResponse:
    """Read the (form) body, as a token endpoint would, and answer a small JSON object."""
    await request.body()
    return JSONResponse({"ok": True, "token_type": "Bearer", "expires_in": 3600})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/echo", echo, methods=["POST"]), Route("/health", health)])
