"""Instance secret, random tokens and their hashes (AS-20)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path

SECRET_FILE_NAME = "secret.key"


class SecretKeyError(ValueError):
    """The configured instance secret is unusable."""


def new_token(nbytes: int = 32) -> str:
    """A URL-safe random token; 32 bytes = 256 bits (AS-20 asks for at least 128)."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """SHA-256 of a high-entropy token: what the store keeps instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def hashes_match(token: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of ``token`` with a stored hash (AS-20)."""
    if not stored_hash:
        return False
    return hmac.compare_digest(token_hash(token), stored_hash)


def decode_secret_key(value: str) -> bytes:
    """A 256-bit key given as 64 hex characters or as base64/base64url of 32 bytes."""
    text = value.strip()
    candidates = []
    try:
        candidates.append(bytes.fromhex(text))
    except ValueError:
        pass
    for decoder in (base64.urlsafe_b64decode, base64.b64decode):
        try:
            candidates.append(decoder(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            pass
    for key in candidates:
        if len(key) == 32:
            return key
    raise SecretKeyError(
        "GATEHOUSE_SECRET_KEY must be 32 random bytes as 64 hex characters or base64; "
        "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
    )


def load_or_create_secret_key(configured: str | None, data_dir: Path) -> bytes:
    """The instance secret: ``GATEHOUSE_SECRET_KEY``, else ``<data-dir>/secret.key`` (created once, 0600)."""
    if configured:
        return decode_secret_key(configured)
    path = data_dir / SECRET_FILE_NAME
    if path.exists():
        return decode_secret_key(path.read_text())
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A separate 256-bit key per purpose (cookies, CSRF, key wrapping) from the instance secret."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()
