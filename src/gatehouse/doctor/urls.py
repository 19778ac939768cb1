"""The URLs a client derives, in the order MCP clients try them.

- Protected Resource Metadata (RFC 9728 section 3.1, CL-1): the ``resource_metadata`` of the
  challenge, then the path-inserted well-known URI, then the root one.
- Authorization server metadata (CL-3): for an issuer with a path ``/tenant1``, RFC 8414
  path-inserted ``/.well-known/oauth-authorization-server/tenant1``, OIDC path-inserted
  ``/.well-known/openid-configuration/tenant1``, OIDC path-appended
  ``/tenant1/.well-known/openid-configuration``; without a path, the RFC 8414 and OIDC root URIs.
  A terminating ``/`` of the issuer's path is removed before inserting (RFC 8414 section 3.1).

The same order as the SDK's ``build_*_discovery_urls`` (mcp.client.auth.utils), written out here
so a run without ``--login`` does not import the SDK.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from gatehouse.netguard import is_loopback_host

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"
OAUTH_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def canonical(url: str) -> str:
    """RFC 8707 / MCP canonical form for comparison: lowercase scheme and host, no trailing slash."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def path_inserted_prm(server_url: str) -> str | None:
    """RFC 9728 section 3.1 for a resource with a path; None when the resource has none."""
    path = urlsplit(server_url).path.rstrip("/")
    return f"{origin(server_url)}{PRM_WELL_KNOWN}{path}" if path else None


def root_prm(server_url: str) -> str:
    return f"{origin(server_url)}{PRM_WELL_KNOWN}"


def server_metadata_urls(issuer: str) -> list[tuple[str, str]]:
    """(kind, URL) for each AS metadata location, in the CL-3 order."""
    base, path = origin(issuer), urlsplit(issuer).path.rstrip("/")
    if path:
        return [
            ("RFC 8414, path-inserted", f"{base}{OAUTH_WELL_KNOWN}{path}"),
            ("OpenID Connect, path-inserted", f"{base}{OIDC_WELL_KNOWN}{path}"),
            ("OpenID Connect, path-appended", f"{base}{path}{OIDC_WELL_KNOWN}"),
        ]
    return [("RFC 8414", f"{base}{OAUTH_WELL_KNOWN}"), ("OpenID Connect", f"{base}{OIDC_WELL_KNOWN}")]


def secure_enough(url: str) -> bool:
    """AS-19: https, or plain http on a loopback host (development)."""
    parts = urlsplit(url)
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))


def absolute_http(url: object) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment
