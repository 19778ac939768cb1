"""A DELIBERATELY MISBEHAVING OpenID Provider stand-in, for S-U3.

A certified provider can't be made to send a bad ID token, so this one does it on purpose: set
``defect`` and the next token response carries an ID token that a relying party must reject
(OpenID Connect Core 1.0 section 3.1.3.7):

- ``"wrong_iss"``: ``iss`` is another issuer
- ``"wrong_aud"``: ``aud`` is another client
- ``"wrong_nonce"`` / ``"missing_nonce"``: ``nonce`` differs from the authorization request's / is absent
- ``"expired"``: ``exp`` (and ``iat``) an hour in the past
- ``"bad_signature"``: signed by a key that is not in the JWKS (same ``kid``, so only the
  signature check can catch it)
- ``"none_alg"``: ``alg: none``, no signature
- ``None``: a correct ID token, echoing the authorization request's ``nonce``

Otherwise it is a plain provider on loopback: discovery, JWKS, an authorization endpoint that
approves at once (redirect back with ``code`` and the echoed ``state``, no login page), and a
token endpoint with client_secret_basic or client_secret_post and PKCE S256. It accepts any
``redirect_uri``: it is not the place to test redirect checks.
"""

from __future__ import annotations

import json
import secrets
import time
import warnings
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.upstream.accounts import DEFAULT_ACCOUNTS, UpstreamAccount
from tests.upstream.client_auth import basic_credentials

DEFECTS = ("wrong_iss", "wrong_aud", "wrong_nonce", "missing_nonce", "expired", "bad_signature", "none_alg")
KID = "tampering-rs256"


@dataclass
class _Pending:
    client_id: str
    redirect_uri: str
    nonce: str | None
    code_challenge: str | None
    scope: str


class TamperingOP:
    """The app state; ``issuer`` is set by the fixture once it listens."""

    def __init__(self, account: UpstreamAccount = DEFAULT_ACCOUNTS[0]):
        self.issuer = ""
        self.account = account
        self.client_id = "gatehouse-at-tampering-op"
        self.client_secret = secrets.token_urlsafe(32)
        self.signing_key = RSAKey.generate_key(2048, parameters={"kid": KID, "alg": "RS256", "use": "sig"}, private=True)
        self.rogue_key = RSAKey.generate_key(2048, parameters={"kid": KID, "alg": "RS256"}, private=True)
        self._defect: str | None = None
        self.pending: dict[str, _Pending] = {}
        self.authorize_requests: list[dict] = []
        self.issued_id_tokens: list[str] = []

    @property
    def defect(self) -> str | None:
        return self._defect

    @defect.setter
    def defect(self, value: str | None) -> None:
        if value is not None and value not in DEFECTS:
            raise ValueError(f"unknown defect {value!r}; choose one of {DEFECTS} or None")
        self._defect = value

    def jwks(self) -> KeySet:
        return KeySet([RSAKey.import_key(self.signing_key.as_dict(private=False))])

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery, methods=["GET"]),
            Route("/jwks", self.jwks_endpoint, methods=["GET"]),
            Route("/authorize", self.authorize, methods=["GET"]),
            Route("/token", self.token, methods=["POST"]),
        ])

    async def discovery(self, request: Request) -> Response:
        """OpenID Connect Discovery 1.0, section 3 (always the honest issuer)."""
        return JSONResponse({
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "email", "email_verified", "name"],
        })

    async def jwks_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.jwks().as_dict())

    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.authorize_requests.append(params)
        redirect_uri = params.get("redirect_uri", "")
        if params.get("client_id") != self.client_id or urlsplit(redirect_uri).scheme not in ("http", "https"):
            return JSONResponse({"error": "invalid_request", "error_description": "unknown client_id or no redirect_uri"},
                                status_code=400)
        code = secrets.token_urlsafe(24)
        self.pending[code] = _Pending(self.client_id, redirect_uri, params.get("nonce"), params.get("code_challenge"),
                                      params.get("scope", "openid"))
        answer = {"code": code}
        if "state" in params:
            answer["state"] = params["state"]
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return RedirectResponse(f"{redirect_uri}{separator}{urlencode(answer)}", status_code=302)

    async def token(self, request: Request) -> Response:
        """RFC 6749 section 4.1.3, answering with an ID token that has ``self.defect``."""
        form = await request.form()
        client_id, client_secret = basic_credentials(request) or (form.get("client_id"), form.get("client_secret"))
        if client_id != self.client_id or not secrets.compare_digest(client_secret or "", self.client_secret):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        pending = self.pending.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or pending is None:
            return JSONResponse({"error": "invalid_grant", "error_description": "unknown or used code"}, status_code=400)
        if pending.redirect_uri != form.get("redirect_uri"):
            return JSONResponse({"error": "invalid_grant", "error_description": "redirect_uri mismatch"}, status_code=400)
        if pending.code_challenge and create_s256_code_challenge(form.get("code_verifier", "")) != pending.code_challenge:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verification failed"}, status_code=400)
        id_token = self.id_token(pending.nonce)
        self.issued_id_tokens.append(id_token)
        return JSONResponse({"access_token": secrets.token_urlsafe(32), "token_type": "Bearer", "expires_in": 3600,
                             "scope": pending.scope, "id_token": id_token},
                            headers={"Cache-Control": "no-store"})

    def id_token(self, nonce: str | None) -> str:
        """An ID token for ``self.account`` (OpenID Connect Core 1.0, section 2), with ``self.defect``."""
        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": self.account.sub, "aud": self.client_id, "iat": now, "exp": now + 600,
            "auth_time": now, "email": self.account.email, "email_verified": self.account.email_verified,
            "name": self.account.name,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        defect = self.defect
        if defect == "wrong_iss":
            claims["iss"] = "https://accounts.attacker.invalid"
        elif defect == "wrong_aud":
            claims["aud"] = "some-other-client"
        elif defect == "wrong_nonce":
            claims["nonce"] = secrets.token_urlsafe(16)
        elif defect == "missing_nonce":
            claims.pop("nonce", None)
        elif defect == "expired":
            claims.update(iat=now - 7200, auth_time=now - 7200, exp=now - 3600)
        if defect == "none_alg":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return jws.serialize_compact({"alg": "none", "typ": "JWT"}, json.dumps(claims).encode(), None,
                                             algorithms=["none"])
        key = self.rogue_key if defect == "bad_signature" else self.signing_key
        return jwt.encode({"alg": "RS256", "kid": KID, "typ": "JWT"}, claims, key)

