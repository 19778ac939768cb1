"""A small MCP server and its authorization server on loopback, correct unless told to break.

One Starlette app plays both roles: the resource at ``/mcp`` with its PRM, and an AS with the
path issuer ``/tenant`` (metadata at the RFC 8414 path-inserted URI), dynamic registration, an
authorization endpoint that approves without a person (so ``--login --headless`` drives it),
ES256 ``at+jwt`` access tokens, rotating refresh tokens with reuse detection, and RFC 7009
revocation. Each field of ``Faults`` turns one known pitfall on.

``stripping_proxy`` is a reverse proxy that forwards everything to an upstream and drops
``WWW-Authenticate`` from the answers, as a misconfigured gateway does.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import httpx2
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

SCOPE = "files:read"
FIXED_AUDIENCE = "https://api.example.com"


@dataclass
class Faults:
    issuer_trailing_slash: bool = False
    """PRM lists the issuer with a trailing slash; the AS metadata spells it without."""
    prm_only_at_root: bool = False
    no_pkce_methods: bool = False
    """The AS metadata lacks code_challenge_methods_supported."""
    challenge_without_resource_metadata: bool = False
    accepts_any_audience: bool = False
    """The resource server checks signature, issuer and expiry, never ``aud``."""
    ignores_resource: bool = False
    """The AS puts one fixed audience in every token (and the RS expects that one)."""
    no_cors: bool = False
    """The metadata answers carry no Access-Control-Allow-Origin."""


@dataclass
class Grant:
    client_id: str
    resource: str
    scope: str
    refresh_token: str
    used: set[str] = field(default_factory=set)
    revoked: bool = False


class StandIn:
    def __init__(self, faults: Faults | None = None):
        self.faults = faults or Faults()
        self.base_url = ""
        self.key = ECKey.generate_key("P-256", parameters={"kid": "standin-1"}, private=True)
        self.clients: dict[str, list[str]] = {}
        self.codes: dict[str, dict] = {}
        self.grants: list[Grant] = []
        self.issued: list[str] = []
        """Every token and code handed out, so tests can check none leaks into a report."""

    @property
    def resource(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/tenant"

    # --- the resource server -------------------------------------------------------------

    def prm(self) -> dict:
        issuer = self.issuer + ("/" if self.faults.issuer_trailing_slash else "")
        return {"resource": self.resource, "authorization_servers": [issuer], "scopes_supported": [SCOPE],
                "bearer_methods_supported": ["header"]}

    def cors(self) -> dict[str, str]:
        return {} if self.faults.no_cors else {"Access-Control-Allow-Origin": "*"}

    async def serve_prm(self, request: Request) -> Response:
        return JSONResponse(self.prm(), headers=self.cors())

    def challenge(self, error: str | None) -> str:
        parts = [f'error="{error}"'] if error else []
        if not self.faults.challenge_without_resource_metadata:
            path = "" if self.faults.prm_only_at_root else "/mcp"
            parts.append(f'resource_metadata="{self.base_url}/.well-known/oauth-protected-resource{path}"')
        parts.append(f'scope="{SCOPE}"')
        return "Bearer " + ", ".join(parts)

    def accepts(self, token: str) -> bool:
        try:
            claims = jwt.decode(token, self.key, algorithms=["ES256"]).claims
        except (JoseError, ValueError):
            return False
        if claims.get("iss") != self.issuer or claims.get("exp", 0) < time.time():
            return False
        if self.faults.accepts_any_audience:
            return True
        expected = FIXED_AUDIENCE if self.faults.ignores_resource else self.resource
        return claims.get("aud") == expected

    async def mcp(self, request: Request) -> Response:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        if token is None or not self.accepts(token):
            return JSONResponse({"error": "invalid_token"}, status_code=401,
                                headers={"WWW-Authenticate": self.challenge("invalid_token" if token else None)})
        body = await request.json()
        return JSONResponse({"jsonrpc": "2.0", "id": body.get("id"), "result": {
            "protocolVersion": "2026-07-28", "capabilities": {}, "serverInfo": {"name": "standin", "version": "1"}}})

    # --- the authorization server --------------------------------------------------------

    def metadata(self) -> dict:
        document = {
            "issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token", "registration_endpoint": f"{self.issuer}/register",
            "revocation_endpoint": f"{self.issuer}/revoke", "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"], "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none"], "scopes_supported": [SCOPE],
            "code_challenge_methods_supported": ["S256"], "authorization_response_iss_parameter_supported": True,
            "client_id_metadata_document_supported": False,
        }
        if self.faults.no_pkce_methods:
            del document["code_challenge_methods_supported"]
        return document

    async def serve_metadata(self, request: Request) -> Response:
        return JSONResponse(self.metadata(), headers=self.cors())

    async def jwks(self, request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def register(self, request: Request) -> Response:
        if request.method != "POST":
            return PlainTextResponse("Method Not Allowed", status_code=405)
        body = await request.json()
        client_id = secrets.token_urlsafe(12)
        self.clients[client_id] = list(body.get("redirect_uris", []))
        return JSONResponse({**body, "client_id": client_id, "token_endpoint_auth_method": "none"}, status_code=201)

    def _redirect_allowed(self, client_id: str, redirect_uri: str) -> bool:
        def loopback_any_port(uri: str) -> str:
            parts = urlsplit(uri)
            return f"{parts.scheme}://{parts.hostname}{parts.path}"
        return any(loopback_any_port(uri) == loopback_any_port(redirect_uri) for uri in self.clients.get(client_id, []))

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") not in self.clients or not self._redirect_allowed(q["client_id"], q.get("redirect_uri", "")):
            return PlainTextResponse("unknown client or redirect URI", status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return self._back(q, error="invalid_request")
        code = secrets.token_urlsafe(16)
        self.issued.append(code)
        self.codes[code] = {"client_id": q["client_id"], "redirect_uri": q["redirect_uri"], "challenge": q["code_challenge"],
                            "resource": q.get("resource") or self.resource, "scope": q.get("scope") or SCOPE}
        return self._back(q, code=code)

    def _back(self, q, **params) -> Response:
        params.update(state=q.get("state", ""), iss=self.issuer)
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode(params)}", status_code=302)

    def _access_token(self, grant: Grant) -> str:
        now = int(time.time())
        audience = FIXED_AUDIENCE if self.faults.ignores_resource else grant.resource
        claims = {"iss": self.issuer, "sub": "alice", "aud": audience, "client_id": grant.client_id, "scope": grant.scope,
                  "iat": now, "exp": now + 600, "jti": secrets.token_urlsafe(8)}
        return jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "standin-1"}, claims, self.key)

    def _tokens(self, grant: Grant) -> Response:
        grant.refresh_token = secrets.token_urlsafe(24)
        access_token = self._access_token(grant)
        self.issued += [access_token, grant.refresh_token]
        return JSONResponse({"access_token": access_token, "token_type": "Bearer", "expires_in": 600,
                             "refresh_token": grant.refresh_token, "scope": grant.scope}, headers={"Cache-Control": "no-store"})

    async def token(self, request: Request) -> Response:
        form = await request.form()
        if form.get("grant_type") == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)
            verifier = form.get("code_verifier", "")
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if code is None or code["challenge"] != challenge or code["redirect_uri"] != form.get("redirect_uri"):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            grant = Grant(code["client_id"], code["resource"], code["scope"], "")
            self.grants.append(grant)
            return self._tokens(grant)
        if form.get("grant_type") == "refresh_token":
            presented = form.get("refresh_token", "")
            for grant in self.grants:
                if presented in grant.used:
                    grant.revoked = True  # reuse detection
                if grant.refresh_token == presented and not grant.revoked:
                    grant.used.add(presented)
                    return self._tokens(grant)
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    async def revoke(self, request: Request) -> Response:
        form = await request.form()
        for grant in self.grants:
            if form.get("token") == grant.refresh_token:
                grant.revoked = True
        return Response(status_code=200)

    def app(self) -> Starlette:
        prm_paths = ["/.well-known/oauth-protected-resource"]
        if not self.faults.prm_only_at_root:
            prm_paths.append("/.well-known/oauth-protected-resource/mcp")
        return Starlette(routes=[
            Route("/mcp", self.mcp, methods=["POST"]),
            *[Route(path, self.serve_prm, methods=["GET"]) for path in prm_paths],
            Route("/.well-known/oauth-authorization-server/tenant", self.serve_metadata, methods=["GET"]),
            Route("/tenant/jwks", self.jwks, methods=["GET"]),
            Route("/tenant/register", self.register, methods=["GET", "POST"]),
            Route("/tenant/authorize", self.authorize, methods=["GET"]),
            Route("/tenant/token", self.token, methods=["POST"]),
            Route("/tenant/revoke", self.revoke, methods=["POST"]),
        ])


def stripping_proxy(upstream: str):
    """An ASGI reverse proxy to ``upstream`` that drops ``WWW-Authenticate`` from every answer."""
    client = httpx2.AsyncClient(base_url=upstream, timeout=10, trust_env=False)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in (b"host", b"content-length")]
        path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        answer = await client.request(scope["method"], path, headers=headers, content=body)
        kept = [(k.encode(), v.encode()) for k, v in answer.headers.multi_items()
                if k.lower() not in ("www-authenticate", "content-length", "transfer-encoding", "content-encoding")]
        await send({"type": "http.response.start", "status": answer.status_code,
                    "headers": [*kept, (b"content-length", str(len(answer.content)).encode())]})
        await send({"type": "http.response.body", "body": answer.content})

    return app
