"""What an issued access token says (RFC 9068 JWT access tokens; AS-10, AS-12).

A JWT access token is read with joserfc (header and claims), its signature checked against the
AS's ``jwks_uri``; an opaque token can only be judged by the token response (``expires_in``,
``scope``). Checks: the format (``typ: at+jwt``, a ``kid``, a signature that verifies), the
audience (``aud`` must be the resource the client asked for, RFC 8707 section 2), the lifetime
(short-lived, AS-12) and the granted scope.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gatehouse.doctor.fetch import Exchange
from gatehouse.doctor.model import Check, Group, failed, passed, skipped, warned
from gatehouse.doctor.urls import canonical

G = Group.LOGIN
SHORT_LIFETIME = 3600
LONG_LIFETIME = 24 * 3600


@dataclass
class TokenView:
    """An access token as far as it can be read from outside."""

    header: dict[str, Any] | None
    claims: dict[str, Any] | None
    verified: bool | None
    """True: the signature verifies with the AS's keys; False: it does not; None: not checked (opaque, no keys)."""
    problem: str | None = None

    @property
    def is_jwt(self) -> bool:
        return self.claims is not None

    @property
    def audiences(self) -> list[str]:
        aud = (self.claims or {}).get("aud")
        if isinstance(aud, str):
            return [aud]
        return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def read_token(token: str, jwks: dict | None) -> TokenView:
    try:
        compact = jws.extract_compact(token.encode())
        header, claims = dict(compact.headers()), json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeDecodeError):
        return TokenView(None, None, None)
    if not isinstance(claims, dict):
        return TokenView(None, None, None)
    if not jwks:
        return TokenView(header, claims, None, "no JWKS to check the signature with")
    try:
        jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[str(header.get("alg"))])
    except (JoseError, ValueError, TypeError) as exc:
        return TokenView(header, claims, False, f"{type(exc).__name__}: {exc}"[:160])
    return TokenView(header, claims, True)


def check_format(view: TokenView, answer: Exchange | None) -> Check:
    evidence = [answer] if answer else []
    if not view.is_jwt:
        return warned("login.token_format", G, "the access token is opaque: its audience and lifetime cannot be read here; "
                      "resource servers must introspect it (RFC 7662)", *evidence, requirement="AS-12",
                      fix="issue JWT access tokens (RFC 9068), or make sure every resource server introspects")
    header = view.header or {}
    if view.verified is False:
        return failed("login.token_format", G, f"the JWT's signature does not verify with the AS's jwks_uri ({view.problem})",
                      *evidence, requirement="AS-12",
                      fix="publish the signing key (with its kid) at jwks_uri before signing with it")
    typ = str(header.get("typ", ""))
    if typ.lower() not in ("at+jwt", "application/at+jwt"):
        return warned("login.token_format", G, f"a JWT with typ {typ or 'missing'!r}, not at+jwt", *evidence,
                      requirement="AS-12", fix='set the header typ to "at+jwt" (RFC 9068 section 2.1), so an ID token '
                                               "can never pass for an access token")
    if not header.get("kid"):
        return warned("login.token_format", G, "a JWT access token without kid", *evidence, requirement="AS-12",
                      fix="put the signing key's kid in the header, so verifiers survive key rotation")
    checked = "signature verifies with jwks_uri" if view.verified else "signature not checked (no jwks_uri)"
    return passed("login.token_format", G, f"a JWT access token: typ {typ}, alg {header.get('alg')}, kid {header.get('kid')}; "
                  f"{checked}", *evidence, requirement="AS-12")


def same_resource(a: str, b: str) -> bool:
    return canonical(a) == canonical(b)


def check_audience(view: TokenView, resource: str, answer: Exchange | None) -> Check:
    evidence = [answer] if answer else []
    if not view.is_jwt:
        return skipped("login.audience", G, "the token is opaque; its audience shows only in whether the server accepts "
                       "a token for another resource (login.audience_validation)", requirement="AS-10")
    audiences = view.audiences
    if not any(same_resource(a, resource) for a in audiences):
        shown = ", ".join(audiences) or "no aud claim"
        return failed("login.audience", G, f"the token's aud is {shown}, not the resource {resource} the client asked for: "
                      "the AS ignores the resource parameter", *evidence, requirement="AS-10", pitfall="AS ignores resource",
                      fix="honour RFC 8707: put the requested resource in the access token's aud (and refuse unknown "
                          "resources with invalid_target)")
    if len(audiences) > 1:
        return warned("login.audience", G, f"the token is valid for {len(audiences)} audiences: {', '.join(audiences)}",
                      *evidence, requirement="AS-10",
                      fix="issue tokens for the one requested resource: a token for several servers can be replayed among them")
    return passed("login.audience", G, f"aud is {audiences[0]}, the resource requested", *evidence, requirement="AS-10")


def check_lifetime(view: TokenView, expires_in: int | None, answer: Exchange | None) -> Check:
    evidence = [answer] if answer else []
    claims = view.claims or {}
    exp, iat = claims.get("exp"), claims.get("iat")
    if view.is_jwt and not isinstance(exp, (int, float)):
        return failed("login.lifetime", G, "the JWT access token has no exp: it never expires", *evidence, requirement="AS-12",
                      fix="give access tokens an exp (RFC 9068 section 2.2), an hour or less after iat")
    if isinstance(exp, (int, float)):
        lifetime = exp - (iat if isinstance(iat, (int, float)) else time.time())
    elif expires_in is not None:
        lifetime = expires_in
    else:
        return warned("login.lifetime", G, "the token response has no expires_in and the token is opaque", *evidence,
                      requirement="AS-12", fix="send expires_in with every token response (RFC 6749 section 5.1)")
    minutes = round(lifetime / 60)
    if lifetime > LONG_LIFETIME:
        return failed("login.lifetime", G, f"the access token lives {minutes} minutes: far from short-lived", *evidence,
                      requirement="AS-12", fix="issue access tokens for an hour or less; clients refresh them")
    if lifetime > SHORT_LIFETIME:
        return warned("login.lifetime", G, f"the access token lives {minutes} minutes", *evidence, requirement="AS-12",
                      fix="an hour or less limits what a stolen token can do; clients refresh them")
    return passed("login.lifetime", G, f"the access token lives {minutes} minutes", *evidence, requirement="AS-12")


def check_scope(view: TokenView, response_scope: str | None, answer: Exchange | None) -> Check:
    evidence = [answer] if answer else []
    claims = view.claims or {}
    scope = claims.get("scope") if isinstance(claims.get("scope"), str) else None
    if scope is None and isinstance(claims.get("scp"), list):
        scope = " ".join(map(str, claims["scp"]))
    scope = scope if scope is not None else response_scope
    if not scope:
        return warned("login.scope", G, "neither the token nor the token response names a scope", *evidence,
                      requirement="RS-6", fix="put the granted scope in the token's scope claim (RFC 9068 section 2.2.3)")
    return passed("login.scope", G, f"granted scope: {scope}", *evidence, requirement="RS-6")
