"""DPoP at the token endpoint (RFC 9449 sections 5 and 8).

A token request with a valid ``DPoP`` proof gets an access token bound to the proof's key
(``cnf.jkt``, ``token_type: DPoP``); one without a proof gets a Bearer token, as before. An
invalid proof is ``400 invalid_dpop_proof``. Every accepted proof's ``jti`` is remembered per key
in the store until its ``iat`` is too old to pass (section 11.1), so a replay fails on every
instance that shares the database.

Nonces (section 8): off unless ``dpop_require_nonce`` is set, as in node-oidc-provider, whose
``requireNonce`` defaults to false. The ``iat`` window plus the ``jti`` store already bound a
proof's life; nonces additionally stop proofs made in advance with a future ``iat``. When on,
a proof without the current nonce gets ``400 use_dpop_nonce`` with a ``DPoP-Nonce`` header, and
every answer to a DPoP request carries the current nonce. Nonces are stateless (an HMAC of a
time slot keyed by the instance secret), so instances sharing the secret accept each other's.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from authlib.oauth2.rfc6749.errors import OAuth2Error

from gatehouse.authserver.replay import first_use
from gatehouse.config import Settings
from gatehouse.dpop import ALGORITHMS, NonceRequired, Nonces, Proof, ProofError, check_proof
from gatehouse.store.models import DPoPProofUse
from gatehouse.timeutil import epoch, utcnow

_PROOF_JTIS = DPoPProofUse.__table__


class InvalidDPoPProof(OAuth2Error):
    """Section 5: the proof is missing where required, malformed, or fails a check."""

    error = "invalid_dpop_proof"


class UseDPoPNonce(OAuth2Error):
    """Section 8: retry with the nonce in the ``DPoP-Nonce`` header."""

    error = "use_dpop_nonce"

    def __init__(self, description: str, nonce: str):
        super().__init__(description=description)
        self.nonce = nonce

    def get_headers(self):
        return [*super().get_headers(), ("DPoP-Nonce", self.nonce)]


class TokenEndpointDPoP:
    """Checks the proof of a token request and remembers its ``jti``."""

    def __init__(self, token_endpoint: str, settings: Settings, secret: bytes):
        self.url = token_endpoint
        self.max_age = settings.dpop_proof_max_age
        self.require_nonce = settings.dpop_require_nonce
        self.nonces = None
        if settings.dpop_require_nonce:
            nonce_key = hmac.new(secret, b"gatehouse dpop nonces", hashlib.sha256).digest()
            self.nonces = Nonces(nonce_key, settings.dpop_nonce_lifetime)

    @property
    def algorithms(self) -> list[str]:
        return list(ALGORITHMS)

    def proof_of(self, request) -> Proof | None:
        """The request's proof, checked and recorded; None without a ``DPoP`` header."""
        values = request.prepared.headers.getlist("dpop")
        if not values:
            return None
        if len(values) > 1:
            raise InvalidDPoPProof("send exactly one DPoP header (RFC 9449 section 4.3)")
        now = utcnow()
        try:
            proof = check_proof(
                values[0], method="POST", url=self.url, now=epoch(now), max_age=self.max_age,
                nonces=self.nonces, require_nonce=self.require_nonce,
            )
        except NonceRequired as exc:
            raise UseDPoPNonce(exc.description, self.nonces.current(epoch(now))) from None
        except ProofError as exc:
            raise InvalidDPoPProof(exc.description) from None
        expires_at = now + timedelta(seconds=max(proof.iat - epoch(now), 0) + self.max_age + 1)
        if not first_use(request.db, _PROOF_JTIS, expires_at, jkt=proof.jkt, jti=proof.jti):
            raise InvalidDPoPProof("this DPoP proof was used before; make a new proof, with a new jti, for every request")
        return proof

    def response_headers(self) -> list[tuple[str, str]]:
        """Headers for any answer to a DPoP request: the current nonce, when nonces are on."""
        if self.nonces is None:
            return []
        return [("DPoP-Nonce", self.nonces.current(epoch(utcnow())))]


def require_proof_if_registered(client, proof: Proof | None) -> None:
    """Section 5.2: a client registered with ``dpop_bound_access_tokens: true`` gets no Bearer tokens."""
    if proof is None and client.metadata.get("dpop_bound_access_tokens") is True:
        raise InvalidDPoPProof("this client is registered with dpop_bound_access_tokens: send a DPoP proof")
