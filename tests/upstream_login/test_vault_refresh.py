"""The vault against a real provider (UP-3): refresh after expiry, one refresh for many callers,
typed errors when the provider revoked the user or is down, and revocation when the user withdraws."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx2
import pytest
from sqlalchemy import func, select

from gatehouse import timeutil
from gatehouse.authserver.upstream.providers import UpstreamProviders
from gatehouse.authserver.upstream.vault import UpstreamVault
from gatehouse.store import db as store_db
from gatehouse.store.models import AuditEvent, UpstreamIdentity, UpstreamToken, User
from gatehouse.upstream_errors import UpstreamReauthorizationRequired, UpstreamUnavailable
from tests.support.browser import parse_forms
from tests.upstream_login.flow import Person, answer, form_index, new_request, redeem, redirect_params, sign_in


class Alice:
    """Alice, signed in through "Google" for one MCP client, with her Gatehouse browser."""

    def __init__(self, live, google, gatehouse, apps: int = 1):
        self.live, self.google = live, google
        self.person = Person(live.base_url)
        self.clients = []
        for n in range(apps):
            request = new_request(live.register(client_name=f"App {n}")["client_id"])
            if n == 0:
                answered = sign_in(self.person, request, google.account("alice"), gatehouse.callback("google"))
            else:  # signed in at Gatehouse now: the usual consent page
                answered = answer(self.person, self.person.gatehouse.get(request.path))
            params = redirect_params(answered)
            redeem(live.base_url, request, params["code"])
            self.clients.append(request.client_id)
        with live.ctx.sessions() as db:
            self.user_id = db.scalar(select(User.id).where(User.username == "google:alice@example.com"))

    def fresh(self, vault: UpstreamVault | None = None):
        return asyncio.run((vault or self.live.ctx.upstream_vault).fresh_access_token(self.user_id, "google"))

    def refreshes(self) -> int:
        return sum(1 for r in self.google.token_requests if r["grant_type"] == "refresh_token")

    def held(self) -> int:
        with self.live.ctx.sessions() as db:
            return db.scalar(select(func.count()).select_from(UpstreamToken).where(UpstreamToken.user_id == self.user_id))


@pytest.fixture
def alice(federated, google, gatehouse):
    someone = Alice(federated, google, gatehouse)
    yield someone
    someone.person.close()


def test_UP_3_fresh_access_token_refreshes_after_expiry(alice, google, calendar_api):
    first = alice.fresh()
    assert alice.refreshes() == 0 and google.introspect(first.access_token)["active"]
    assert "calendar.read" in first.scope.split()
    timeutil.travel(timedelta(hours=2))
    second = alice.fresh()
    assert second.access_token != first.access_token and alice.refreshes() == 1
    assert second.expires_at > timeutil.utcnow() + timedelta(minutes=55)
    assert alice.fresh().access_token == second.access_token and alice.refreshes() == 1, "fresh again: no refresh"
    events = httpx2.get(calendar_api(google).events_url, headers={"Authorization": f"Bearer {second.access_token}"}, timeout=30)
    assert events.status_code == 200 and events.json()["items"][0]["summary"] == "Alice's standup"


def test_UP_3_concurrent_refreshes_on_two_instances_spend_the_refresh_token_once(alice, federated):
    other_engine = store_db.create_store_engine(federated.settings.effective_database_url)
    other = UpstreamVault(store_db.session_factory(other_engine), UpstreamProviders(federated.settings.upstream), federated.ctx.secret)
    timeutil.travel(timedelta(hours=2))

    async def many():
        calls = [vault.fresh_access_token(alice.user_id, "google") for vault in (federated.ctx.upstream_vault, other) * 4]
        return await asyncio.gather(*calls)

    try:
        tokens = asyncio.run(many())
    finally:
        other_engine.dispose()
    assert len({t.access_token for t in tokens}) == 1
    assert alice.refreshes() == 1


def test_UP_3_a_user_revoked_at_the_upstream_must_sign_in_again(alice, google, federated):
    alice.fresh()
    google.revoke_user(google.account("alice").sub)
    timeutil.travel(timedelta(hours=2))
    with pytest.raises(UpstreamReauthorizationRequired, match="refused to refresh .*invalid_grant.*sign in through Google again"):
        alice.fresh()
    with pytest.raises(UpstreamReauthorizationRequired, match="holds no google token"):
        alice.fresh()
    assert alice.held() == 0
    with federated.ctx.sessions() as db:
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "upstream.tokens_revoked"))
        assert event.details == {"provider": "google", "reason": "refresh_refused:invalid_grant"}


def test_UP_3_an_unreachable_or_failing_upstream_is_unavailable_then_recovers(alice, google):
    timeutil.travel(timedelta(hours=2))
    google.stop()
    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        alice.fresh()
    google.start()
    google.fail_token_endpoint(503)
    with pytest.raises(UpstreamUnavailable, match="HTTP 503"):
        alice.fresh()
    assert alice.fresh().access_token and alice.refreshes() == 2, "the lease was given back each time"


def test_UP_3_removing_one_of_two_apps_keeps_the_vault_removing_the_last_empties_it(federated, google, gatehouse):
    alice = Alice(federated, google, gatehouse, apps=2)
    try:
        held = alice.fresh().access_token
        first, second = alice.clients
        for client_id, left in ((first, 1), (second, 0)):
            apps = alice.person.gatehouse.get("/apps")
            index = [i for i, f in enumerate(parse_forms(apps.text)) if f["fields"].get("client_id") == client_id][0]
            assert alice.person.gatehouse.submit(apps, form_index=index).status_code == 303
            assert alice.held() == left
        with federated.ctx.sessions() as db:
            assert db.scalar(select(UpstreamIdentity.provider)) == "google", "removing apps keeps the link"
        _eventually(lambda: not google.introspect(held)["active"], "the access token was revoked at the provider")
    finally:
        alice.person.close()


def test_UP_3_unlinking_removes_the_link_and_revokes_the_tokens(federated, google, gatehouse):
    federated.add_user("carol")
    alice = Alice(federated, google, gatehouse)
    try:
        with federated.ctx.unit_of_work() as db:  # give Alice a password too, so the link may go
            db.get(User, alice.user_id).password_hash = db.scalar(select(User.password_hash).where(User.username == "carol"))
        held = alice.fresh().access_token
        apps = alice.person.gatehouse.get("/apps")
        done = alice.person.gatehouse.submit(apps, form_index=form_index(apps, "/apps/upstream/unlink"))
        assert done.headers["location"] == "/apps?unlinked=google"
        assert "Google is unlinked" in alice.person.gatehouse.get(done.headers["location"]).text
        with federated.ctx.sessions() as db:
            assert db.scalar(select(func.count()).select_from(UpstreamIdentity)) == 0
        assert alice.held() == 0
        _eventually(lambda: not google.introspect(held)["active"], "the access token was revoked at the provider")
    finally:
        alice.person.close()


def test_UP_3_unlink_is_csrf_protected(alice):
    forged = alice.person.gatehouse.request(
        "POST", "/apps/upstream/unlink", content="provider=google&csrf_token=forged",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert forged.status_code == 403 and alice.held() == 1


def _eventually(check, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
