"""The authorization server as a Starlette application."""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.util import extract_basic_authorization
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gatehouse.authserver.account import AccountPages
from gatehouse.authserver.authorize import AuthorizeHandler
from gatehouse.authserver.context import AuthServerContext
from gatehouse.authserver.http import (
    NO_STORE,
    BadRequestBody,
    oauth_error,
    prepare,
    to_starlette,
)
from gatehouse.authserver.log_redaction import keep_tokens_out_of_logs
from gatehouse.authserver.metadata import (
    authorization_server_metadata,
    well_known_paths,
)
from gatehouse.authserver.oauth import (
    GatehouseAuthorizationServer,
    GatehouseJsonRequest,
    GatehouseRequest,
)
from gatehouse.authserver.pages import STATIC, error_page
from gatehouse.authserver.ratelimit import RateLimited, TooManyRequests
from gatehouse.authserver.refresh_delivery import MAX_ATTEMPTS, RotationInFlight, wait_for_delivery
from gatehouse.authserver.sessions import SessionManager
from gatehouse.authserver.upstream.login import UpstreamLogin
from gatehouse.authserver.token_exchange import PendingExchange, complete_exchange
from gatehouse.ops.request_log import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger("gatehouse.authserver")

PUBLIC_CACHE = {"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}
PUBLIC_PREFLIGHT = {  # browser-based MCP clients send MCP-Protocol-Version with metadata requests
    "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET",
    "Access-Control-Allow-Headers": "mcp-protocol-version", "Access-Control-Max-Age": "86400",
}


def _within(limit, subject: str, what: str):
    """Apply one limit; past it, the OAuth error a client is answered with (429 with Retry-After)."""
    try:
        return limit(subject)
    except RateLimited as exc:
        raise TooManyRequests(exc.retry_after, what) from None


class AuthServerEndpoints:
    """The machine-facing endpoints: token, registration, revocation, introspection, keys, metadata."""

    def __init__(self, ctx: AuthServerContext, server: GatehouseAuthorizationServer):
        self.ctx = ctx
        self.server = server
        self.metadata = authorization_server_metadata(
            ctx.issuer, ctx.resources.all_scopes, dpop_algorithms=ctx.dpop.algorithms,
            grant_profiles=ctx.trusted_idps.grant_profiles, jwt_bearer=bool(ctx.settings.trusted_idps),
            token_exchange=bool(ctx.settings.upstream),
        )

    async def _prepare(self, request: Request, body: str):
        return await prepare(request, self.ctx.issuer, limit=self.ctx.settings.max_body_bytes, body=body)

    def _run(self, prepared, call, json_request: bool = False):
        """Run an Authlib call in one transaction; an error answer writes only its queued effects."""

        def work(session):
            oauth_request = GatehouseJsonRequest(prepared, session) if json_request else GatehouseRequest(prepared, session, use_form=True)
            oauth_request.path_client_id = getattr(prepared, "path_client_id", None)
            try:
                response = call(oauth_request)
            except OAuth2Error as error:
                response = self.server.handle_error_response(oauth_request, error)
            return response, oauth_request

        def effects_of(result):
            response, oauth_request = result
            return oauth_request.error_effects if response.status >= 400 else []

        return self.ctx.run_with_effects(work, effects_of)

    def _run_settling_rotations(self, prepared, call):
        """``_run``, again after each refresh-token rotation it met in flight, once that has
        settled (gatehouse.authserver.refresh_delivery); the last run settles it itself."""
        for attempt in range(1, MAX_ATTEMPTS):
            prepared.attempt = attempt
            try:
                return self._run(prepared, call)
            except RotationInFlight as pending:
                wait_for_delivery(self.ctx.read_sessions, pending)
        prepared.attempt = MAX_ATTEMPTS
        return self._run(prepared, call)

    def _claimed_client_id(self, request: Request, prepared) -> str:
        """The client_id the request names (HTTP Basic, else the form), not yet authenticated;
        raises ValueError for a Basic header that is not base64 (ASCII) of UTF-8."""
        basic_id, _ = extract_basic_authorization(request.headers)
        return basic_id if basic_id is not None else dict(prepared.form).get("client_id", "")

    def _run_within_limits(self, prepared, call, client_id: str, token_endpoint: bool):
        """``_run`` inside the limits. Failed client authentications are counted per (client_id,
        address) wherever clients authenticate (S-T7). At the token endpoint, requests are counted
        per client and per address; a request whose client fails to authenticate gives its place
        in the client's quota back, so no one can use up another client's quota."""
        limits = self.ctx.limits
        address = prepared.remote_addr or "unknown"
        failures = f"{client_id}|{address}"
        quota = None
        try:
            _within(limits.failed_client_auth.check, failures, "failed client authentications")
            if token_endpoint:
                if client_id:
                    quota = _within(limits.token_per_client.hit, client_id, "token requests by this client")
                _within(limits.token_per_address.hit, address, "token requests from this address")
        except TooManyRequests as error:
            limits.token_per_client.refund(quota)
            return self.server.handle_response(*error()), None
        response, oauth_request = self._run_settling_rotations(prepared, call)
        if getattr(oauth_request, "client_auth_failed", False):
            limits.failed_client_auth.record(failures)
            limits.token_per_client.refund(quota)
        elif token_endpoint and not client_id and getattr(oauth_request, "client", None) is not None:  # named by its assertion only
            limits.token_per_client.record(_quota_key(oauth_request.client))
        return response, oauth_request

    async def _client_authenticated(self, request: Request, call, token_endpoint: bool = False) -> Response:
        try:
            prepared = await self._prepare(request, "form")
        except BadRequestBody as exc:
            return oauth_error(exc.status, exc.error, exc.description)
        try:
            client_id = self._claimed_client_id(request, prepared)
        except ValueError:
            return oauth_error(
                401, "invalid_client", "the HTTP Basic credentials are not base64-encoded UTF-8 (RFC 7617 section 2)",
                headers={"WWW-Authenticate": 'Basic error="invalid_client"'},
            )
        response, _ = await run_in_threadpool(self._run_within_limits, prepared, call, client_id, token_endpoint)
        if isinstance(response.body, PendingExchange):  # RFC 8693: the vault is asked after the transaction
            response = await complete_exchange(self.ctx, self.server, response)
        answer = to_starlette(response)
        refresh_token = response.body.get("refresh_token") if response.status == 200 and isinstance(response.body, dict) else None
        if isinstance(refresh_token, str):  # recorded once the answer has been sent (refresh_delivery)
            answer.background = BackgroundTask(self.ctx.deliveries.delivered, refresh_token)
        return answer

    async def token(self, request: Request) -> Response:
        return await self._client_authenticated(request, self._token_response, token_endpoint=True)

    def _token_response(self, oauth_request: GatehouseRequest):
        """RFC 6749 section 3.2, with the request's DPoP proof checked first (RFC 9449 section 5)."""
        oauth_request.dpop = self.ctx.dpop.proof_of(oauth_request)
        response = self.server.create_token_response(oauth_request)
        if oauth_request.dpop is not None:
            response.headers.extend(self.ctx.dpop.response_headers())
        return response

    async def revoke(self, request: Request) -> Response:
        return await self._client_authenticated(request, lambda r: self.server.create_endpoint_response("revocation", r))

    async def introspect(self, request: Request) -> Response:
        return await self._client_authenticated(request, lambda r: self.server.create_endpoint_response("introspection", r))

    async def register(self, request: Request) -> Response:
        remote = request.client.host if request.client else "unknown"
        try:
            await run_in_threadpool(_within, self.ctx.limits.registration.hit, remote, "registrations from this address")
        except TooManyRequests as error:
            return to_starlette(self.server.handle_response(*error()))
        try:
            prepared = await self._prepare(request, "json")
        except BadRequestBody as exc:
            return oauth_error(exc.status, exc.error, exc.description)
        response, _ = await run_in_threadpool(self._run, prepared, lambda r: self.server.handle_response(*self.server.registration(r)), True)
        return to_starlette(response)

    async def client_configuration(self, request: Request) -> Response:
        try:
            prepared = await self._prepare(request, "json" if request.method == "PUT" else "none")
        except BadRequestBody as exc:
            return oauth_error(exc.status, exc.error, exc.description)
        prepared.path_client_id = unquote(request.path_params["client_id"])
        response, _ = await run_in_threadpool(
            self._run, prepared, lambda r: self.server.handle_response(*self.server.configuration(r)), True
        )
        return to_starlette(response)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": self.ctx.keyring.published_keys()}, headers=PUBLIC_CACHE)

    async def server_metadata(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=PUBLIC_PREFLIGHT)
        return JSONResponse(self.metadata, headers=PUBLIC_CACHE)


async def _stylesheet(request: Request) -> Response:
    return FileResponse(STATIC / "gatehouse.css", headers={"Cache-Control": "public, max-age=3600"})


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    request_id = current_request_id()
    accept = request.headers.get("accept", "")
    if "text/html" in accept:
        response = error_page(
            "Something went wrong",
            "The server could not finish this request. Nothing was changed.",
            advice="Try again in a moment. If it keeps happening, tell the administrator"
            + (f" (request id {request_id})." if request_id else "."),
            status_code=500,
        )
    else:
        response = JSONResponse(
            {"error": "server_error", "error_description": "the server could not finish this request"}, status_code=500, headers=NO_STORE
        )
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def authserver_routes(ctx: AuthServerContext) -> tuple[list[BaseRoute], "AuthServerEndpoints"]:
    """Routes of the AS, relative to the issuer's path."""
    base_path = urlsplit(ctx.issuer).path.rstrip("/")
    server = GatehouseAuthorizationServer(ctx)
    sessions = SessionManager(ctx.secret)
    endpoints = AuthServerEndpoints(ctx, server)
    authorize = AuthorizeHandler(ctx, server, sessions, base_path)
    account = AccountPages(ctx, sessions, base_path)
    upstream = UpstreamLogin(ctx, authorize, sessions, base_path, account.safe_next)
    return [
        Route("/authorize", authorize.handle, methods=["GET", "POST"]),
        Route("/login", account.login, methods=["GET", "POST"]),
        Route("/login/upstream/{name}", upstream.start, methods=["GET"]),
        Route("/login/upstream/{name}", upstream.answer, methods=["POST"]),
        Route("/login/upstream/{name}/callback", upstream.callback, methods=["GET"]),
        Route("/logout", account.logout, methods=["POST"]),
        Route("/apps", account.apps, methods=["GET"]),
        Route("/apps/revoke", account.revoke_app, methods=["POST"]),
        Route("/apps/upstream/unlink", account.unlink_upstream, methods=["POST"]),
        Route("/token", endpoints.token, methods=["POST"]),
        Route("/register", endpoints.register, methods=["POST"]),
        Route("/register/{client_id:path}", endpoints.client_configuration, methods=["GET", "PUT", "DELETE"]),
        Route("/revoke", endpoints.revoke, methods=["POST"]),
        Route("/introspect", endpoints.introspect, methods=["POST"]),
        Route("/jwks", endpoints.jwks, methods=["GET"]),
        Route("/static/gatehouse.css", _stylesheet, methods=["GET"]),
    ], endpoints


def create_authserver_app(ctx: AuthServerContext, extra_routes: list[BaseRoute] | None = None, lifespan=None) -> Starlette:
    """The AS at the issuer's root (or under its path), plus any ``extra_routes`` at the host root."""
    keep_tokens_out_of_logs()
    routes, endpoints = authserver_routes(ctx)
    base_path = urlsplit(ctx.issuer).path.rstrip("/")
    rfc8414_paths, oidc_paths = well_known_paths(ctx.issuer)
    well_known = [Route(p, endpoints.server_metadata, methods=["GET", "OPTIONS"]) for p in rfc8414_paths + oidc_paths]
    app_routes: list[BaseRoute] = [*well_known, *(extra_routes or [])]
    app_routes += [Mount(base_path, routes=routes)] if base_path else routes
    app = Starlette(routes=app_routes, exception_handlers={Exception: _unexpected_error}, lifespan=lifespan)
    app.state.ctx = ctx
    return app


def trust_forwarding_proxies(app: Starlette, forwarded_allow_ips: str | None) -> None:
    """Behind proxies listed in ``forwarded_allow_ips``: the client's address is the first hop of
    ``X-Forwarded-For``, read from the right, that is not one of them (uvicorn's
    ProxyHeadersMiddleware); without that setting the header is ignored, since anyone can send it.
    Rate limits, the audit log and the request log see this address. Add it last (outermost)."""
    if forwarded_allow_ips:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=forwarded_allow_ips)


def _quota_key(client) -> str:
    """Whose token quota a request counts against: the client, or for a workload JWT (which
    names no registered client) the workload itself, by issuer and subject."""
    client_id = getattr(client, "client_id", None)
    return client_id if client_id else f"workload:{client.issuer}|{client.subject}"
