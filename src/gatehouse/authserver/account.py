"""Signing in and out, and the connected-apps page where a user revokes what apps hold."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.authserver import audit
from gatehouse.authserver.clients import load_stored_client
from gatehouse.authserver.http import BadRequestBody, prepare
from gatehouse.authserver.pages import PAGE_HEADERS, error_page, render
from gatehouse.authserver.ratelimit import RateLimited, wait_phrase
from gatehouse.authserver.sessions import BrowserSession
from gatehouse.authserver.tokens import revoke_grants_of
from gatehouse.authserver.upstream import identities
from gatehouse.authserver.users import authenticate
from gatehouse.store.models import Consent, Grant, User


class AccountPages:
    def __init__(self, ctx, sessions, base_path: str):
        self.ctx = ctx
        self.sessions = sessions
        self.base_path = base_path

    # -- helpers --
    def safe_next(self, value: str | None) -> str:
        """Only our own authorize endpoint or apps page, as a relative URL (no open redirect)."""
        default = f"{self.base_path}/apps"
        if not value or "\\" in value or value.startswith("//"):
            return default
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            return default
        if parts.path in (f"{self.base_path}/authorize", f"{self.base_path}/apps"):
            return value
        return default

    async def _form(self, request: Request) -> dict[str, str]:
        prepared = await prepare(request, self.ctx.issuer, limit=self.ctx.settings.max_body_bytes, body="form")
        return dict(prepared.form)

    def _client_label(self, next_url: str) -> str | None:
        """The name of the app the user is signing in for, without fetching anything."""
        client_id = dict(parse_qsl(urlsplit(next_url).query)).get("client_id")
        if not client_id:
            return None
        if self.ctx.cimd.is_metadata_url(client_id):
            return f"an app from {urlsplit(client_id).netloc}"
        with self.ctx.unit_of_work() as db:
            client = load_stored_client(db, client_id)
        return client.client_name if client else None

    async def _login_page(self, request: Request, next_url: str, *, error: str | None = None, username: str | None = None, status: int = 200):
        browser_id = self.sessions.browser_id(request)
        response = render(
            "login.html",
            status_code=status,
            base_path=self.base_path,
            client_name=await run_in_threadpool(self._client_label, next_url),
            next=next_url,
            error=error,
            username=username,
            csrf_token=self.sessions.csrf_token("login", browser_id),
            upstreams=list(self.ctx.upstream),
        )
        self.sessions.remember_browser(request, response)
        return response

    # -- login --
    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            next_url = self.safe_next(request.query_params.get("next"))
            if self.sessions.read(request) is not None:
                return RedirectResponse(next_url, status_code=303, headers=PAGE_HEADERS)
            only = await run_in_threadpool(self._only_upstream)
            if only is not None:  # one upstream and no local accounts: nothing to choose here
                target = f"{self.base_path}/login/upstream/{only.name}?{urlencode({'next': next_url})}"
                return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
            return await self._login_page(request, next_url)
        try:
            form = await self._form(request)
        except BadRequestBody as exc:
            return error_page("This form cannot be used", exc.description, status_code=exc.status, base_path=self.base_path)
        next_url = self.safe_next(form.get("next"))
        browser_id = request.cookies.get("__Host-gatehouse-browser", "")
        if not browser_id or not self.sessions.csrf_valid(form.get("csrf_token"), "login", browser_id):
            return error_page(
                "This sign-in form has expired",
                "The form could not be verified. Reload the page and sign in again.",
                status_code=403,
                error_code="csrf_failed",
                base_path=self.base_path,
            )
        username = form.get("username", "").strip()[:128]
        password = form.get("password", "")[:1024]
        remote = request.client.host if request.client else "unknown"
        try:
            user_id = await run_in_threadpool(self._throttled_sign_in, request, username, password, remote)
        except RateLimited as exc:
            response = await self._login_page(
                request, next_url, error=f"Too many failed sign-in attempts. Try again in {wait_phrase(exc.retry_after)}.",
                username=username, status=429,
            )
            response.headers["Retry-After"] = str(exc.retry_after)
            return response
        if user_id is None:
            return await self._login_page(request, next_url, error="Wrong username or password.", username=username, status=401)
        response = RedirectResponse(next_url, status_code=303, headers=PAGE_HEADERS)
        self.sessions.start(response, user_id)
        self.ctx.limits.login.remember_device(response, username)
        return response

    def _throttled_sign_in(self, request: Request, username: str, password: str, remote: str) -> int | None:
        """The password check within the sign-in throttle (:mod:`.login_throttle`); raises RateLimited."""
        throttle = self.ctx.limits.login
        attempt = throttle.begin(request, username, remote)
        user_id = self._check_password(username, password, remote)
        if user_id is None:
            throttle.failed(attempt)
        else:
            throttle.succeeded(attempt)
        return user_id

    def _only_upstream(self):
        """The one upstream provider, when it is the only way to sign in (no local accounts)."""
        if len(self.ctx.upstream) != 1:
            return None
        with self.ctx.unit_of_work() as db:
            if identities.has_local_accounts(db):
                return None
        return next(iter(self.ctx.upstream))

    def _check_password(self, username: str, password: str, remote: str) -> int | None:
        with self.ctx.unit_of_work() as db:
            user = authenticate(db, username, password) if username and password else None
            if user is None:
                audit.record(db, audit.LOGIN_FAILED, remote_addr=remote, username=username)
                return None
            audit.record(db, audit.LOGIN_SUCCEEDED, user_id=user.id, remote_addr=remote)
            return user.id

    async def logout(self, request: Request) -> Response:
        browser = self.sessions.read(request)
        try:
            form = await self._form(request)
        except BadRequestBody as exc:
            return error_page("This form cannot be used", exc.description, status_code=exc.status, base_path=self.base_path)
        if browser is None or not self.sessions.csrf_valid(form.get("csrf_token"), "logout", browser.session_id):
            return error_page("This form has expired", "Reload the page and try again.", status_code=403, base_path=self.base_path)
        response = RedirectResponse(f"{self.base_path}/login", status_code=303, headers=PAGE_HEADERS)
        self.sessions.end(response)
        return response

    # -- connected apps --
    async def apps(self, request: Request) -> Response:
        browser = self.sessions.read(request)
        if browser is None:
            target = f"{self.base_path}/login?{urlencode({'next': f'{self.base_path}/apps'})}"
            return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
        notice = "Access removed." if request.query_params.get("removed") else None
        upstream = self.ctx.upstream.get(request.query_params.get("unlinked") or request.query_params.get("forgotten") or "")
        if upstream is not None:
            notice = (
                f"{upstream.label} is unlinked; Gatehouse no longer holds your {upstream.label} tokens."
                if request.query_params.get("unlinked")
                else f"Gatehouse no longer holds your {upstream.label} tokens. You still sign in here with {upstream.label}."
            )
        return await run_in_threadpool(self._apps_page, browser, notice)

    def _apps_page(self, browser, notice):
        with self.ctx.unit_of_work() as db:
            user = db.get(User, browser.user_id)
            if user is None:
                return RedirectResponse(f"{self.base_path}/login", status_code=303, headers=PAGE_HEADERS)
            consents = {c.client_id: c for c in db.scalars(select(Consent).where(Consent.user_id == user.id))}
            grants = db.scalars(select(Grant).where(Grant.user_id == user.id, Grant.revoked_at.is_(None)).order_by(Grant.created_at)).all()
            apps: dict[str, dict] = {}
            for client_id, consent in consents.items():
                apps[client_id] = self._app_entry(client_id, consent.client_name, consent.created_at, consent.scopes, consent.resources)
            for grant in grants:
                if grant.client_id not in apps:
                    apps[grant.client_id] = self._app_entry(grant.client_id, grant.client_id, grant.created_at, grant.scope.split(), [grant.resource])
            return render(
                "apps.html",
                base_path=self.base_path,
                signed_in_as=user.username,
                apps=list(apps.values()),
                notice=notice,
                csrf_token=self.sessions.csrf_token("apps", browser.session_id, user.id),
                logout_csrf=self.sessions.csrf_token("logout", browser.session_id),
                upstream_links=self._upstream_links(db, user),
            )

    def _upstream_links(self, db, user) -> list[dict]:
        """The user's upstream accounts: which provider, whether the vault holds its tokens."""
        held = self.ctx.upstream_vault.held_providers(db, user.id)
        links = []
        for link in identities.linked_providers(db, user.id):
            upstream = self.ctx.upstream.get(link.provider)
            links.append({
                "provider": link.provider,
                "label": upstream.label if upstream else link.provider,
                "account": link.email or link.subject,
                "holds_tokens": link.provider in held,
                "only_sign_in": identities.is_only_sign_in(db, user, link.provider),
                "configured": upstream is not None,
            })
        return links

    def _app_entry(self, client_id, name, since, scopes, resource_uris):
        resources = {r.uri: r for r in self.ctx.resources}
        descriptions = []
        for scope in scopes:
            described = next((r.describe_scope(scope) for r in resources.values() if scope in r.scopes), scope)
            descriptions.append(described)
        return {
            "client_id": client_id,
            "client_name": name,
            "since": since.strftime("%d %B %Y"),
            "scope_descriptions": descriptions,
            "resources": [resources[u].name if u in resources else u for u in resource_uris],
        }

    async def _apps_form(self, request: Request) -> tuple[BrowserSession, dict[str, str]] | Response:
        """The signed-in browser and a form posted from its apps page (its CSRF token checked),
        or the error page to answer instead."""
        browser = self.sessions.read(request)
        try:
            form = await self._form(request)
        except BadRequestBody as exc:
            return error_page("This form cannot be used", exc.description, status_code=exc.status, base_path=self.base_path)
        if browser is None or not self.sessions.csrf_valid(form.get("csrf_token"), "apps", browser.session_id, browser.user_id):
            return error_page("This form has expired", "Reload the page and try again.", status_code=403, base_path=self.base_path)
        return browser, form

    async def revoke_app(self, request: Request) -> Response:
        checked = await self._apps_form(request)
        if isinstance(checked, Response):
            return checked
        browser, form = checked
        client_id = form.get("client_id", "")
        await run_in_threadpool(self._revoke, browser.user_id, client_id)
        return RedirectResponse(f"{self.base_path}/apps?removed=1", status_code=303, headers=PAGE_HEADERS)

    def _revoke(self, user_id: int, client_id: str) -> None:
        with self.ctx.unit_of_work() as db:
            revoke_grants_of(db, user_id, client_id, "revoked_by_user")
            consent = db.scalar(select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id))
            if consent is not None:
                db.delete(consent)
            live = db.scalar(select(Grant.id).where(Grant.user_id == user_id, Grant.revoked_at.is_(None)).limit(1))
            if live is None:  # no app is left that could use the upstream tokens (rule 2 of upstream/vault.py)
                self.ctx.upstream_vault.revoke(db, user_id=user_id, reason="no_app_left")

    async def unlink_upstream(self, request: Request) -> Response:
        """Remove the link to an upstream account and the tokens the vault holds for it (UP-3).

        When that account is the user's only way to sign in, the link stays (removing it would
        lock the user out of this account for good) and only the tokens go."""
        checked = await self._apps_form(request)
        if isinstance(checked, Response):
            return checked
        browser, form = checked
        provider = form.get("provider", "")
        outcome = await run_in_threadpool(self._unlink, browser.user_id, provider)
        if outcome is None:
            return error_page(
                "Nothing to unlink", "Your account is not linked to that provider.", advice="Reload the page and try again.",
                status_code=400, base_path=self.base_path,
            )
        return RedirectResponse(f"{self.base_path}/apps?{urlencode({outcome: provider})}", status_code=303, headers=PAGE_HEADERS)

    def _unlink(self, user_id: int, provider: str) -> str | None:
        with self.ctx.unit_of_work() as db:
            user = db.get(User, user_id)
            linked = any(link.provider == provider for link in identities.linked_providers(db, user_id))
            if user is None or not linked:
                return None
            self.ctx.upstream_vault.revoke(db, user_id=user_id, provider=provider, reason="unlinked_by_user")
            if identities.is_only_sign_in(db, user, provider):
                return "forgotten"
            identities.unlink(db, user_id, provider)
            audit.record(db, audit.UPSTREAM_UNLINKED, user_id=user_id, provider=provider)
            return "unlinked"
