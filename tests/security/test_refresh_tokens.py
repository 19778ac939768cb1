"""Refresh tokens (S-R1..S-R4; AS-13, AS-14, AS-20): rotation, reuse detection, scope and
resource rules, and atomic rotation under concurrency, on a real AS per store backend."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass

import httpx2
import pytest
from sqlalchemy import func, select

from gatehouse.store.models import (
    AccessToken,
    AuditEvent,
    Grant,
    RefreshToken,
    Revocation,
)
from tests.support.browser import Browser, authorize, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"
BOTH_SCOPES = "notes:read notes:write"


@dataclass
class TestClient:
    client_id: str
    secret: str | None = None

    __test__ = False  # not a pytest test class

    def params(self) -> dict:
        return {} if self.secret else {"client_id": self.client_id}

    def auth(self) -> dict:
        return {"auth": (self.client_id, self.secret)} if self.secret else {}


def new_client(live_as, *, confidential: bool = False) -> TestClient:
    method = "client_secret_basic" if confidential else "none"
    info = live_as.register(redirect_uris=[REDIRECT], token_endpoint_auth_method=method)
    return TestClient(info["client_id"], info.get("client_secret"))


def first_tokens(live_as, client: TestClient, user: tuple[str, str], scope: str = BOTH_SCOPES) -> dict:
    """Authorize like a person and redeem the code: the start of a token family."""
    verifier, challenge = pkce_pair()
    result = authorize(
        Browser(live_as.base_url), client_id=client.client_id, redirect_uri=REDIRECT, challenge=challenge,
        username=user[0], password=user[1], scope=scope, resource=live_as.resource,
    )
    assert result.code, result.response.text
    response = live_as.post_token(
        {"grant_type": "authorization_code", "code": result.code, "redirect_uri": REDIRECT, "code_verifier": verifier,
         "resource": live_as.resource, **client.params()},
        **client.auth(),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refresh_token"] and body["scope"] == scope
    return body


def refresh(live_as, client: TestClient, refresh_token: str, **extra) -> httpx2.Response:
    return live_as.post_token(
        {"grant_type": "refresh_token", "refresh_token": refresh_token, **client.params(), **extra}, **client.auth()
    )


def error_of(response: httpx2.Response) -> str | None:
    return response.json().get("error") if response.status_code >= 400 else None


def claims_of(access_token: str) -> dict:
    """The payload of a JWT, unverified (the tests only need ``jti``/``scope``)."""
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def introspect(live_as, client: TestClient, token: str) -> dict:
    response = httpx2.post(f"{live_as.base_url}/introspect", data={"token": token}, auth=(client.client_id, client.secret))
    assert response.status_code == 200, response.text
    return response.json()


def grant_of(live_as, refresh_token_body: dict) -> Grant:
    jti = claims_of(refresh_token_body["access_token"])["jti"]
    with live_as.ctx.unit_of_work() as session:
        grant_id = session.scalar(select(AccessToken.grant_id).where(AccessToken.jti == jti))
        return session.get(Grant, grant_id)


def revoked_jtis(live_as) -> set[str]:
    with live_as.ctx.unit_of_work() as session:
        return set(session.scalars(select(Revocation.jti)))


# -- S-R1: reuse of a rotated refresh token revokes the whole family --------------------------


def test_S_R1_reuse_of_rotated_token_revokes_whole_family(live_as, caplog):
    caplog.set_level("INFO")
    user = live_as.add_user()
    client = new_client(live_as, confidential=True)
    first = first_tokens(live_as, client, user)
    second_response = refresh(live_as, client, first["refresh_token"])
    assert second_response.status_code == 200, second_response.text
    second = second_response.json()
    third_response = refresh(live_as, client, second["refresh_token"])
    assert third_response.status_code == 200, third_response.text
    third = third_response.json()
    access_tokens = [first["access_token"], second["access_token"], third["access_token"]]
    # before the reuse: the newest tokens are live
    assert introspect(live_as, client, third["access_token"])["active"] is True
    assert introspect(live_as, client, third["refresh_token"])["active"] is True
    grant = grant_of(live_as, first)
    assert grant.revoked_at is None

    reuse = refresh(live_as, client, first["refresh_token"])
    assert reuse.status_code == 400 and error_of(reuse) == "invalid_grant"
    assert "refresh_token" not in reuse.json() and "access_token" not in reuse.json()

    # the grant is revoked, with the reason recorded
    grant = grant_of(live_as, first)
    assert grant.revoked_at is not None and grant.revoked_reason == "refresh_token_reuse"
    # the newest refresh token (never used) is dead too, and so is the middle one
    newest = refresh(live_as, client, third["refresh_token"])
    assert newest.status_code == 400 and error_of(newest) == "invalid_grant"
    assert refresh(live_as, client, second["refresh_token"]).status_code == 400
    # every access token of the family is inactive, and recorded as revoked
    for token in access_tokens:
        assert introspect(live_as, client, token) == {"active": False}
    assert introspect(live_as, client, third["refresh_token"]) == {"active": False}
    assert {claims_of(t)["jti"] for t in access_tokens} <= revoked_jtis(live_as)
    with live_as.ctx.unit_of_work() as session:
        live_refresh = session.scalar(
            select(func.count()).select_from(RefreshToken)
            .join(Grant, Grant.id == RefreshToken.grant_id)
            .where(RefreshToken.grant_id == grant.id, Grant.revoked_at.is_(None))
        )
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "token.refresh_reuse_detected")
        ).all()
        all_events = session.scalars(select(AuditEvent)).all()
    assert live_refresh == 0
    assert len(events) == 1 and events[0].grant_id == grant.id and events[0].client_id == client.client_id

    # no audit event (nor audit log line) carries a token value or the client secret
    secrets_ = [first["refresh_token"], second["refresh_token"], third["refresh_token"], *access_tokens, client.secret]
    dumped = [
        json.dumps({"event": e.event, "client_id": e.client_id, "grant_id": e.grant_id, "details": e.details}, default=str)
        for e in all_events
    ]
    for value in secrets_:
        assert all(value not in line for line in dumped)
        assert value not in caplog.text


def test_S_R1_reuse_by_public_client_revokes_family(live_as):
    user = live_as.add_user()
    client = new_client(live_as)
    first = first_tokens(live_as, client, user)
    second = refresh(live_as, client, first["refresh_token"]).json()
    assert "refresh_token" in second and second["refresh_token"] != first["refresh_token"]

    reuse = refresh(live_as, client, first["refresh_token"])
    assert reuse.status_code == 400 and error_of(reuse) == "invalid_grant"
    after = refresh(live_as, client, second["refresh_token"])
    assert after.status_code == 400 and error_of(after) == "invalid_grant"
    assert {claims_of(first["access_token"])["jti"], claims_of(second["access_token"])["jti"]} <= revoked_jtis(live_as)


def test_S_R1_reuse_attempt_without_client_authentication_revokes_nothing(live_as):
    """Reuse detection needs the right client: a wrong secret is invalid_client and no DoS."""
    user = live_as.add_user()
    client = new_client(live_as, confidential=True)
    first = first_tokens(live_as, client, user)
    second = refresh(live_as, client, first["refresh_token"]).json()

    wrong = live_as.post_token(
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}, auth=(client.client_id, "not-the-secret")
    )
    assert wrong.status_code == 401 and error_of(wrong) == "invalid_client"
    assert grant_of(live_as, first).revoked_at is None
    assert refresh(live_as, client, second["refresh_token"]).status_code == 200


# -- S-R2: scope may narrow on refresh, never widen ----------------------------------------------


@pytest.mark.parametrize("wider", ["notes:read notes:write", "notes:write", "notes:read notes:admin"])
def test_S_R2_wider_scope_is_invalid_scope_and_rotates_nothing(live_as, wider):
    user = live_as.add_user()
    client = new_client(live_as)
    first = first_tokens(live_as, client, user, scope="notes:read")

    widened = refresh(live_as, client, first["refresh_token"], scope=wider)
    assert widened.status_code == 400 and error_of(widened) == "invalid_scope"
    assert "access_token" not in widened.json()
    with live_as.ctx.unit_of_work() as session:
        rows = session.scalars(select(RefreshToken)).all()
    assert len(rows) == 1 and rows[0].rotated_at is None

    # nothing rotated and nothing revoked: the presented refresh token still works
    again = refresh(live_as, client, first["refresh_token"])
    assert again.status_code == 200, again.text
    assert again.json()["scope"] == "notes:read" and claims_of(again.json()["access_token"])["scope"] == "notes:read"


def test_S_R2_narrower_scope_is_allowed(live_as):
    user = live_as.add_user()
    client = new_client(live_as)
    first = first_tokens(live_as, client, user, scope=BOTH_SCOPES)
    assert claims_of(first["access_token"])["scope"] == BOTH_SCOPES

    narrowed = refresh(live_as, client, first["refresh_token"], scope="notes:read")
    assert narrowed.status_code == 200, narrowed.text
    body = narrowed.json()
    assert body["scope"] == "notes:read"
    assert claims_of(body["access_token"])["scope"] == "notes:read"
    assert body["refresh_token"] != first["refresh_token"]


def test_S_R2_narrowing_does_not_shrink_the_refresh_token(live_as):
    """RFC 6749 section 6 / OAuth 2.1 section 4.3: a new refresh token's scope MUST be identical
    to that of the refresh token presented, so a narrowed access token does not shrink the grant."""
    user = live_as.add_user()
    client = new_client(live_as)
    first = first_tokens(live_as, client, user, scope=BOTH_SCOPES)
    narrowed = refresh(live_as, client, first["refresh_token"], scope="notes:read").json()

    full_again = refresh(live_as, client, narrowed["refresh_token"], scope=BOTH_SCOPES)
    assert full_again.status_code == 200, full_again.text
    assert claims_of(full_again.json()["access_token"])["scope"] == BOTH_SCOPES
    default = refresh(live_as, client, full_again.json()["refresh_token"])
    assert default.status_code == 200 and claims_of(default.json()["access_token"])["scope"] == BOTH_SCOPES


# -- S-R3: the refresh token is bound to its client and its resource ---------------------------


def test_S_R3_another_clients_refresh_token_is_invalid_grant_and_revokes_nothing(live_as):
    user = live_as.add_user()
    owner = new_client(live_as)
    thief = new_client(live_as)
    first = first_tokens(live_as, owner, user)
    second = refresh(live_as, owner, first["refresh_token"]).json()

    # the live token and the rotated-out one alike: invalid_grant for the other client
    for stolen in (second["refresh_token"], first["refresh_token"]):
        response = refresh(live_as, thief, stolen)
        assert response.status_code == 400 and error_of(response) == "invalid_grant"
        assert "access_token" not in response.json()
    assert grant_of(live_as, first).revoked_at is None
    assert revoked_jtis(live_as) == set()

    # the owner's grant is intact: its current refresh token still works
    mine = refresh(live_as, owner, second["refresh_token"])
    assert mine.status_code == 200, mine.text


def test_S_R3_confidential_client_cannot_use_a_public_clients_token(live_as):
    user = live_as.add_user()
    owner = new_client(live_as)
    other = new_client(live_as, confidential=True)
    first = first_tokens(live_as, owner, user)
    response = refresh(live_as, other, first["refresh_token"])
    assert response.status_code == 400 and error_of(response) == "invalid_grant"
    assert refresh(live_as, owner, first["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "resource",
    [
        "{base}/other",
        "https://elsewhere.example/mcp",
        "{base}/mcp#frag",
        "mcp",
        ["{base}/mcp", "{base}/other"],
    ],
)
def test_S_R3_resource_outside_the_grant_is_invalid_target(live_as, resource):
    user = live_as.add_user()
    client = new_client(live_as)
    first = first_tokens(live_as, client, user)
    resources = resource if isinstance(resource, list) else [resource]
    resources = [r.format(base=live_as.base_url) for r in resources]

    response = refresh(live_as, client, first["refresh_token"], resource=resources)
    assert response.status_code == 400 and error_of(response) == "invalid_target"
    assert "access_token" not in response.json()
    # refused before rotation: the token still works, for the granted resource
    ok = refresh(live_as, client, first["refresh_token"], resource=live_as.resource)
    assert ok.status_code == 200, ok.text
    assert claims_of(ok.json()["access_token"])["aud"] == live_as.resource


# -- S-R4: concurrent refreshes with one token: exactly one wins --------------------------------


@pytest.mark.parametrize("parallel", [2, 8])
def test_S_R4_concurrent_refreshes_exactly_one_succeeds(live_as, parallel):
    user = live_as.add_user()
    client = new_client(live_as)
    first = first_tokens(live_as, client, user)
    grant = grant_of(live_as, first)
    barrier = threading.Barrier(parallel)
    results: list[httpx2.Response | BaseException] = [None] * parallel  # type: ignore[list-item]

    def worker(index: int) -> None:
        try:
            with httpx2.Client(timeout=60) as http:
                data = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client.client_id}
                barrier.wait(timeout=30)
                results[index] = http.post(f"{live_as.base_url}/token", data=data)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[index] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert all(isinstance(r, httpx2.Response) for r in results), results

    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * (parallel - 1), [r.text for r in results]
    for response in results:
        if response.status_code == 400:
            assert error_of(response) == "invalid_grant"
    winners = [r.json() for r in results if r.status_code == 200]
    assert winners[0]["refresh_token"] != first["refresh_token"]

    with live_as.ctx.unit_of_work() as session:
        refresh_rows = session.scalars(select(RefreshToken).where(RefreshToken.grant_id == grant.id)).all()
        access_rows = session.scalar(select(func.count()).select_from(AccessToken).where(AccessToken.grant_id == grant.id))
    # exactly one rotation happened: the original (rotated) plus one new refresh token
    assert len(refresh_rows) == 2
    assert sum(1 for r in refresh_rows if r.rotated_at is not None) == 1
    assert access_rows == 2
