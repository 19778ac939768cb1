"""RFC 8693 token exchange at the real AS: the one way an upstream token leaves Gatehouse (UP-3).

A person signs in with the upstream "Google" (oidc-provider) over HTTP; the vault holds their
Google tokens; the calendar resource server exchanges the person's MCP access token for the
Google access token. Everything else is refused, each with its own error and description.
"""

from __future__ import annotations

import httpx2
import pytest

from gatehouse.authserver.metadata import authorization_server_metadata
from gatehouse.authserver.token_exchange import TOKEN_EXCHANGE
from gatehouse.authserver.users import create_user
from gatehouse.client.dpop import generate_key, make_proof
from tests.support.browser import Browser, authorize, pkce_pair
from tests.upstream_vault.conftest import OTHER_RESOURCE, token_exchange

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


def test_UP3_the_resource_server_gets_the_users_upstream_token(federation):
    tokens = federation.sign_in("alice")
    rs = federation.register_resource_server(federation.calendar_resource)

    response = token_exchange(federation, rs, tokens["access_token"], requested_token_type=ACCESS_TOKEN_TYPE)

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    stored = federation.vault_tokens("alice")
    assert body["access_token"] == stored["access_token"] and body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer" and 3000 < body["expires_in"] <= 3600
    assert set(body["scope"].split()) >= {"openid", "calendar.read"}
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}  # never a refresh or ID token
    introspected = federation.op.introspect(body["access_token"])
    assert introspected["active"] and introspected["sub"] == federation.op.account("alice").sub
    # the MCP client itself got its own token, nothing of Google's
    assert stored["access_token"] not in str(tokens) and stored["refresh_token"] not in str(tokens)

    [event] = federation.audit_events("token.exchanged")
    assert (event["client_id"], event["user_id"], event["provider"], event["resource"]) == (
        rs[0], federation.user_id("alice"), "google", federation.calendar_resource)
    audit = federation.audit_text()
    assert stored["access_token"] not in audit and stored["refresh_token"] not in audit and tokens["access_token"] not in audit

    metadata = httpx2.get(f"{federation.base_url}/.well-known/oauth-authorization-server").json()
    assert TOKEN_EXCHANGE in metadata["grant_types_supported"]


def test_the_grant_is_advertised_only_with_upstream_providers():
    without = authorization_server_metadata("https://as.example", [])
    with_upstreams = authorization_server_metadata("https://as.example", [], token_exchange=True)
    assert TOKEN_EXCHANGE not in without["grant_types_supported"]
    assert TOKEN_EXCHANGE in with_upstreams["grant_types_supported"]


def test_UP3_only_the_resource_server_of_the_tokens_own_resource_gets_it(federation):
    """A resource server registered for another resource, a subject token for another audience,
    and clients that are no resource server at all are refused; no upstream token is in any answer."""
    calendar_token = federation.sign_in("alice")["access_token"]
    other_token = federation.sign_in("alice", resource=OTHER_RESOURCE)["access_token"]
    calendar_rs = federation.register_resource_server(federation.calendar_resource)
    other_rs = federation.register_resource_server(OTHER_RESOURCE)
    machine = federation.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                                         redirect_uris=None)
    answers = {
        "rs for another resource": token_exchange(federation, other_rs, calendar_token),
        "subject token for another audience": token_exchange(federation, calendar_rs, other_token),
        "not a resource server": token_exchange(federation, (machine["client_id"], machine["client_secret"]), calendar_token),
        "wrong secret": token_exchange(federation, (calendar_rs[0], "not-the-secret"), calendar_token),
    }

    def refusal(name):
        response = answers[name]
        return response.status_code, response.json()["error"], response.json()["error_description"]

    assert refusal("rs for another resource") == (
        400, "invalid_request",
        f"the subject_token was issued for {federation.calendar_resource}, not for {OTHER_RESOURCE}, "
        "the resource this resource server is registered for")
    assert refusal("subject token for another audience")[:2] == (400, "invalid_request")
    assert f"issued for {OTHER_RESOURCE}, not for {federation.calendar_resource}" in refusal("subject token for another audience")[2]
    assert refusal("not a resource server")[:2] == (400, "unauthorized_client")
    assert "gatehouse clients add --resource-server" in refusal("not a resource server")[2]
    assert refusal("wrong secret")[:2] == (401, "invalid_client")

    upstream = federation.vault_tokens("alice")["access_token"]
    assert all(upstream not in r.text for r in answers.values())
    reasons = [e["reason"] for e in federation.audit_events("token.exchange_refused")]
    assert reasons == ["subject token for another resource", "subject token for another resource"]


def test_subject_tokens_that_are_not_a_live_users_token_are_refused(federation):
    tokens = federation.sign_in("alice")
    rs = federation.register_resource_server(federation.calendar_resource)
    machine = federation.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                                         redirect_uris=None)
    machine_token = httpx2.post(f"{federation.base_url}/token", auth=(machine["client_id"], machine["client_secret"]),
                                data={"grant_type": "client_credentials", "resource": federation.calendar_resource}).json()
    revoked = federation.sign_in("alice")
    revocation = httpx2.post(f"{federation.base_url}/revoke", data={"token": revoked["refresh_token"], "client_id": revoked["client_id"]})
    assert revocation.status_code == 200, revocation.text

    cases = {
        "not a token": ("garbage.not.a-jwt", "not a valid access token of this server"),
        "a refresh token": (tokens["refresh_token"], "not a valid access token of this server"),
        "revoked": (revoked["access_token"], "was revoked"),
        "a machine's token": (machine_token["access_token"], "not issued on behalf of an active user"),
    }
    for name, (subject, words) in cases.items():
        response = token_exchange(federation, rs, subject)
        assert response.status_code == 400 and response.json()["error"] == "invalid_request", (name, response.text)
        assert words in response.json()["error_description"], (name, response.text)


MALFORMED = [
    ({"subject_token": None}, "invalid_request", "'subject_token' is required"),
    ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "invalid_request", "'subject_token_type' must be"),
    ({"actor_token": "x", "actor_token_type": ACCESS_TOKEN_TYPE}, "invalid_request", "'actor_token' (delegation"),
    ({"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, "invalid_request", "only upstream access tokens"),
    ({"resource": "https://www.googleapis.com/calendar/v3"}, "invalid_target", "name the upstream provider with 'audience'"),
    ({"audience": None}, "invalid_target", "configured providers: google"),
    ({"audience": "github"}, "invalid_target", "no upstream provider is named 'github' here; configured providers: google"),
    ({"scope": "https://www.googleapis.com/auth/gmail.send"}, "invalid_scope",
     "the user's google token does not hold https://www.googleapis.com/auth/gmail.send"),
]


def test_malformed_exchange_requests_say_what_is_wrong(federation):
    tokens = federation.sign_in("alice")
    rs = federation.register_resource_server(federation.calendar_resource)
    for change, error, words in MALFORMED:
        response = token_exchange(federation, rs, tokens["access_token"], **change)
        assert response.status_code == 400 and response.json()["error"] == error, (change, response.text)
        assert words in response.json()["error_description"], (change, response.text)
        assert "access_token" not in response.json()
    assert token_exchange(federation, rs, tokens["access_token"], scope="calendar.read").status_code == 200

    proof = make_proof(generate_key(), "POST", f"{federation.base_url}/token")
    bound = httpx2.post(f"{federation.base_url}/token", auth=rs, headers={"DPoP": proof}, data={
        "grant_type": TOKEN_EXCHANGE, "subject_token": tokens["access_token"], "subject_token_type": ACCESS_TOKEN_TYPE,
        "audience": "google"})
    assert bound.status_code == 400 and "cannot be bound to a DPoP key" in bound.json()["error_description"], bound.text


def test_a_user_who_never_signed_in_with_google_is_not_linked(federation):
    with federation.ctx.unit_of_work() as session:
        create_user(session, "carol", "carol's long password")
    client = federation.register()
    verifier, challenge = pkce_pair()
    browser = Browser(federation.base_url)
    try:
        result = authorize(browser, client_id=client["client_id"], redirect_uri=client["redirect_uris"][0], challenge=challenge,
                           username="carol", password="carol's long password", resource=federation.calendar_resource)
    finally:
        browser.close()
    tokens = httpx2.post(f"{federation.base_url}/token", data={
        "grant_type": "authorization_code", "code": result.code, "redirect_uri": client["redirect_uris"][0],
        "client_id": client["client_id"], "code_verifier": verifier}).json()
    rs = federation.register_resource_server(federation.calendar_resource)

    response = token_exchange(federation, rs, tokens["access_token"])

    assert response.status_code == 400 and response.json()["error"] == "upstream_not_linked", response.text
    assert "sign in through google first" in response.json()["error_description"]
    assert [e["reason"] for e in federation.audit_events("token.exchange_refused")] == ["upstream_not_linked"]


@pytest.mark.parametrize("op_options", [{"access_token_ttl": 30}])  # within the vault's refresh margin: every use refreshes
def test_the_vault_refreshes_and_its_errors_reach_the_resource_server(federation):
    tokens = federation.sign_in("alice")
    rs = federation.register_resource_server(federation.calendar_resource)
    first = federation.vault_tokens("alice")

    refreshed = token_exchange(federation, rs, tokens["access_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["access_token"] not in (first["access_token"], first["refresh_token"])
    assert federation.op.introspect(refreshed.json()["access_token"])["active"]

    federation.op.fail_token_endpoint(503)
    unavailable = token_exchange(federation, rs, tokens["access_token"])
    assert unavailable.status_code == 503 and unavailable.json()["error"] == "upstream_unavailable", unavailable.text
    assert "try again later" in unavailable.json()["error_description"]

    federation.op.stop()
    try:
        down = token_exchange(federation, rs, tokens["access_token"])
    finally:
        federation.op.start()
    assert down.status_code == 503 and down.json()["error"] == "upstream_unavailable", down.text
    assert "could not be reached" in down.json()["error_description"]

    federation.op.revoke_user(federation.op.account("alice").sub)
    revoked = token_exchange(federation, rs, tokens["access_token"])
    assert revoked.status_code == 400 and revoked.json()["error"] == "upstream_reauthorization_required", revoked.text
    assert "sign in through Google again" in revoked.json()["error_description"]
    assert federation.vault_tokens("alice") == {}  # the refused refresh token is gone from the vault
    again = token_exchange(federation, rs, tokens["access_token"])
    assert again.status_code == 400 and again.json()["error"] == "upstream_reauthorization_required"
