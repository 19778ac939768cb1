"""Finding an authorization server's endpoints from its metadata (RFC 8414 section 3, OIDC discovery as a fallback)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx2


def discover_endpoint(issuer: str, field: str, what: str, timeout: float = 10.0) -> str:
    """The URL in metadata field ``field`` (``jwks_uri``, ``introspection_endpoint``…) of ``issuer``;
    ``what`` names it in the error.

    Metadata whose ``issuer`` differs from the one asked for is ignored (RFC 8414 section 3.3).
    """
    from gatehouse.authserver.metadata import well_known_paths

    origin = "{0.scheme}://{0.netloc}".format(urlsplit(issuer))
    rfc8414, oidc = well_known_paths(issuer)
    problems = []
    for url in [origin + path for path in [*rfc8414, *oidc]]:
        try:
            response = httpx2.get(url, timeout=timeout, trust_env=False)
        except httpx2.HTTPError as exc:
            problems.append(f"{url}: {type(exc).__name__}")
            continue
        metadata = json_object(response.content) if response.status_code == 200 else None
        if metadata is None:
            problems.append(f"{url}: HTTP {response.status_code}" if response.status_code != 200 else f"{url}: not a JSON object")
        elif metadata.get("issuer") != issuer:
            problems.append(f"{url}: issuer is {metadata.get('issuer')!r}, not {issuer!r}")
        elif not isinstance(metadata.get(field), str):
            problems.append(f"{url}: no {field}")
        else:
            return metadata[field]
    raise LookupError(f"cannot find the authorization server's {what}: " + "; ".join(problems))


def json_object(body: bytes) -> dict | None:
    """``body`` parsed as a JSON object, or None."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
