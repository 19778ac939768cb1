"""The embedded default (``gatehouse serve``): the AS and the guarded demo MCP server in one process.

The AS answers at the issuer; the demo notes server answers at ``<issuer>/mcp`` behind the
guard, which verifies tokens with the AS's own key ring (no HTTP round trip) and DPoP proofs with
the AS's settings (``dpop_proof_max_age``, ``dpop_require_nonce``; nonces keyed by the instance
secret, so every instance on one secret accepts the others').
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.authserver.app import create_authserver_app
from gatehouse.authserver.context import AuthServerContext
from gatehouse.demo.notes import NOTES_POLICY, create_notes_server
from gatehouse.guard import Guard, JWTVerifier, ResourceDPoP
from gatehouse.guard.local import KeyRingSource


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def demo_resource_uri(ctx: AuthServerContext) -> str:
    return f"{ctx.issuer}/mcp"


def create_embedded_app(ctx: AuthServerContext) -> Starlette:
    resource_uri = demo_resource_uri(ctx)
    resource = next((r for r in ctx.resources if r.uri == resource_uri), None)
    notes = create_notes_server(ctx.sessions)
    host = urlsplit(ctx.issuer).netloc
    sdk_app = notes.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(
            allowed_hosts=[host, "127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=[ctx.issuer, "http://127.0.0.1:*", "http://localhost:*"],
        ),
    )
    guard = Guard(
        resource=resource_uri,
        authorization_servers=[ctx.issuer],
        verifier=JWTVerifier(
            issuers=[ctx.issuer], audience=resource_uri, keys=KeyRingSource(ctx.keyring), leeway=ctx.settings.clock_leeway
        ),
        policy=NOTES_POLICY,
        scopes_supported=list(resource.scopes) if resource else None,
        resource_name=resource.name if resource else "Gatehouse notes",
        dpop=ResourceDPoP(
            max_age=ctx.settings.dpop_proof_max_age,
            require_nonce=ctx.settings.dpop_require_nonce,
            nonce_secret=hmac.new(ctx.secret, b"gatehouse resource dpop nonces", hashlib.sha256).digest(),
            nonce_lifetime=ctx.settings.dpop_nonce_lifetime,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with notes.session_manager.run():
            yield

    guarded = guard.protect(sdk_app)
    app = create_authserver_app(
        ctx,
        extra_routes=[
            Route("/healthz", healthz, methods=["GET"]),
            *[Route(path, guarded) for path in [*guard.metadata_paths, "/mcp"]],
        ],
        lifespan=lifespan,
    )
    return app
