"""The unauthenticated request and its challenge (RS-3; RFC 6750 section 3, RFC 9728 section 5.1).

Two requests, both an MCP ``initialize``: one without a token, one with a made-up token. The
first must get 401 with ``WWW-Authenticate: Bearer resource_metadata="…"`` (and ``scope`` to
guide the client, MCP "Scope Selection Strategy"), without an error code (RFC 6750 section
3.1); the second 401 with ``error="invalid_token"``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gatehouse.doctor import challenges
from gatehouse.doctor.fetch import Exchange, Prober
from gatehouse.doctor.model import Check, Group, failed, passed, skipped, warned
from gatehouse.doctor.urls import absolute_http, path_inserted_prm, root_prm, secure_enough

G = Group.CHALLENGE
PROTOCOL_VERSION = "2026-07-28"
MADE_UP_TOKEN = "gatehouse-doctor-made-up-token"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
               "clientInfo": {"name": "gatehouse-doctor", "version": "1"}},
}


@dataclass
class ChallengeAnswers:
    no_token: Exchange
    made_up_token: Exchange

    @property
    def parsed(self) -> challenges.ParsedChallenges:
        return challenges.parse(self.no_token.header_values("www-authenticate"))

    @property
    def bearer(self) -> challenges.Challenge | None:
        return self.parsed.first("bearer") if self.no_token.status == 401 else None

    @property
    def resource_metadata_url(self) -> str | None:
        bearer = self.bearer
        url = bearer.get("resource_metadata") if bearer else None
        return url if absolute_http(url) else None


async def call(prober: Prober, url: str, token: str | None = None, *, read_body: bool = True) -> Exchange:
    """An MCP ``initialize`` POST, with ``Authorization: Bearer token`` when given."""
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await prober.request("POST", url, headers=headers, json_body=INITIALIZE, read_body=read_body)


async def probe(prober: Prober, url: str) -> ChallengeAnswers:
    no_token, made_up = await asyncio.gather(call(prober, url), call(prober, url, MADE_UP_TOKEN))
    return ChallengeAnswers(no_token, made_up)


def check_status(answers: ChallengeAnswers) -> Check:
    exchange, status = answers.no_token, answers.no_token.status
    if status == 401:
        return passed("challenge.status", G, "a request without a token gets 401", exchange, requirement="RS-3")
    if status is not None and 200 <= status < 300:
        return failed("challenge.status", G, f"answered {status} without a token: this endpoint does not ask for OAuth",
                      exchange, requirement="RS-3",
                      fix="put the MCP endpoint behind the token check, so a request without a token gets 401 and a client starts OAuth")
    if status in (301, 302, 303, 307, 308):
        return failed("challenge.status", G, f"answered {status}, a redirect to {exchange.header('location')}", exchange,
                      requirement="RS-3", fix="give clients the final URL of the MCP endpoint; clients do not follow redirects for POST")
    if status == 403:
        return failed("challenge.status", G, "answered 403 without a token; clients start OAuth only on 401", exchange,
                      requirement="RS-3", fix="answer a request without a token with 401 and a Bearer challenge (403 is for insufficient scope, RS-6)")
    return failed("challenge.status", G, f"answered {status} without a token, not 401", exchange, requirement="RS-3",
                  fix="check the URL (MCP endpoints usually end in /mcp) and that the token check runs before the MCP app")


def check_https(answers: ChallengeAnswers, server_url: str) -> Check:
    if secure_enough(server_url):
        what = "plain http on loopback (development only)" if server_url.startswith("http:") else "https"
        return passed("challenge.https", G, f"the MCP endpoint is {what}", answers.no_token, requirement="AS-19")
    return failed("challenge.https", G, "the MCP endpoint is plain http off loopback: access tokens would cross the network "
                  "in clear text", answers.no_token, requirement="AS-19",
                  fix="serve the MCP endpoint over https (OAuth 2.1 section 1.5); plain http only on loopback, for development")


def check_header(answers: ChallengeAnswers, metadata_published: bool) -> Check:
    exchange = answers.no_token
    if exchange.status != 401:
        return skipped("challenge.www_authenticate", G, "no 401 to read a challenge from", requirement="RS-3")
    values = exchange.header_values("www-authenticate")
    if not values:
        if metadata_published:
            return failed(
                "challenge.www_authenticate", G,
                "the 401 has no WWW-Authenticate header, yet the server publishes protected resource metadata: "
                "something in front of it (a proxy, gateway or CDN) strips the header",
                exchange, requirement="RS-3", pitfall="proxy strips WWW-Authenticate",
                fix="let WWW-Authenticate through the proxy (nginx: don't hide it with proxy_hide_header; "
                    "CORS setups: also list it in Access-Control-Expose-Headers)",
            )
        return failed("challenge.www_authenticate", G, "the 401 has no WWW-Authenticate header", exchange,
                      requirement="RS-3", pitfall="proxy strips WWW-Authenticate",
                      fix='answer 401 with WWW-Authenticate: Bearer resource_metadata="<PRM URL>" (RFC 9728 section 5.1); '
                          "if the server sends it, a proxy in front strips it")
    parsed = answers.parsed
    if parsed.problems:
        return failed("challenge.www_authenticate", G, f"WWW-Authenticate does not parse: {parsed.problems[0]}", exchange,
                      requirement="RS-3", fix="write the challenge as RFC 9110 section 11.6.1 says: "
                                               'Bearer name="value", name="value" (quoted values, comma-separated)')
    if answers.bearer is None:
        schemes = ", ".join(c.scheme for c in parsed.challenges) or "none"
        return failed("challenge.www_authenticate", G, f"no Bearer challenge (schemes: {schemes})", exchange,
                      requirement="RS-3", fix='add a Bearer challenge: WWW-Authenticate: Bearer resource_metadata="<PRM URL>"')
    schemes = ", ".join(c.scheme for c in parsed.challenges)
    return passed("challenge.www_authenticate", G, f"WWW-Authenticate parses; challenges: {schemes}", exchange, requirement="RS-3")


def check_resource_metadata(answers: ChallengeAnswers, server_url: str) -> Check:
    bearer = answers.bearer
    if bearer is None:
        return skipped("challenge.resource_metadata", G, "no Bearer challenge to read resource_metadata from", requirement="RS-3")
    value = bearer.get("resource_metadata")
    where = path_inserted_prm(server_url) or root_prm(server_url)
    if value is None:
        return failed("challenge.resource_metadata", G, "the Bearer challenge has no resource_metadata parameter",
                      answers.no_token, requirement="RS-3", pitfall="WWW-Authenticate without resource_metadata",
                      fix=f'add resource_metadata="{where}" to the challenge (RFC 9728 section 5.1); '
                          "without it clients must guess the metadata URL (CL-1)")
    if not absolute_http(value):
        return failed("challenge.resource_metadata", G, f"resource_metadata {value!r} is not an absolute http(s) URL",
                      answers.no_token, requirement="RS-3", fix=f'use the absolute URL: resource_metadata="{where}"')
    return passed("challenge.resource_metadata", G, f"resource_metadata names {value}", answers.no_token, requirement="RS-3")


def check_scope(answers: ChallengeAnswers, prm_scopes: list[str] | None) -> Check:
    bearer = answers.bearer
    if bearer is None:
        return skipped("challenge.scope", G, "no Bearer challenge to read scope from", requirement="RS-3")
    scope = bearer.get("scope")
    if scope is not None:
        if "offline_access" in scope.split():
            return warned("challenge.scope", G, f"the challenge asks for offline_access (scope={scope!r})", answers.no_token,
                          requirement="RS-3", fix="leave offline_access out of the challenge: refresh tokens are the client's "
                                                  "business with the AS, not a resource requirement")
        return passed("challenge.scope", G, f"the challenge names the scopes to request: {scope}", answers.no_token, requirement="RS-3")
    if prm_scopes:
        return passed("challenge.scope", G, "no scope in the challenge for initialize (it needs none); clients fall back to "
                      f"PRM scopes_supported: {' '.join(prm_scopes)} (CL-8)", answers.no_token, requirement="RS-3")
    return warned("challenge.scope", G, "no scope in the challenge and no scopes_supported in PRM: clients request no scope "
                  "and get whatever the AS grants by default", answers.no_token, requirement="RS-3",
                  fix='add scope="<scopes this operation needs>" to the challenge, or scopes_supported to the PRM (CL-8)')


def check_error_code(answers: ChallengeAnswers) -> Check:
    bearer = answers.bearer
    if bearer is None:
        return skipped("challenge.error_code", G, "no Bearer challenge", requirement="RS-3")
    error = bearer.get("error")
    if error:
        return warned("challenge.error_code", G, f'error="{error}" although no token was sent', answers.no_token,
                      requirement="RS-3", fix="leave the error code out when the request carried no token (RFC 6750 section "
                                              "3.1); send error=\"invalid_token\" only for a token that was sent and refused")
    return passed("challenge.error_code", G, "no error code for a request without a token (RFC 6750 section 3.1)",
                  answers.no_token, requirement="RS-3")


def check_made_up_token(answers: ChallengeAnswers) -> Check:
    exchange, status = answers.made_up_token, answers.made_up_token.status
    if status is not None and 200 <= status < 300:
        return failed("challenge.invalid_token", G, f"a made-up token ({MADE_UP_TOKEN!r}) was accepted with {status}",
                      exchange, requirement="RS-4", pitfall="resource server accepts any token",
                      fix="validate every token: signature, issuer, audience, expiry (RS-4)")
    if status == 401:
        bearer = challenges.parse(exchange.header_values("www-authenticate")).first("bearer")
        if bearer is not None and bearer.get("error") == "invalid_token":
            return passed("challenge.invalid_token", G, 'a made-up token gets 401 error="invalid_token"', exchange, requirement="RS-3")
        return warned("challenge.invalid_token", G, 'a made-up token gets 401, but the challenge lacks error="invalid_token"',
                      exchange, requirement="RS-3",
                      fix='answer a refused token with WWW-Authenticate: Bearer error="invalid_token", resource_metadata="…" (RFC 6750 section 3.1)')
    return failed("challenge.invalid_token", G, f"a made-up token gets {status or exchange.error}, not 401", exchange,
                  requirement="RS-3", fix='answer an invalid token with 401 and error="invalid_token"; '
                                          "403 makes clients step up their scopes instead of signing in again")


def checks(answers: ChallengeAnswers, server_url: str, *, metadata_published: bool, prm_scopes: list[str] | None) -> list[Check]:
    return [
        check_status(answers),
        check_https(answers, server_url),
        check_header(answers, metadata_published),
        check_resource_metadata(answers, server_url),
        check_scope(answers, prm_scopes),
        check_error_code(answers),
        check_made_up_token(answers),
    ]
