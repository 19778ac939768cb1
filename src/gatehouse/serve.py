"""The embedded default (``gatehouse serve``): the AS and the guarded demo MCP server in one process.

The AS answers at the issuer; the demo notes server answers at ``<issuer>/mcp`` behind the
guard, which verifies tokens with the AS's own key ring (no HTTP round trip) and DPoP proofs with
the AS's settings (``dpop_proof_max_age``, ``dpop_require_nonce``; nonces keyed by the instance
secret, so every instance on one secret accepts the others'). Around them, the operations layer
(:mod:`gatehouse.ops`): health checks, metrics, request ids and access logs, and the retention task.

``gatehouse serve --workers N`` runs N such processes on one port (uvicorn's multi-process
mode): the command does the one-time set-up (migrations, secret, first key) and then hands
its flags to the workers in ``GATEHOUSE_*`` variables; each worker builds its app with
:func:`create_app_from_environment`. Nothing a flow needs lives in one process (the store and
signed cookies hold it), so any worker, or any instance, can continue what another started.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse.authserver.app import create_authserver_app, trust_forwarding_proxies
from gatehouse.authserver.context import AuthServerContext, build_context
from gatehouse.config import Settings
from gatehouse.demo.notes import NOTES_POLICY, create_notes_server
from gatehouse.guard import Guard, JWTVerifier, ResourceDPoP
from gatehouse.guard.local import KeyRingSource
from gatehouse.ops import metrics
from gatehouse.ops.health import Readiness, healthz
from gatehouse.ops.request_log import RequestLogMiddleware
from gatehouse.ops.retention import retention_task


def operations_routes(ctx: AuthServerContext) -> list[Route]:
    """``/healthz``, ``/readyz`` and, with ``GATEHOUSE_METRICS_TOKEN`` set, ``/metrics`` behind it
    (otherwise metrics are only on the admin port, and ``/metrics`` here is a 404)."""
    routes = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", Readiness(ctx).readyz, methods=["GET"])]
    if ctx.settings.metrics_token:
        routes.append(Route("/metrics", metrics.bearer_protected(ctx.settings.metrics_token), methods=["GET"]))
    return routes


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
        async with notes.session_manager.run(), retention_task(ctx.engine, ctx.settings, on_report=metrics.count_purge):
            yield

    guarded = guard.protect(sdk_app)
    app = create_authserver_app(
        ctx,
        extra_routes=[
            *operations_routes(ctx),
            *[Route(path, guarded) for path in [*guard.metadata_paths, "/mcp"]],
        ],
        lifespan=lifespan,
    )
    metrics.install()
    app.add_middleware(metrics.MetricsMiddleware)
    app.add_middleware(RequestLogMiddleware)  # added last: outermost, so its request id is set first
    if ctx.settings.worker_header:
        app.add_middleware(WorkerHeader)
    trust_forwarding_proxies(app, ctx.settings.forwarded_allow_ips)  # outside the request log: it logs the real client
    return app


class WorkerHeader:
    """``Gatehouse-Worker: <pid>`` on every response (``GATEHOUSE_WORKER_HEADER=true``): shows which
    process answered, to check that a load balancer or ``--workers`` spreads requests. Off by
    default: it tells clients something about the host they need not know."""

    def __init__(self, app):
        self.app = app
        self.value = str(os.getpid()).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"gatehouse-worker", self.value)]}
            await send(message)

        return await self.app(scope, receive, send_with_header)


def worker_environment(overrides: dict) -> dict[str, str]:
    """The ``GATEHOUSE_*`` variables that give worker processes the settings the command got as flags."""
    return {f"GATEHOUSE_{name.upper()}": str(value) for name, value in overrides.items() if value is not None}


def create_app_from_environment() -> Starlette:
    """The app of one ``--workers`` process (a uvicorn factory): settings from the environment and gatehouse.toml."""
    return create_embedded_app(build_context(Settings()))
