"""Token introspection (RFC 7662): the resource server's check for opaque access tokens.

:class:`IntrospectionVerifier` has the interface of :class:`~gatehouse.guard.verifier.JWTVerifier`
(``await verify(token) -> Caller``, raising ``TokenRejected``), so a ``Guard`` takes either.

- The request (section 2.1): ``POST token=…&token_type_hint=access_token``, form-encoded, with
  client authentication ``client_secret_basic`` (RFC 6749 section 2.3.1: id and secret are
  form-urlencoded before Base64) or ``client_secret_post``. Redirects are not followed.
- The answer (section 2.2) must be a JSON object with ``active: true``. ``aud`` (a string or a
  list) must name this resource, and a token without ``aud`` is refused unless
  ``require_audience=False`` (RS-4: no token passthrough); ``iss``, when present, must be a
  trusted issuer; ``exp`` and ``nbf``, when present, hold with a leeway; a ``token_type`` that
  says refresh token is refused.
- The subject is ``sub``; an answer without ``sub`` (RFC 7662 makes it optional, and many
  servers leave it out of client-credentials tokens) names its ``client_id`` as the subject,
  the convention Gatehouse's own authorization server follows for machine tokens. An answer
  with neither is refused.
- Caching (section 4): an accepted token is cached by its digest (never the token) until it expires, and at most
  ``cache_ttl`` seconds (0 turns the cache off), so a revoked token is refused at most
  ``cache_ttl`` seconds later; the cache holds at most ``cache_size`` tokens (least recently
  used first out). Concurrent checks of one uncached token share one request.
  Refusals are not cached: a token the server refuses costs one request each time, as an
  attacker varying the token would make a refusal cache useless anyway, and concurrent
  retries of one token already share a request.
- An endpoint that cannot be reached, times out, or answers with an error status or anything
  but a JSON object refuses the token with ``UNREACHABLE``; a 401 (these client credentials are
  wrong) is logged as a configuration error. Details go to the log; the token never does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from types import MappingProxyType
from urllib.parse import urlsplit

import httpx2

from gatehouse.guard.as_client import AnswerTooLarge, ConfidentialClient
from gatehouse.guard.caller import Caller
from gatehouse.guard.discovery import discover_endpoint, json_object
from gatehouse.guard.shared_requests import SharedRequests
from gatehouse.guard.token_cache import TokenCache, token_key
from gatehouse.guard.verifier import TokenRejected
from gatehouse.netguard import is_loopback_host

log = logging.getLogger("gatehouse.introspection")

UNREACHABLE = "the authorization server's introspection endpoint could not be reached"
CREDENTIALS_REFUSED = "the token could not be checked: the authorization server refused this resource server's credentials"
REFRESH_TOKEN_TYPES = {"refresh_token", "urn:ietf:params:oauth:token-type:refresh_token"}


class IntrospectionVerifier:
    """Checks access tokens at an RFC 7662 introspection endpoint, as ``client_id``."""

    def __init__(
        self,
        *,
        endpoint: str,
        client_id: str,
        client_secret: str,
        issuers: Iterable[str],
        audience: str,
        auth_method: str = "client_secret_basic",
        require_audience: bool = True,
        leeway: int = 30,
        cache_ttl: float = 60.0,
        cache_size: int = 10_000,
        timeout: float = 5.0,
        http_client: httpx2.AsyncClient | None = None,
    ):
        problem = endpoint_problem(endpoint)
        if problem:
            raise ValueError(problem)
        self._as = ConfidentialClient(client_id=client_id, client_secret=client_secret, auth_method=auth_method,
                                      timeout=timeout, http_client=http_client)
        if not client_id or not client_secret:
            raise ValueError("introspection needs a client_id and a client_secret")
        self.issuers = tuple(issuers)
        if not self.issuers:
            raise ValueError("name at least one trusted issuer")
        if cache_ttl < 0:
            raise ValueError("cache_ttl must be zero (no cache) or more seconds")
        self.endpoint = endpoint
        self.client_id = client_id
        self.auth_method = auth_method
        self.audience = audience
        self.require_audience = require_audience
        self.leeway = leeway
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.timeout = timeout
        self._cache: TokenCache[bytes, Caller] = TokenCache(cache_size)
        self._in_flight: SharedRequests[bytes, Caller] = SharedRequests()

    def cached_caller(self, token: str) -> Caller | None:
        """The caller of a token introspected before, while its cache entry lasts."""
        return self._cache.get(token_key(token))

    async def verify(self, token: str) -> Caller:
        digest = token_key(token)
        caller = self._cache.get(digest)
        if caller is not None:
            return caller
        return await self._in_flight.run(digest, lambda: self._verify_uncached(token, digest))

    async def _verify_uncached(self, token: str, digest: bytes) -> Caller:
        answer = await self._introspect(token)
        now = time.time()
        caller, expires = self._accept(answer, now)
        if self.cache_ttl > 0:
            until = now + self.cache_ttl if expires is None else min(expires, now + self.cache_ttl)
            self._cache.put(digest, caller, until)
        return caller

    async def aclose(self) -> None:
        await self._as.aclose()

    async def _introspect(self, token: str) -> dict:
        """Section 2.1: the request; the parsed answer, or ``TokenRejected``."""
        form = {"token": token, "token_type_hint": "access_token"}
        try:
            status, body = await self._as.post_form(self.endpoint, form)
        except httpx2.HTTPError as exc:
            log.warning("introspection endpoint %s could not be reached: %s", self.endpoint, type(exc).__name__)
            raise TokenRejected(UNREACHABLE) from None
        except AnswerTooLarge as exc:
            log.warning("introspection endpoint %s: %s", self.endpoint, exc)
            raise TokenRejected(UNREACHABLE) from None
        answer = json_object(body)
        if status == 401 or status == 403 or (status == 400 and (answer or {}).get("error") == "invalid_client"):
            log.error(
                "configuration error: the introspection endpoint %s refused the credentials of client %r (HTTP %d); "
                "check the client id and secret this resource server uses",
                self.endpoint, self.client_id, status,
            )
            raise TokenRejected(CREDENTIALS_REFUSED)
        if status != 200 or answer is None:
            what = f"HTTP {status}" if status != 200 else "an answer that is not a JSON object"
            log.warning("introspection endpoint %s gave %s", self.endpoint, what)
            raise TokenRejected(UNREACHABLE)
        return answer

    def _accept(self, answer: dict, now: float) -> tuple[Caller, float | None]:
        """Section 2.2: the answer's claims, checked; the caller and when the token expires."""
        if answer.get("active") is not True:
            raise TokenRejected("the token is not active (expired, revoked or unknown to the authorization server)")
        token_type = answer.get("token_type")
        if isinstance(token_type, str) and token_type.lower() in REFRESH_TOKEN_TYPES:
            raise TokenRejected("a refresh token is not an access token")
        audiences = _strings(answer, "aud")
        if audiences is None and self.require_audience:
            raise TokenRejected(f"the token names no audience, so it cannot be shown to be for {self.audience}")
        if audiences is not None and self.audience not in audiences:
            raise TokenRejected(f"the token was issued for another resource, not {self.audience}")
        issuer = answer.get("iss")
        if issuer is not None and issuer not in self.issuers:
            raise TokenRejected("the token's issuer is not trusted here")
        expires = _number(answer, "exp")
        if expires is not None and expires + self.leeway <= now:
            raise TokenRejected("the token has expired")
        not_before = _number(answer, "nbf")
        if not_before is not None and not_before - self.leeway > now:
            raise TokenRejected("the token is not valid yet")
        client_id = answer.get("client_id")
        if client_id is not None and not isinstance(client_id, str):
            raise TokenRejected("the introspection answer's 'client_id' is not a string")
        subject = answer["sub"] if answer.get("sub") is not None else client_id
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("the token names no subject (neither 'sub' nor 'client_id')")
        scopes = _strings(answer, "scope", split=True) or []
        caller = Caller(
            subject=subject,
            client_id=client_id or "",
            scopes=frozenset(scopes),
            issuer=issuer or self.issuers[0],
            claims=MappingProxyType(dict(answer)),
        )
        return caller, expires


def endpoint_problem(url: str) -> str | None:
    """Why ``url`` cannot be an introspection endpoint (client secrets go there): https only,
    plain http on a loopback host (AS-19)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"the introspection endpoint must be an https URL, got {url!r}"
    if parts.fragment:
        return f"the introspection endpoint must not have a fragment: {url!r}"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return f"the introspection endpoint must use https (plain http only on loopback), got {url!r}"
    return None


def discover_introspection_endpoint(issuer: str, timeout: float = 10.0) -> str:
    """The AS's ``introspection_endpoint`` from its metadata."""
    return discover_endpoint(issuer, "introspection_endpoint", "introspection endpoint", timeout)


def _strings(answer: dict, claim: str, *, split: bool = False) -> list[str] | None:
    """A claim that is a string or a list of strings (``split``: a space-separated string, as ``scope``)."""
    value = answer.get(claim)
    if value is None:
        return None
    if isinstance(value, str):
        return value.split() if split else [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise TokenRejected(f"the introspection answer's {claim!r} is neither a string nor a list of strings")


def _number(answer: dict, claim: str) -> float | None:
    """A NumericDate claim (RFC 7519 section 2), or None when absent."""
    value = answer.get(claim)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TokenRejected(f"the introspection answer's {claim!r} is not a number")
    return float(value)
