"""Asking the AS about an authorization request without anyone signing in (RFC 6749 section 4.1.1).

Before a sign-in for another resource, the doctor sends the authorization request it would
make, with the throwaway client of the first sign-in, and does not follow the answer (no
session, no cookies of the user). An AS that refuses the request answers at once: a redirect to
the client carrying ``error`` (RFC 6749 section 4.1.2.1; ``invalid_target`` for a resource it
does not serve, RFC 8707 section 2, or ``invalid_scope``), or an error page; one that accepts
it asks for a login. So nobody is sent to a browser for a request that cannot succeed.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from gatehouse.doctor.fetch import REDIRECT_STATUSES, Exchange, Prober
from gatehouse.doctor.urls import secure_enough

KNOWN_ERRORS = ("invalid_target", "invalid_scope", "unauthorized_client", "invalid_request", "access_denied",
                "unsupported_response_type", "server_error")


@dataclass
class Answer:
    error: str | None
    """The OAuth error code; None when the AS goes on to ask the user."""
    where: str
    exchange: Exchange

    def describe(self) -> str:
        return f"{self.error} ({self.where})"


async def ask(prober: Prober, endpoint: str, client_id: str, redirect_uri: str, resource: str, scope: str | None) -> Answer:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(secrets.token_bytes(32)).digest()).rstrip(b"=").decode()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "state": secrets.token_urlsafe(16), "code_challenge": challenge, "code_challenge_method": "S256",
              "resource": resource}
    if scope:
        params["scope"] = scope
    separator = "&" if "?" in endpoint else "?"
    exchange = await prober.request("GET", f"{endpoint}{separator}{urlencode(params)}")
    location = exchange.header("location") or ""
    if exchange.status in REDIRECT_STATUSES and location.startswith(redirect_uri):
        error = parse_qs(urlsplit(location).query).get("error", [None])[0]
        return Answer(error, "redirected to the client", exchange)
    if exchange.status is not None and 400 <= exchange.status < 600:
        named = next((code for code in KNOWN_ERRORS if code.encode() in exchange.body), f"HTTP {exchange.status}")
        return Answer(named, "on an error page", exchange)
    return Answer(None, "asks for a login", exchange)


async def acceptable_scope(
    prober: Prober, endpoint: str | None, client_id: str, redirect_uri: str | None, resource: str, scope: str | None,
) -> tuple[str | None, str | None, list[Exchange]]:
    """(refusal, scope to request, evidence) for a token for ``resource``: ``scope`` if the AS takes it,
    else the first single scope of it that the AS takes; the refusal when the AS takes none."""
    if not (endpoint and redirect_uri and secure_enough(endpoint)):
        return None, scope, []
    candidates = [scope] + (scope.split() if scope and len(scope.split()) > 1 else [])
    evidence: list[Exchange] = []
    refusal = None
    for candidate in candidates:
        answer = await ask(prober, endpoint, client_id, redirect_uri, resource, candidate)
        evidence.append(answer.exchange)
        if answer.error is None:
            return None, candidate, evidence
        refusal = answer.describe()
        if answer.error != "invalid_scope":
            break
    return refusal, None, evidence
