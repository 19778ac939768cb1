"""Redirect URI rules: registration checks (AS-6, S-C1) and matching (AS-8, RFC 8252 section 7.3)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from gatehouse.netguard import is_loopback_host

FORBIDDEN_SCHEMES = {"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "ftp", "ws", "wss"}
_PORT = re.compile(r":\d*$")


def redirect_uri_problem(uri: object) -> str | None:
    """Why ``uri`` cannot be registered as a redirect URI, or None when it can.

    Allowed: https; http only on a loopback host; a private-use scheme for native apps
    (RFC 8252 section 7.1). Never: fragments, userinfo, script or file schemes.
    """
    if not isinstance(uri, str) or not uri:
        return "redirect URIs must be non-empty strings"
    if any(ch.isspace() for ch in uri):
        return f"{uri!r} contains white space"
    try:
        parts = urlsplit(uri)
    except ValueError:
        return f"{uri!r} is not a valid URI"
    scheme = parts.scheme.lower()
    if not scheme:
        return f"{uri!r} is not an absolute URI"
    if scheme in FORBIDDEN_SCHEMES:
        return f"the {scheme}: scheme is not allowed in redirect URIs"
    if parts.fragment or "#" in uri:
        return f"{uri!r} has a fragment; redirect URIs must not (RFC 6749 section 3.1.2)"
    if "@" in parts.netloc:
        return f"{uri!r} carries user information; remove the part before '@'"
    if scheme == "https":
        if not parts.hostname:
            return f"{uri!r} has no host"
        return None
    if scheme == "http":
        if is_loopback_host(parts.hostname):
            return None
        return f"{uri!r} uses http on a non-loopback host; use https (http is only for 127.0.0.1, [::1] or localhost)"
    if "." in scheme or parts.netloc == "" or parts.path:
        return None
    return f"{uri!r} is not a usable redirect URI"


def _without_port(netloc: str) -> str:
    return _PORT.sub("", netloc)


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Exact string match, except that a loopback http redirect may use any port (AS-8)."""
    if registered == requested:
        return True
    try:
        reg, req = urlsplit(registered), urlsplit(requested)
    except ValueError:
        return False
    if reg.scheme != "http" or req.scheme != "http":
        return False
    if not is_loopback_host(reg.hostname):
        return False
    return (
        _without_port(reg.netloc) == _without_port(req.netloc)
        and reg.path == req.path
        and reg.query == req.query
        and not req.fragment
    )
