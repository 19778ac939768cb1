"""The one place tokens are checked (RS-4): RFC 9068 JWT access tokens, RFC 8725 practices.

- algorithms pinned by configuration (``alg: none`` and HMAC never pass), ``typ`` = ``at+jwt``;
- ``iss`` one of the trusted issuers, ``aud`` this resource's canonical URI (RFC 8707),
  ``exp`` / ``nbf`` / ``iat`` with a small leeway;
- keys from a JWKS cached per process for at most ``max_age`` seconds (so a key the AS stops
  publishing stops being trusted) and refetched on an unknown ``kid`` at most once per
  cooldown; a verified token is cached by its digest (never the token) until it expires (at most ``cache_size``
  of them, least recently used first out), and the cache is dropped whenever the key set changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from types import MappingProxyType
from typing import Protocol

import httpx2
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gatehouse.guard.caller import Caller
from gatehouse.guard.token_cache import TokenCache, token_key

ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}


class TokenRejected(Exception):
    """The token cannot be used; ``description`` says why (safe to show the client)."""

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class TokenVerifier(Protocol):
    """What the guard needs of a verifier: JWTVerifier (RFC 9068) or IntrospectionVerifier (RFC 7662)."""

    async def verify(self, token: str) -> Caller: ...


class KeySource(Protocol):
    generation: int

    async def key(self, kid: str): ...


class JWKSKeySource:
    """Public keys from a JWKS URI: refetched once older than ``max_age`` (keeping the old set
    while the AS cannot be reached) and on an unknown ``kid`` at most once per cooldown."""

    def __init__(self, jwks_uri: str, *, refetch_cooldown: float = 30.0, timeout: float = 5.0, max_age: float = 300.0):
        self.jwks_uri = jwks_uri
        self.refetch_cooldown = refetch_cooldown
        self.max_age = max_age
        self.timeout = timeout
        self.generation = 0
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        async with httpx2.AsyncClient(timeout=self.timeout, trust_env=False) as client:
            response = await client.get(self.jwks_uri, headers={"Accept": "application/json"})
        response.raise_for_status()
        keys = KeySet.import_key_set(response.json())
        if self._keys is None or keys.as_dict() != self._keys.as_dict():
            self.generation += 1
        self._keys = keys
        self._fetched_at = time.monotonic()

    def _find(self, kid: str):
        if self._keys is None:
            return None
        for key in self._keys.keys:
            if key.kid == kid:
                return key
        return None

    async def _refresh_if_old(self) -> None:
        async with self._lock:
            if self._keys is None or time.monotonic() - self._fetched_at < self.max_age:
                return
            try:
                await self._fetch()
            except (httpx2.HTTPError, ValueError, JoseError):
                self._fetched_at = time.monotonic() - self.max_age + self.refetch_cooldown  # retry after the cooldown

    async def key(self, kid: str):
        if self._keys is not None and time.monotonic() - self._fetched_at >= self.max_age:
            await self._refresh_if_old()
        found = self._find(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._find(kid)
            if found is None and time.monotonic() - self._fetched_at >= self.refetch_cooldown:
                try:
                    await self._fetch()
                except (httpx2.HTTPError, ValueError, JoseError):
                    self._fetched_at = time.monotonic()
                    raise TokenRejected("the authorization server's keys could not be fetched") from None
                found = self._find(kid)
        return found


class JWTVerifier:
    def __init__(
        self,
        *,
        issuers: Iterable[str],
        audience: str,
        keys: KeySource,
        algorithms: Iterable[str] = ("ES256",),
        leeway: int = 30,
        cache_size: int = 10_000,
    ):
        self.issuers = frozenset(issuers)
        self.audience = audience
        self.keys = keys
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.cache_size = cache_size
        self._cache: TokenCache[bytes, tuple[int, Caller]] = TokenCache(cache_size)

    def cached_caller(self, token: str) -> Caller | None:
        """The caller of a token verified before and still valid, without waiting on anything."""
        return self._cached(token_key(token))

    def _cached(self, digest: bytes) -> Caller | None:
        cached = self._cache.get(digest, self._same_keys)
        return None if cached is None else cached[1]

    def _same_keys(self, cached: tuple[int, Caller]) -> bool:
        return cached[0] == self.keys.generation

    async def verify(self, token: str) -> Caller:
        digest = token_key(token)
        caller = self._cached(digest)
        if caller is not None:
            return caller
        now = time.time()
        caller, expires = await self._verify_uncached(token, now)
        self._cache.put(digest, (self.keys.generation, caller), expires + self.leeway)
        return caller

    async def _verify_uncached(self, token: str, now: float) -> tuple[Caller, float]:
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError, UnicodeError):
            raise TokenRejected("the access token is not a JWT") from None
        if header.get("alg") not in self.algorithms:
            raise TokenRejected(f"the token's algorithm {header.get('alg')!r} is not accepted")
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise TokenRejected("the token is not an access token (typ must be at+jwt, RFC 9068)")
        kid = header.get("kid")
        key = await self.keys.key(str(kid)) if kid else None
        if key is None:
            raise TokenRejected("the token was signed by an unknown key")
        try:
            decoded = jwt.decode(token, key, algorithms=self.algorithms)
        except (JoseError, ValueError):
            raise TokenRejected("the token's signature is not valid") from None
        claims = decoded.claims
        try:
            jwt.JWTClaimsRegistry(
                now=int(now),
                leeway=self.leeway,
                iss={"essential": True, "values": list(self.issuers)},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(claims)
        except JoseError as exc:
            raise TokenRejected(_claim_problem(exc, claims, self.audience)) from None
        scopes = frozenset(str(claims.get("scope", "")).split())
        caller = Caller(
            subject=str(claims["sub"]),
            client_id=str(claims.get("client_id", "")),
            scopes=scopes,
            issuer=str(claims["iss"]),
            claims=MappingProxyType(dict(claims)),
        )
        return caller, float(claims["exp"])


def _claim_problem(exc: JoseError, claims: dict, audience: str) -> str:
    claim = getattr(exc, "claim", None) or ""
    if exc.error == "missing_claim":
        return f"the token lacks the required {claim!r} claim"
    if exc.error == "expired_token" or claim == "exp":
        return "the token has expired"
    if claim == "nbf" or exc.error == "invalid_token" and "nbf" in str(exc):
        return "the token is not valid yet"
    if claim == "aud":
        return f"the token was issued for another resource, not {audience}"
    if claim == "iss":
        return "the token's issuer is not trusted here"
    return f"the token's claims are not valid ({exc.description or exc.error})"
