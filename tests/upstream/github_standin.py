"""A loopback stand-in for GitHub's OAuth app web flow and the two REST endpoints a login needs.

It follows GitHub's documented endpoints and answers ("Authorizing OAuth apps", "Troubleshooting
OAuth app access token request errors", REST "Users" and "Emails"):

- ``GET /login/oauth/authorize``: a sign-in form (``login``, ``password``), then a redirect to
  ``redirect_uri`` with ``code`` and ``state``. ``redirect_uri`` must match the registered
  callback URL (same scheme, host, port; path equal or below); a mismatch redirects to the
  registered callback with ``error=redirect_uri_mismatch``, as GitHub does. PKCE
  (``code_challenge``, ``code_challenge_method=S256``) is honoured.
- ``POST /login/oauth/access_token``: form or JSON body, client credentials in the body (or HTTP
  Basic). Answers ``application/x-www-form-urlencoded`` unless ``Accept: application/json``.
  Errors are HTTP 200 with ``error`` (``bad_verification_code``, ``incorrect_client_credentials``,
  ``redirect_uri_mismatch``). Scopes come back comma-separated; OAuth app tokens (``gho_``) have
  no expiry and no refresh token.
- ``GET {api_base}/user`` and ``GET {api_base}/user/emails`` (``Authorization: Bearer`` or
  ``token``), with ``X-OAuth-Scopes``; ``/user/emails`` needs ``user:email`` or ``user``.
- ``DELETE {api_base}/applications/{client_id}/grant`` and ``.../token`` (Basic client auth,
  JSON ``{"access_token": ...}``): the app revokes an authorization or a token.

``api_base`` is ``{base_url}/api/v3``, GitHub Enterprise Server's layout.
"""

from __future__ import annotations

import html
import json
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.upstream.client_auth import basic_credentials

ERRORS_DOC = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"
TOKEN_ERRORS = {
    "bad_verification_code": "The code passed is incorrect or expired.",
    "incorrect_client_credentials": "The client_id and/or client_secret passed are incorrect.",
    "redirect_uri_mismatch": "The redirect_uri MUST match the registered callback URL for this application.",
}
CODE_TTL = 600


@dataclass(frozen=True)
class GitHubAccount:
    login: str
    password: str
    id: int
    name: str
    email: str
    public_email: str | None = None
    secondary_email: str | None = None
    """An extra, unverified address, to show that only the verified primary one counts."""


DEFAULT_GITHUB_ACCOUNTS = (
    GitHubAccount("octocat", "octocat-pw", 583231, "The Octocat", "octocat@example.com",
                  public_email="octocat@example.com", secondary_email="octocat@old.example.com"),
    GitHubAccount("hubot", "hubot-pw", 5240000, "Hubot", "hubot@example.com"),
)


@dataclass
class _Code:
    account: GitHubAccount
    redirect_uri: str | None
    scope: str
    code_challenge: str | None
    expires_at: float


@dataclass
class _Token:
    account: GitHubAccount
    scopes: list[str]


@dataclass
class GitHubStandIn:
    """The app state; ``base_url`` is set by the fixture once it listens."""

    callback_url: str | None = None
    """The OAuth app's registered callback URL; ``None`` accepts any ``redirect_uri``."""
    accounts: tuple[GitHubAccount, ...] = DEFAULT_GITHUB_ACCOUNTS
    client_id: str = field(default_factory=lambda: "Iv1." + secrets.token_hex(8))
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    base_url: str = ""
    codes: dict[str, _Code] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    token_requests: list[dict] = field(default_factory=list)
    received_tokens: list[str] = field(default_factory=list)

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v3"

    @property
    def authorize_url(self) -> str:
        return f"{self.base_url}/login/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/login/oauth/access_token"

    def account(self, login: str = "octocat") -> GitHubAccount:
        return next(a for a in self.accounts if a.login == login)

    def revoke_user(self, login: str) -> int:
        """The user revokes the app in their GitHub settings: every token of theirs stops working."""
        gone = [token for token, held in self.tokens.items() if held.account.login == login]
        for token in gone:
            del self.tokens[token]
        return len(gone)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/login/oauth/authorize", self.authorize, methods=["GET", "POST"]),
            Route("/login/oauth/access_token", self.access_token, methods=["POST"]),
            Route("/api/v3/user", self.user, methods=["GET"]),
            Route("/api/v3/user/emails", self.user_emails, methods=["GET"]),
            Route("/api/v3/applications/{client_id}/grant", self.delete_authorization, methods=["DELETE"]),
            Route("/api/v3/applications/{client_id}/token", self.delete_token, methods=["DELETE"]),
        ])

    # --- web flow --------------------------------------------------------------------------

    def _redirect_allowed(self, redirect_uri: str) -> bool:
        if self.callback_url is None:
            return True
        given, registered = urlsplit(redirect_uri), urlsplit(self.callback_url)
        return ((given.scheme, given.netloc) == (registered.scheme, registered.netloc)
                and (given.path == registered.path or given.path.startswith(registered.path.rstrip("/") + "/")))

    async def authorize(self, request: Request) -> Response:
        params = dict(request.query_params)
        if params.get("client_id") != self.client_id:
            return HTMLResponse("<h1>404</h1><p>The OAuth app was not found (unknown client_id).</p>", status_code=404)
        redirect_uri = params.get("redirect_uri") or self.callback_url
        if not redirect_uri:
            return HTMLResponse("<h1>Missing redirect_uri</h1>", status_code=400)
        if not self._redirect_allowed(redirect_uri):
            return RedirectResponse(self._with_query(self.callback_url, {
                "error": "redirect_uri_mismatch", "error_description": TOKEN_ERRORS["redirect_uri_mismatch"],
                "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#redirect-uri-mismatch",
                "state": params.get("state", "")}), status_code=302)
        if params.get("code_challenge") and params.get("code_challenge_method", "plain") != "S256":
            return HTMLResponse("<h1>Unsupported code_challenge_method</h1><p>Use S256.</p>", status_code=400)
        if request.method == "GET":
            return self._login_page(request, "")
        form = await request.form()
        account = next((a for a in self.accounts
                        if form.get("login") in (a.login, a.email) and form.get("password") == a.password), None)
        if account is None:
            return self._login_page(request, "Incorrect username or password.")
        code = secrets.token_hex(10)
        self.codes[code] = _Code(account, params.get("redirect_uri"), params.get("scope", ""),
                                 params.get("code_challenge"), time.time() + CODE_TTL)
        answer = {"code": code}
        if "state" in params:
            answer["state"] = params["state"]
        return RedirectResponse(self._with_query(redirect_uri, answer), status_code=302)

    @staticmethod
    def _with_query(url: str, params: dict) -> str:
        return f"{url}{'&' if urlsplit(url).query else '?'}{urlencode(params)}"

    def _login_page(self, request: Request, message: str) -> HTMLResponse:
        action = html.escape(f"/login/oauth/authorize?{request.url.query}")
        alert = f'<p role="alert" class="flash-error">{html.escape(message)}</p>' if message else ""
        return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Sign in to GitHub (stand-in)</title></head><body>
<h1>Sign in to GitHub</h1><p>to continue to the OAuth app</p>{alert}
<form method="post" action="{action}">
<label>Username or email address <input name="login" required autofocus></label>
<label>Password <input type="password" name="password" required></label>
<button type="submit">Sign in</button></form></body></html>""")

    # --- token endpoint --------------------------------------------------------------------

    async def access_token(self, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                params = {k: str(v) for k, v in json.loads(await request.body() or b"{}").items()}
            except (ValueError, AttributeError):
                params = {}
        else:
            params = {k: str(v) for k, v in (await request.form()).items()}
        params.update({k: v for k, v in request.query_params.items() if k not in params})
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        basic = basic_credentials(request)
        if basic:
            client_id, client_secret = basic
        wants_json = "application/json" in request.headers.get("accept", "")
        outcome = self._exchange(params, client_id, client_secret)
        self.token_requests.append({"client_auth": "basic" if basic else "body", "accept_json": wants_json,
                                    "error": outcome.get("error"), "params": sorted(params)})
        if wants_json:
            return JSONResponse(outcome)
        return Response(urlencode(outcome), media_type="application/x-www-form-urlencoded; charset=utf-8")

    def _exchange(self, params: dict, client_id: str | None, client_secret: str | None) -> dict:
        if client_id != self.client_id or not secrets.compare_digest(client_secret or "", self.client_secret):
            return _token_error("incorrect_client_credentials")
        code = self.codes.pop(params.get("code", ""), None)
        if code is None or code.expires_at < time.time():
            return _token_error("bad_verification_code")
        if params.get("redirect_uri") and code.redirect_uri and params["redirect_uri"] != code.redirect_uri:
            return _token_error("redirect_uri_mismatch")
        if code.code_challenge is not None:
            verifier = params.get("code_verifier", "")
            if not verifier or create_s256_code_challenge(verifier) != code.code_challenge:
                return _token_error("bad_verification_code")
        token = "gho_" + secrets.token_urlsafe(27)[:36]
        scopes = [s for s in code.scope.replace(",", " ").split() if s]
        self.tokens[token] = _Token(code.account, scopes)
        return {"access_token": token, "token_type": "bearer", "scope": ",".join(scopes)}

    # --- REST API --------------------------------------------------------------------------

    def _holder(self, request: Request) -> _Token | Response:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            return _api_error(401, "Requires authentication")
        self.received_tokens.append(token.strip() or header)
        held = self.tokens.get(token.strip()) if scheme.lower() in ("bearer", "token") else None
        if held is None:
            return _api_error(401, "Bad credentials")
        return held

    async def user(self, request: Request) -> Response:
        held = self._holder(request)
        if isinstance(held, Response):
            return held
        account = held.account
        return JSONResponse({
            "login": account.login, "id": account.id, "node_id": f"MDQ6VXNlcj{account.id}",
            "avatar_url": f"https://avatars.githubusercontent.com/u/{account.id}?v=4",
            "html_url": f"https://github.com/{account.login}", "type": "User", "site_admin": False,
            "name": account.name, "email": account.public_email,
        }, headers={"X-OAuth-Scopes": ", ".join(held.scopes)})

    async def user_emails(self, request: Request) -> Response:
        held = self._holder(request)
        if isinstance(held, Response):
            return held
        if not {"user:email", "user"} & set(held.scopes):
            return _api_error(404, "Not Found")
        account = held.account
        emails = [{"email": account.email, "primary": True, "verified": True, "visibility": "public"}]
        if account.secondary_email:
            emails.append({"email": account.secondary_email, "primary": False, "verified": False, "visibility": None})
        return JSONResponse(emails, headers={"X-OAuth-Scopes": ", ".join(held.scopes)})

    async def _revoke(self, request: Request, whole_grant: bool) -> Response:
        basic = basic_credentials(request)
        if basic != (self.client_id, self.client_secret) or request.path_params["client_id"] != self.client_id:
            return _api_error(404, "Not Found")
        try:
            token = json.loads(await request.body() or b"{}").get("access_token", "")
        except (ValueError, AttributeError):
            return _api_error(400, "Problems parsing JSON")
        held = self.tokens.pop(token, None)
        if held is None:
            return _api_error(404, "Not Found")
        if whole_grant:
            self.revoke_user(held.account.login)
        return Response(status_code=204)

    async def delete_authorization(self, request: Request) -> Response:
        return await self._revoke(request, whole_grant=True)

    async def delete_token(self, request: Request) -> Response:
        return await self._revoke(request, whole_grant=False)


def _token_error(error: str) -> dict:
    return {"error": error, "error_description": TOKEN_ERRORS[error], "error_uri": f"{ERRORS_DOC}/#{error.replace('_', '-')}"}


def _api_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)},
                        status_code=status)

