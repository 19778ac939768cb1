"""A Gatehouse AS whose users sign in with an upstream "Google" (the certified oidc-provider, Node),
and the calendar resource whose server gets their Google tokens from the vault (UP-3).

``federation`` runs once per store backend (``store_url``): the AS on loopback with
``[[upstream]] name = "google"`` pointing at the provider, the calendar resource on
``extra_resource`` (scope ``calendar:read``) and a second resource, ``OTHER_RESOURCE``.
``federation.sign_in(...)`` is a person's whole sign-in over HTTP: Gatehouse's consent first
(UP-2), then the provider's real login form, then the code for the MCP client's tokens.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urljoin

import httpx2
import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.routing import Route

from gatehouse import timeutil
from gatehouse.authserver.context import build_context
from gatehouse.config import ResourceConfig, UpstreamConfig
from gatehouse.serve import create_embedded_app
from gatehouse.store.models import AuditEvent, UpstreamToken, User
from tests.conftest import LiveAS, ThreadedServer, free_socket, make_settings
from tests.support.browser import Browser, parse_forms, pkce_pair, redirect_params
from tests.upstream.browser_steps import sign_in_upstream
from tests.upstream.calendar_api import CalendarAPI
from tests.upstream.upstream_oidc import UpstreamOIDC

OTHER_RESOURCE = "http://127.0.0.1:9/other/mcp"
GOOGLE_SCOPES = ["openid", "email", "profile", "calendar.read"]
#: where the calendar example asks Google for the primary calendar's events (Calendar API v3 ``events.list``)
GOOGLE_EVENTS_PATH = "/calendar/v3/calendars/primary/events"
CALENDAR_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "calendar" / "server.py"


@dataclass
class Federation(LiveAS):
    op: UpstreamOIDC
    calendar_resource: str
    upstream_token_responses: list[dict] = field(default_factory=list)
    """Every token response Gatehouse got from the provider at sign-in (access, refresh and ID token)."""

    @property
    def callback_prefix(self) -> str:
        return f"{self.base_url}/login/upstream/google/callback"

    def sign_in(self, username: str = "alice", resource: str | None = None) -> dict:
        """A person signs in with Google for a new public MCP client; returns the client's token
        response, and the client's ``client_id`` with it."""
        client = self.register()
        redirect_uri = client["redirect_uris"][0]
        verifier, challenge = pkce_pair()
        browser = Browser(self.base_url)
        try:
            query = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect_uri, "state": "st-1",
                     "code_challenge": challenge, "code_challenge_method": "S256", "resource": resource or self.calendar_resource}
            consent = browser.follow(browser.get("/authorize?" + urlencode(query)))
            assert consent.status_code == 200 and parse_forms(consent.text)[0]["buttons"], consent.text
            to_google = browser.submit(consent, button=("decision", "approve"))
            assert to_google.status_code == 303 and to_google.headers["location"].startswith(self.op.issuer), to_google.text
            account = self.op.account(username)
            with httpx2.Client(timeout=30) as person_at_google:
                callback = sign_in_upstream(person_at_google, to_google.headers["location"], account.username, account.password,
                                            until=self.callback_prefix)
            back = browser.get(callback)
            assert back.status_code in (302, 303) and back.headers["location"].startswith(redirect_uri), back.text
            code = redirect_params(back)["code"][0]
        finally:
            browser.close()
        response = httpx2.post(f"{self.base_url}/token", data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "client_id": client["client_id"],
            "code_verifier": verifier})
        assert response.status_code == 200, response.text
        return {**response.json(), "client_id": client["client_id"]}

    def user_id(self, username: str = "alice") -> int:
        email = self.op.account(username).email
        with self.ctx.unit_of_work() as session:
            return session.scalar(select(User.id).where(User.username == f"google:{email}"))

    def vault_tokens(self, username: str = "alice") -> dict:
        """The upstream tokens the vault holds for the user, decrypted (to look for them where they must not be)."""
        user_id = self.user_id(username)
        with self.ctx.unit_of_work() as session:
            row = session.scalar(select(UpstreamToken).where(UpstreamToken.user_id == user_id, UpstreamToken.provider == "google"))
            return self.ctx.upstream_vault._open(row) if row is not None else {}

    def audit_events(self, event: str) -> list[dict]:
        with self.ctx.unit_of_work() as session:
            rows = session.execute(select(AuditEvent).where(AuditEvent.event == event).order_by(AuditEvent.id)).scalars()
            return [{"client_id": r.client_id, "user_id": r.user_id, "grant_id": r.grant_id, **(r.details or {})} for r in rows]

    def audit_text(self) -> str:
        with self.ctx.unit_of_work() as session:
            return json.dumps([[r.event, r.client_id, r.details] for r in session.scalars(select(AuditEvent))], default=str)


@pytest.fixture
def op_options():
    """Options of the upstream provider for a test module (override this fixture)."""
    return {}


@pytest.fixture
def federation(tmp_path, store_url, upstream_oidc, op_options, extra_resource):
    sock = free_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    op = upstream_oidc([f"{base_url}/login/upstream/google/callback"], **op_options)
    settings = make_settings(
        tmp_path, store_url, sock.getsockname()[1],
        resources=[ResourceConfig(uri=extra_resource, name="Calendar", scopes=["calendar:read"]),
                   ResourceConfig(uri=OTHER_RESOURCE, name="Another server", scopes=["other:read"])],
        upstream=[UpstreamConfig(name="google", kind="oidc", display_name="Google", issuer=op.issuer, client_id=op.client_id,
                                 client_secret=op.client_secret, scopes=GOOGLE_SCOPES,
                                 authorization_params={"access_type": "offline"})],
    )
    ctx = build_context(settings)
    federation = Federation(base_url, ctx, settings, op, extra_resource)
    provider = ctx.upstream.get("google")
    exchange_code = provider.exchange_code

    async def recorded_exchange_code(*args, **kwargs):
        token = await exchange_code(*args, **kwargs)
        federation.upstream_token_responses.append(dict(token))
        return token

    provider.exchange_code = recorded_exchange_code  # a spy: the test must know the values to look for them
    with ThreadedServer(create_embedded_app(ctx), sock):
        yield federation
    ctx.engine.dispose()
    timeutil.reset()


@dataclass
class CalendarStack:
    """The calendar example serving ``resource``, calling the provider's calendar API stand-in."""

    resource: str
    api: CalendarAPI
    rs_credentials: tuple[str, str]


def load_calendar_example():
    spec = importlib.util.spec_from_file_location("calendar_example_server", CALENDAR_EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def calendar_stack(federation, extra_socket, loopback_server):
    """examples/calendar/server.py on ``extra_resource``, registered at the AS as its resource server,
    with the calendar API stand-in (tests/upstream/calendar_api.py) at Google's own events path."""
    api = CalendarAPI(federation.op)
    with loopback_server(Starlette(routes=[Route(GOOGLE_EVENTS_PATH, api.events, methods=["GET"])])) as api_base:
        api.base_url = api_base
        rs = federation.register_resource_server(federation.calendar_resource)
        app = load_calendar_example().build_app(federation.base_url, federation.calendar_resource, *rs, f"{api_base}/calendar/v3")
        with ThreadedServer(app, extra_socket):
            yield CalendarStack(federation.calendar_resource, api, rs)


def token_exchange(federation: Federation, credentials: tuple[str, str], subject: str, **extra) -> httpx2.Response:
    """RFC 8693 section 2.1, as a resource server sends it; ``extra`` adds or (None) removes parameters."""
    form = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": subject,
            "subject_token_type": "urn:ietf:params:oauth:token-type:access_token", "audience": "google"}
    form.update(extra)
    return httpx2.post(urljoin(federation.base_url, "/token"), data={k: v for k, v in form.items() if v is not None},
                       auth=credentials, timeout=60)
