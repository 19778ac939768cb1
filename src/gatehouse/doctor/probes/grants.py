"""Refresh and revocation, tried with a throwaway grant (AS-13, AS-14; OAuth 2.1 section 4.3, RFC 7009).

- Refresh: the refresh token grant must answer with a new refresh token (rotation, required
  for public clients by OAuth 2.1 section 4.3.1); the rotated-out token must then be refused, and
  presenting it should revoke the grant (reuse detection, RFC 9700 section 4.14.2).
- Revocation: ``revocation_endpoint`` answers 200 (RFC 7009 section 2.2) and the revoked refresh
  token no longer works.

Refresh tokens go only to the token and revocation endpoints of the AS metadata the client used,
and only over https (or http on loopback); such requests never follow redirects (``fetch``).
"""

from __future__ import annotations

from dataclasses import dataclass

from gatehouse.basic_auth import basic_authorization
from gatehouse.doctor.fetch import Exchange, Prober
from gatehouse.doctor.model import Check, Group, failed, passed, skipped, warned
from gatehouse.doctor.urls import secure_enough

G = Group.LOGIN


@dataclass
class Grant:
    """What a sign-in left: the tokens and the throwaway client they belong to."""

    access_token: str
    refresh_token: str | None
    client_id: str
    client_secret: str | None
    auth_method: str
    token_endpoint: str
    revocation_endpoint: str | None
    resource: str


def _client_auth(grant: Grant, form: dict[str, str]) -> dict[str, str]:
    """RFC 6749 section 2.3: Basic for client_secret_basic, the form otherwise."""
    if grant.client_secret and grant.auth_method != "client_secret_post":
        return {"Authorization": basic_authorization(grant.client_id, grant.client_secret)}
    form["client_id"] = grant.client_id
    if grant.client_secret:
        form["client_secret"] = grant.client_secret
    return {}


async def refresh(prober: Prober, grant: Grant, refresh_token: str) -> Exchange:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "resource": grant.resource}
    headers = _client_auth(grant, form)
    return await prober.request("POST", grant.token_endpoint, data=form, headers=headers)


async def revoke(prober: Prober, grant: Grant, token: str, hint: str) -> Exchange:
    form = {"token": token, "token_type_hint": hint}
    headers = _client_auth(grant, form)
    return await prober.request("POST", grant.revocation_endpoint, data=form, headers=headers)


async def revoke_quietly(prober: Prober, grant: Grant) -> None:
    """End a grant the checks no longer need (best effort: the answer is not a finding)."""
    if grant.revocation_endpoint and secure_enough(grant.revocation_endpoint):
        token, hint = (grant.refresh_token, "refresh_token") if grant.refresh_token else (grant.access_token, "access_token")
        await revoke(prober, grant, token, hint)


def _new_refresh_token(answer: Exchange) -> str | None:
    value = (answer.json_object() or {}).get("refresh_token")
    return value if isinstance(value, str) and value else None


def _error(answer: Exchange) -> str:
    error = (answer.json_object() or {}).get("error")
    return f"{answer.status} {error}" if error else str(answer.status or answer.error)


async def check_refresh(prober: Prober, grant: Grant) -> list[Check]:
    """``login.refresh`` and ``login.refresh_reuse``, in that order (the second ends the grant at a careful AS)."""
    if grant.refresh_token is None:
        reason = "no refresh token was issued (allowed: clients must not assume one, CL-13)"
        return [skipped("login.refresh", G, reason, requirement="AS-13"), skipped("login.refresh_reuse", G, reason, requirement="AS-13")]
    if not secure_enough(grant.token_endpoint):
        reason = f"the token endpoint {grant.token_endpoint} is not https; no refresh token is sent there"
        return [skipped("login.refresh", G, reason, requirement="AS-19"), skipped("login.refresh_reuse", G, reason, requirement="AS-19")]
    first = await refresh(prober, grant, grant.refresh_token)
    if not first.ok or not (first.json_object() or {}).get("access_token"):
        return [failed("login.refresh", G, f"the refresh token grant was refused ({_error(first)})", first, requirement="AS-13",
                       fix="accept the refresh token grant with the resource parameter (RFC 8707 section 2.2) from public "
                           "clients (client_id, no secret)"),
                skipped("login.refresh_reuse", G, "refresh did not work", requirement="AS-13")]
    rotated = _new_refresh_token(first)
    if rotated is None or rotated == grant.refresh_token:
        return [failed("login.refresh", G, "refresh works but the refresh token does not rotate: a stolen one works until it expires",
                       first, requirement="AS-13", fix="issue a new refresh token on every refresh for public clients "
                                                       "and invalidate the old one (OAuth 2.1 section 4.3.1)"),
                skipped("login.refresh_reuse", G, "the refresh token does not rotate", requirement="AS-13")]
    refresh_check = passed("login.refresh", G, "refresh works and issues a new refresh token (rotation)", first, requirement="AS-13")
    reuse = await refresh(prober, grant, grant.refresh_token)
    if reuse.ok:
        return [refresh_check, failed("login.refresh_reuse", G, "the rotated-out refresh token still works", reuse,
                                      requirement="AS-13", fix="refuse a refresh token once it has been used (invalid_grant), "
                                                               "and revoke its grant: reuse means it was stolen")]
    after = await refresh(prober, grant, rotated)
    if after.ok:
        return [refresh_check, warned("login.refresh_reuse", G, "the rotated-out refresh token is refused, but presenting it "
                                      "did not revoke the grant: the new refresh token still works", reuse, after,
                                      requirement="AS-13", fix="on reuse of a rotated-out refresh token, revoke the whole grant "
                                                               "(RFC 9700 section 4.14.2): one of the two holders is a thief")]
    return [refresh_check, passed("login.refresh_reuse", G, "the rotated-out refresh token is refused and its reuse revoked the "
                                  "grant (reuse detection)", reuse, after, requirement="AS-13")]


async def check_revocation(prober: Prober, grant: Grant | None, unavailable: str | None = None) -> Check:
    if grant is None:
        return skipped("login.revocation", G, unavailable or "no grant to revoke", requirement="AS-14")
    if grant.revocation_endpoint is None:
        return warned("login.revocation", G, "the AS advertises no revocation_endpoint: a client cannot end a grant on logout",
                      requirement="AS-14", fix="offer RFC 7009 revocation and advertise revocation_endpoint in the metadata")
    if not secure_enough(grant.revocation_endpoint):
        return skipped("login.revocation", G, f"the revocation endpoint {grant.revocation_endpoint} is not https; "
                       "no token is sent there", requirement="AS-19")
    token, hint = (grant.refresh_token, "refresh_token") if grant.refresh_token else (grant.access_token, "access_token")
    answer = await revoke(prober, grant, token, hint)
    if answer.status != 200:
        return failed("login.revocation", G, f"revoking the {hint.replace('_', ' ')} was answered {_error(answer)}", answer,
                      requirement="AS-14", fix="answer a revocation request from the token's own client with 200 "
                                               "(RFC 7009 section 2.2), public clients authenticating with client_id")
    if grant.refresh_token is None:
        return passed("login.revocation", G, "the access token was revoked (200); with no refresh token, the effect cannot "
                      "be seen from outside", answer, requirement="AS-14")
    after = await refresh(prober, grant, grant.refresh_token)
    if after.ok:
        return failed("login.revocation", G, "the revocation endpoint answered 200, yet the revoked refresh token still works",
                      answer, after, requirement="AS-14", fix="make revocation take effect: a revoked refresh token must be "
                                                              "refused (invalid_grant)")
    return passed("login.revocation", G, "the refresh token was revoked (200) and is refused afterwards", answer, after,
                  requirement="AS-14")
