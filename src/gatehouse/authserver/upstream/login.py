"""The upstream sign-in routes: start (with Gatehouse's consent first) and callback.

- ``GET <issuer>/login/upstream/<name>?next=...``: when ``next`` is a pending ``/authorize``
  request, the consent page for that client comes first ("you will sign in with Google next",
  UP-2, S-U1): nothing goes upstream before the user has approved the client. Otherwise
  (``next`` is the apps page) straight on to the provider.
- ``POST <issuer>/login/upstream/<name>``: the answer on that consent page (``decision`` =
  ``approve`` | ``deny``, CSRF token bound to the browser). Deny goes back to the client with
  ``access_denied``; approve goes to the provider with a fresh ``state``, PKCE S256 and ``nonce``.
- ``GET <issuer>/login/upstream/<name>/callback``: the provider's answer (RFC 6749 section 4.1.2).
  The ``state`` must be one this browser started, unused and unexpired (S-U2); the code is
  exchanged, the ID token validated (UP-1, S-U3), the user found or created by (issuer,
  subject), the upstream tokens put in the vault (UP-3), the session started, and the pending
  request answered with a code under the consent given before.

Every failure is a page that says what happened and what to do, with the way back to the app
when there is one; the MCP client gets an OAuth error when the user gave up upstream.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.authserver import audit
from gatehouse.authserver.authorize import AuthorizeHandler, PendingAuthorization
from gatehouse.authserver.http import BadRequestBody, prepare
from gatehouse.authserver.pages import PAGE_HEADERS, error_page
from gatehouse.authserver.sessions import BROWSER_COOKIE, SessionManager
from gatehouse.authserver.upstream import identities
from gatehouse.authserver.upstream.providers import UpstreamLoginError, UpstreamProvider, UpstreamUser
from gatehouse.authserver.upstream.state import StateRejected, UpstreamLeg, consume_leg, new_leg, save_leg
from gatehouse.timeutil import utcnow

_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class UpstreamLogin:
    def __init__(self, ctx, authorize: AuthorizeHandler, sessions: SessionManager, base_path: str, safe_next):
        self.ctx = ctx
        self.authorize = authorize
        self.sessions = sessions
        self.base_path = base_path
        self.safe_next = safe_next

    # -- helpers --
    def redirect_uri(self, provider: UpstreamProvider) -> str:
        """The callback to register at the provider."""
        return f"{self.ctx.issuer}/login/upstream/{provider.name}/callback"

    def _provider(self, request: Request) -> UpstreamProvider | None:
        return self.ctx.upstream.get(request.path_params["name"])

    def _unknown_provider(self) -> Response:
        return error_page(
            "Unknown sign-in provider", "This server has no sign-in provider by that name.",
            advice="Go back to the sign-in page and choose one of the providers it shows.", status_code=404,
            error_code="unknown_upstream", base_path=self.base_path,
        )

    def _is_authorize(self, next_url: str) -> bool:
        return urlsplit(next_url).path == f"{self.base_path}/authorize"

    # -- start --
    async def start(self, request: Request) -> Response:
        provider = self._provider(request)
        if provider is None:
            return self._unknown_provider()
        next_url = self.safe_next(request.query_params.get("next"))
        browser_id = self.sessions.browser_id(request)
        if self._is_authorize(next_url):
            response = await run_in_threadpool(self._consent_first, provider, next_url, browser_id)
        else:
            response = await self._to_provider(provider, next_url, browser_id, client_id=None, consented=False)
        self.sessions.remember_browser(request, response)
        return response

    def _consent_first(self, provider: UpstreamProvider, next_url: str, browser_id: str) -> Response:
        with self.ctx.unit_of_work() as db:
            pending = self.authorize.pending_request(db, next_url)
            if isinstance(pending, Response):
                return pending
            return self.authorize.upstream_consent_page(
                pending, upstream_label=provider.label, action=f"{self.base_path}/login/upstream/{provider.name}",
                csrf_token=self._consent_csrf(browser_id, provider, pending), next_url=next_url,
            )

    def _consent_csrf(self, browser_id: str, provider: UpstreamProvider, pending: PendingAuthorization) -> str:
        return self.sessions.csrf_token("upstream-consent", browser_id, provider.name, pending.request.client.client_id)

    async def answer(self, request: Request) -> Response:
        """The answer on the consent page shown before the upstream sign-in."""
        provider = self._provider(request)
        if provider is None:
            return self._unknown_provider()
        try:
            prepared = await prepare(request, self.ctx.issuer, limit=self.ctx.settings.max_body_bytes, body="form")
        except BadRequestBody as exc:
            return error_page("This form cannot be used", exc.description, status_code=exc.status, base_path=self.base_path)
        form = dict(prepared.form)
        next_url = self.safe_next(form.get("next"))
        browser_id = request.cookies.get(BROWSER_COOKIE, "")
        if not self._is_authorize(next_url):
            return error_page(
                "This form cannot be used", "It does not belong to an app's sign-in request.",
                advice="Go back to the app and start signing in again.", status_code=400, base_path=self.base_path,
            )
        outcome = await run_in_threadpool(self._answer, provider, next_url, browser_id, form)
        if isinstance(outcome, Response):
            return outcome
        return await self._to_provider(provider, next_url, browser_id, client_id=outcome, consented=True)

    def _answer(self, provider: UpstreamProvider, next_url: str, browser_id: str, form: dict) -> Response | str:
        with self.ctx.unit_of_work() as db:
            pending = self.authorize.pending_request(db, next_url)
            if isinstance(pending, Response):
                return pending
            token = form.get("csrf_token")
            if not browser_id or not self.sessions.csrf_valid(token, "upstream-consent", browser_id, provider.name, pending.request.client.client_id):
                return error_page(
                    "This form has expired",
                    "The approval could not be verified (its security token is missing or belongs to another page).",
                    advice="Go back to the app and start signing in again.", status_code=403, error_code="csrf_failed",
                    base_path=self.base_path,
                )
            decision = form.get("decision")
            if decision == "deny":
                return self.authorize.deny_pending(db, pending)
            if decision != "approve":
                return error_page("Unknown answer", "Choose Allow or Deny.", status_code=400, base_path=self.base_path)
            return pending.request.client.client_id

    async def _to_provider(self, provider: UpstreamProvider, next_url: str, browser_id: str, *, client_id: str | None,
                           consented: bool) -> Response:
        """The provider's authorization request, with this leg's state saved for the callback."""
        leg = new_leg(provider.name, next_url, client_id, consented)
        try:
            url = await provider.authorization_url(self.redirect_uri(provider), leg)
        except UpstreamLoginError as exc:
            return await run_in_threadpool(self._failure_page, provider, exc, next_url, None, False)
        await run_in_threadpool(self._save, leg, browser_id)
        return RedirectResponse(url, status_code=303, headers=PAGE_HEADERS)

    def _save(self, leg: UpstreamLeg, browser_id: str) -> None:
        with self.ctx.unit_of_work() as db:
            save_leg(db, leg, browser_id)

    # -- callback --
    async def callback(self, request: Request) -> Response:
        provider = self._provider(request)
        if provider is None:
            return self._unknown_provider()
        params = request.query_params
        remote = request.client.host if request.client else None
        try:
            leg = await run_in_threadpool(self._consume, provider, params.get("state"), request.cookies.get(BROWSER_COOKIE), remote)
        except StateRejected as exc:
            return error_page(
                "This sign-in cannot be finished", str(exc),
                advice="Go back to the app and sign in again from there.", status_code=400,
                error_code=f"state_{exc.reason}", base_path=self.base_path,
            )
        if params.get("error"):
            return await run_in_threadpool(self._refused_upstream, provider, leg, params.get("error"), remote)
        code = params.get("code")
        if not code:
            failure = UpstreamLoginError(
                f"{provider.label} sent no code", f"{provider.label}'s answer carries neither a code nor an error.",
                advice="Go back to the app and sign in again.", error_code="upstream_no_code",
            )
            return await run_in_threadpool(self._failure_page, provider, failure, leg.next_url, remote)
        try:
            await provider.check_response_issuer(params.get("iss"))
            token = await provider.exchange_code(self.redirect_uri(provider), code, leg)
            who = await provider.identify(token, leg)
        except UpstreamLoginError as exc:
            return await run_in_threadpool(self._failure_page, provider, exc, leg.next_url, remote)
        response, user_id = await run_in_threadpool(self._finish, provider, leg, who, token, remote)
        if user_id is not None:
            self.sessions.start(response, user_id)
        return response

    def _consume(self, provider: UpstreamProvider, state: str | None, browser_id: str | None, remote: str | None) -> UpstreamLeg:
        try:
            with self.ctx.unit_of_work() as db:
                return consume_leg(db, state=state, provider=provider.name, browser_id=browser_id)
        except StateRejected as exc:
            with self.ctx.unit_of_work() as db:
                audit.record(db, audit.UPSTREAM_LOGIN_FAILED, remote_addr=remote, provider=provider.name, reason=f"state_{exc.reason}")
            raise

    def _finish(self, provider: UpstreamProvider, leg: UpstreamLeg, who: UpstreamUser, token: dict, remote: str | None):
        with self.ctx.unit_of_work() as db:
            signed = identities.sign_in(db, provider.name, who)
            user = signed.user
            if user is None or user.disabled:
                audit.record(db, audit.UPSTREAM_LOGIN_FAILED, user_id=user.id if user else None, remote_addr=remote,
                             provider=provider.name, upstream_subject=who.subject, reason="user_disabled")
                page = error_page(
                    "This account is disabled", f"The account you signed in to with {provider.label} is disabled on this server.",
                    advice="Ask the administrator to enable it.", status_code=403, error_code="account_disabled",
                    base_path=self.base_path,
                )
                return page, None
            self.ctx.upstream_vault.store(db, user_id=user.id, provider=provider.name, token=token)
            audit.record(
                db, audit.UPSTREAM_LOGIN_SUCCEEDED, user_id=user.id, remote_addr=remote, provider=provider.name,
                upstream_subject=who.subject, user_created=signed.created,
            )
            if leg.consented and leg.client_id and self._is_authorize(leg.next_url):
                pending = self.authorize.pending_request(db, leg.next_url)
                if isinstance(pending, Response):
                    return pending, user.id
                if pending.request.client.client_id == leg.client_id:
                    return self.authorize.approve_pending(db, pending, user, utcnow().replace(microsecond=0)), user.id
            return RedirectResponse(leg.next_url, status_code=303, headers=PAGE_HEADERS), user.id

    # -- failures --
    def _refused_upstream(self, provider: UpstreamProvider, leg: UpstreamLeg, error: str, remote: str | None) -> Response:
        """The provider answered with an error (RFC 6749 section 4.1.2.1): the user gave up there
        (``access_denied``, back to the client), or the provider could not sign them in (a page)."""
        code = error if _ERROR_CODE.fullmatch(error) else "invalid"
        with self.ctx.unit_of_work() as db:
            audit.record(db, audit.UPSTREAM_LOGIN_FAILED, remote_addr=remote, provider=provider.name, reason=f"upstream_{code}")
        if code == "access_denied":
            location = self._client_error_location(leg.next_url, "access_denied", f"the user did not sign in with {provider.label}")
            if location is not None:
                return RedirectResponse(location, status_code=303, headers=PAGE_HEADERS)
            failure = UpstreamLoginError(
                "Sign-in cancelled", f"You did not sign in with {provider.label}.",
                advice="Start again when you are ready.", error_code="access_denied", oauth_error="access_denied",
                status_code=400,
            )
        else:
            failure = UpstreamLoginError(
                f"{provider.label} did not sign you in", f"{provider.label} answered with the error {code}.",
                advice="Go back to the app and try again. If it keeps happening, tell the administrator.",
                error_code=f"upstream_{code}",
                oauth_error="temporarily_unavailable" if code == "temporarily_unavailable" else "server_error",
            )
        return self._failure_page(provider, failure, leg.next_url, remote, False)

    def _client_error_location(self, next_url: str, error: str, description: str) -> str | None:
        if not self._is_authorize(next_url):
            return None
        with self.ctx.unit_of_work() as db:
            pending = self.authorize.pending_request(db, next_url)
            if isinstance(pending, Response):
                return None
            return self.authorize.pending_error_location(pending, error, description)

    def _failure_page(self, provider: UpstreamProvider, failure: UpstreamLoginError, next_url: str, remote: str | None,
                      record: bool = True) -> Response:
        """The page for ``failure``; its link back to the app carries the OAuth error for the client."""
        if record:
            with self.ctx.unit_of_work() as db:
                audit.record(db, audit.UPSTREAM_LOGIN_FAILED, remote_addr=remote, provider=provider.name, reason=failure.error_code)
        location = self._client_error_location(next_url, failure.oauth_error, str(failure))
        host = None
        if location is not None:
            parts = urlsplit(location)
            host = parts.netloc or parts.scheme
        return error_page(
            failure.title, str(failure), advice=failure.advice, error_code=failure.error_code,
            status_code=failure.status_code, return_url=location, return_host=host, base_path=self.base_path,
        )
