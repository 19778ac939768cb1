"""Client credentials from an HTTP Basic header (RFC 6749 section 2.3.1), for the stand-ins."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from starlette.requests import Request


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from ``Authorization: Basic``, form-urlencoded parts decoded."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, separator, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not separator:
        return None
    return unquote(client_id), unquote(secret)
