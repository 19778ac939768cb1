"""Revoking stored tokens at the authorization server on logout (RFC 7009 section 2.1).

Logging out should end the grant, not only forget it here: a copied token file would otherwise
keep working until the refresh token expires. Revoking the refresh token ends the whole grant
at most servers (section 2.1: "SHOULD also invalidate all access tokens based on the same
authorization grant"); without one, the access token is revoked.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx2

from gatehouse.basic_auth import basic_authorization
from gatehouse.client.storage import StoredEntry
from gatehouse.netguard import is_loopback_host


def revoke(entry: StoredEntry, timeout: float = 5.0) -> str | None:
    """Revoke ``entry``'s tokens; None when the AS confirmed (200), else why it could not be done."""
    tokens = entry.tokens
    if tokens is None:
        return None
    endpoint = (entry.authorization_server or {}).get("revocation_endpoint")
    if not isinstance(endpoint, str):
        return "the authorization server offers no revocation endpoint"
    parts = urlsplit(endpoint)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(parts.hostname or "")):
        return f"its revocation endpoint {endpoint} is not https"
    token, hint = (tokens.refresh_token, "refresh_token") if tokens.refresh_token else (tokens.access_token, "access_token")
    form = {"token": token, "token_type_hint": hint}
    client = entry.client
    client_id = tokens.client_id or (client.client_id if client else None)
    method = (client.token_endpoint_auth_method if client else None) or ("client_secret_basic" if client and client.client_secret else "none")
    headers = {}
    if method == "client_secret_basic" and client and client.client_secret:
        headers["Authorization"] = basic_authorization(client_id or "", client.client_secret)
    elif method == "client_secret_post" and client and client.client_secret:
        form.update(client_id=client_id or "", client_secret=client.client_secret)
    elif method == "none" and client_id:
        form["client_id"] = client_id
    else:
        return f"this client authenticates with {method}, which logout cannot do"
    try:
        response = httpx2.post(endpoint, data=form, headers=headers, timeout=timeout, trust_env=False, follow_redirects=False)
    except httpx2.HTTPError as exc:
        return f"its revocation endpoint could not be reached ({type(exc).__name__})"
    if response.status_code != 200:
        return f"its revocation endpoint answered HTTP {response.status_code}"
    return None
