"""The upstream fixtures work for real (issue 6; UP-1, UP-3, S-U2, S-U3, S-U4 rely on them).

Each test drives a fixture the way Gatehouse's AS will: over HTTP on loopback, with PKCE, a real
login form, and ID tokens checked with joserfc against the provider's published JWKS.
"""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet

from tests.upstream.browser_steps import UpstreamSignInFailed, sign_in_upstream
from tests.upstream.tampering_op import DEFECTS

CALLBACK = "http://127.0.0.1:9/login/upstream/google/callback"
SCOPE = "openid email profile offline_access calendar.read"


def authorization_request(endpoint: str, client_id: str, redirect_uri: str, scope: str, **extra) -> tuple[str, dict]:
    """An RFC 6749 section 4.1.1 request with PKCE S256 (RFC 7636) and an OIDC nonce."""
    secrets_used = {"state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16),
                    "code_verifier": secrets.token_urlsafe(48)}
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
        "state": secrets_used["state"], "nonce": secrets_used["nonce"],
        "code_challenge": create_s256_code_challenge(secrets_used["code_verifier"]), "code_challenge_method": "S256",
        **extra,
    }
    return f"{endpoint}?{urlencode(params)}", secrets_used


def callback_params(url: str) -> dict:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def published_keys(issuer: str) -> KeySet:
    metadata = httpx2.get(f"{issuer}/.well-known/openid-configuration").json()
    return KeySet.import_key_set(httpx2.get(metadata["jwks_uri"]).json())


def verify_id_token(id_token: str, issuer: str, client_id: str, nonce: str) -> dict:
    """OpenID Connect Core 1.0 section 3.1.3.7: signature, iss, aud, exp, nonce."""
    token = jwt.decode(id_token, published_keys(issuer), algorithms=["RS256"])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer}, aud={"essential": True, "value": client_id},
        exp={"essential": True}, nonce={"essential": True, "value": nonce},
    ).validate(token.claims)
    return token.claims


def sign_in_at_op(op, username: str = "alice", scope: str = SCOPE, **extra) -> tuple[dict, dict]:
    """Authorize at the upstream OP as ``username``, exchange the code; the token response and secrets."""
    account = op.account(username)
    url, used = authorization_request(op.authorization_endpoint, op.client_id, CALLBACK, scope, **extra)
    with httpx2.Client(timeout=30) as browser:
        back = callback_params(sign_in_upstream(browser, url, account.username, account.password, until=CALLBACK))
    assert back["state"] == used["state"]
    assert back["iss"] == op.issuer, "RFC 9207 iss in the authorization response"
    response = httpx2.post(op.token_endpoint, data={
        "grant_type": "authorization_code", "code": back["code"], "redirect_uri": CALLBACK,
        "code_verifier": used["code_verifier"]}, auth=(op.client_id, op.client_secret), timeout=30)
    assert response.status_code == 200, response.text
    return response.json(), used


def refresh(op, refresh_token: str) -> httpx2.Response:
    return httpx2.post(op.token_endpoint, data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                       auth=(op.client_id, op.client_secret), timeout=30)


# --- the certified upstream OpenID Provider ---------------------------------------------------


def test_upstream_op_code_flow_pkce_nonce_refresh_and_calendar_api(upstream_oidc, calendar_api):
    """UP-1 and UP-3 shape: login form, code + PKCE, a verified ID token, refresh, then the
    upstream access token opens the calendar API while another token does not (S-U4 shape)."""
    op = upstream_oidc([CALLBACK])
    tokens, used = sign_in_at_op(op)
    alice = op.account("alice")

    claims = verify_id_token(tokens["id_token"], op.issuer, op.client_id, used["nonce"])
    assert (claims["sub"], claims["email"], claims["email_verified"], claims["name"]) == (
        alice.sub, alice.email, True, alice.name)
    assert set(tokens["scope"].split()) == set(SCOPE.split())
    assert tokens["refresh_token"], "offline_access asks for a refresh token (without prompt=consent too)"
    introspection = op.introspect(tokens["access_token"])
    assert introspection["active"] is True and introspection["sub"] == alice.sub
    assert "calendar.read" in introspection["scope"].split()

    userinfo = httpx2.get(op.metadata()["userinfo_endpoint"],
                          headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=30)
    assert userinfo.status_code == 200 and userinfo.json()["email"] == alice.email

    refreshed = refresh(op, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    access_token = refreshed.json()["access_token"]
    assert access_token != tokens["access_token"]
    assert [r["grant_type"] for r in op.token_requests] == ["authorization_code", "refresh_token"]
    assert {r["client_auth"] for r in op.token_requests} == {"client_secret_basic"}

    api = calendar_api(op)
    events = httpx2.get(api.events_url, headers={"Authorization": f"Bearer {access_token}"}, timeout=30)
    assert events.status_code == 200, events.text
    assert events.json()["kind"] == "calendar#events" and events.json()["summary"] == alice.email
    assert [e["summary"] for e in events.json()["items"]][0] == "Alice's standup"

    stranger = httpx2.get(api.events_url, headers={"Authorization": "Bearer not-an-upstream-token"}, timeout=30)
    assert stranger.status_code == 401
    assert 'error="invalid_token"' in stranger.headers["www-authenticate"]
    assert api.received_tokens == [access_token, "not-an-upstream-token"]


def test_calendar_api_needs_the_calendar_scope(upstream_oidc, calendar_api):
    op = upstream_oidc([CALLBACK])
    tokens, _ = sign_in_at_op(op, scope="openid email")
    response = httpx2.get(calendar_api(op).events_url, headers={"Authorization": f"Bearer {tokens['access_token']}"},
                          timeout=30)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_revoke_user_kills_refresh_and_access_tokens(upstream_oidc, calendar_api):
    """The user removes the app at the provider: refresh answers invalid_grant, the API says 401."""
    op = upstream_oidc([CALLBACK])
    tokens, _ = sign_in_at_op(op)
    bob_tokens, _ = sign_in_at_op(op, "bob")
    api = calendar_api(op)

    assert op.revoke_user(op.account("alice").sub)["grants"] == 1
    answer = refresh(op, tokens["refresh_token"])
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    assert op.introspect(tokens["access_token"]) == {"active": False}
    events = httpx2.get(api.events_url, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=30)
    assert events.status_code == 401
    assert refresh(op, bob_tokens["refresh_token"]).status_code == 200, "other users keep their access"


def test_token_endpoint_errors_on_demand(upstream_oidc):
    op = upstream_oidc([CALLBACK])
    tokens, _ = sign_in_at_op(op)
    op.fail_token_endpoint(503, times=2)
    op.fail_token_endpoint("invalid_grant")
    first, second = refresh(op, tokens["refresh_token"]), refresh(op, tokens["refresh_token"])
    assert (first.status_code, second.status_code) == (503, 503)
    assert "text/html" in first.headers["content-type"]
    third = refresh(op, tokens["refresh_token"])
    assert (third.status_code, third.json()["error"]) == (400, "invalid_grant")
    assert refresh(op, tokens["refresh_token"]).status_code == 200, "failures are used up, the token still works"
    assert [(r["status"], r["injected"]) for r in op.token_requests[1:]] == [
        (503, True), (503, True), (400, True), (200, False)]


def test_stop_refuses_connections_and_start_comes_back_with_the_same_grants(upstream_oidc):
    op = upstream_oidc([CALLBACK])
    tokens, _ = sign_in_at_op(op)
    issuer = op.issuer
    op.stop()
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{issuer}/.well-known/openid-configuration", timeout=10)
    op.start()
    assert op.issuer == issuer
    assert op.metadata()["issuer"] == issuer
    assert refresh(op, tokens["refresh_token"]).status_code == 200


def test_login_form_rejects_a_wrong_password(upstream_oidc):
    op = upstream_oidc([CALLBACK])
    url, _ = authorization_request(op.authorization_endpoint, op.client_id, CALLBACK, "openid")
    with httpx2.Client(timeout=30) as browser, pytest.raises(UpstreamSignInFailed, match="Wrong username or password"):
        sign_in_upstream(browser, url, "alice", "not-her-password", until=CALLBACK)


def test_cancel_at_the_login_page_returns_access_denied(upstream_oidc):
    op = upstream_oidc([CALLBACK])
    url, used = authorization_request(op.authorization_endpoint, op.client_id, CALLBACK, "openid")
    with httpx2.Client(timeout=30, follow_redirects=True) as browser:
        login_page = browser.get(url)
        assert 'name="password"' in login_page.text
        cancelled = browser.get(str(login_page.url) + "/abort", follow_redirects=False)
        while not cancelled.headers["location"].startswith(CALLBACK):
            cancelled = browser.get(cancelled.headers["location"], follow_redirects=False)
    back = callback_params(cancelled.headers["location"])
    assert (back["error"], back["state"]) == ("access_denied", used["state"])


def test_a_live_upstream_session_comes_back_without_the_login_form(upstream_oidc):
    """The provider remembers the browser (as Google does), the setting of S-U1's confused deputy."""
    op = upstream_oidc([CALLBACK])
    alice = op.account("alice")
    with httpx2.Client(timeout=30) as browser:
        first_url, _ = authorization_request(op.authorization_endpoint, op.client_id, CALLBACK, "openid")
        sign_in_upstream(browser, first_url, alice.username, alice.password, until=CALLBACK)
        again_url, again = authorization_request(op.authorization_endpoint, op.client_id, CALLBACK, "openid email")
        # A wrong password proves no form was shown: sign_in_upstream would have submitted it and failed.
        back = callback_params(sign_in_upstream(browser, again_url, alice.username, "wrong", until=CALLBACK))
    assert back["state"] == again["state"] and "code" in back


def test_access_type_offline_gets_a_refresh_token_and_client_secret_post_works(upstream_oidc):
    """Google's way (``access_type=offline``, no offline_access scope), with client_secret_post."""
    op = upstream_oidc([CALLBACK], token_endpoint_auth_method="client_secret_post")
    account = op.account("bob")
    url, used = authorization_request(op.authorization_endpoint, op.client_id, CALLBACK, "openid email calendar.read",
                                      access_type="offline", prompt="consent")
    with httpx2.Client(timeout=30) as browser:
        back = callback_params(sign_in_upstream(browser, url, account.email, account.password, until=CALLBACK))
    response = httpx2.post(op.token_endpoint, data={
        "grant_type": "authorization_code", "code": back["code"], "redirect_uri": CALLBACK,
        "code_verifier": used["code_verifier"], "client_id": op.client_id, "client_secret": op.client_secret},
        timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"]
    assert op.token_requests[0]["client_auth"] == "client_secret_post"


def test_pkce_is_required(upstream_oidc):
    op = upstream_oidc([CALLBACK])
    params = {"response_type": "code", "client_id": op.client_id, "redirect_uri": CALLBACK, "scope": "openid",
              "state": "s"}
    response = httpx2.get(f"{op.authorization_endpoint}?{urlencode(params)}", timeout=30)
    back = callback_params(response.headers["location"])
    assert back["error"] == "invalid_request" and "PKCE" in back["error_description"]


# --- the GitHub stand-in ----------------------------------------------------------------------


def github_code(standin, redirect_uri: str, scope: str = "read:user user:email") -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    params = {"client_id": standin.client_id, "redirect_uri": redirect_uri, "scope": scope, "state": "st-1",
              "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"}
    octocat = standin.account("octocat")
    with httpx2.Client(timeout=30) as browser:
        back = callback_params(sign_in_upstream(browser, f"{standin.authorize_url}?{urlencode(params)}",
                                                octocat.login, octocat.password, until=redirect_uri))
    assert back["state"] == "st-1"
    return back["code"], verifier


def test_github_standin_web_flow_user_and_emails(github_standin):
    callback = "http://127.0.0.1:9/login/upstream/github/callback"
    github_standin.callback_url = callback
    code, verifier = github_code(github_standin, callback)
    exchange = {"client_id": github_standin.client_id, "client_secret": github_standin.client_secret, "code": code,
                "redirect_uri": callback, "code_verifier": verifier}
    answer = httpx2.post(github_standin.token_url, data=exchange, headers={"Accept": "application/json"}, timeout=30)
    assert answer.status_code == 200
    token = answer.json()
    assert token["token_type"] == "bearer" and token["scope"] == "read:user,user:email"
    assert token["access_token"].startswith("gho_") and "refresh_token" not in token

    reused = httpx2.post(github_standin.token_url, data=exchange, timeout=30)
    assert reused.status_code == 200, "GitHub reports token errors with HTTP 200"
    assert reused.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(reused.text)["error"] == ["bad_verification_code"]

    headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/vnd.github+json"}
    user = httpx2.get(f"{github_standin.api_base}/user", headers=headers, timeout=30).json()
    assert (user["id"], user["login"], user["name"]) == (583231, "octocat", "The Octocat")
    emails = httpx2.get(f"{github_standin.api_base}/user/emails", headers=headers, timeout=30).json()
    assert [e["email"] for e in emails if e["primary"] and e["verified"]] == ["octocat@example.com"]

    assert github_standin.revoke_user("octocat") == 1
    gone = httpx2.get(f"{github_standin.api_base}/user", headers=headers, timeout=30)
    assert (gone.status_code, gone.json()["message"]) == (401, "Bad credentials")


def test_github_standin_rejects_wrong_secret_verifier_and_redirect(github_standin):
    callback = "http://127.0.0.1:9/cb"
    github_standin.callback_url = callback
    code, verifier = github_code(github_standin, callback)
    base = {"client_id": github_standin.client_id, "code": code, "code_verifier": verifier}
    wrong_secret = httpx2.post(github_standin.token_url, json={**base, "client_secret": "nope"},
                               headers={"Accept": "application/json"}, timeout=30)
    assert wrong_secret.json()["error"] == "incorrect_client_credentials"
    wrong_verifier = httpx2.post(github_standin.token_url, auth=(github_standin.client_id, github_standin.client_secret),
                                 data={**base, "code_verifier": "x" * 43}, headers={"Accept": "application/json"},
                                 timeout=30)
    assert wrong_verifier.json()["error"] == "bad_verification_code"

    elsewhere = {"client_id": github_standin.client_id, "redirect_uri": "http://127.0.0.1:9/evil", "state": "s"}
    mismatch = httpx2.get(f"{github_standin.authorize_url}?{urlencode(elsewhere)}", timeout=30)
    assert mismatch.headers["location"].startswith(callback)
    assert callback_params(mismatch.headers["location"])["error"] == "redirect_uri_mismatch"


# --- the deliberately misbehaving OpenID Provider (S-U3) --------------------------------------

EXPECTED_FAILURE = {
    "wrong_iss": (InvalidClaimError, "iss"),
    "wrong_aud": (InvalidClaimError, "aud"),
    "wrong_nonce": (InvalidClaimError, "nonce"),
    "missing_nonce": (MissingClaimError, "nonce"),
    "expired": (ExpiredTokenError, None),
    "bad_signature": (BadSignatureError, None),
    "none_alg": (UnsupportedAlgorithmError, None),
}


@pytest.mark.parametrize("defect", [None, *DEFECTS])
def test_tampering_op_produces_each_defect(tampering_op, defect):
    """S-U3: each defect fails exactly the check it targets; ``None`` passes them all."""
    assert set(EXPECTED_FAILURE) == set(DEFECTS)
    tampering_op.defect = defect
    callback = "http://127.0.0.1:9/login/upstream/tampered/callback"
    url, used = authorization_request(f"{tampering_op.issuer}/authorize", tampering_op.client_id, callback, "openid email")
    redirect = httpx2.get(url, timeout=30)
    back = callback_params(redirect.headers["location"])
    assert back["state"] == used["state"]
    response = httpx2.post(f"{tampering_op.issuer}/token", data={
        "grant_type": "authorization_code", "code": back["code"], "redirect_uri": callback,
        "code_verifier": used["code_verifier"]}, auth=(tampering_op.client_id, tampering_op.client_secret), timeout=30)
    assert response.status_code == 200, response.text
    id_token = response.json()["id_token"]
    if defect is None:
        claims = verify_id_token(id_token, tampering_op.issuer, tampering_op.client_id, used["nonce"])
        assert claims["nonce"] == used["nonce"] and claims["sub"] == tampering_op.account.sub
        return
    error, claim = EXPECTED_FAILURE[defect]
    with pytest.raises(error, match=claim):
        verify_id_token(id_token, tampering_op.issuer, tampering_op.client_id, used["nonce"])


def test_tampering_op_refuses_an_unknown_defect(tampering_op):
    with pytest.raises(ValueError, match="unknown defect"):
        tampering_op.defect = "wrong_everything"
