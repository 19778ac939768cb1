"""Sign-in through GitHub's OAuth (not OIDC), against tests/upstream's GitHub stand-in (UP-1, UP-3)."""

from __future__ import annotations

import time

import anyio
import pytest
from sqlalchemy import select

from gatehouse.store.models import UpstreamIdentity, User
from tests.upstream_login.conftest import github_config
from tests.upstream_login.flow import Person, at_upstream, form_index, new_request, redeem, redirect_params, to_upstream


@pytest.fixture
def live(gatehouse, github_standin):
    github_standin.callback_url = gatehouse.callback("github")
    return gatehouse.start([github_config(github_standin)])


def test_UP_1_github_sign_in_links_the_numeric_id_and_fills_the_vault(live, gatehouse, github_standin):
    person = Person(live.base_url)
    try:
        request = new_request(live.register()["client_id"])
        url = to_upstream(person, request, "github")
        assert url.startswith(github_standin.authorize_url + "?") and "code_challenge_method=S256" in url
        octocat = github_standin.account("octocat")
        params = redirect_params(person.gatehouse.get(at_upstream(person, url, octocat, gatehouse.callback("github"))))
        assert params["state"] == request.state
        redeem(live.base_url, request, params["code"])
    finally:
        person.close()
    with live.ctx.sessions() as db:
        link = db.scalar(select(UpstreamIdentity))
        assert (link.provider, link.issuer, link.subject) == ("github", github_standin.base_url, str(octocat.id))
        assert db.get(User, link.user_id).username == "github:octocat"
        user_id = link.user_id
    held = _fresh(live, user_id)
    assert held.access_token.startswith("gho_") and held.access_token in github_standin.tokens
    assert held.expires_at is None and held.scope == "read:user" and held.token_type.lower() == "bearer"
    assert github_standin.received_tokens == [held.access_token], "the token was used for GET /user only"


def test_UP_3_unlinking_github_revokes_the_token_at_github(live, gatehouse, github_standin):
    live.add_user("carol")  # a local account exists, so GitHub is not the only way in: the link can go
    person = Person(live.base_url)
    try:
        request = new_request(live.register()["client_id"])
        url = to_upstream(person, request, "github")
        redirect_params(person.gatehouse.get(at_upstream(person, url, github_standin.account("hubot"), gatehouse.callback("github"))))
        apps = person.gatehouse.get("/apps")
        assert "Linked accounts" in apps.text and "Gatehouse holds GitHub tokens" in apps.text
        # hubot signs in only through GitHub: the link stays, the tokens go
        removed = person.gatehouse.submit(apps, form_index=form_index(apps, "/apps/upstream/unlink"))
        assert removed.status_code == 303 and removed.headers["location"] == "/apps?forgotten=github"
        page = person.gatehouse.get(removed.headers["location"])
        assert "no longer holds your GitHub tokens" in page.text and "Sign in with GitHub again" in page.text
    finally:
        person.close()
    deadline = time.monotonic() + 15
    while github_standin.tokens and time.monotonic() < deadline:
        time.sleep(0.1)
    assert github_standin.tokens == {}, "the token was revoked at GitHub after the commit"
    with live.ctx.sessions() as db:
        assert db.scalar(select(UpstreamIdentity.subject)) == str(github_standin.account("hubot").id)


def _fresh(live, user_id: int):
    return anyio.run(live.ctx.upstream_vault.fresh_access_token, user_id, "github")
