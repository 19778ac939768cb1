"""Signing keys: ES256 keys kept in the store, private parts wrapped with the instance secret.

Rotation follows AS-12 (RFC 9068 section 4 leaves it to the AS; RFC 7517 for the JWKS):
a new key is published at ``/jwks`` as soon as it is created, signs only from
``active_from`` (after the configured delay, so every resource server's JWKS cache has
seen it), and the key it replaces stays published until every token it signed has expired.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from joserfc import jwe
from joserfc.jwk import ECKey, OctKey
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gatehouse.instance_secrets import derive_key
from gatehouse.store.models import SigningKey
from gatehouse.timeutil import utcnow

ALGORITHM = "ES256"
_WRAP_HEADER = {"alg": "dir", "enc": "A256GCM"}


class KeyUnwrapError(RuntimeError):
    """A stored private key cannot be decrypted: the instance secret is not the one it was made with."""


@dataclass(frozen=True)
class LoadedKey:
    kid: str
    private: ECKey
    public_jwk: dict
    active_from: datetime
    retire_after: datetime | None


def _wrapping_key(secret: bytes) -> OctKey:
    return OctKey.import_key(derive_key(secret, "gatehouse signing-key wrap v1"))


def create_signing_key(session: Session, secret: bytes, active_from: datetime) -> SigningKey:
    """Generate an ES256 key, store it wrapped, and return its row. ``kid`` is the RFC 7638 thumbprint."""
    key = ECKey.generate_key("P-256", private=True)
    kid = key.thumbprint()
    public = {**key.as_dict(private=False), "kid": kid, "alg": ALGORITHM, "use": "sig"}
    private_json = json.dumps(key.as_dict(private=True)).encode()
    wrapped = jwe.encrypt_compact(_WRAP_HEADER, private_json, _wrapping_key(secret))
    now = utcnow()
    row = SigningKey(
        kid=kid,
        algorithm=ALGORITHM,
        public_jwk=public,
        private_jwk_encrypted=wrapped.encode(),
        created_at=now,
        active_from=active_from,
        superseded_at=None,
        retire_after=None,
    )
    session.add(row)
    return row


def rotate(session: Session, secret: bytes, activation_delay: timedelta, max_token_ttl: timedelta) -> SigningKey:
    """Add a key that signs after ``activation_delay``; schedule the current signers' retirement."""
    now = utcnow()
    new_key = create_signing_key(session, secret, active_from=now + activation_delay)
    for row in session.scalars(select(SigningKey).where(SigningKey.superseded_at.is_(None), SigningKey.kid != new_key.kid)):
        row.superseded_at = new_key.active_from
        row.retire_after = new_key.active_from + max_token_ttl
    return new_key


def ensure_signing_key(session: Session, secret: bytes) -> None:
    """On first start, create a key that signs at once."""
    if session.scalar(select(SigningKey.kid).limit(1)) is None:
        create_signing_key(session, secret, active_from=utcnow())


class KeyRing:
    """The published and signing keys, loaded from the store and refreshed every few seconds,
    so that a rotation made by another instance or by ``gatehouse keys rotate`` is picked up."""

    def __init__(self, sessions: sessionmaker[Session], secret: bytes, refresh_interval: float = 5.0):
        self._sessions = sessions
        self._secret = secret
        self._refresh_interval = refresh_interval
        self._keys: list[LoadedKey] = []
        self._loaded_at = 0.0
        #: grows whenever the set of keys changes (lets verifiers drop cached results)
        self.generation = 0
        self._lock = threading.Lock()

    def reload(self) -> None:
        wrapping = _wrapping_key(self._secret)
        with self._sessions() as session:
            rows = session.scalars(select(SigningKey).order_by(SigningKey.active_from)).all()
        keys = []
        for row in rows:
            try:
                plaintext = jwe.decrypt_compact(row.private_jwk_encrypted.decode(), wrapping).plaintext
            except Exception as exc:
                raise KeyUnwrapError(
                    f"signing key {row.kid} cannot be decrypted with this instance secret; "
                    "use the GATEHOUSE_SECRET_KEY (or <data-dir>/secret.key) it was created with"
                ) from exc
            keys.append(
                LoadedKey(
                    kid=row.kid,
                    private=ECKey.import_key(json.loads(plaintext)),
                    public_jwk=row.public_jwk,
                    active_from=row.active_from,
                    retire_after=row.retire_after,
                )
            )
        if [k.kid for k in keys] != [k.kid for k in self._keys]:
            self.generation += 1
        self._keys = keys
        self._loaded_at = time.monotonic()

    def _current(self) -> list[LoadedKey]:
        if time.monotonic() - self._loaded_at > self._refresh_interval:
            with self._lock:
                if time.monotonic() - self._loaded_at > self._refresh_interval:
                    self.reload()
        return self._keys

    def signing_key(self) -> LoadedKey:
        """The newest key whose ``active_from`` has passed."""
        now = utcnow()
        active = [key for key in self._current() if key.active_from <= now]
        if not active:
            raise RuntimeError("no active signing key; run `gatehouse serve` once to create one")
        return active[-1]

    def loaded_signing_kid(self) -> str | None:
        """The kid that signs now among the keys already loaded, without touching the store (``/readyz``)."""
        now = utcnow()
        active = [key for key in self._keys if key.active_from <= now]
        return active[-1].kid if active else None

    def published_keys(self) -> list[dict]:
        """The JWKS ``keys``: every key not yet past its retirement time."""
        now = utcnow()
        return [key.public_jwk for key in self._current() if key.retire_after is None or key.retire_after > now]

    def public_key(self, kid: str) -> ECKey | None:
        for key in self._current():
            if key.kid == kid:
                return ECKey.import_key(key.public_jwk)
        return None
