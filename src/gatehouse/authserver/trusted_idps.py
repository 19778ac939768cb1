"""Issuers whose JWTs the AS accepts as authorization grants (RFC 7523 section 3), and their keys.

Configured by an administrator (``[[trusted_idps]]`` in gatehouse.toml): an issuer, the JWKS URI
its keys are fetched from (https; http only on loopback), and what it may vouch for. Keys are
cached for ``cache_ttl`` seconds and refetched at once for an unknown ``kid``, at most once per
``refetch_cooldown``. The URI is the administrator's, so private addresses are allowed (an
enterprise IdP inside the network is normal), unlike a client's ``jwks_uri``.

:func:`verify_assertion` is the RFC 7523 section 3 check both kinds of assertion share:
signature with a pinned asymmetric ``alg``, ``iss``, ``sub``, ``aud`` (this AS), ``exp``,
``iat``, ``jti``, with the configured clock leeway.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx2
from authlib.oauth2.rfc6749.errors import InvalidGrantError
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gatehouse.authserver.resources import describable
from gatehouse.config import TrustedIdPConfig

ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
ASSERTION_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "Ed25519")
MAX_JWKS_BYTES = 64 * 1024
MAX_ASSERTION_LENGTH = 16 * 1024


@dataclass
class _CachedKeys:
    keys: KeySet | None = None
    fetched_at: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


class TrustedIdPs:
    def __init__(self, configs: list[TrustedIdPConfig], *, timeout: float = 5.0, cache_ttl: float = 300.0,
                 refetch_cooldown: float = 30.0):
        self._by_issuer = {(c.issuer, c.kind): c for c in configs}
        self._keys = {c.issuer: _CachedKeys() for c in configs}
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.refetch_cooldown = refetch_cooldown

    @property
    def grant_profiles(self) -> list[str]:
        """``authorization_grant_profiles_supported`` (ID-JAG draft section 7.2)."""
        return [ID_JAG_PROFILE] if any(kind == "id-jag" for _, kind in self._by_issuer) else []

    def find(self, issuer: object, kind: str) -> TrustedIdPConfig | None:
        return self._by_issuer.get((issuer, kind)) if isinstance(issuer, str) else None

    def keys(self, idp: TrustedIdPConfig, kid: str | None) -> KeySet:
        cached = self._keys[idp.issuer]
        with cached.lock:
            age = time.monotonic() - cached.fetched_at
            stale = cached.keys is None or age >= self.cache_ttl
            unknown_kid = kid is not None and cached.keys is not None and not _has_kid(cached.keys, kid)
            if stale or (unknown_kid and age >= self.refetch_cooldown):
                try:
                    cached.keys = self._fetch(idp.jwks_uri)
                except (httpx2.HTTPError, ValueError, TypeError, JoseError) as exc:
                    if cached.keys is None:
                        raise InvalidGrantError(describable(f"the keys of {idp.issuer} could not be fetched: {exc}")) from None
                finally:
                    cached.fetched_at = time.monotonic()
            return cached.keys

    def _fetch(self, jwks_uri: str) -> KeySet:
        with httpx2.Client(timeout=self.timeout, trust_env=False, follow_redirects=False) as client:
            with client.stream("GET", jwks_uri, headers={"Accept": "application/json"}) as response:
                response.raise_for_status()
                body = bytearray()
                for chunk in response.iter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        data = json.loads(bytes(body))
        if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
            raise ValueError("the JWKS is not a JSON object with 'keys'")
        public = [k for k in data["keys"] if isinstance(k, dict) and k.get("kty") in ("EC", "RSA", "OKP") and "d" not in k]
        return KeySet.import_key_set({"keys": public})


def _has_kid(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


def assertion_header(assertion: object) -> dict | None:
    """The JOSE header of an assertion, unverified (to route it and find its key), or None."""
    if not isinstance(assertion, str) or not assertion or len(assertion) > MAX_ASSERTION_LENGTH:
        return None
    try:
        return jws.extract_compact(assertion.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError):
        return None


def unverified_issuer(assertion: str) -> object:
    """The ``iss`` of an assertion, unverified: which trusted issuer's keys to check it with."""
    try:
        claims = json.loads(jws.extract_compact(assertion.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError):
        return None
    return claims.get("iss") if isinstance(claims, dict) else None


def verify_assertion(assertion: str, idp: TrustedIdPConfig, idps: TrustedIdPs, *, audiences: list[str], leeway: int,
                     essential: tuple[str, ...] = ()) -> dict:
    """RFC 7523 section 3 items 1-7 but replay: the claims of ``assertion``, or ``invalid_grant``."""
    header = assertion_header(assertion)
    if header is None:
        raise InvalidGrantError("the assertion is not a compact JWS")
    alg = header.get("alg")
    if alg not in ASSERTION_ALGORITHMS:
        raise InvalidGrantError(describable(f"the assertion's alg must be one of {' '.join(ASSERTION_ALGORITHMS)}"))
    kid = header.get("kid")
    keys = idps.keys(idp, kid if isinstance(kid, str) else None)
    try:
        claims = jwt.decode(assertion, keys, algorithms=[alg]).claims
    except (JoseError, ValueError, TypeError):
        raise InvalidGrantError(describable(f"the assertion's signature does not verify with the keys of {idp.issuer}")) from None
    options = {name: {"essential": True} for name in ("sub", "exp", "iat", "jti", *essential)}
    options["iss"] = {"essential": True, "value": idp.issuer}
    options["aud"] = {"essential": True, "values": audiences}
    try:
        jwt.JWTClaimsRegistry(leeway=leeway, **options).validate(claims)
    except JoseError as exc:
        raise InvalidGrantError(describable(_claim_problem(exc))) from None
    for name in ("sub", "jti"):
        value = claims[name]
        if not isinstance(value, str) or not value or len(value) > 255 or not value.isprintable():
            raise InvalidGrantError(f"the assertion's {name!r} must be a string of 1 to 255 printable characters")
    return claims


def _claim_problem(exc: JoseError) -> str:
    claim = getattr(exc, "claim", None) or ""
    if exc.error == "missing_claim":
        return f"the assertion lacks the required {claim!r} claim"
    if exc.error == "expired_token" or claim == "exp":
        return "the assertion has expired"
    if claim == "aud":
        return "the assertion's aud is not this authorization server"
    if claim == "iat":
        return "the assertion's iat is in the future"
    return f"the assertion's claims are not valid ({exc.description or exc.error})"
