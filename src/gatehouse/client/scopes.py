"""Which scopes to ask for (CL-8), and what counts as one operation for step-up limits (CL-14)."""

from __future__ import annotations

import json

import httpx2
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata

OFFLINE_ACCESS = "offline_access"


def select_scope(
    challenged: str | None,
    resource_metadata: ProtectedResourceMetadata | None,
    server_metadata: OAuthMetadata | None,
    requested: tuple[str, ...] = (),
    *,
    wants_refresh_token: bool = True,
) -> str | None:
    """CL-8: the scopes the user asked for; else the challenge's ``scope``; else every scope in PRM
    ``scopes_supported``; else none. ``offline_access`` is added only when the AS lists it.

    The SDK falls back to the AS's ``scopes_supported`` before omitting ``scope``, which asks for
    every scope the AS knows, for every resource it serves; the MCP specification omits it.
    """
    if requested:
        chosen = " ".join(dict.fromkeys(requested))
    elif challenged:
        chosen = challenged
    elif resource_metadata is not None and resource_metadata.scopes_supported:
        chosen = " ".join(resource_metadata.scopes_supported)
    else:
        return None
    offered = server_metadata.scopes_supported if server_metadata is not None else None
    if wants_refresh_token and offered and OFFLINE_ACCESS in offered and OFFLINE_ACCESS not in chosen.split():
        chosen = f"{chosen} {OFFLINE_ACCESS}"
    return chosen


def operation_of(request: httpx2.Request) -> str:
    """A name for what ``request`` does, for counting step-ups per operation: the JSON-RPC method,
    with the tool, prompt or resource it names (``tools/call add_note``), else method and path."""
    try:
        body = json.loads(request.content or b"null")
    except (ValueError, httpx2.RequestNotRead):
        body = None
    if isinstance(body, dict) and isinstance(body.get("method"), str):
        params = body.get("params") if isinstance(body.get("params"), dict) else {}
        target = params.get("name") or params.get("uri")
        return f"{body['method']} {target}" if isinstance(target, str) else body["method"]
    return f"{request.method} {request.url.path}"
