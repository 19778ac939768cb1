"""DPoP proofs (RFC 9449): the checks the authorization server and the resource server share.

- A proof (section 4.2, checked as section 4.3 says): one compact JWS with ``typ: dpop+jwt``, an
  asymmetric ``alg`` from :data:`ALGORITHMS`, and in its header the public ``jwk`` its signature
  verifies with; claims ``jti``, ``htm`` (the request method), ``htu`` (the request URL, compared
  without query and fragment after RFC 3986 section 6.2.2 normalisation), ``iat`` within
  ``max_age`` seconds of now, ``ath`` = base64url(SHA-256(access token)) when a token comes with
  it (section 7.1), and ``nonce`` when the server hands out nonces (sections 8, 9).
- The key binds tokens by its RFC 7638 SHA-256 thumbprint, ``cnf.jkt`` (section 6.1).
- :class:`Nonces`: server-issued nonces without server state, an HMAC of a time slot.
- :class:`ReplayCache`: ``jti`` values seen, per process, kept while a proof with them could
  still pass the ``iat`` check (section 11.1).
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

#: Asymmetric JWS algorithms accepted for proofs (section 11.6: never ``none`` nor MAC-based).
#: ``Ed25519`` is RFC 9864's name for EdDSA over Ed25519 (joserfc deprecates plain ``EdDSA``).
ALGORITHMS = ("ES256", "ES384", "ES512", "PS256", "RS256", "Ed25519")
PROOF_TYPE = "dpop+jwt"
MAX_PROOF_LENGTH = 8 * 1024
MAX_JTI_LENGTH = 255
MIN_RSA_BITS = 2048
DEFAULT_MAX_AGE = 300


class ProofError(Exception):
    """A proof that cannot be accepted: ``error`` is the RFC 9449 error code, ``description`` says why."""

    error = "invalid_dpop_proof"

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


class NonceRequired(ProofError):
    """Section 8 / 9: the proof lacks the server's current nonce; answer ``use_dpop_nonce``."""

    error = "use_dpop_nonce"


@dataclass(frozen=True)
class Proof:
    jkt: str
    jti: str
    iat: int
    claims: dict


def access_token_hash(token: str) -> str:
    """``ath`` (section 4.2): base64url of the SHA-256 of the token's ASCII bytes."""
    return _b64(hashlib.sha256(token.encode("ascii", "replace")).digest())


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` value of ``body`` with SHA-256 (the MCP DPoP profile's ``content_digest`` claim)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def normalize_uri(uri: str) -> str | None:
    """``uri`` without query and fragment, scheme and host lower-cased, a default port dropped
    and an empty path made ``/`` (RFC 3986 section 6.2.2, RFC 9449 section 4.3 step 9)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


def check_proof(
    value: str,
    *,
    method: str,
    url: str,
    now: float,
    max_age: int = DEFAULT_MAX_AGE,
    algorithms: tuple[str, ...] = ALGORITHMS,
    access_token: str | None = None,
    nonces: Nonces | None = None,
    require_nonce: bool = False,
) -> Proof:
    """Check one ``DPoP`` header value for a request to ``method`` ``url`` (section 4.3, steps 2-11
    but replay, which the caller keeps). Raises :class:`ProofError` or :class:`NonceRequired`."""
    if not value or len(value) > MAX_PROOF_LENGTH:
        raise ProofError("the DPoP header must hold one proof JWT")
    try:
        header = jws.extract_compact(value.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError):
        raise ProofError("the DPoP proof is not a compact JWS") from None
    if header.get("typ") != PROOF_TYPE:
        raise ProofError(f"the DPoP proof's typ must be {PROOF_TYPE!r}")
    alg = header.get("alg")
    if alg not in algorithms:
        raise ProofError(f"the DPoP proof's alg must be one of {' '.join(algorithms)}")
    key = _public_key(header.get("jwk"))
    try:
        claims = jwt.decode(value, key, algorithms=[alg]).claims
    except (JoseError, ValueError, TypeError):
        raise ProofError("the DPoP proof's signature does not verify with its jwk") from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise ProofError(f"the DPoP proof needs a 'jti' string of at most {MAX_JTI_LENGTH} characters")
    if claims.get("htm") != method:
        raise ProofError(f"the DPoP proof's htm must be {method!r}, the method of this request")
    htu = claims.get("htu")
    if not isinstance(htu, str) or normalize_uri(htu) != normalize_uri(url):
        raise ProofError(f"the DPoP proof's htu must be {url!r}, the URL of this request")
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise ProofError("the DPoP proof needs a numeric 'iat'")
    if abs(now - iat) > max_age:
        raise ProofError(f"the DPoP proof's iat is more than {max_age} s away from the server's clock")
    if access_token is not None and not _equal(claims.get("ath"), access_token_hash(access_token)):
        raise ProofError("the DPoP proof's ath is not the hash of the access token it came with")
    if nonces is not None:
        nonce = claims.get("nonce")
        if nonce is None and require_nonce:
            raise NonceRequired("this server requires a nonce in DPoP proofs: use the one in the DPoP-Nonce header")
        if nonce is not None and not nonces.valid(nonce, now):
            raise NonceRequired("the DPoP proof's nonce is stale or not from this server: use the one in the DPoP-Nonce header")
    return Proof(jkt=key.thumbprint(), jti=jti, iat=int(iat), claims=claims)


def _public_key(jwk: object):
    if not isinstance(jwk, dict) or jwk.get("kty") not in ("EC", "RSA", "OKP"):
        raise ProofError("the DPoP proof's header needs a 'jwk' holding an EC, RSA or OKP public key")
    if "d" in jwk or "p" in jwk:
        raise ProofError("the DPoP proof's jwk must be a public key; never send the private key")
    if jwk["kty"] == "RSA" and _rsa_bits(jwk.get("n")) < MIN_RSA_BITS:
        raise ProofError(f"the DPoP proof's RSA key must have at least {MIN_RSA_BITS} bits")
    try:
        return JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        raise ProofError("the DPoP proof's jwk is not a usable public key") from None


def _rsa_bits(modulus: object) -> int:
    if not isinstance(modulus, str) or len(modulus) > 2048:
        return 0
    try:
        return int.from_bytes(base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4)), "big").bit_length()
    except ValueError:
        return 0


class Nonces:
    """Server-issued nonces (sections 8 and 9) with no state: the nonce of a time slot of
    ``lifetime`` seconds is an HMAC of the slot's number. The current and the previous slot's
    nonces are accepted, so a nonce lives between ``lifetime`` and twice that. Instances that
    share ``secret`` accept each other's nonces."""

    def __init__(self, secret: bytes, lifetime: int = DEFAULT_MAX_AGE):
        if lifetime <= 0:
            raise ValueError("the nonce lifetime must be positive")
        self._secret = secret
        self.lifetime = lifetime

    def _for_slot(self, slot: int) -> str:
        return _b64(hmac.new(self._secret, slot.to_bytes(8, "big", signed=True), hashlib.sha256).digest()[:18])

    def current(self, now: float) -> str:
        return self._for_slot(int(now // self.lifetime))

    def valid(self, nonce: object, now: float) -> bool:
        if not isinstance(nonce, str):
            return False
        slot = int(now // self.lifetime)
        return _equal(nonce, self._for_slot(slot)) or _equal(nonce, self._for_slot(slot - 1))


class ReplayCache:
    """``jti`` values seen in this process (section 11.1), each kept until ``expires``.

    Bounded: past ``max_entries`` the entries closest to expiry are dropped first, so a flood of
    proofs can make an old one replayable, never memory grow without limit. Instances of a
    service behind a load balancer do not see each other's entries."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._expiry: dict[tuple, float] = {}
        self._heap: list[tuple[float, tuple]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def first_use(self, key: tuple, expires: float, now: float) -> bool:
        """Remember ``key`` until ``expires``; False if it is already remembered (a replay)."""
        heap, expiry = self._heap, self._expiry
        while heap and (heap[0][0] <= now or len(expiry) >= self.max_entries):
            when, old = heapq.heappop(heap)
            if expiry.get(old) == when:
                del expiry[old]
        seen = expiry.get(key)
        if seen is not None and seen > now:
            return False
        expiry[key] = expires
        heapq.heappush(heap, (expires, key))
        return True


def _equal(value: object, expected: str) -> bool:
    return isinstance(value, str) and hmac.compare_digest(value.encode(), expected.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
