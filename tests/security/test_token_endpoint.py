"""Security cases of the token endpoint (S-T1..S-T7 of shared/spec/security-cases.md), plus the
bad-input answers: a malformed request is a 4xx OAuth error, never a 500.

Everything runs against a real AS on loopback (``live_as``, once per store backend). Store
state is checked through the AS's own tables: grants, access-token records, revocations and
authorization codes.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from sqlalchemy import func, select

from gatehouse import timeutil
from gatehouse.authserver import ratelimit
from gatehouse.authserver.clients import KIND_STATIC, store_client
from gatehouse.instance_secrets import token_hash
from gatehouse.store.models import (
    AccessToken,
    AuthorizationCode,
    Grant,
    RefreshToken,
    Revocation,
    User,
)
from gatehouse.timeutil import utcnow
from tests.support.browser import Browser, authorize, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"
OTHER_REDIRECT = "http://127.0.0.1:9/other"


# -- helpers --

def count(live_as, model, *where) -> int:
    with live_as.ctx.sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where))


def claims_of(access_token: str) -> dict:
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def assert_oauth_error(response: httpx2.Response, status: int, error: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("error_description"), str) and body["error_description"]
    assert "access_token" not in body and "refresh_token" not in body
    assert_no_store(response)
    return body


def assert_no_store(response: httpx2.Response) -> None:
    directives = [d.strip().lower() for d in response.headers.get("cache-control", "").split(",")]
    assert "no-store" in directives, response.headers


class Client:
    """A registered client and how it authenticates at the token endpoint."""

    def __init__(self, live_as, confidential: bool = False, **metadata):
        metadata.setdefault("redirect_uris", [REDIRECT])
        if confidential:
            metadata["token_endpoint_auth_method"] = "client_secret_basic"
        info = live_as.register(**metadata)
        self.live_as = live_as
        self.client_id = info["client_id"]
        self.secret = info.get("client_secret")
        self.confidential = confidential

    def token(self, data: dict, **kwargs) -> httpx2.Response:
        if self.confidential:
            return self.live_as.post_token(data, auth=(self.client_id, self.secret), **kwargs)
        return self.live_as.post_token({"client_id": self.client_id, **data}, **kwargs)

    def introspect(self, token: str) -> dict:
        assert self.confidential
        response = httpx2.post(f"{self.live_as.base_url}/introspect", data={"token": token}, auth=(self.client_id, self.secret))
        assert response.status_code == 200, response.text
        return response.json()


class Person:
    """A user with a browser, who signs in and approves when asked."""

    def __init__(self, live_as, username: str = "alice"):
        self.username, self.password = live_as.add_user(username)
        self.browser = Browser(live_as.base_url)

    def code_for(self, client: Client, *, redirect_uri: str | None = REDIRECT, resource: str | None = None,
                 scope: str | None = None) -> tuple[str, str]:
        """Authorize ``client``; the code and its PKCE verifier. ``redirect_uri=None``: not sent."""
        verifier, challenge = pkce_pair()
        result = authorize(self.browser, client_id=client.client_id, redirect_uri=redirect_uri or REDIRECT,
                           challenge=challenge, username=self.username, password=self.password,
                           resource=resource, scope=scope, state="s1")
        assert result.code, result.response.text
        if redirect_uri is not None:
            return result.code, verifier
        # consent is given now; authorize again without redirect_uri (the only registered one applies)
        verifier, challenge = pkce_pair()
        query = {"response_type": "code", "client_id": client.client_id, "code_challenge": challenge,
                 "code_challenge_method": "S256", "state": "s1"}
        response = self.browser.get("/authorize?" + urlencode(query))
        assert response.status_code == 302, response.text
        return parse_qs(urlsplit(response.headers["location"]).query)["code"][0], verifier


def code_grant(code: str, verifier: str | None, redirect_uri: str | None = REDIRECT, **extra) -> dict:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    data.update(extra)
    return {k: v for k, v in data.items() if v is not None}


def grant_state(live_as) -> list[tuple[str | None, str | None]]:
    with live_as.ctx.sessions() as session:
        return [(g.revoked_at is not None, g.revoked_reason) for g in session.scalars(select(Grant))]


def revoked_jtis(live_as) -> set[str]:
    with live_as.ctx.sessions() as session:
        return set(session.scalars(select(Revocation.jti)))


def assert_nothing_revoked(live_as, client: Client, tokens: dict) -> None:
    assert grant_state(live_as) == [(False, None)]
    assert revoked_jtis(live_as) == set()
    if client.confidential:
        assert client.introspect(tokens["access_token"])["active"] is True
        assert client.introspect(tokens["refresh_token"])["active"] is True


# -- S-T1: code replay --

@pytest.mark.parametrize("confidential", [False, True], ids=["public", "confidential"])
def test_S_T1_code_replay_revokes_first_redemption(live_as, confidential):
    client = Client(live_as, confidential=confidential)
    other = Client(live_as)
    user = Person(live_as)
    code, verifier = user.code_for(client, resource=live_as.resource)

    first = client.token(code_grant(code, verifier))
    assert first.status_code == 200, first.text
    tokens = first.json()
    jti = claims_of(tokens["access_token"])["jti"]

    # replays that fail before the code's owner is proven revoke nothing
    wrong_verifier, _ = pkce_pair()
    assert_oauth_error(client.token(code_grant(code, wrong_verifier)), 400, "invalid_grant")
    assert_nothing_revoked(live_as, client, tokens)
    assert_oauth_error(client.token(code_grant(code, None)), 400, "invalid_request")
    assert_nothing_revoked(live_as, client, tokens)
    assert_oauth_error(other.token(code_grant(code, verifier)), 400, "invalid_grant")
    assert_nothing_revoked(live_as, client, tokens)

    # the owner's replay: refused, and everything the first redemption issued is revoked
    replay = client.token(code_grant(code, verifier))
    body = assert_oauth_error(replay, 400, "invalid_grant")
    assert "already used" in body["error_description"]
    assert grant_state(live_as) == [(True, "authorization_code_replay")]
    assert jti in revoked_jtis(live_as)
    if client.confidential:
        assert client.introspect(tokens["access_token"]) == {"active": False}
        assert client.introspect(tokens["refresh_token"]) == {"active": False}
    refreshed = client.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert_oauth_error(refreshed, 400, "invalid_grant")
    assert count(live_as, Grant) == 1 and count(live_as, AccessToken) == 1


def test_S_T1_code_replay_after_refresh_revokes_the_rotated_tokens_too(live_as):
    client = Client(live_as, confidential=True)
    code, verifier = Person(live_as).code_for(client)
    tokens = client.token(code_grant(code, verifier)).json()
    rotated = client.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    newer = rotated.json()

    assert_oauth_error(client.token(code_grant(code, verifier)), 400, "invalid_grant")
    assert client.introspect(newer["access_token"]) == {"active": False}
    assert client.introspect(newer["refresh_token"]) == {"active": False}
    assert revoked_jtis(live_as) == {claims_of(tokens["access_token"])["jti"], claims_of(newer["access_token"])["jti"]}


# -- S-T2: another client's code --

@pytest.mark.parametrize("thief_confidential", [False, True], ids=["public-thief", "confidential-thief"])
def test_S_T2_code_of_another_client_is_invalid_grant(live_as, thief_confidential):
    owner = Client(live_as)
    thief = Client(live_as, confidential=thief_confidential)
    code, verifier = Person(live_as).code_for(owner)

    stolen = thief.token(code_grant(code, verifier))
    assert_oauth_error(stolen, 400, "invalid_grant")
    assert count(live_as, Grant) == 0 and count(live_as, AccessToken) == 0
    assert count(live_as, AuthorizationCode, AuthorizationCode.redeemed_at.is_not(None)) == 0

    mine = owner.token(code_grant(code, verifier))
    assert mine.status_code == 200, mine.text
    assert claims_of(mine.json()["access_token"])["client_id"] == owner.client_id


# -- S-T3: expired code --

def test_S_T3_expired_code_is_invalid_grant(live_as):
    client = Client(live_as)
    user = Person(live_as)
    early, early_verifier = user.code_for(client)
    late, late_verifier = user.code_for(client)

    timeutil.travel(timedelta(minutes=9))
    assert client.token(code_grant(early, early_verifier)).status_code == 200

    timeutil.travel(timedelta(minutes=2))  # 11 minutes after issue
    expired = client.token(code_grant(late, late_verifier))
    assert_oauth_error(expired, 400, "invalid_grant")
    assert count(live_as, Grant) == 1
    with live_as.ctx.sessions() as session:
        row = session.scalar(select(AuthorizationCode).where(AuthorizationCode.code_hash == token_hash(late)))
        assert row.redeemed_at is None and row.grant_id is None
        assert row.expires_at - row.created_at <= timedelta(minutes=10)


# -- S-T4: PKCE verifier --

VERIFIER_CASES = {
    "missing": (lambda v, c: None, "invalid_request"),
    "empty": (lambda v, c: "", "invalid_request"),
    "wrong": (lambda v, c: pkce_pair()[0], "invalid_grant"),
    "challenge-as-verifier": (lambda v, c: c, "invalid_grant"),
    "too-short": (lambda v, c: v[:42], "invalid_request"),
    "too-long": (lambda v, c: (v * 3)[:129], "invalid_request"),
    "bad-charset": (lambda v, c: v[:40] + "+/=", "invalid_request"),
    "space": (lambda v, c: v[:30] + " " + v[31:], "invalid_request"),
    "non-ascii": (lambda v, c: v[:42] + "é", "invalid_request"),
}


@pytest.mark.parametrize("confidential", [False, True], ids=["public", "confidential"])
@pytest.mark.parametrize("case", list(VERIFIER_CASES), ids=list(VERIFIER_CASES))
def test_S_T4_bad_code_verifier_is_rejected(live_as, case, confidential):
    client = Client(live_as, confidential=confidential)
    verifier, challenge = pkce_pair()
    user = Person(live_as)
    result = authorize(user.browser, client_id=client.client_id, redirect_uri=REDIRECT, challenge=challenge,
                       username=user.username, password=user.password)
    assert result.code
    make, error = VERIFIER_CASES[case]

    response = client.token(code_grant(result.code, make(verifier, challenge)))
    assert_oauth_error(response, 400, error)
    assert count(live_as, Grant) == 0 and count(live_as, AccessToken) == 0 and count(live_as, RefreshToken) == 0

    # the same request with the right verifier works: the refusal was about the verifier alone
    assert client.token(code_grant(result.code, verifier)).status_code == 200


@pytest.mark.parametrize("send_verifier", [True, False], ids=["with-verifier", "without-verifier"])
def test_S_T4_verifier_for_a_code_without_challenge_is_rejected(live_as, send_verifier):
    """Codes always carry a challenge here; a row without one (PKCE downgrade) must not redeem."""
    client = Client(live_as)
    Person(live_as)
    code = "downgrade-" + "x" * 40
    with live_as.ctx.unit_of_work() as session:
        user_id = session.scalar(select(User.id))
        now = utcnow()
        session.add(AuthorizationCode(
            code_hash=token_hash(code), client_id=client.client_id, user_id=user_id, redirect_uri=REDIRECT,
            redirect_uri_sent=True, scope="notes:read", resource=live_as.resource, code_challenge="",
            code_challenge_method="", auth_time=now, created_at=now, expires_at=now + timedelta(minutes=5),
        ))
    verifier = pkce_pair()[0] if send_verifier else None
    response = client.token(code_grant(code, verifier))
    assert_oauth_error(response, 400, "invalid_request")
    assert count(live_as, Grant) == 0 and count(live_as, AccessToken) == 0


# -- S-T5: redirect URI and resource binding --

@pytest.mark.parametrize(
    "authorized_with, redeemed_with",
    [
        (REDIRECT, OTHER_REDIRECT),
        (REDIRECT, None),
        (REDIRECT, REDIRECT + "/"),
        (REDIRECT, "http://127.0.0.1:10/callback"),
        (REDIRECT, "http://localhost:9/callback"),
        (REDIRECT, "https://evil.example/callback"),
        (None, OTHER_REDIRECT),
    ],
    ids=["other-registered", "omitted", "trailing-slash", "other-loopback-port", "other-loopback-host", "unregistered",
         "not-sent-then-other"],
)
def test_S_T5_redirect_uri_must_equal_authorization_request(live_as, authorized_with, redeemed_with):
    registered = [REDIRECT] if authorized_with is None else [REDIRECT, OTHER_REDIRECT]
    client = Client(live_as, redirect_uris=registered)
    code, verifier = Person(live_as).code_for(client, redirect_uri=authorized_with)

    response = client.token(code_grant(code, verifier, redirect_uri=redeemed_with))
    assert_oauth_error(response, 400, "invalid_grant")
    assert count(live_as, Grant) == 0

    assert client.token(code_grant(code, verifier, redirect_uri=authorized_with)).status_code == 200


@pytest.mark.parametrize("kind", ["not-served", "relative", "with-fragment", "other-path", "trailing-garbage", "two",
                                  "non-ascii", "quote", "backslash"])
def test_S_T5_resource_not_granted_is_invalid_target(live_as, kind):
    client = Client(live_as)
    code, verifier = Person(live_as).code_for(client, resource=live_as.resource)
    requested = {
        "not-served": "https://other.example/mcp",
        "relative": "/mcp",
        "with-fragment": live_as.resource + "#x",
        "other-path": live_as.base_url + "/admin",
        "trailing-garbage": live_as.resource + "x",
        "two": [live_as.resource, "https://other.example/mcp"],
        "non-ascii": "https://other.example/é",
        "quote": 'https://other.example/"x"',
        "backslash": "https://other.example/a\\b",
    }[kind]

    response = client.token(code_grant(code, verifier, resource=requested))
    assert_oauth_error(response, 400, "invalid_target")
    assert count(live_as, Grant) == 0 and count(live_as, AccessToken) == 0

    assert client.token(code_grant(code, verifier, resource=live_as.resource)).status_code == 200


@pytest.mark.parametrize("send_resource", [True, False], ids=["resource-sent", "resource-omitted"])
def test_S_T5_access_token_audience_is_the_granted_resource(live_as, send_resource):
    client = Client(live_as, confidential=True)
    code, verifier = Person(live_as).code_for(client, resource=live_as.resource, scope="notes:read")
    extra = {"resource": live_as.resource} if send_resource else {}
    response = client.token(code_grant(code, verifier, **extra))
    assert response.status_code == 200, response.text
    claims = claims_of(response.json()["access_token"])
    assert claims["aud"] == live_as.resource
    assert claims["scope"] == "notes:read"
    assert client.introspect(response.json()["access_token"])["aud"] == live_as.resource
    with live_as.ctx.sessions() as session:
        assert session.scalar(select(Grant.resource)) == live_as.resource


# -- S-T6: Cache-Control: no-store on every token response --

def _success(live_as):
    client = Client(live_as)
    code, verifier = Person(live_as).code_for(client)
    return client.token(code_grant(code, verifier)), 200, None


def _refresh_success(live_as):
    client = Client(live_as)
    code, verifier = Person(live_as).code_for(client)
    tokens = client.token(code_grant(code, verifier)).json()
    return client.token({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}), 200, None


def _client_credentials_success(live_as):
    client = Client(live_as, confidential=True, grant_types=["client_credentials"], redirect_uris=None)
    return client.token({"grant_type": "client_credentials"}), 200, None


def _invalid_grant(live_as):
    return Client(live_as).token(code_grant("no-such-code", pkce_pair()[0])), 400, "invalid_grant"


def _invalid_client(live_as):
    client = Client(live_as, confidential=True)
    return live_as.post_token(code_grant("x", pkce_pair()[0]), auth=(client.client_id, "wrong")), 401, "invalid_client"


def _unsupported_grant_type(live_as):
    return live_as.post_token({"grant_type": "password", "username": "a", "password": "b"}), 400, "unsupported_grant_type"


def _json_body(live_as):
    return httpx2.post(f"{live_as.base_url}/token", json={"grant_type": "client_credentials"}), 400, "invalid_request"


def _too_large(live_as):
    return live_as.post_token({"grant_type": "client_credentials", "pad": "x" * (live_as.settings.max_body_bytes + 1)}), 413, None


S_T6_CASES = {
    "authorization-code-success": _success,
    "refresh-success": _refresh_success,
    "client-credentials-success": _client_credentials_success,
    "invalid-grant": _invalid_grant,
    "invalid-client": _invalid_client,
    "unsupported-grant-type": _unsupported_grant_type,
    "json-body": _json_body,
    "too-large": _too_large,
}


@pytest.mark.parametrize("case", list(S_T6_CASES.values()), ids=list(S_T6_CASES))
def test_S_T6_token_responses_are_not_cached(live_as, case):
    response, status, error = case(live_as)
    assert response.status_code == status, response.text
    assert_no_store(response)
    assert response.headers["content-type"].startswith("application/json")
    if status == 200:
        assert response.json()["token_type"] == "Bearer" and response.json()["access_token"]
    elif error:
        assert response.json()["error"] == error


# -- S-T7: failed client authentication is rate-limited --

THRESHOLD = 3
LOW_LIMIT = pytest.mark.parametrize("as_overrides", [{"failed_client_auth_per_minute": THRESHOLD}], ids=["limit3"])
WINDOW_START = 1_800_000_000.0  # a multiple of 60: one of the limiter's windows starts here
# 3 failures 10 s into a window: the next attempt fits once the sliding estimate
# 3 * (1 - elapsed / 60) + 0 + 1 <= 3, i.e. 20 s into the next window, 70 s later
RETRY_AFTER = 70


@pytest.fixture
def frozen_limiter_clock(monkeypatch):
    """The rate limiter's wall clock, frozen 10 s into a window (no flakiness at a minute boundary)."""
    clock = SimpleNamespace(now=WINDOW_START + 10)
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: clock.now))
    return clock


def static_client(live_as, client_id: str, method: str = "client_secret_basic") -> str:
    with live_as.ctx.unit_of_work() as session:
        _, secret, _ = store_client(
            session, KIND_STATIC,
            {"client_name": client_id, "redirect_uris": [], "grant_types": ["client_credentials"],
             "token_endpoint_auth_method": method},
            client_id=client_id, with_secret=True,
        )
    return secret


def basic(client_id: str, secret: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def cc_basic(live_as, client_id: str, secret: str) -> httpx2.Response:
    return live_as.post_token({"grant_type": "client_credentials"}, headers=basic(client_id, secret))


def cc_post(live_as, client_id: str, secret: str) -> httpx2.Response:
    return live_as.post_token({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})


def assert_rate_limited(response: httpx2.Response, retry_after: int = RETRY_AFTER) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    assert response.json()["error"] == "temporarily_unavailable"
    assert f"retry after {retry_after} seconds" in response.json()["error_description"]
    assert "access_token" not in response.json()
    assert_no_store(response)


@LOW_LIMIT
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_S_T7_repeated_bad_client_secrets_are_rate_limited(live_as, as_overrides, frozen_limiter_clock, method):
    send = cc_basic if method == "client_secret_basic" else cc_post
    victim = Client(live_as, grant_types=["client_credentials"], redirect_uris=None, token_endpoint_auth_method=method)
    bystander = Client(live_as, grant_types=["client_credentials"], redirect_uris=None, token_endpoint_auth_method=method)

    for attempt in range(THRESHOLD):
        assert_oauth_error(send(live_as, victim.client_id, f"guess-{attempt}"), 401, "invalid_client")
    assert_rate_limited(send(live_as, victim.client_id, "guess-again"))
    # the limit holds even for the right secret until Retry-After has passed ...
    assert_rate_limited(send(live_as, victim.client_id, victim.secret))
    # ... and it is per client: another client from the same address is not affected
    assert send(live_as, bystander.client_id, bystander.secret).status_code == 200
    assert count(live_as, Grant, Grant.client_id == victim.client_id) == 0

    frozen_limiter_clock.now += RETRY_AFTER - 1
    assert_rate_limited(send(live_as, victim.client_id, victim.secret), retry_after=1)
    frozen_limiter_clock.now += 1
    assert send(live_as, victim.client_id, victim.secret).status_code == 200


@LOW_LIMIT
def test_S_T7_varying_the_secret_does_not_escape_the_limit(live_as, as_overrides, frozen_limiter_clock):
    """A short client_id: the secret must not become part of what the limiter counts by."""
    secret = static_client(live_as, "svc")
    for attempt in range(THRESHOLD):
        assert_oauth_error(cc_basic(live_as, "svc", f"{attempt}-guess-{attempt}"), 401, "invalid_client")
    assert_rate_limited(cc_basic(live_as, "svc", "zzzz-another-guess"))
    assert_rate_limited(cc_basic(live_as, "svc", secret))


@LOW_LIMIT
def test_S_T7_clients_with_a_common_prefix_are_counted_apart(live_as, as_overrides, frozen_limiter_clock):
    attacked = "integration-partner-alpha"
    static_client(live_as, attacked)
    neighbour_secret = static_client(live_as, "integration-partner-beta")
    for attempt in range(THRESHOLD + 1):
        cc_basic(live_as, attacked, f"guess-{attempt}")
    assert_rate_limited(cc_basic(live_as, attacked, "guess"))
    assert cc_basic(live_as, "integration-partner-beta", neighbour_secret).status_code == 200


# -- bad input: 4xx OAuth errors, never 500 --

def _post(live_as, **kwargs) -> httpx2.Response:
    return httpx2.post(f"{live_as.base_url}/token", **kwargs)


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/json", json.dumps({"grant_type": "client_credentials", "client_id": "x"})),
        ("text/plain", "grant_type=client_credentials&client_id=x"),
        ("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\nclient_credentials\r\n--b--\r\n"),
        (None, "grant_type=client_credentials&client_id=x"),
    ],
    ids=["json", "text-plain", "multipart", "no-content-type"],
)
def test_token_bad_input_wrong_content_type_is_invalid_request(live_as, content_type, body):
    headers = {"Content-Type": content_type} if content_type else {}
    response = _post(live_as, content=body.encode(), headers=headers)
    assert_oauth_error(response, 400, "invalid_request")


def test_token_bad_input_oversized_body_is_413(live_as):
    client = Client(live_as)
    limit = live_as.settings.max_body_bytes
    declared = live_as.post_token({"grant_type": "authorization_code", "client_id": client.client_id, "code": "x" * (limit + 1)})
    assert declared.status_code == 413, declared.text
    assert declared.json()["error"] == "invalid_request"
    assert_no_store(declared)

    def chunks():  # no Content-Length: the limit must hold while reading the stream
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024

    streamed = _post(live_as, content=chunks(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"] == "invalid_request"

    exactly = live_as.post_token({"grant_type": "password", "pad": "x" * (limit - 100)})
    assert exactly.status_code == 400 and exactly.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("grant_type", ["password", "implicit", "token", "urn:ietf:params:oauth:grant-type:device_code",
                                        "AUTHORIZATION_CODE", "", "passwörd", "pass\"word"])
def test_token_bad_input_unknown_grant_type_is_unsupported(live_as, grant_type):
    client = Client(live_as)
    response = client.token({"grant_type": grant_type, "username": "alice", "password": "x"})
    assert_oauth_error(response, 400, "unsupported_grant_type")


def test_token_bad_input_missing_grant_type(live_as):
    client = Client(live_as)
    response = client.token({"code": "x"})
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_request", "unsupported_grant_type")
    assert_no_store(response)


@pytest.mark.parametrize("repeated", ["grant_type", "code", "client_id", "code_verifier", "redirect_uri"])
def test_token_bad_input_repeated_parameter_is_invalid_request(live_as, repeated):
    client = Client(live_as)
    code, verifier = Person(live_as).code_for(client)
    data = code_grant(code, verifier, client_id=client.client_id)
    pairs = list(data.items()) + [(repeated, data[repeated])]
    response = _post(live_as, content=urlencode(pairs).encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(response, 400, "invalid_request")
    assert count(live_as, Grant) == 0
    # the well-formed request is fine
    assert client.token(code_grant(code, verifier)).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + base64.b64encode(b"\xff\xfe:secret").decode(),
        "Basic " + base64.b64encode(b"client:\xff").decode(),
        "Basic !!!not-base64",
        "Basic",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":").decode(),
        "Bearer abc",
    ],
    ids=["non-utf8-id", "non-utf8-secret", "not-base64", "empty", "no-colon", "empty-id-and-secret", "bearer"],
)
def test_token_bad_input_malformed_basic_auth_is_invalid_client(live_as, authorization):
    response = _post(live_as, data={"grant_type": "client_credentials"}, headers={"Authorization": authorization})
    assert response.status_code in (400, 401), response.text
    body = response.json()
    assert body["error"] in ("invalid_client", "invalid_request")
    assert_no_store(response)


@pytest.mark.parametrize(
    "client_id",
    ["no-such-client", "https://127.0.0.1:1/é.json", 'https://127.0.0.1:1/"x".json', "x" * 300, "x" * 5000],
    ids=["unknown", "metadata-url-non-ascii", "metadata-url-quote", "long", "huge"],
)
def test_token_bad_input_unknown_client_is_invalid_client(live_as, client_id):
    response = live_as.post_token(code_grant("some-code", pkce_pair()[0], client_id=client_id))
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == "invalid_client"
    assert_no_store(response)


def test_token_bad_input_non_utf8_body_is_invalid_request(live_as):
    response = _post(live_as, content=b"grant_type=client_credentials&client_id=\xff\xfe",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(response, 400, "invalid_request")


def test_token_bad_input_get_is_not_allowed(live_as):
    response = httpx2.get(f"{live_as.base_url}/token?grant_type=client_credentials")
    assert response.status_code == 405


def test_issued_tokens_never_reach_the_logs(live_as, caplog):
    """Authlib logs each issued token at DEBUG; the AS drops those records (a log is not a secret store)."""
    caplog.set_level(logging.DEBUG)
    token, _ = live_as.machine_token(f"{live_as.base_url}/mcp", "notes:read")
    assert caplog.records, "DEBUG logging was on"
    assert token not in caplog.text
