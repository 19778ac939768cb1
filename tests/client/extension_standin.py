"""The stand-in of tests/client/standin.py, plus the extensions: DPoP and an enterprise IdP.

- ``check_proof`` checks a DPoP proof by the rules of RFC 9449 section 4.3 (and 7.1 with an
  access token), with joserfc, the way an AS or a resource server must.
- ``ExtensionStandIn`` is a ``StandIn`` whose AS ``as1`` advertises DPoP, binds tokens to the key
  of the proof in the token request, and whose ``/mcp`` accepts a bound token only with the DPoP
  scheme and a valid proof of that key; either side may demand a nonce (sections 8 and 9). It
  also plays an enterprise IdP at ``/idp`` that exchanges an ID token for an ID-JAG (RFC 8693).
  Every request is recorded with its headers.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from tests.client.standin import Recorded, StandIn

ASYMMETRIC = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]
IAT_WINDOW = 300
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


class ProofRejected(Exception):
    """Why a proof fails RFC 9449 section 4.3."""


def ath_of(access_token: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()


def check_proof(proof: str | None, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None,
                bound_jkt: str | None = None, seen_jtis: set[str] | None = None, now: float | None = None) -> dict:
    """The checks of RFC 9449 section 4.3, in order; returns the claims, with the key's thumbprint as ``_jkt``."""
    if not proof or "," in proof:
        raise ProofRejected("not exactly one DPoP header")
    try:
        header = jws.extract_compact(proof.encode()).protected
    except (JoseError, ValueError) as exc:
        raise ProofRejected(f"not a JWT ({exc})") from None
    if header.get("typ") != "dpop+jwt":
        raise ProofRejected("typ is not dpop+jwt")
    if header.get("alg") not in ASYMMETRIC:
        raise ProofRejected("alg is not an asymmetric algorithm")
    public = header.get("jwk")
    if not isinstance(public, dict) or any(name in public for name in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise ProofRejected("jwk missing or private")
    key = JWKRegistry.import_key(public)
    try:
        claims = jwt.decode(proof, key, algorithms=[header["alg"]]).claims
    except JoseError as exc:
        raise ProofRejected(f"signature does not verify ({exc})") from None
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise ProofRejected("no jti")
    if claims.get("htm") != method:
        raise ProofRejected("htm is not the request method")
    if "?" in claims.get("htu", "?") or "#" in claims["htu"] or claims["htu"] != url.split("?")[0].split("#")[0]:
        raise ProofRejected("htu is not the request URI")
    if nonce is not None and claims.get("nonce") != nonce:
        raise ProofRejected("nonce missing or stale")
    if not isinstance(claims.get("iat"), int) or abs((now or time.time()) - claims["iat"]) > IAT_WINDOW:
        raise ProofRejected("iat outside the window")
    if access_token is not None and claims.get("ath") != ath_of(access_token):
        raise ProofRejected("ath is not the hash of the access token")
    jkt = key.thumbprint()
    if bound_jkt is not None and jkt != bound_jkt:
        raise ProofRejected("the proof key is not the key the token is bound to")
    if seen_jtis is not None:
        if claims["jti"] in seen_jtis:
            raise ProofRejected("jti replayed")
        seen_jtis.add(claims["jti"])
    return {**claims, "_jkt": jkt}


@dataclass
class Sent:
    """A request as received, with the headers this module's tests look at."""

    method: str
    path: str
    params: dict[str, str]
    authorization: str | None
    proof: str | None


@dataclass
class ExtensionStandIn(StandIn):
    proof_algorithms: list[str] | None = field(default_factory=lambda: ["ES256"])
    as_nonce: str | None = None
    rs_nonce: str | None = None
    rs_nonce_offered: str | None = None
    issue_bearer_only: bool = False
    says_dpop_without_proof: bool = False
    bound: dict[str, str] = field(default_factory=dict)
    jtis: set[str] = field(default_factory=set)
    rejected_proofs: list[str] = field(default_factory=list)
    sent_with_headers: list[Sent] = field(default_factory=list)
    id_token: str = "the-users-id-token"
    idp_key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256"))
    id_jags: list[str] = field(default_factory=list)
    idp_refuses: bool = False

    def __post_init__(self) -> None:
        if self.proof_algorithms is not None:
            self.metadata_changes.setdefault("as1", {})["dpop_signing_alg_values_supported"] = self.proof_algorithms

    def advertise(self, algorithms: list[str] | None) -> None:
        self.metadata_changes.setdefault("as1", {})["dpop_signing_alg_values_supported"] = algorithms

    def with_headers(self, path_suffix: str) -> list[Sent]:
        return [s for s in self.sent_with_headers if s.path.endswith(path_suffix)]

    @property
    def idp_issuer(self) -> str:
        return f"{self.base_url}/idp"

    async def _record(self, request: Request) -> dict[str, str]:
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(dict(await request.form()))
        authorization, proof = request.headers.get("authorization"), request.headers.get("dpop")
        if authorization:
            params["authorization_header"] = authorization
        self.requests.append(Recorded(request.method, request.url.path, params))
        self.sent_with_headers.append(Sent(request.method, request.url.path, params, authorization, proof))
        return params

    def _scope_for(self, params: dict[str, str], refresh_scope: str) -> str:
        grant = params.get("grant_type")
        if grant == "authorization_code":
            authorized = next(r for r in reversed(self.requests) if r.path.endswith("/authorize"))
            return authorized.params.get("scope", "")
        return refresh_scope if grant == "refresh_token" else params.get("scope", "")

    def app(self) -> Starlette:
        async def token(request: Request) -> Response:
            params = await self._record(request)
            if self.token_errors:
                return JSONResponse(self.token_errors.pop(0), status_code=400)
            proof, jkt = request.headers.get("dpop"), None
            if proof is not None:
                try:
                    claims = check_proof(proof, "POST", str(request.url), nonce=self.as_nonce, seen_jtis=self.jtis)
                except ProofRejected as exc:
                    self.rejected_proofs.append(str(exc))
                    if self.as_nonce is not None and str(exc).startswith("nonce"):
                        return JSONResponse({"error": "use_dpop_nonce", "error_description": "use the nonce"},
                                            status_code=400, headers={"DPoP-Nonce": self.as_nonce})
                    return JSONResponse({"error": "invalid_dpop_proof", "error_description": str(exc)}, status_code=400)
                jkt = claims["_jkt"]
            refresh_scope = ""
            if params.get("grant_type") == "refresh_token":
                old_access = params.get("refresh_token", "").replace("rt-", "at-", 1)
                if self.bound.get(old_access) not in (None, jkt):
                    return JSONResponse({"error": "invalid_grant", "error_description": "refresh token bound to another key"},
                                        status_code=400)
                refresh_scope = self.issued.get(old_access, "")
            scope = self._scope_for(params, refresh_scope)
            access = "at-" + secrets.token_urlsafe(12)
            self.issued[access] = scope
            bind = jkt is not None and not self.issue_bearer_only
            if bind:
                self.bound[access] = jkt
            body = {"access_token": access, "token_type": "DPoP" if bind or self.says_dpop_without_proof else "Bearer", "expires_in": self.expires_in,
                    "scope": scope, "refresh_token": access.replace("at-", "rt-", 1)}
            return JSONResponse(body, headers={"Cache-Control": "no-store"})

        async def mcp(request: Request) -> Response:
            await self._record(request)
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            metadata = f'resource_metadata="{self.base_url}/.well-known/oauth-protected-resource/mcp", scope="read"'
            if token not in self.issued or (scheme == "Bearer") == (token in self.bound) or scheme not in ("Bearer", "DPoP"):
                return Response(status_code=401, headers={"WWW-Authenticate": f'DPoP algs="ES256", {metadata}'})
            if scheme == "DPoP":
                try:
                    check_proof(request.headers.get("dpop"), request.method, str(request.url), access_token=token,
                                nonce=self.rs_nonce, bound_jkt=self.bound[token], seen_jtis=self.jtis)
                except ProofRejected as exc:
                    self.rejected_proofs.append(str(exc))
                    error = "use_dpop_nonce" if self.rs_nonce and str(exc).startswith("nonce") else "invalid_dpop_proof"
                    headers = {"WWW-Authenticate": f'DPoP error="{error}", algs="ES256"'}
                    if self.rs_nonce:
                        headers["DPoP-Nonce"] = self.rs_nonce_offered or self.rs_nonce
                    return Response(status_code=401, headers=headers)
            return JSONResponse({"ok": True, "scope": self.issued[token]})

        async def idp_configuration(request: Request) -> Response:
            return JSONResponse({"issuer": self.idp_issuer, "token_endpoint": f"{self.idp_issuer}/token",
                                 "grant_types_supported": [TOKEN_EXCHANGE]})

        async def idp_token(request: Request) -> Response:
            params = await self._record(request)
            if self.idp_refuses or params.get("subject_token") != self.id_token:
                return JSONResponse({"error": "invalid_grant", "error_description": "the ID token is not valid"}, status_code=400)
            claims = {"iss": self.idp_issuer, "sub": "alice@example.com", "aud": params.get("audience"),
                      "resource": params.get("resource"), "client_id": "enterprise-client", "jti": secrets.token_hex(8),
                      "iat": int(time.time()), "exp": int(time.time()) + 300}
            grant = jwt.encode({"alg": "ES256", "typ": "oauth-id-jag+jwt"}, claims, self.idp_key, algorithms=["ES256"])
            self.id_jags.append(grant)
            return JSONResponse({"access_token": grant, "issued_token_type": ID_JAG, "token_type": "N_A", "expires_in": 300})

        return Starlette(routes=[
            Route("/mcp", mcp, methods=["GET", "POST"]),
            Route("/as1/token", token, methods=["POST"]),
            Route("/idp/.well-known/openid-configuration", idp_configuration),
            Route("/idp/token", idp_token, methods=["POST"]),
            Mount("/", app=super().app()),
        ])
