"""Browser sessions and CSRF tokens (AS-16, S-A7).

The session is a signed, timestamped cookie (no server state, so any instance can read it).
Cookies carry the ``__Host-`` prefix with ``Secure``, ``HttpOnly``, ``SameSite=Lax`` and
``Path=/``; browsers treat http://127.0.0.1 and http://localhost as secure contexts, so the
same cookies work in local development.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from gatehouse.instance_secrets import derive_key, new_token
from gatehouse.timeutil import epoch, utcnow

SESSION_COOKIE = "__Host-gatehouse-session"
BROWSER_COOKIE = "__Host-gatehouse-browser"
SESSION_MAX_AGE = 12 * 3600


@dataclass(frozen=True)
class BrowserSession:
    session_id: str
    user_id: int
    auth_time: int


class SessionManager:
    def __init__(self, secret: bytes):
        self._serializer = URLSafeTimedSerializer(derive_key(secret, "gatehouse session cookie v1"), salt="session")
        self._csrf_key = derive_key(secret, "gatehouse csrf v1")

    def read(self, request: Request) -> BrowserSession | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=SESSION_MAX_AGE)
            return BrowserSession(str(data["sid"]), int(data["uid"]), int(data["at"]))
        except (BadSignature, KeyError, TypeError, ValueError):
            return None

    def start(self, response: Response, user_id: int) -> BrowserSession:
        session = BrowserSession(new_token(16), user_id, epoch(utcnow()))
        value = self._serializer.dumps({"sid": session.session_id, "uid": user_id, "at": session.auth_time})
        set_host_cookie(response, SESSION_COOKIE, value, max_age=SESSION_MAX_AGE)
        return session

    def end(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="lax")

    def browser_id(self, request: Request, response: Response | None = None) -> str:
        """A random id for this browser, used to bind the login form's CSRF token."""
        value = request.cookies.get(BROWSER_COOKIE)
        if not value or len(value) > 64:
            value = new_token(16)
            request.state.new_browser_id = value
        return value

    def remember_browser(self, request: Request, response: Response) -> None:
        value = getattr(request.state, "new_browser_id", None)
        if value:
            set_host_cookie(response, BROWSER_COOKIE, value, max_age=None)

    def csrf_token(self, *parts: object) -> str:
        message = "|".join(str(p) for p in parts).encode()
        return hmac.new(self._csrf_key, message, hashlib.sha256).hexdigest()

    def csrf_valid(self, token: str | None, *parts: object) -> bool:
        # as bytes: compare_digest refuses str with non-ASCII characters (TypeError)
        return bool(token) and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self.csrf_token(*parts).encode())


def set_host_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="lax")
