"""A calendar MCP server: its tool lists the caller's upcoming Google Calendar events (issue 6, UP-3).

The MCP client signs in at Gatehouse, which sends the user on to Google; the client gets a
Gatehouse token for this server, never a Google token. The tool asks the guard for the user's
Google token (``await upstream_token("google", ctx)``), which exchanges the caller's token for it
at Gatehouse (RFC 8693) as this server's resource-server client. See README.md.

    GATEHOUSE_ISSUER=http://127.0.0.1:8000 CALENDAR_CLIENT_ID=... CALENDAR_CLIENT_SECRET_FILE=rs.secret \\
        python examples/calendar/server.py

Environment: ``GATEHOUSE_ISSUER`` (the AS), ``CALENDAR_RESOURCE`` (this server's URL, default
http://127.0.0.1:9002/mcp), ``CALENDAR_CLIENT_ID`` and ``CALENDAR_CLIENT_SECRET_FILE`` (or
``CALENDAR_CLIENT_SECRET``) from ``gatehouse clients add --resource-server``,
``GOOGLE_CALENDAR_API`` (default https://www.googleapis.com/calendar/v3; tests point it at a
stand-in).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from gatehouse.guard import Guard, JWKSKeySource, JWTVerifier, Policy, UpstreamTokenClient, UpstreamTokenError, upstream_token

GOOGLE_CALENDAR_API = "https://www.googleapis.com/calendar/v3"
SCOPE = "calendar:read"


def build_app(issuer: str, resource: str, client_id: str, client_secret: str, calendar_api: str = GOOGLE_CALENDAR_API):
    mcp = MCPServer(name="calendar")
    http = httpx2.AsyncClient(timeout=15, trust_env=False)

    @mcp.tool()
    async def upcoming_events(ctx: Context, max_results: int = 10) -> list[dict]:
        """The next events in your primary Google calendar: title, start and end."""
        try:
            google_token = await upstream_token("google", ctx)
        except UpstreamTokenError as exc:
            raise ToolError(f"Google Calendar is not available: {exc}") from None
        try:
            response = await http.get(
                f"{calendar_api}/calendars/primary/events",
                params={"timeMin": datetime.now(UTC).isoformat(), "singleEvents": "true", "orderBy": "startTime",
                        "maxResults": max(1, min(max_results, 50))},
                headers={"Authorization": f"Bearer {google_token}"},
            )
        except httpx2.HTTPError:
            raise ToolError("Google Calendar could not be reached; try again later") from None
        if response.status_code != 200:
            raise ToolError(f"Google Calendar refused the request (HTTP {response.status_code}): {_google_message(response)}")
        return [_event(item) for item in response.json().get("items", [])]

    upstream = UpstreamTokenClient(issuer=issuer, client_id=client_id, client_secret=client_secret)
    guard = Guard(
        resource=resource, authorization_servers=[issuer], policy=Policy(default=[SCOPE]), resource_name="Calendar",
        verifier=JWTVerifier(issuers=[issuer], audience=resource, keys=JWKSKeySource(f"{issuer}/jwks")),
        upstream_tokens=upstream,
    )
    return guard.protect(mcp.streamable_http_app())


def _event(item: dict) -> dict:
    start, end = item.get("start", {}), item.get("end", {})
    return {
        "summary": item.get("summary", "(no title)"),
        "start": start.get("dateTime") or start.get("date"),
        "end": end.get("dateTime") or end.get("date"),
    }


def _google_message(response: httpx2.Response) -> str:
    """The ``error.message`` of a Google API error body, or the status text."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.reason_phrase or "no details"


def _setting(name: str, what: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise SystemExit(f"set {name}: {what} (see examples/calendar/README.md)")
    return value


def _secret() -> str:
    path = os.environ.get("CALENDAR_CLIENT_SECRET_FILE")
    if path:
        return Path(path).read_text().strip()
    return _setting("CALENDAR_CLIENT_SECRET", "the secret `gatehouse clients add --resource-server` printed "
                                              "(or CALENDAR_CLIENT_SECRET_FILE, a file holding it)")


if __name__ == "__main__":
    resource = os.environ.get("CALENDAR_RESOURCE", "http://127.0.0.1:9002/mcp")
    issuer = _setting("GATEHOUSE_ISSUER", "the Gatehouse issuer URL, e.g. http://127.0.0.1:8000").rstrip("/")
    client_id = _setting("CALENDAR_CLIENT_ID", "the client_id `gatehouse clients add --resource-server` printed")
    app = build_app(issuer, resource, client_id, _secret(), os.environ.get("GOOGLE_CALENDAR_API", GOOGLE_CALENDAR_API).rstrip("/"))
    parts = urlsplit(resource)
    uvicorn.run(app, host=parts.hostname, port=parts.port or 443)
