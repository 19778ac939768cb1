"""``private_key_jwt`` client assertions (RFC 7523 section 2.2, OIDC Core section 9), signed with joserfc.

The SDK's ``PrivateKeyJWTOAuthProvider`` asks an assertion provider for a JWT whose ``aud`` is
the AS issuer; its own ``SignedJWTParameters`` signs with PyJWT, while Gatehouse does every JOSE
operation with joserfc. The key file is a PEM private key (EC, RSA or Ed25519) or a private JWK
in JSON; a JWK's ``kid`` is put in the header so the AS can pick the key from the client's JWKS.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from gatehouse.client.errors import ClientError

ASSERTION_LIFETIME = 60
_EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def load_signing_key(path: Path) -> tuple[ECKey | RSAKey | OKPKey, str, str | None]:
    """The private key in ``path``, the JWS algorithm it signs with, and its ``kid`` if it has one."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read the private key file {path}: {exc.strerror}") from None
    kid = None
    try:
        if data.lstrip().startswith(b"{"):
            document = json.loads(data)
            key = JWKRegistry.import_key(document)
            kid = document.get("kid")
        else:
            key = _import_pem(data)
    except (ValueError, TypeError) as exc:
        raise ClientError(f"{path} holds no usable private key ({exc}); give a PEM private key or a private JWK") from None
    if not key.is_private:
        raise ClientError(f"{path} holds a public key; private_key_jwt needs the private key")
    if isinstance(key, ECKey):
        algorithm = _EC_ALGORITHMS.get(key.curve_name)
    elif isinstance(key, RSAKey):
        algorithm = "RS256"
    elif isinstance(key, OKPKey) and key.curve_name == "Ed25519":
        algorithm = "EdDSA"
    else:
        algorithm = None
    if algorithm is None:
        raise ClientError(f"{path} holds a key type that cannot sign client assertions; use EC P-256, RSA or Ed25519")
    return key, algorithm, kid


def _import_pem(data: bytes):
    for key_type in (ECKey, RSAKey, OKPKey):
        try:
            return key_type.import_key(data)
        except Exception:  # noqa: BLE001 - try the next key type
            continue
    raise ValueError("not a PEM EC, RSA or OKP key")


def assertion_provider(client_id: str, key_file: Path) -> Callable[[str], Awaitable[str]]:
    """An SDK assertion provider: ``await provider(audience)`` returns a fresh signed assertion."""
    key, algorithm, kid = load_signing_key(key_file)
    header = {"alg": algorithm, **({"kid": kid} if kid else {})}

    async def provide(audience: str) -> str:
        now = int(time.time())
        claims = {
            "iss": client_id, "sub": client_id, "aud": audience,
            "iat": now, "exp": now + ASSERTION_LIFETIME, "jti": str(uuid.uuid4()),
        }
        return jwt.encode(header, claims, key, algorithms=[algorithm])

    return provide
