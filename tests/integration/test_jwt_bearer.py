"""The jwt-bearer grant (RFC 7523): ID-JAG (enterprise-managed authorization) and workload
identity federation, against the real AS on loopback, for every store backend.

The trusted IdPs' stand-in is a JWKS served on loopback (started before the AS, whose settings
name it); assertions are signed here with joserfc. Every rejection has a control: the same
builder with nothing wrong is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.authserver.users import authenticate
from gatehouse.config import Settings
from gatehouse.store.models import User
from tests.conftest import ThreadedServer, free_socket

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
ACME = "https://acme.idp.test"
CORP = "https://corp.idp.test"
PICKY = "https://picky.idp.test"
WORKLOADS = "https://workloads.test"
IDP_KEY = ECKey.generate_key("P-256", parameters={"kid": "idp-1"})
ACCEPT = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "jag-test", "version": "0"}}}


@pytest.fixture
def idp_jwks():
    """The IdPs' public keys on loopback, as their jwks_uri."""
    app = Starlette(routes=[Route("/jwks", lambda request: JSONResponse({"keys": [IDP_KEY.as_dict(private=False)]}))])
    sock = free_socket()
    with ThreadedServer(app, sock):
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/jwks"


@pytest.fixture
def as_overrides(idp_jwks):
    return {"trusted_idps": [
        {"issuer": ACME, "jwks_uri": idp_jwks, "name": "acme"},
        {"issuer": CORP, "jwks_uri": idp_jwks, "name": "corp", "users": "existing", "username_claim": "email"},
        {"issuer": PICKY, "jwks_uri": idp_jwks, "name": "picky", "clients": ["somebody-else"]},
        {"issuer": WORKLOADS, "jwks_uri": idp_jwks, "kind": "workload", "subjects": ["spiffe://example.org/ns/agents/*"],
         "scopes": ["notes:read"]},
    ]}


def assertion(issuer: str, *, key=IDP_KEY, typ: str | None = "oauth-id-jag+jwt", **claims) -> str:
    now = int(time.time())
    body = {"iss": issuer, "sub": "U019488227", "iat": now, "exp": now + 300, "jti": secrets.token_urlsafe(12)}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    header = {"alg": "ES256", "kid": "idp-1"}
    if typ:
        header["typ"] = typ
    return jwt.encode(header, body, key, algorithms=["ES256"])


def id_jag(live_as, client_id: str, **claims) -> str:
    defaults = {"aud": live_as.base_url, "client_id": client_id, "resource": live_as.resource, "scope": "notes:read"}
    return assertion(claims.pop("issuer", ACME), **{**defaults, **claims})


def workload_jwt(live_as, **claims) -> str:
    defaults = {"aud": f"{live_as.base_url}/token", "sub": "spiffe://example.org/ns/agents/sa/router", "typ": "JWT"}
    return assertion(WORKLOADS, **{**defaults, **claims})


def jag_client(live_as, **metadata) -> dict:
    body = {"grant_types": [JWT_BEARER], "token_endpoint_auth_method": "client_secret_basic", "redirect_uris": None}
    body.update(metadata)
    return live_as.register(**body)


def grant(live_as, client: dict | None, jwt_assertion: str, headers: dict | None = None, **params) -> httpx2.Response:
    data = {"grant_type": JWT_BEARER, "assertion": jwt_assertion, **params}
    auth = None
    if client and client.get("client_secret"):
        auth = (client["client_id"], client["client_secret"])
    elif client:
        data["client_id"] = client["client_id"]
    return httpx2.post(f"{live_as.base_url}/token", data=data, auth=auth, headers=headers)


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def refused(response: httpx2.Response, error: str, said: str = "") -> None:
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == error, response.text
    assert said in response.json()["error_description"]


def test_metadata_names_the_grant_and_the_profile(live_as):
    metadata = httpx2.get(f"{live_as.base_url}/.well-known/oauth-authorization-server").json()
    assert JWT_BEARER in metadata["grant_types_supported"]
    assert metadata["authorization_grant_profiles_supported"] == [ID_JAG_PROFILE]


# -- ID-JAG --


def test_an_id_jag_gets_a_token_for_its_resource_and_user(live_as):
    client = jag_client(live_as)
    response = grant(live_as, client, id_jag(live_as, client["client_id"], scope="notes:read openid"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and "refresh_token" not in body
    assert body["scope"] == "notes:read"  # the ID-JAG's scopes that this resource has
    claims = claims_of(body["access_token"])
    assert (claims["sub"], claims["client_id"], claims["aud"]) == ("acme:U019488227", client["client_id"], live_as.resource)
    use = httpx2.post(live_as.resource, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {body['access_token']}"})
    assert use.status_code == 200, use.text
    # the same subject again is the same account, which has no password
    assert grant(live_as, client, id_jag(live_as, client["client_id"])).status_code == 200
    with live_as.ctx.unit_of_work() as session:
        users = session.query(User).filter(User.username == "acme:U019488227").all()
        assert len(users) == 1 and users[0].password_hash is None
        assert authenticate(session, "acme:U019488227", "gatehouse-timing-equaliser") is None


def test_a_public_client_may_present_an_id_jag_for_itself(live_as):
    client = jag_client(live_as, token_endpoint_auth_method="none")
    response = grant(live_as, client, id_jag(live_as, client["client_id"]))
    assert response.status_code == 200, response.text


def test_scopes_are_those_both_the_request_and_the_id_jag_hold(live_as):
    client = jag_client(live_as)
    both = id_jag(live_as, client["client_id"], scope="notes:read notes:write")
    assert grant(live_as, client, both, scope="notes:write").json()["scope"] == "notes:write"
    narrow = id_jag(live_as, client["client_id"], scope="notes:read")
    refused(grant(live_as, client, narrow, scope="notes:write"), "invalid_scope")
    refused(grant(live_as, client, id_jag(live_as, client["client_id"]), scope="admin"), "invalid_scope")


@pytest.mark.parametrize(("case", "said"), [
    ("untrusted issuer", "not trusted"),
    ("wrong aud", "aud"),
    ("expired", "expired"),
    ("another client's", "client_id"),
    ("signed by another key", "signature"),
    ("no jti", "jti"),
    ("a workload issuer", "not trusted"),
    ("not typed as ID-JAG", "not trusted"),
    ("unsupported cnf", "cnf"),
    ("client not vouched for", "not trusted to vouch"),
])
def test_a_bad_id_jag_is_invalid_grant(live_as, case, said):
    client = jag_client(live_as)
    other = jag_client(live_as)
    cid = client["client_id"]
    bad = {
        "untrusted issuer": lambda: id_jag(live_as, cid, issuer="https://evil.idp.test"),
        "wrong aud": lambda: id_jag(live_as, cid, aud="https://another-as.example"),
        "expired": lambda: id_jag(live_as, cid, exp=int(time.time()) - 120, iat=int(time.time()) - 600),
        "another client's": lambda: id_jag(live_as, other["client_id"]),
        "signed by another key": lambda: id_jag(live_as, cid, key=ECKey.generate_key("P-256")),
        "no jti": lambda: id_jag(live_as, cid, jti=None),
        "a workload issuer": lambda: id_jag(live_as, cid, issuer=WORKLOADS),
        "not typed as ID-JAG": lambda: assertion(ACME, typ="JWT", aud=live_as.base_url, client_id=cid),
        "unsupported cnf": lambda: id_jag(live_as, cid, cnf={"x5t#S256": "abc"}),
        "client not vouched for": lambda: id_jag(live_as, cid, issuer=PICKY),
    }[case]()
    refused(grant(live_as, client, bad), "invalid_grant", said)
    assert grant(live_as, client, id_jag(live_as, cid)).status_code == 200


def test_a_replayed_id_jag_is_invalid_grant(live_as):
    client = jag_client(live_as)
    once = id_jag(live_as, client["client_id"])
    assert grant(live_as, client, once).status_code == 200
    refused(grant(live_as, client, once), "invalid_grant", "used before")


def test_the_resource_of_the_id_jag_and_the_request_must_agree(live_as):
    client = jag_client(live_as)
    jag = id_jag(live_as, client["client_id"])
    refused(grant(live_as, client, jag, resource="https://elsewhere.example/mcp"), "invalid_target")
    refused(grant(live_as, client, id_jag(live_as, client["client_id"], resource="https://elsewhere.example/mcp")), "invalid_target")
    assert grant(live_as, client, id_jag(live_as, client["client_id"]), resource=live_as.resource).status_code == 200


def test_the_client_must_be_registered_for_the_grant(live_as):
    client = jag_client(live_as, grant_types=["client_credentials"])
    refused(grant(live_as, client, id_jag(live_as, client["client_id"])), "unauthorized_client")


def test_the_client_must_authenticate(live_as):
    client = jag_client(live_as)
    response = grant(live_as, {"client_id": client["client_id"], "client_secret": "wrong"}, id_jag(live_as, client["client_id"]))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_existing_accounts_mode_maps_a_claim_to_a_local_account(live_as):
    live_as.add_user("alice")
    client = jag_client(live_as)
    jag = id_jag(live_as, client["client_id"], issuer=CORP, email="alice")
    response = grant(live_as, client, jag)
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["sub"] == "alice"
    unknown = id_jag(live_as, client["client_id"], issuer=CORP, email="mallory")
    refused(grant(live_as, client, unknown), "invalid_grant", "administrator")


def test_an_id_jag_bound_to_a_dpop_key_needs_its_proof(live_as):
    client = jag_client(live_as)
    key = ECKey.generate_key("P-256")

    def proof() -> str:
        header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
        body = {"jti": secrets.token_urlsafe(8), "htm": "POST", "htu": f"{live_as.base_url}/token", "iat": int(time.time())}
        return jwt.encode(header, body, key, algorithms=["ES256"])

    refused(grant(live_as, client, id_jag(live_as, client["client_id"], cnf={"jkt": key.thumbprint()})), "invalid_grant", "DPoP")
    response = grant(live_as, client, id_jag(live_as, client["client_id"], cnf={"jkt": key.thumbprint()}), headers={"DPoP": proof()})
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.thumbprint()}


# -- workload identity federation --


def test_a_workload_gets_a_token_without_registration(live_as):
    response = grant(live_as, None, workload_jwt(live_as))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "notes:read" and "refresh_token" not in body
    claims = claims_of(body["access_token"])
    assert claims["sub"] == claims["client_id"] == "spiffe://example.org/ns/agents/sa/router"
    assert claims["aud"] == live_as.resource
    # the AS's issuer is an accepted audience too
    assert grant(live_as, None, workload_jwt(live_as, aud=live_as.base_url)).status_code == 200
    use = httpx2.post(live_as.resource, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"Bearer {body['access_token']}"})
    assert use.status_code == 200, use.text


@pytest.mark.parametrize(("case", "error", "said"), [
    ("subject not allowed", "invalid_grant", "may not get tokens"),
    ("untrusted issuer", "invalid_grant", "not trusted"),
    ("wrong aud", "invalid_grant", "aud"),
    ("expired", "invalid_grant", "expired"),
    ("signed by another key", "invalid_grant", "signature"),
    ("no sub", "invalid_grant", "sub"),
    ("scope beyond the rules", "invalid_scope", ""),
])
def test_a_bad_workload_jwt_is_refused(live_as, case, error, said):
    params = {}
    bad = {
        "subject not allowed": lambda: workload_jwt(live_as, sub="spiffe://example.org/ns/other/sa/x"),
        "untrusted issuer": lambda: assertion("https://evil.test", typ="JWT", aud=f"{live_as.base_url}/token"),
        "wrong aud": lambda: workload_jwt(live_as, aud="https://another-as.example/token"),
        "expired": lambda: workload_jwt(live_as, exp=int(time.time()) - 120, iat=int(time.time()) - 600),
        "signed by another key": lambda: workload_jwt(live_as, key=ECKey.generate_key("P-256")),
        "no sub": lambda: workload_jwt(live_as, sub=None),
        "scope beyond the rules": lambda: (params.update(scope="notes:write"), workload_jwt(live_as))[1],
    }[case]()
    refused(grant(live_as, None, bad, **params), error, said)
    assert grant(live_as, None, workload_jwt(live_as)).status_code == 200


def test_a_replayed_workload_jwt_is_invalid_grant(live_as):
    once = workload_jwt(live_as)
    assert grant(live_as, None, once).status_code == 200
    refused(grant(live_as, None, once), "invalid_grant", "used before")


def test_malformed_assertions_get_clear_errors(live_as):
    client = jag_client(live_as)
    refused(grant(live_as, client, ""), "invalid_request", "assertion")
    for junk in ("not-a-jwt", "a.b.c", "x" * 20_000):
        refused(grant(live_as, client, junk), "invalid_grant", "compact serialization")


def test_workload_tokens_can_be_dpop_bound(live_as):
    key = ECKey.generate_key("P-256")
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    proof = jwt.encode(header, {"jti": "w1", "htm": "POST", "htu": f"{live_as.base_url}/token", "iat": int(time.time())},
                       key, algorithms=["ES256"])
    response = grant(live_as, None, workload_jwt(live_as), headers={"DPoP": proof})
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert claims_of(token)["cnf"] == {"jkt": key.thumbprint()}
    ath = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    rs_proof = jwt.encode(header, {"jti": "w2", "htm": "POST", "htu": live_as.resource, "iat": int(time.time()), "ath": ath},
                          key, algorithms=["ES256"])
    use = httpx2.post(live_as.resource, json=INITIALIZE, headers={**ACCEPT, "Authorization": f"DPoP {token}", "DPoP": rs_proof})
    assert use.status_code == 200, use.text


# -- configuration --


@pytest.mark.parametrize(("idps", "said"), [
    ([{"issuer": WORKLOADS, "jwks_uri": "https://w.test/keys", "kind": "workload"}], "subjects"),
    ([{"issuer": ACME, "jwks_uri": "http://idp.example/keys"}], "https"),
    ([{"issuer": ACME, "jwks_uri": "https://a/keys"}, {"issuer": ACME, "jwks_uri": "https://b/keys"}], "twice"),
    ([{"issuer": ACME, "jwks_uri": "https://a/keys", "name": "a:b"}], "name"),
    ([{"issuer": ACME, "jwks_uri": "https://a/keys", "users": "maybe"}], "users"),
])
def test_trusted_idp_settings_are_checked(idps, said):
    with pytest.raises(ValidationError, match=said):
        Settings(trusted_idps=idps)
