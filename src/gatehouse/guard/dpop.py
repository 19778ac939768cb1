"""DPoP at the resource server (RFC 9449 section 7).

A token whose claims hold ``cnf`` (section 6.1 in a JWT, section 6.2 from introspection) is
accepted only as ``Authorization: DPoP <token>`` with exactly one ``DPoP`` proof, checked by
:func:`gatehouse.dpop.check_proof`: ``htm`` is the request's method, ``htu`` the resource's
configured origin with the request's path (what the client addressed, whatever proxy is in
front), ``ath`` the token's hash, and the proof's key the one whose thumbprint is ``cnf.jkt``.
A ``content_digest`` claim, when present (the MCP DPoP profile), must be the body's. The same
token sent as ``Bearer`` is refused (section 7.2), and a token without ``cnf.jkt`` sent as
``DPoP`` too. Unbound tokens keep working as Bearer tokens. The check runs on every request
after the verifier, so a verified-token cache cannot let a request skip it.

Replay (section 11.1): the ``jti`` of each accepted proof is kept in memory, per process, until
the proof's ``iat`` is too old to pass (bounded; see :class:`gatehouse.dpop.ReplayCache`).
Instances behind a load balancer do not share these, so within ``max_age`` a proof could be
replayed once to each other instance, for the same URL, method and token (and body, if the proof
has a ``content_digest``); lower ``max_age`` or keep clients on one instance where that matters.

Nonces (section 9): off by default. With ``require_nonce``, a proof without the current nonce is
answered ``401`` ``use_dpop_nonce`` with a ``DPoP-Nonce`` header. Nonces are stateless; give
every instance the same ``nonce_secret`` so they accept each other's.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping

from gatehouse.dpop import (
    ALGORITHMS,
    DEFAULT_MAX_AGE,
    NonceRequired,
    Nonces,
    ProofError,
    ReplayCache,
    check_proof,
    content_digest,
)


class DPoPRejected(Exception):
    """Why a request fails the DPoP rules: ``error`` for the challenge, ``description`` for people."""

    def __init__(self, error: str, description: str, nonce: str | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.nonce = nonce


class ResourceDPoP:
    def __init__(
        self,
        *,
        algorithms: tuple[str, ...] = ALGORITHMS,
        max_age: int = DEFAULT_MAX_AGE,
        require_nonce: bool = False,
        nonce_secret: bytes | None = None,
        nonce_lifetime: int = DEFAULT_MAX_AGE,
        replay_cache_size: int = 100_000,
    ):
        self.algorithms = tuple(algorithms)
        self.max_age = max_age
        self.require_nonce = require_nonce
        self.nonces = Nonces(nonce_secret or secrets.token_bytes(32), nonce_lifetime) if require_nonce else None
        self.replays = ReplayCache(replay_cache_size)

    def check(self, *, token: str, cnf: object, scheme: str, proofs: list[bytes], method: str, url: str, body: bytes) -> None:
        """Raise :class:`DPoPRejected` unless this request may use ``token`` (bound by ``cnf``)."""
        jkt = cnf.get("jkt") if isinstance(cnf, Mapping) else None
        if cnf is not None and not isinstance(jkt, str):
            raise DPoPRejected("invalid_token", "the token is bound by a confirmation method this server cannot check")
        if scheme != "dpop":
            raise DPoPRejected("invalid_token", "this token is bound to a DPoP key (RFC 9449): "
                                                "send it as 'Authorization: DPoP <token>' with a DPoP proof")
        if jkt is None:
            raise DPoPRejected("invalid_token", "this token is not bound to a DPoP key: send it as 'Authorization: Bearer <token>'")
        if len(proofs) != 1:
            raise DPoPRejected("invalid_dpop_proof", "send exactly one DPoP header holding a proof for this request")
        now = time.time()
        try:
            proof = check_proof(
                proofs[0].decode("latin-1"), method=method, url=url, now=now, max_age=self.max_age, algorithms=self.algorithms,
                access_token=token, nonces=self.nonces, require_nonce=self.require_nonce,
            )
        except NonceRequired as exc:
            raise DPoPRejected(exc.error, exc.description, nonce=self.nonces.current(now)) from None
        except ProofError as exc:
            raise DPoPRejected(exc.error, exc.description) from None
        if not hmac.compare_digest(proof.jkt, jkt):
            raise DPoPRejected("invalid_dpop_proof", "the DPoP proof is signed by another key than the one the token is bound to")
        digest = proof.claims.get("content_digest")
        if digest is not None and digest != content_digest(body):
            raise DPoPRejected("invalid_dpop_proof", "the DPoP proof's content_digest is not the digest of this request's body")
        if not self.replays.first_use((proof.jkt, proof.jti), proof.iat + self.max_age + 1, now):
            raise DPoPRejected("invalid_dpop_proof", "this DPoP proof was used before; make a new proof, "
                                                     "with a new jti, for every request")
