"""An upstream API for the vault path: a Google-Calendar-shaped events list on loopback.

``GET /calendar/v3/users/me/events`` checks ``Authorization: Bearer <upstream access token>`` by
RFC 7662 introspection at the upstream OpenID Provider: the token must be active and carry the
required scope. Otherwise it answers as RFC 6750 section 3.1 says: 401 ``invalid_token`` (no,
unknown, expired or revoked token) or 403 ``insufficient_scope``. Every credential it received is
kept in ``received_tokens``, so a test can show the MCP access token never reached it (S-U4).
"""

from __future__ import annotations

import threading

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.upstream.upstream_oidc import UpstreamOIDC

EVENTS_PATH = "/calendar/v3/users/me/events"
REALM = 'realm="upstream calendar"'


def events_for(email: str, name: str) -> list[dict]:
    """A few fixed events of one person, shaped like Google Calendar's ``Event`` resource."""
    first = name.split()[0]
    titles = [f"{first}'s standup", f"Lunch with {first}", f"{first}: quarterly review"]
    return [
        {
            "kind": "calendar#event",
            "id": f"evt{index}{email.split('@')[0]}",
            "status": "confirmed",
            "summary": title,
            "organizer": {"email": email, "self": True},
            "start": {"dateTime": f"2030-01-0{index + 1}T09:00:00Z"},
            "end": {"dateTime": f"2030-01-0{index + 1}T09:30:00Z"},
        }
        for index, title in enumerate(titles)
    ]


def _error(status: int, error: str, message: str) -> JSONResponse:
    google_status = "UNAUTHENTICATED" if status == 401 else "PERMISSION_DENIED"
    return JSONResponse(
        {"error": {"code": status, "message": message, "status": google_status}},
        status_code=status,
        headers={"WWW-Authenticate": f'Bearer {REALM}, error="{error}", error_description="{message}"'},
    )


class CalendarAPI:
    """The app; ``base_url`` is set by the fixture once it listens."""

    def __init__(self, op: UpstreamOIDC, required_scope: str = "calendar.read"):
        self.op = op
        self.required_scope = required_scope
        self.base_url = ""
        self.received_tokens: list[str] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route(EVENTS_PATH, self.events, methods=["GET"])])

    @property
    def events_url(self) -> str:
        return f"{self.base_url}{EVENTS_PATH}"

    def events(self, request: Request):
        """Sync on purpose: Starlette runs it in a thread, so the blocking introspection call is fine."""
        header = request.headers.get("authorization")
        if not header:
            return JSONResponse(
                {"error": {"code": 401, "message": "Request is missing required authentication credential.",
                           "status": "UNAUTHENTICATED"}},
                status_code=401, headers={"WWW-Authenticate": f"Bearer {REALM}"},
            )
        scheme, _, token = header.partition(" ")
        with self._lock:
            self.received_tokens.append(token.strip() or header)
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "invalid_token", "Authorization must be: Bearer <access token>.")
        try:
            introspection = self.op.introspect(token.strip())
        except Exception:  # noqa: BLE001 - the provider being down is an answer too
            return JSONResponse({"error": {"code": 503, "message": "The token service is unavailable.",
                                           "status": "UNAVAILABLE"}}, status_code=503)
        if not introspection.get("active"):
            return _error(401, "invalid_token", "Request had invalid authentication credentials.")
        if self.required_scope not in introspection.get("scope", "").split():
            return _error(403, "insufficient_scope", f"The token lacks the scope {self.required_scope}.")
        account = next((a for a in self.op.accounts.values() if a.sub == introspection.get("sub")), None)
        items = events_for(account.email, account.name) if account else []
        return JSONResponse({
            "kind": "calendar#events",
            "summary": account.email if account else "",
            "timeZone": "UTC",
            "accessRole": "owner",
            "items": items,
        })
