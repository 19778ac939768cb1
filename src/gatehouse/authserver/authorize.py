"""The authorization endpoint (RFC 6749 section 4.1.1-4.1.2) with login and consent.

- An unknown client or an unregistered redirect URI gets an error page, never a redirect
  (AS-8, S-A1).
- Other request errors redirect back to the client only when the user is signed in and
  already trusts the client; otherwise a page explains the error and offers the way back
  (RFC 9700 section 4.11.2, S-A9).
- Every redirect to the client carries ``iss`` (RFC 9207, AS-9) and echoes ``state``.
- Answers to form posts are 303 (RFC 9700 section 4.12, S-A8).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    OAuth2Error,
)
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gatehouse.authserver import audit
from gatehouse.authserver.clients import (
    KIND_DYNAMIC,
    KIND_METADATA_DOCUMENT,
    KIND_STATIC,
)
from gatehouse.authserver.http import BadRequestBody, prepare
from gatehouse.authserver.oauth import AuthlibResponse, GatehouseRequest, PreparedRequest
from gatehouse.authserver.pages import PAGE_HEADERS, error_page, render
from gatehouse.authserver.resources import describable
from gatehouse.authserver.ratelimit import TooManyRequests, wait_phrase
from gatehouse.store.models import Consent, User
from gatehouse.timeutil import utcnow


class LoginRequired(OAuth2Error):
    """OIDC Core section 3.1.2.6, for ``prompt=none`` without a signed-in user."""

    error = "login_required"
    description = "the user is not signed in"


class ConsentRequired(OAuth2Error):
    """OIDC Core section 3.1.2.6, for ``prompt=none`` when the user has not approved the client."""

    error = "consent_required"
    description = "the user has not approved this app"


KIND_NOTES = {
    KIND_STATIC: "Registered by the administrator of this server.",
    KIND_DYNAMIC: "This app registered itself automatically; its name is not verified.",
    KIND_METADATA_DOCUMENT: "This app is described by a document at {host}.",
}


@dataclass(frozen=True)
class PendingAuthorization:
    """A checked authorization request waiting for the user to be identified upstream."""

    grant: object
    request: GatehouseRequest


class AuthorizeHandler:
    def __init__(self, ctx, server, sessions, base_path: str):
        self.ctx = ctx
        self.server = server
        self.sessions = sessions
        self.base_path = base_path

    async def handle(self, request: Request) -> Response:
        try:
            prepared = await prepare(
                request, self.ctx.issuer, limit=self.ctx.settings.max_body_bytes, body="form" if request.method == "POST" else "none"
            )
        except BadRequestBody as exc:
            return error_page("This request cannot be used", exc.description, status_code=exc.status, error_code=exc.error)
        browser = self.sessions.read(request)
        return await run_in_threadpool(self._authorize, prepared, browser, request)

    def _authorize(self, prepared, browser, request: Request) -> Response:
        with self.ctx.unit_of_work() as db:
            oauth_request = GatehouseRequest(prepared, db, use_form=False)
            user = db.get(User, browser.user_id) if browser else None
            if user is not None and user.disabled:
                user = None
            try:
                grant = self.server.get_consent_grant(oauth_request, end_user=user)
            except OAuth2Error as error:
                return self._request_error(db, error, user, oauth_request)

            client = oauth_request.client
            if prepared.method == "POST":
                return self._answer_consent(db, grant, oauth_request, user, browser, prepared)

            prompt = set((oauth_request.payload.data.get("prompt") or "").split())
            if user is None:
                if "none" in prompt:
                    return self._request_error(db, LoginRequired(redirect_uri=grant.redirect_uri), None, oauth_request)
                return self._to_login(prepared)

            oauth_request.auth_time = datetime.fromtimestamp(browser.auth_time, UTC).replace(tzinfo=None)
            consent = db.scalar(select(Consent).where(Consent.user_id == user.id, Consent.client_id == client.client_id))
            scopes = oauth_request.scope.split()
            resource = oauth_request.gatehouse_resource
            covered = consent is not None and set(scopes) <= set(consent.scopes) and resource.uri in consent.resources
            if covered and "consent" not in prompt and "login" not in prompt:
                response = self.server.create_authorization_response(oauth_request, grant_user=user, grant=grant)
                return self._to_client(response, status=302)
            if "none" in prompt:
                return self._request_error(db, ConsentRequired(redirect_uri=grant.redirect_uri), user, oauth_request)
            return self._consent_page(grant, oauth_request, user, browser, prepared)

    # -- pages and answers --
    def _consent_page(self, grant, oauth_request, user, browser, prepared) -> Response:
        return self._render_consent(
            grant, oauth_request, signed_in_as=user.username,
            action=f"{self.base_path}/authorize?{urlencode(prepared.query)}",
            csrf_token=self.sessions.csrf_token("consent", browser.session_id, user.id, oauth_request.client.client_id),
        )

    def _render_consent(self, grant, oauth_request, *, signed_in_as, action, csrf_token, upstream_label=None, next_url=None) -> Response:
        client = oauth_request.client
        resource = oauth_request.gatehouse_resource
        redirect = urlsplit(grant.redirect_uri)
        note = KIND_NOTES.get(client.kind, "").format(host=urlsplit(client.client_id).netloc)
        return render(
            "consent.html",
            base_path=self.base_path,
            signed_in_as=signed_in_as,
            client_name=client.client_name,
            client_id=client.client_id,
            client_kind_note=note,
            resource_name=resource.name,
            scope_descriptions=[resource.describe_scope(s) for s in oauth_request.scope.split()],
            redirect_host=redirect.netloc or f"{redirect.scheme}:",
            action=action,
            csrf_token=csrf_token,
            upstream_label=upstream_label,
            next=next_url,
        )

    def _answer_consent(self, db, grant, oauth_request, user, browser, prepared) -> Response:
        client = oauth_request.client
        form = dict(prepared.form)
        if user is None:
            return self._to_login(prepared, status=303)
        if not self.sessions.csrf_valid(form.get("csrf_token"), "consent", browser.session_id, user.id, client.client_id):
            return error_page(
                "This form has expired",
                "The approval could not be verified (its security token is missing or belongs to another page).",
                advice="Go back to the app and start signing in again.",
                status_code=403,
                error_code="csrf_failed",
                base_path=self.base_path,
            )
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            return error_page("Unknown answer", "Choose Allow or Deny.", status_code=400, base_path=self.base_path)
        oauth_request.auth_time = datetime.fromtimestamp(browser.auth_time, UTC).replace(tzinfo=None)
        if decision == "deny":
            return self._deny(db, grant, oauth_request, user)
        return self._approve(db, grant, oauth_request, user)

    def _deny(self, db, grant, oauth_request, user) -> Response:
        """RFC 6749 section 4.1.2.1 ``access_denied``, back to the client."""
        audit.record(db, audit.GRANT_DENIED, client_id=oauth_request.client.client_id, user_id=user.id if user else None)
        response = self.server.create_authorization_response(oauth_request, grant_user=None, grant=grant)
        return self._to_client(response, status=303)

    def _approve(self, db, grant, oauth_request, user) -> Response:
        """Remember the consent (AS-16) and send the code to the client (RFC 6749 section 4.1.2)."""
        client = oauth_request.client
        self._remember_consent(db, user, client, oauth_request)
        audit.record(
            db, audit.GRANT_APPROVED, client_id=client.client_id, user_id=user.id, scope=oauth_request.scope,
            resource=oauth_request.gatehouse_resource.uri,
        )
        response = self.server.create_authorization_response(oauth_request, grant_user=user, grant=grant)
        return self._to_client(response, status=303)

    # -- a request finished through an upstream sign-in: consent first, before any redirect upstream (UP-2) --
    def pending_request(self, db, next_url: str) -> PendingAuthorization | Response:
        """The authorization request ``next_url`` (``<base>/authorize?...``), checked again as
        ``/authorize`` checks it; or the page that explains why it cannot go on."""
        parts = urlsplit(next_url)
        origin = urlsplit(self.ctx.issuer)
        prepared = PreparedRequest(
            method="GET", uri=f"{origin.scheme}://{origin.netloc}{parts.path}?{parts.query}", headers={},
            query=parse_qsl(parts.query, keep_blank_values=True),
        )
        oauth_request = GatehouseRequest(prepared, db, use_form=False)
        try:
            grant = self.server.get_consent_grant(oauth_request, end_user=None)
        except OAuth2Error as error:
            return self._request_error(db, error, None, oauth_request)
        return PendingAuthorization(grant, oauth_request)

    def upstream_consent_page(self, pending: PendingAuthorization, *, upstream_label: str, action: str, csrf_token: str,
                              next_url: str) -> Response:
        """The consent page shown before the user is known: "you will sign in with <upstream> next"."""
        return self._render_consent(
            pending.grant, pending.request, signed_in_as=None, action=action, csrf_token=csrf_token,
            upstream_label=upstream_label, next_url=next_url,
        )

    def deny_pending(self, db, pending: PendingAuthorization) -> Response:
        return self._deny(db, pending.grant, pending.request, None)

    def approve_pending(self, db, pending: PendingAuthorization, user, auth_time: datetime) -> Response:
        """The consent given before the upstream sign-in, now recorded for the user it identified."""
        pending.request.auth_time = auth_time
        return self._approve(db, pending.grant, pending.request, user)

    def pending_error_location(self, pending: PendingAuthorization, error: str, description: str) -> str:
        """The client's redirect URI with an error answer (RFC 6749 section 4.1.2.1), ``state`` and ``iss``."""
        answer = OAuth2Error(
            description=describable(description), redirect_uri=pending.grant.redirect_uri, state=pending.request.payload.state, error=error
        )
        response = self.server.handle_error_response(pending.request, answer)
        return add_params_to_uri(response.location, [("iss", self.ctx.issuer)])

    def _remember_consent(self, db, user, client, oauth_request) -> None:
        now = utcnow()
        consent = db.scalar(select(Consent).where(Consent.user_id == user.id, Consent.client_id == client.client_id))
        scopes = oauth_request.scope.split()
        resource = oauth_request.gatehouse_resource.uri
        if consent is None:
            db.add(
                Consent(
                    user_id=user.id, client_id=client.client_id, client_name=client.client_name, scopes=scopes,
                    resources=[resource], created_at=now, updated_at=now,
                )
            )
            return
        consent.scopes = list(dict.fromkeys([*consent.scopes, *scopes]))
        consent.resources = list(dict.fromkeys([*consent.resources, resource]))
        consent.client_name = client.client_name
        consent.updated_at = now

    def _request_error(self, db, error: OAuth2Error, user, oauth_request) -> Response:
        state = oauth_request.payload.state
        if not error.redirect_uri or isinstance(error, InvalidClientError):
            return self._untrusted_error_page(error)
        error.state = state
        trusted = user is not None and db.scalar(
            select(Consent.id).where(Consent.user_id == user.id, Consent.client_id == oauth_request.payload.client_id)
        )
        response = self.server.handle_error_response(oauth_request, error)
        location = add_params_to_uri(response.location, [("iss", self.ctx.issuer)])
        if trusted:
            return RedirectResponse(location, status_code=302, headers=PAGE_HEADERS)
        redirect = urlsplit(error.redirect_uri)
        return error_page(
            "The app's request cannot be completed",
            error.description or error.error,
            advice="You can return to the app; it will be told what went wrong.",
            error_code=error.error,
            return_url=location,
            return_host=redirect.netloc or redirect.scheme,
            base_path=self.base_path,
        )

    def _untrusted_error_page(self, error: OAuth2Error) -> Response:
        if isinstance(error, TooManyRequests):
            page = error_page(
                "Too many sign-in requests for this app", "This server is fetching this app's description too often.",
                advice=f"Try again in {wait_phrase(error.retry_after)}.", status_code=429, error_code=error.error,
                base_path=self.base_path,
            )
            page.headers["Retry-After"] = str(error.retry_after)
            return page
        if isinstance(error, InvalidClientError):
            message = error.description or "The app is not known to this server."
            advice = "The app may need to register again. If you opened a link, close this page."
        elif isinstance(error, InvalidRequestError) and "redirect" in (error.description or "").lower():
            message = "The app asked to send you to an address it did not register, so this server will not send you there."
            advice = "Tell the app's developer that its redirect URI does not match its registration."
        else:
            message = error.description or error.error
            advice = None
        return error_page("This sign-in link cannot be used", message, advice=advice, error_code=error.error, base_path=self.base_path)

    def _to_client(self, response: AuthlibResponse, status: int) -> Response:
        location = add_params_to_uri(response.location, [("iss", self.ctx.issuer)])
        return RedirectResponse(location, status_code=status, headers=PAGE_HEADERS)

    def _to_login(self, prepared, status: int = 303) -> Response:
        next_url = f"{self.base_path}/authorize?{urlencode(prepared.query)}"
        return RedirectResponse(f"{self.base_path}/login?{urlencode({'next': next_url})}", status_code=status, headers=PAGE_HEADERS)
