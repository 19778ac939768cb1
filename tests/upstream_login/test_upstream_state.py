"""S-U2: an upstream callback with a missing, mismatched, reused or expired ``state`` (or one
started in another browser) is rejected with a page; nothing is redeemed, no one is signed in."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from gatehouse import timeutil
from tests.upstream_login.conftest import google_config
from tests.upstream_login.flow import Person, at_upstream, new_request, redirect_params, to_upstream


@pytest.fixture
def live(gatehouse, upstream_oidc):
    """Gatehouse with two providers at one upstream ("google" and "work"), to mix their states up."""
    op = upstream_oidc([gatehouse.callback("google"), gatehouse.callback("work")])
    live = gatehouse.start([google_config(op), google_config(op, name="work", display_name="Work")])
    live.op = op
    return live


@pytest.fixture
def person(live):
    someone = Person(live.base_url)
    yield someone
    someone.close()


def callback_for(live, gatehouse, person, name: str = "google") -> tuple[str, object]:
    """A genuine callback URL for a sign-in ``person`` started, and the pending MCP request."""
    request = new_request(live.register()["client_id"])
    url = to_upstream(person, request, name)
    return at_upstream(person, url, live.op.account("alice"), gatehouse.callback(name)), request


def with_state(callback: str, state: str | None) -> str:
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if state is None:
        query.pop("state")
    else:
        query["state"] = state
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}"


def assert_rejected(response, reason: str) -> None:
    assert response.status_code == 400, response.text[:500]
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert f"<code>state_{reason}</code>" in response.text
    assert "sign in again" in response.text


def redeemed_codes(live) -> int:
    return sum(1 for r in live.op.token_requests if r["grant_type"] == "authorization_code")


def test_S_U2_missing_state_is_rejected(live, gatehouse, person):
    callback, _ = callback_for(live, gatehouse, person)
    assert_rejected(person.gatehouse.get(with_state(callback, None)), "missing")
    assert redeemed_codes(live) == 0


def test_S_U2_mismatched_state_is_rejected(live, gatehouse, person):
    callback, _ = callback_for(live, gatehouse, person)
    assert_rejected(person.gatehouse.get(with_state(callback, "A" * 43)), "unknown")
    work_callback, _ = callback_for(live, gatehouse, person, "work")
    crossed = work_callback.replace("/login/upstream/work/callback", "/login/upstream/google/callback")
    assert_rejected(person.gatehouse.get(crossed), "mismatched")
    assert redeemed_codes(live) == 0


def test_S_U2_reused_state_is_rejected(live, gatehouse, person):
    callback, request = callback_for(live, gatehouse, person)
    first = person.gatehouse.get(callback)
    assert redirect_params(first)["state"] == request.state
    person.gatehouse.cookies.pop("__Host-gatehouse-session")
    assert_rejected(person.gatehouse.get(callback), "reused")
    assert redeemed_codes(live) == 1


def test_S_U2_expired_state_is_rejected(live, gatehouse, person):
    callback, _ = callback_for(live, gatehouse, person)
    timeutil.travel(timedelta(minutes=10, seconds=5))
    assert_rejected(person.gatehouse.get(callback), "expired")
    assert redeemed_codes(live) == 0


def test_S_U2_state_from_another_browser_is_rejected_and_left_to_its_owner(live, gatehouse, person):
    callback, request = callback_for(live, gatehouse, person)
    attacker, cookieless = Person(live.base_url), Person(live.base_url)
    try:
        attacker.gatehouse.get("/login")  # a browser id of its own
        assert_rejected(attacker.gatehouse.get(callback), "other_browser")
        assert_rejected(cookieless.gatehouse.get(callback), "other_browser")
    finally:
        attacker.close()
        cookieless.close()
    assert redeemed_codes(live) == 0
    assert redirect_params(person.gatehouse.get(callback))["state"] == request.state, "the owner can still finish"
