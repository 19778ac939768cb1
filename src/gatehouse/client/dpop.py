"""DPoP proofs (RFC 9449), signed with joserfc: the key, the proof JWT, the server nonces.

- The key: one ES256 (P-256) key pair per stored credentials entry, kept with the tokens bound
  to it (``StoredEntry.dpop_key``) so a restarted client can still use them (section 2).
- A proof (section 4.2): header ``typ: dpop+jwt``, ``alg: ES256``, ``jwk`` (the public key only);
  claims ``jti`` (fresh per request), ``htm``, ``htu`` (the request URI without query and
  fragment), ``iat``; ``ath`` (base64url SHA-256 of the access token) on resource requests
  (section 7.1); ``nonce`` once a server has supplied one (sections 8 and 9).
- Nonces: the latest ``DPoP-Nonce`` each origin sent, used in every later proof to that origin.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import httpx2
from joserfc import jwt
from joserfc.jwk import ECKey

from gatehouse.client.errors import StorageError

PROOF_ALGORITHM = "ES256"
PROOF_TYPE = "dpop+jwt"
NONCE_HEADER = "DPoP-Nonce"
USE_NONCE_ERROR = "use_dpop_nonce"


def generate_key() -> ECKey:
    return ECKey.generate_key("P-256")


def key_from_stored(document: dict[str, Any]) -> ECKey:
    """The private key a credentials entry keeps (a private JWK); ``StorageError`` if unusable."""
    try:
        key = ECKey.import_key(document)
    except (ValueError, TypeError, KeyError) as exc:
        raise StorageError(f"the stored DPoP key is unusable ({type(exc).__name__}); run `gatehouse logout` and sign in again") from None
    if not key.is_private or key.curve_name != "P-256":
        raise StorageError("the stored DPoP key is not a private P-256 key; run `gatehouse logout` and sign in again")
    return key


def key_for_storage(key: ECKey) -> dict[str, Any]:
    return key.as_dict(private=True)


def thumbprint(key: ECKey) -> str:
    """The JWK SHA-256 thumbprint (RFC 7638) an AS puts in ``cnf.jkt`` (RFC 9449 section 6.1)."""
    return key.thumbprint()


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url (no padding) of the SHA-256 of the access token's ASCII (section 4.2)."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def target_uri(url: httpx2.URL | str) -> str:
    """``htu``: the HTTP target URI without query and fragment (section 4.2)."""
    return str(httpx2.URL(url).copy_with(query=None, fragment=None))


def origin_of(url: httpx2.URL | str) -> str:
    parsed = httpx2.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def make_proof(
    key: ECKey, method: str, url: httpx2.URL | str, *, access_token: str | None = None, nonce: str | None = None,
) -> str:
    """A fresh DPoP proof JWT for one request (section 4.2)."""
    header = {"typ": PROOF_TYPE, "alg": PROOF_ALGORITHM, "jwk": key.as_dict(private=False)}
    claims: dict[str, Any] = {"jti": str(uuid.uuid4()), "htm": method.upper(), "htu": target_uri(url), "iat": int(time.time())}
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt.encode(header, claims, key, algorithms=[PROOF_ALGORITHM])


class NonceBook:
    """The latest ``DPoP-Nonce`` per origin (sections 8.2 and 9: a server may change it at any answer)."""

    def __init__(self) -> None:
        self._latest: dict[str, str] = {}

    def note(self, response: httpx2.Response) -> bool:
        """Remember the nonce ``response`` carries, if any; True when it differs from the one known."""
        nonce = response.headers.get(NONCE_HEADER)
        if not nonce:
            return False
        origin = origin_of(response.request.url)
        changed = self._latest.get(origin) != nonce
        self._latest[origin] = nonce
        return changed

    def for_url(self, url: httpx2.URL | str) -> str | None:
        return self._latest.get(origin_of(url))
