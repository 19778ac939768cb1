"""The benchmark's JWKS endpoint: the public key set from ``BENCH_JWKS`` (a JSON string), static."""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_BODY = os.environ.get("BENCH_JWKS", '{"keys": []}').encode()


async def jwks(request: Request) -> Response:
    return Response(_BODY, media_type="application/json")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/jwks", jwks), Route("/health", health)])
