"""A stand-in MCP server and authorization servers on loopback, told how to misbehave.

One Starlette app plays the resource (``/mcp``, its PRM) and any number of authorization
servers with path issuers (``/as1``, ``/as2``, metadata at the RFC 8414 path-inserted URI).
Authorization is approved without a person (redirect straight back), so the client's headless
mode drives it. Every request is recorded, so tests can assert what the client sent and what
it never sent.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]


@dataclass
class StandIn:
    """How the stand-in behaves; change fields between requests to change it."""

    base_url: str = ""
    authorization_servers: list[str] = field(default_factory=lambda: ["as1"])
    prm_resource: str | None = None
    prm_scopes: list[str] | None = field(default_factory=lambda: ["read", "write"])
    challenge_scope: str | None = "read"
    metadata_changes: dict[str, dict] = field(default_factory=dict)
    metadata_status: dict[str, int] = field(default_factory=dict)
    metadata_issuer: dict[str, str] = field(default_factory=dict)
    registration_error: dict | None = None
    registration_refused_by: set[str] = field(default_factory=set)
    answer: str = "approve"
    iss_mode: str = "correct"
    state_mode: str = "echo"
    expires_in: int = 3600
    required_scope: set[str] = field(default_factory=set)
    grantable: set[str] | None = None
    challenge_has_metadata: bool = True
    prm_missing_at_path: bool = False
    token_errors: list[dict] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    issued: dict[str, str] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        return f"{self.base_url}/mcp"

    def issuer(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def sent(self, path_suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    def metadata(self, name: str) -> dict:
        issuer = self.issuer(name)
        document = {
            "issuer": self.metadata_issuer.get(name, issuer),
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "registration_endpoint": f"{issuer}/register",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "scopes_supported": ["read", "write"],
        }
        for key, value in self.metadata_changes.get(name, {}).items():
            if value is None:
                document.pop(key, None)
            else:
                document[key] = value
        return document

    def app(self) -> Starlette:
        async def record(request: Request) -> dict[str, str]:
            params = dict(request.query_params)
            if request.method == "POST":
                if request.headers.get("content-type", "").startswith("application/json"):
                    body = await request.json()
                    params.update({k: str(v) for k, v in body.items()} if isinstance(body, dict) else {})
                else:
                    params.update(dict(await request.form()))
            if request.headers.get("authorization"):
                params["authorization_header"] = request.headers["authorization"]
            self.requests.append(Recorded(request.method, request.url.path, params))
            return params

        async def mcp(request: Request) -> Response:
            await record(request)
            header = request.headers.get("authorization", "")
            token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
            metadata_url = f"{self.base_url}/.well-known/oauth-protected-resource/mcp"
            if token is None or token not in self.issued:
                parts = [f'resource_metadata="{metadata_url}"'] if self.challenge_has_metadata else []
                parts += [f'scope="{self.challenge_scope}"'] if self.challenge_scope else []
                return Response(status_code=401, headers={"WWW-Authenticate": "Bearer " + ", ".join(parts)})
            if self.required_scope - set(self.issued[token].split()):
                needed = " ".join(sorted(self.required_scope))
                return Response(status_code=403, headers={
                    "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}", resource_metadata="{metadata_url}"'})
            return JSONResponse({"ok": True, "scope": self.issued[token]})

        async def protected_resource(request: Request) -> Response:
            await record(request)
            if self.prm_missing_at_path and request.url.path.endswith("/mcp"):
                return PlainTextResponse("not here", status_code=404)
            return JSONResponse({
                "resource": self.prm_resource or self.resource,
                "authorization_servers": [self.issuer(name) for name in self.authorization_servers],
                **({"scopes_supported": self.prm_scopes} if self.prm_scopes is not None else {}),
            })

        async def server_metadata(request: Request) -> Response:
            await record(request)
            name = request.path_params["name"]
            status = self.metadata_status.get(name)
            if status:
                return PlainTextResponse("unavailable", status_code=status)
            return JSONResponse(self.metadata(name))

        async def authorize(request: Request) -> Response:
            params = await record(request)
            name = request.path_params["name"]
            answer = {"code": "code-" + secrets.token_urlsafe(8)} if self.answer == "approve" else {
                "error": "access_denied", "error_description": "the user said no"}
            if self.state_mode == "echo":
                answer["state"] = params.get("state", "")
            elif self.state_mode == "wrong":
                answer["state"] = "not-the-state"
            if self.iss_mode == "correct":
                answer["iss"] = self.issuer(name)
            elif self.iss_mode == "wrong":
                answer["iss"] = self.issuer("evil")
            elif self.iss_mode == "trailing-slash":
                answer["iss"] = self.issuer(name) + "/"
            self.requests[-1].params["_scope_granted"] = params.get("scope", "")
            return RedirectResponse(f"{params['redirect_uri']}?{urlencode(answer)}", status_code=302)

        async def token(request: Request) -> Response:
            params = await record(request)
            if self.token_errors:
                return JSONResponse(self.token_errors.pop(0), status_code=401)
            grant = params.get("grant_type")
            if grant == "authorization_code":
                authorized = next(r for r in reversed(self.requests) if r.path.endswith("/authorize"))
                scope = authorized.params.get("scope", "")
            elif grant == "refresh_token":
                scope = self.issued.get(params.get("refresh_token", "").replace("rt-", "at-", 1), "")
            else:
                scope = params.get("scope", "")
            if self.grantable is not None:
                scope = " ".join(s for s in scope.split() if s in self.grantable)
            access = "at-" + secrets.token_urlsafe(12)
            self.issued[access] = scope
            body = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in, "scope": scope}
            if grant != "client_credentials":
                body["refresh_token"] = access.replace("at-", "rt-", 1)
            return JSONResponse(body, headers={"Cache-Control": "no-store"})

        async def register(request: Request) -> Response:
            await record(request)
            if request.path_params["name"] in self.registration_refused_by:
                return JSONResponse({"error": "access_denied", "error_description": "registration is closed"}, status_code=403)
            if self.registration_error is not None:
                return JSONResponse(self.registration_error, status_code=400)
            metadata = await request.json()
            return JSONResponse({
                "client_id": "standin-" + secrets.token_hex(4), "client_name": metadata.get("client_name"),
                "redirect_uris": metadata.get("redirect_uris"),
                "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
            }, status_code=201)

        async def elsewhere(request: Request) -> Response:
            await record(request)
            return PlainTextResponse("not found", status_code=404)

        return Starlette(routes=[
            Route("/mcp", mcp, methods=["GET", "POST"]),
            Route("/.well-known/oauth-protected-resource/mcp", protected_resource),
            Route("/.well-known/oauth-protected-resource", protected_resource),
            Route("/.well-known/oauth-authorization-server/{name}", server_metadata),
            Route("/{name}/authorize", authorize),
            Route("/{name}/token", token, methods=["POST"]),
            Route("/{name}/register", register, methods=["POST"]),
            Route("/{path:path}", elsewhere, methods=["GET", "POST"]),
        ])
