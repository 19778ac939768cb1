"""Sign-in through an upstream OpenID provider, over real HTTP (UP-1, UP-2, S-U1).

A real Gatehouse on loopback (once per store) and the certified oidc-provider as "Google"
(tests/upstream). The person is played with plain HTTP, following each redirect by hand.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from gatehouse.store.models import AuditEvent, Consent, UpstreamIdentity, User
from tests.support.browser import parse_forms
from tests.upstream.accounts import DEFAULT_ACCOUNTS, UpstreamAccount
from tests.upstream_login.conftest import github_config, google_config
from tests.upstream_login.flow import (
    Person,
    answer,
    at_upstream,
    consent_before_upstream,
    login_page,
    new_request,
    redeem,
    redirect_params,
    sign_in,
    upstream_button,
)


@pytest.fixture
def person(federated):
    someone = Person(federated.base_url)
    yield someone
    someone.close()


def token_claims(token: str) -> dict:
    """The claims of one of Gatehouse's access tokens (its signature is the AS tests' business)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_UP_2_full_flow_consent_at_gatehouse_before_the_upstream_redirect(federated, google, gatehouse, person):
    client = federated.register(client_name="Calendar Desktop")
    request = new_request(client["client_id"])

    consent = consent_before_upstream(person, request)
    assert "Calendar Desktop" in consent.text and "you will sign in with <strong>Google</strong> next" in consent.text
    assert not google.token_requests, "nothing went upstream yet"

    upstream = answer(person, consent)
    assert upstream.status_code == 303
    location = upstream.headers["location"]
    assert location.startswith(google.authorization_endpoint + "?")
    sent = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert sent["redirect_uri"] == gatehouse.callback("google") and sent["client_id"] == google.client_id
    assert sent["code_challenge_method"] == "S256" and len(sent["code_challenge"]) == 43
    assert len(sent["state"]) >= 43 and len(sent["nonce"]) >= 43, "the upstream leg has its own state and nonce (UP-1)"
    assert request.state not in location and request.challenge not in location, "nothing of the MCP client's request goes upstream"

    callback = at_upstream(person, location, google.account("alice"), gatehouse.callback("google"))
    answered = person.gatehouse.get(callback)
    params = redirect_params(answered)
    assert params["state"] == request.state and params["iss"] == federated.base_url and "code" in params
    assert "__Host-gatehouse-session" in person.gatehouse.cookies

    token = redeem(federated.base_url, request, params["code"])
    assert token_claims(token["access_token"])["sub"] == "google:alice@example.com"
    assert [r["grant_type"] for r in google.token_requests] == ["authorization_code"]

    with federated.ctx.sessions() as db:
        user = db.scalar(select(User).where(User.username == "google:alice@example.com"))
        assert user.password_hash is None and user.display_name == "Alice Liddell"
        consent_row = db.scalar(select(Consent).where(Consent.user_id == user.id, Consent.client_id == client["client_id"]))
        assert consent_row is not None, "the consent given before sign-in is recorded for the user it identified"
        event = db.scalar(select(AuditEvent).where(AuditEvent.event == "login.upstream_succeeded"))
        assert event.details == {"provider": "google", "upstream_subject": google.account("alice").sub, "user_created": True}


def test_UP_2_deny_before_the_upstream_sends_access_denied_to_the_client(federated, google, person):
    request = new_request(federated.register()["client_id"])
    denied = answer(person, consent_before_upstream(person, request), "deny")
    params = redirect_params(denied)
    assert (params["error"], params["state"], params["iss"]) == ("access_denied", request.state, federated.base_url)
    assert "code" not in params
    assert not google.token_requests


def test_UP_2_the_consent_form_is_bound_to_this_browser(federated, person):
    request = new_request(federated.register()["client_id"])
    consent = consent_before_upstream(person, request)
    stranger = Person(federated.base_url)
    try:
        stranger.gatehouse.get("/login")  # gets a browser id of its own
        forged = stranger.gatehouse.submit(consent, button=("decision", "approve"))
    finally:
        stranger.close()
    assert forged.status_code == 403 and "csrf_failed" in forged.text and "location" not in forged.headers


def test_login_page_shows_the_password_form_and_one_button_per_upstream(gatehouse, google, github_standin):
    live = gatehouse.start([google_config(google), github_config(github_standin)])
    live.add_user("carol")
    someone = Person(live.base_url)
    try:
        request = new_request(live.register()["client_id"])
        page = login_page(someone, request)
        forms = parse_forms(page.text)
        assert set(forms[0]["fields"]) >= {"username", "password", "csrf_token", "next"}, "the password form comes first"
        assert "Continue with Google" in page.text and "Continue with GitHub" in page.text
        assert upstream_button(page, "google").startswith("/login/upstream/google?next=%2Fauthorize%3F")
        assert upstream_button(page, "github").startswith("/login/upstream/github?next=")
    finally:
        someone.close()


def test_one_upstream_and_no_local_accounts_goes_straight_to_it(federated, person):
    first = person.gatehouse.get("/login?next=/apps")
    assert first.status_code == 303 and first.headers["location"] == "/login/upstream/google?next=%2Fapps"
    federated.add_user("carol")
    page = person.gatehouse.get("/login?next=/apps")
    assert page.status_code == 200 and 'name="password"' in page.text and "Continue with Google" in page.text


def test_UP_1_a_returning_user_is_the_same_user_and_a_same_email_account_is_another(gatehouse, upstream_oidc):
    twin = UpstreamAccount("alice-twin", "twin-upstream-pw", "999000111222333444555", "alice@example.com", "Another Alice")
    op = upstream_oidc([gatehouse.callback("google")], accounts=(*DEFAULT_ACCOUNTS, twin))
    live = gatehouse.start([google_config(op)])
    client_id = live.register()["client_id"]
    subjects = []
    for account in (op.account("alice"), op.account("alice"), twin):
        someone = Person(live.base_url)
        try:
            request = new_request(client_id)
            params = redirect_params(sign_in(someone, request, account, gatehouse.callback("google")))
            subjects.append(token_claims(redeem(live.base_url, request, params["code"])["access_token"])["sub"])
        finally:
            someone.close()
    assert subjects == ["google:alice@example.com", "google:alice@example.com", "google:alice@example.com-2"]
    with live.ctx.sessions() as db:
        links = {(link.issuer, link.subject) for link in db.scalars(select(UpstreamIdentity))}
    assert links == {(op.issuer, op.account("alice").sub), (op.issuer, twin.sub)}


def test_S_U1_consent_is_asked_per_client_even_with_a_live_upstream_session(federated, google, gatehouse, person):
    c1 = federated.register(client_name="First app")["client_id"]
    c2 = federated.register(client_name="Second app")["client_id"]
    alice = google.account("alice")
    redirect_params(sign_in(person, new_request(c1), alice, gatehouse.callback("google")))

    # Signed in at Gatehouse: C1 is covered, C2 is not.
    again = person.gatehouse.get(new_request(c1).path)
    assert again.status_code == 302 and "code=" in again.headers["location"]
    second = person.gatehouse.get(new_request(c2).path)
    assert second.status_code == 200 and "Second app" in second.text and 'name="decision"' in second.text

    # A fresh Gatehouse browser with the live upstream session: consent for C2 before any redirect.
    person.new_gatehouse_browser()
    request = new_request(c2)
    consent = consent_before_upstream(person, request)
    assert "Second app" in consent.text and "sign in with <strong>Google</strong> next" in consent.text
    upstream = answer(person, consent).headers["location"]
    callback = at_upstream(person, upstream, alice, gatehouse.callback("google"))  # no login form: live session
    params = redirect_params(person.gatehouse.get(callback))
    assert "code" in params and params["state"] == request.state
    assert len(google.token_requests) == 2


def test_UP_2_a_pending_request_that_went_bad_is_explained_not_redirected(federated, person):
    """A request with an unregistered redirect URI never reaches the consent page or the upstream."""
    request = new_request(federated.register()["client_id"])
    request.redirect_uri = "https://evil.example/callback"
    page = person.gatehouse.follow(person.gatehouse.get(request.path))
    assert page.status_code == 400 and "location" not in page.headers and 'name="decision"' not in page.text
    direct = person.gatehouse.get("/login/upstream/google?next=/authorize%3Fclient_id%3Dnope%26response_type%3Dcode")
    assert direct.status_code == 400 and "evil" not in direct.text and 'name="decision"' not in direct.text


def test_unknown_upstream_name_is_a_clear_404(federated, person):
    page = person.gatehouse.get("/login/upstream/nope?next=/apps")
    assert page.status_code == 404 and "unknown_upstream" in page.text
    assert person.gatehouse.get("/login/upstream/nope/callback?state=x&code=y").status_code == 404


def test_without_a_pending_request_the_button_goes_straight_upstream(federated, google, person):
    page = person.gatehouse.get("/login/upstream/google?next=/apps")
    assert page.status_code == 303 and page.headers["location"].startswith(google.authorization_endpoint + "?")
