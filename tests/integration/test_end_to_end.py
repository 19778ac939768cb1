"""End to end on a real server: register → authorize → login → consent → token → refresh → revoke,
driven only by the HTTP requests a browser and a client would send (issue 2 acceptance)."""

from __future__ import annotations

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.browser import Browser, authorize, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"


def verify_access_token(live_as, token: str) -> dict:
    keys = KeySet.import_key_set(httpx2.get(f"{live_as.base_url}/jwks").json())
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt" and decoded.header["alg"] == "ES256" and decoded.header["kid"]
    return decoded.claims


def run_full_flow(live_as, client_id: str, username: str, password: str):
    browser = Browser(live_as.base_url)
    verifier, challenge = pkce_pair()
    result = authorize(
        browser, client_id=client_id, redirect_uri=REDIRECT, challenge=challenge, username=username, password=password,
        scope="notes:read", resource=live_as.resource, state="xyz",
    )
    assert result.response.status_code == 303, result.response.text
    assert result.state == "xyz" and result.iss == live_as.base_url and result.code

    token = live_as.post_token(
        {"grant_type": "authorization_code", "code": result.code, "redirect_uri": REDIRECT, "client_id": client_id,
         "code_verifier": verifier, "resource": live_as.resource}
    )
    assert token.status_code == 200, token.text
    assert token.headers["cache-control"] == "no-store"
    body = token.json()
    claims = verify_access_token(live_as, body["access_token"])
    assert claims["aud"] == live_as.resource
    assert claims["iss"] == live_as.base_url
    assert claims["client_id"] == client_id and claims["sub"] == username and claims["scope"] == "notes:read"
    assert set(claims) >= {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti"}

    refreshed = live_as.post_token({"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id})
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"] != body["refresh_token"]
    verify_access_token(live_as, new["access_token"])

    revoked = httpx2.post(f"{live_as.base_url}/revoke", data={"token": new["refresh_token"], "client_id": client_id})
    assert revoked.status_code == 200
    after = live_as.post_token({"grant_type": "refresh_token", "refresh_token": new["refresh_token"], "client_id": client_id})
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"
    return browser


def test_dcr_client_full_flow(live_as):
    username, password = live_as.add_user()
    client = live_as.register(client_name="Notes Desktop", redirect_uris=[REDIRECT])
    run_full_flow(live_as, client["client_id"], username, password)


def test_cimd_client_full_flow(live_as, loopback_server):
    username, password = live_as.add_user()
    holder = {}

    async def document(request):
        return JSONResponse(
            {"client_id": holder["url"], "client_name": "Notes Web", "redirect_uris": [REDIRECT],
             "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]},
            headers={"Cache-Control": "max-age=60"},
        )

    with loopback_server(Starlette(routes=[Route("/client.json", document)])) as base:
        holder["url"] = f"{base}/client.json"
        browser = run_full_flow(live_as, holder["url"], username, password)
        # consent is remembered per (user, client): a second authorization goes straight back
        verifier, challenge = pkce_pair()
        again = authorize(browser, client_id=holder["url"], redirect_uri=REDIRECT, challenge=challenge, scope="notes:read")
        assert again.response.status_code == 302 and again.code


def test_consent_is_asked_again_for_a_new_client(live_as):
    username, password = live_as.add_user()
    first = live_as.register(client_name="First", redirect_uris=[REDIRECT])
    second = live_as.register(client_name="Second", redirect_uris=[REDIRECT])
    browser = run_full_flow(live_as, first["client_id"], username, password)
    _, challenge = pkce_pair()
    page = browser.follow(browser.get(
        f"/authorize?response_type=code&client_id={second['client_id']}&redirect_uri={REDIRECT}"
        f"&code_challenge={challenge}&code_challenge_method=S256"
    ))
    assert page.status_code == 200 and 'name="decision"' in page.text and "Second" in page.text


def test_client_without_state_gets_no_state_back(live_as):
    username, password = live_as.add_user()
    client = live_as.register(redirect_uris=[REDIRECT])
    verifier, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client["client_id"], redirect_uri=REDIRECT,
                       challenge=challenge, username=username, password=password, state=None)
    assert result.code and "state" not in result.params and result.iss == live_as.base_url


def test_loopback_redirect_with_another_port(live_as):
    username, password = live_as.add_user()
    client = live_as.register(redirect_uris=["http://localhost:3000/callback"])
    verifier, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client["client_id"], redirect_uri="http://localhost:51234/callback",
                       challenge=challenge, username=username, password=password)
    assert result.response.headers["location"].startswith("http://localhost:51234/callback?")
    token = live_as.post_token({"grant_type": "authorization_code", "code": result.code, "client_id": client["client_id"],
                                "redirect_uri": "http://localhost:51234/callback", "code_verifier": verifier})
    assert token.status_code == 200


def test_unfinished_authorization_is_harmless(live_as):
    """Clients that fetch the authorization URL before opening the browser must not break it."""
    username, password = live_as.add_user()
    client = live_as.register(redirect_uris=[REDIRECT])
    verifier, challenge = pkce_pair()
    query = (f"/authorize?response_type=code&client_id={client['client_id']}&redirect_uri={REDIRECT}"
             f"&code_challenge={challenge}&code_challenge_method=S256&state=s1")
    probe = httpx2.get(live_as.base_url + query, follow_redirects=False)
    assert probe.status_code == 303 and "/login" in probe.headers["location"]
    result = authorize(Browser(live_as.base_url), client_id=client["client_id"], redirect_uri=REDIRECT,
                       challenge=challenge, username=username, password=password, state="s1")
    assert result.code


def test_client_credentials_with_secret(live_as):
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic",
                              redirect_uris=None, scope="notes:read")
    basic = (client["client_id"], client["client_secret"])
    token = live_as.post_token({"grant_type": "client_credentials", "resource": live_as.resource}, auth=basic)
    assert token.status_code == 200, token.text
    claims = verify_access_token(live_as, token.json()["access_token"])
    assert claims["sub"] == client["client_id"] and claims["scope"] == "notes:read" and "refresh_token" not in token.json()
    post = live_as.post_token({"grant_type": "client_credentials", "client_id": client["client_id"],
                               "client_secret": client["client_secret"]})
    assert post.status_code in (400, 401) and post.json()["error"] == "invalid_client"


@pytest.mark.parametrize("method", ["client_secret_post"])
def test_client_credentials_with_post_secret(live_as, method):
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method=method, redirect_uris=None)
    token = live_as.post_token({"grant_type": "client_credentials", "client_id": client["client_id"],
                                "client_secret": client["client_secret"]})
    assert token.status_code == 200, token.text


def test_client_credentials_with_private_key_jwt(live_as):
    import time
    import uuid

    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="private_key_jwt",
                              redirect_uris=None, jwks={"keys": [key.as_dict(private=False)]})

    def assertion(jti: str) -> str:
        now = int(time.time())
        claims = {"iss": client["client_id"], "sub": client["client_id"], "aud": f"{live_as.base_url}/token",
                  "iat": now, "exp": now + 60, "jti": jti}
        return jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key)

    data = {"grant_type": "client_credentials", "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    jti = str(uuid.uuid4())
    first = live_as.post_token({**data, "client_assertion": assertion(jti)})
    assert first.status_code == 200, first.text
    replay = live_as.post_token({**data, "client_assertion": assertion(jti)})
    assert replay.status_code in (400, 401) and replay.json()["error"] == "invalid_client"


def test_introspection_own_tokens_only(live_as):
    a = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic", redirect_uris=None)
    b = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic", redirect_uris=None)
    token = live_as.post_token({"grant_type": "client_credentials"}, auth=(a["client_id"], a["client_secret"])).json()["access_token"]
    own = httpx2.post(f"{live_as.base_url}/introspect", data={"token": token}, auth=(a["client_id"], a["client_secret"]))
    assert own.status_code == 200 and own.json()["active"] is True and own.json()["aud"] == live_as.resource
    other = httpx2.post(f"{live_as.base_url}/introspect", data={"token": token}, auth=(b["client_id"], b["client_secret"]))
    assert other.status_code in (200, 403) and other.json().get("active") is not True
    revoke = httpx2.post(f"{live_as.base_url}/revoke", data={"token": token}, auth=(a["client_id"], a["client_secret"]))
    assert revoke.status_code == 200
    after = httpx2.post(f"{live_as.base_url}/introspect", data={"token": token}, auth=(a["client_id"], a["client_secret"]))
    assert after.json() == {"active": False}


def test_registration_management_rfc7592(live_as):
    client = live_as.register(client_name="Managed")
    uri, token = client["registration_client_uri"], client["registration_access_token"]
    read = httpx2.get(uri, headers={"Authorization": f"Bearer {token}"})
    assert read.status_code == 200 and read.json()["client_name"] == "Managed"
    assert httpx2.get(uri, headers={"Authorization": "Bearer wrong"}).status_code in (401, 403)
    update = httpx2.put(uri, headers={"Authorization": f"Bearer {token}"},
                        json={"client_id": client["client_id"], "client_name": "Renamed", "redirect_uris": [REDIRECT],
                              "token_endpoint_auth_method": "none"})
    assert update.status_code == 200 and update.json()["client_name"] == "Renamed"
    assert httpx2.delete(uri, headers={"Authorization": f"Bearer {token}"}).status_code == 204
    assert httpx2.get(uri, headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_metadata_documents(live_as):
    rfc8414 = httpx2.get(f"{live_as.base_url}/.well-known/oauth-authorization-server").json()
    oidc = httpx2.get(f"{live_as.base_url}/.well-known/openid-configuration").json()
    for doc in (rfc8414, oidc):
        assert doc["issuer"] == live_as.base_url
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["client_id_metadata_document_supported"] is True
        assert doc["authorization_response_iss_parameter_supported"] is True
        assert doc["jwks_uri"] == f"{live_as.base_url}/jwks"
        assert set(doc["scopes_supported"]) == {"notes:read", "notes:write"}
        for endpoint in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint", "introspection_endpoint"):
            assert doc[endpoint].startswith(live_as.base_url + "/")


def test_login_page_names_the_app(live_as):
    client = live_as.register(client_name="Notes Desktop", redirect_uris=[REDIRECT])
    _, challenge = pkce_pair()
    browser = Browser(live_as.base_url)
    page = browser.follow(browser.get(
        f"/authorize?response_type=code&client_id={client['client_id']}&redirect_uri={REDIRECT}"
        f"&code_challenge={challenge}&code_challenge_method=S256"
    ))
    assert page.status_code == 200 and 'name="password"' in page.text
    assert "to continue to <strong>Notes Desktop</strong>" in page.text
