"""Checks on what servers publish, made before the client trusts them with anything.

- CL-2 / S-CL3: the PRM ``resource`` must be the server URL being accessed, or its origin when the
  metadata came from the origin's root well-known URI (RFC 9728 section 3.3).
- CL-5 / S-CL2: an AS whose metadata lacks ``code_challenge_methods_supported`` (or ``S256`` in
  it) is refused, before any registration or browser.
- CL-15 / S-CL4: the ``authorization_endpoint`` must be https, or http on loopback; so must the
  token and registration endpoints (AS-19).
- CL-6: some way to identify the client must exist (pre-registered, CIMD or DCR).
- A 2025-03-26 server that publishes no metadata at all is its own AS at the default endpoints of
  its origin; those must be safe too.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mcp.shared.auth import OAuthMetadata

from gatehouse.client.browser import check_browser_url
from gatehouse.client.errors import AuthorizationFailed
from gatehouse.client.storage import canonical_resource

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"


class ServerRefused(AuthorizationFailed):
    """This authorization server cannot be used; another one the resource names may be tried."""

    def __init__(self, issuer: str | None, message: str):
        super().__init__(message)
        self.issuer = issuer


def check_resource_matches(server_url: str, prm_resource: str | None, well_known_url: str | None = None) -> None:
    """CL-2: PRM ``resource`` is the server URL (canonical form, one trailing slash ignored), as
    RFC 9728 section 3.3 wants for metadata at a URL the server's challenge named or at the
    path-inserted well-known URI. ``well_known_url`` is the well-known URI discovery built to find
    the metadata (None when the challenge named it): when that is the origin's root URI
    (``/.well-known/oauth-protected-resource``, the last place discovery looks), the resource it
    was built from, the origin, is accepted too.

    The SDK accepts any PRM resource that is a path prefix of the server URL, so the metadata of a
    server at ``/mcp`` (at its path-inserted URI, or the one its challenge names) could obtain tokens
    for the whole origin; RFC 9728 section 3.3 wants them identical.
    """
    if prm_resource is None:
        raise AuthorizationFailed(f"the protected resource metadata of {server_url} names no resource; refusing it (CL-2)")
    accepted = {canonical_resource(server_url)}
    origin = origin_of(server_url)
    if well_known_url is not None and canonical_resource(well_known_url) == canonical_resource(f"{origin}{PRM_WELL_KNOWN}"):
        accepted.add(canonical_resource(origin))
    if canonical_resource(prm_resource) not in accepted:
        raise AuthorizationFailed(
            f"the protected resource metadata of {server_url} is for {prm_resource}, not for this server; "
            "refusing to send it credentials (RFC 9728 section 3.3)"
        )


def _check_endpoint(issuer: str, name: str, url: str | None) -> None:
    if url is None:
        return
    try:
        check_browser_url(url)
    except AuthorizationFailed as exc:
        reason = str(exc).removeprefix("refused to open the authorization URL: ")
        raise ServerRefused(issuer, f"{issuer} publishes an unsafe {name} ({reason}); refusing it (CL-15)") from None


def check_authorization_server(
    metadata: OAuthMetadata | None, issuer: str | None, *, code_flow: bool, problem: str | None = None
) -> None:
    """Refuse an AS whose metadata is missing, lacks PKCE S256 (code flow), or has unsafe endpoints."""
    name = issuer or "the authorization server"
    if metadata is None:
        detail = f" ({problem})" if problem else ""
        raise ServerRefused(issuer, f"no usable authorization server metadata for {name}{detail}; refusing it (RFC 8414)")
    name = str(metadata.issuer)
    if code_flow:
        methods = metadata.code_challenge_methods_supported
        if not methods:
            raise ServerRefused(
                name, f"{name} does not advertise code_challenge_methods_supported, so PKCE cannot be relied on; refusing it (CL-5)"
            )
        if "S256" not in methods:
            raise ServerRefused(name, f"{name} does not support PKCE with S256; refusing it (CL-5)")
        _check_endpoint(name, "authorization_endpoint", str(metadata.authorization_endpoint))
    _check_endpoint(name, "token_endpoint", str(metadata.token_endpoint))
    if metadata.registration_endpoint is not None:
        _check_endpoint(name, "registration_endpoint", str(metadata.registration_endpoint))


def check_default_endpoints(server_url: str) -> None:
    """The endpoints of a 2025-03-26 server without metadata (``/authorize``, ``/token``,
    ``/register`` at its origin) must be as safe as published ones: https, or http on loopback (CL-15)."""
    origin = origin_of(server_url)
    for name, path in (("authorization_endpoint", "/authorize"), ("token_endpoint", "/token"),
                       ("registration_endpoint", "/register")):
        _check_endpoint(origin, name, f"{origin}{path}")


def check_can_identify(metadata: OAuthMetadata, *, has_client: bool, uses_metadata_document: bool) -> None:
    """CL-6: pre-registered credentials, else CIMD, else DCR; with none of them the user must register."""
    if has_client or uses_metadata_document or metadata.registration_endpoint is not None:
        return
    issuer = str(metadata.issuer)
    raise ServerRefused(
        issuer,
        f"{issuer} offers neither client ID metadata documents nor dynamic client registration; "
        "register a client there and pass its client id",
    )


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
