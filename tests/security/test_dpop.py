"""DPoP (RFC 9449) at the AS and at the guard: S-DPOP-* cases, against the real AS on loopback
and the embedded demo MCP server at ``<issuer>/mcp``, for every store backend.

Proofs are built here with joserfc, independently of the code under test. Every rejection has
a control: the same builder with nothing wrong is accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import warnings
from dataclasses import dataclass, field

import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey
from sqlalchemy import inspect, select

from gatehouse.guard import Guard, JWTVerifier, Policy, ResourceDPoP
from gatehouse.guard.local import KeyRingSource
from gatehouse.store import db
from gatehouse.store.models import Grant
from tests.support.browser import Browser, authorize, pkce_pair

REDIRECT = "http://127.0.0.1:9/callback"
SCOPES = "notes:read notes:write"
ACCEPT = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "dpop-test", "version": "0"}}}


@dataclass
class DPoPKey:
    """A client's DPoP key pair, and proofs made with it."""

    key: object = field(default_factory=lambda: ECKey.generate_key("P-256"))
    alg: str = "ES256"

    @property
    def jkt(self) -> str:
        return self.key.thumbprint()

    def proof(self, method: str, url: str, *, token: str | None = None, header: dict | None = None, **claims) -> str:
        body = {"jti": secrets.token_urlsafe(12), "htm": method, "htu": url, "iat": int(time.time())}
        if token is not None:
            body["ath"] = b64(hashlib.sha256(token.encode()).digest())
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        head = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.key.as_dict(private=False)}
        head.update(header or {})
        return jwt.encode(head, body, self.key, algorithms=[head["alg"]])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token_url(live_as) -> str:
    return f"{live_as.base_url}/token"


@pytest.fixture(autouse=True)
def alice(request):
    """The person who approves the authorization requests, in every test with a live AS."""
    if "live_as" in request.fixturenames:
        request.getfixturevalue("live_as").add_user()


def code_for(live_as, client_id: str, **extra) -> tuple[str, str]:
    """An authorization code (and its PKCE verifier) approved by a person."""
    verifier, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client_id, redirect_uri=REDIRECT, challenge=challenge,
                       username="alice", password="correct horse battery", scope=SCOPES, resource=live_as.resource, extra=extra)
    assert result.code, result.response.text
    return result.code, verifier


def redeem(live_as, client: dict, code: str, verifier: str, proof: str | list[str] | None = None) -> httpx2.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "resource": live_as.resource}
    return post_token(live_as, client, data, proof)


def post_token(live_as, client: dict, data: dict, proof: str | list[str] | None = None) -> httpx2.Response:
    headers = []
    for value in [proof] if isinstance(proof, str) else proof or []:
        headers.append(("DPoP", value))
    auth = None
    if client.get("client_secret"):
        auth = (client["client_id"], client["client_secret"])
    else:
        data = {**data, "client_id": client["client_id"]}
    return httpx2.post(token_url(live_as), data=data, headers=headers, auth=auth)


def public_client(live_as, **metadata) -> dict:
    return live_as.register(redirect_uris=[REDIRECT], **metadata)


def dpop_tokens(live_as, key: DPoPKey, client: dict | None = None) -> dict:
    client = client or public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"])
    response = redeem(live_as, client, code, verifier, key.proof("POST", token_url(live_as)))
    assert response.status_code == 200, response.text
    return response.json()


def mcp(live_as, token: str | None, *, scheme: str = "DPoP", proof: str | list[str] | None = None,
        body: dict | None = None, url: str | None = None) -> httpx2.Response:
    headers = list(ACCEPT.items())
    if token is not None:
        headers.append(("Authorization", f"{scheme} {token}"))
    for value in [proof] if isinstance(proof, str) else proof or []:
        headers.append(("DPoP", value))
    return httpx2.post(url or live_as.resource, json=body or INITIALIZE, headers=headers, timeout=30)


def challenges(response: httpx2.Response) -> list[str]:
    return response.headers.get_list("www-authenticate")


def assert_dpop_refused(response: httpx2.Response, error: str = "invalid_dpop_proof") -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == error
    first, *others = challenges(response)
    assert first.startswith(f'DPoP error="{error}"'), first
    assert 'algs="ES256' in first and "resource_metadata=" in first
    assert any(c.startswith("Bearer resource_metadata=") for c in others), others


# -- metadata --


def test_S_DPOP_metadata_of_the_AS_and_the_resource(live_as):
    metadata = httpx2.get(f"{live_as.base_url}/.well-known/oauth-authorization-server").json()
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]
    assert "none" not in metadata["dpop_signing_alg_values_supported"]
    assert not any(alg.startswith("HS") for alg in metadata["dpop_signing_alg_values_supported"])
    assert "urn:ietf:params:oauth:grant-type:jwt-bearer" not in metadata["grant_types_supported"]  # no trusted IdP here
    assert "authorization_grant_profiles_supported" not in metadata
    prm = httpx2.get(f"{live_as.base_url}/.well-known/oauth-protected-resource/mcp").json()
    assert "ES256" in prm["dpop_signing_alg_values_supported"]
    assert prm["dpop_bound_access_tokens_required"] is False


def test_S_DPOP_the_guard_advertises_both_schemes(live_as):
    response = mcp(live_as, None)
    assert response.status_code == 401
    bearer, dpop = challenges(response)
    assert bearer.startswith("Bearer resource_metadata=")
    assert dpop.startswith('DPoP algs="ES256')


# -- the token endpoint (RFC 9449 section 5) --


def test_S_DPOP_no_proof_gets_a_bearer_token(live_as):
    client = public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"])
    body = redeem(live_as, client, code, verifier).json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in claims_of(body["access_token"])
    assert mcp(live_as, body["access_token"], scheme="Bearer").status_code == 200


def test_S_DPOP_a_proof_binds_the_token_to_its_key(live_as):
    key = DPoPKey()
    body = dpop_tokens(live_as, key)
    assert body["token_type"] == "DPoP"
    assert claims_of(body["access_token"])["cnf"] == {"jkt": key.jkt}
    token = body["access_token"]
    response = mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token))
    assert response.status_code == 200, response.text


def small_rsa_key() -> DPoPKey:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DPoPKey(RSAKey.generate_key(1024), "RS256")


def bad_proof(live_as, case: str) -> str | list[str]:
    url = token_url(live_as)
    key, other = DPoPKey(), DPoPKey()
    forged = key.proof("POST", url).split(".")
    cases = {
        "wrong htm": lambda: key.proof("GET", url),
        "wrong htu": lambda: key.proof("POST", f"{live_as.base_url}/other"),
        "htu of another host": lambda: key.proof("POST", url.replace("127.0.0.1", "localhost")),
        "wrong typ": lambda: key.proof("POST", url, header={"typ": "JWT"}),
        "old iat": lambda: key.proof("POST", url, iat=int(time.time()) - 3600),
        "future iat": lambda: key.proof("POST", url, iat=int(time.time()) + 3600),
        "no jti": lambda: key.proof("POST", url, jti=None),
        "no iat": lambda: key.proof("POST", url, iat=None),
        "signed by another key": lambda: key.proof("POST", url, header={"jwk": other.key.as_dict(private=False)}),
        "private key in jwk": lambda: key.proof("POST", url, header={"jwk": key.key.as_dict(private=True)}),
        "HS256": lambda: jwt.encode(
            {"typ": "dpop+jwt", "alg": "HS256", "jwk": key.key.as_dict(private=False)},
            {"jti": "x", "htm": "POST", "htu": url, "iat": int(time.time())}, OctKey.import_key("a" * 32), algorithms=["HS256"],
        ),
        "alg none": lambda: b64(json.dumps({"typ": "dpop+jwt", "alg": "none", "jwk": key.key.as_dict(private=False)}).encode())
        + f".{forged[1]}.",
        "not a JWT": lambda: "not-a-jwt",
        "small RSA key": lambda: small_rsa_key().proof("POST", url),
        "two proofs": lambda: [key.proof("POST", url), key.proof("POST", url)],
    }
    return cases[case]()


@pytest.mark.parametrize(("case", "said"), [
    ("wrong htm", "htm"), ("wrong htu", "htu"), ("htu of another host", "htu"), ("wrong typ", "typ"), ("old iat", "iat"),
    ("future iat", "iat"), ("no jti", "jti"), ("no iat", "iat"), ("signed by another key", "signature"),
    ("private key in jwk", "private key"), ("HS256", "alg"), ("alg none", "alg"), ("not a JWT", "JWS"),
    ("small RSA key", "2048"), ("two proofs", "exactly one"),
])
def test_S_DPOP_an_invalid_proof_at_the_token_endpoint_gets_400(live_as, case, said):
    client = public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"])
    response = redeem(live_as, client, code, verifier, bad_proof(live_as, case))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_dpop_proof"
    assert said in response.json()["error_description"]
    assert response.headers["cache-control"] == "no-store"
    # nothing was issued, nothing consumed: the code still works with a good proof (control)
    assert redeem(live_as, client, code, verifier, DPoPKey().proof("POST", token_url(live_as))).status_code == 200


def test_S_DPOP_a_replayed_proof_at_the_token_endpoint_gets_400(live_as):
    key = DPoPKey()
    proof = key.proof("POST", token_url(live_as))
    client = public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"])
    assert redeem(live_as, client, code, verifier, proof).status_code == 200
    code, verifier = code_for(live_as, client["client_id"])
    response = redeem(live_as, client, code, verifier, proof)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"
    assert "used before" in response.json()["error_description"]


def test_S_DPOP_a_public_clients_refresh_token_is_bound_to_the_key(live_as):
    key, other = DPoPKey(), DPoPKey()
    client = public_client(live_as)
    body = dpop_tokens(live_as, key, client)
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    for proof in (None, other.proof("POST", token_url(live_as))):
        response = post_token(live_as, client, refresh, proof)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant"
        assert "bound to a DPoP key" in response.json()["error_description"]
    response = post_token(live_as, client, refresh, key.proof("POST", token_url(live_as)))
    assert response.status_code == 200, response.text
    renewed = response.json()
    assert renewed["token_type"] == "DPoP"
    assert claims_of(renewed["access_token"])["cnf"] == {"jkt": key.jkt}
    # the rotated refresh token stays bound
    again = post_token(live_as, client, {**refresh, "refresh_token": renewed["refresh_token"]})
    assert again.json()["error"] == "invalid_grant"
    with live_as.ctx.unit_of_work() as session:
        assert session.scalars(select(Grant.dpop_jkt).where(Grant.client_id == client["client_id"])).all() == [key.jkt]


def test_S_DPOP_a_confidential_clients_refresh_token_is_not_bound(live_as):
    """Section 5: client authentication already constrains it; each refresh binds to the proof it brings."""
    key, other = DPoPKey(), DPoPKey()
    client = public_client(live_as, token_endpoint_auth_method="client_secret_basic")
    body = dpop_tokens(live_as, key, client)
    response = post_token(live_as, client, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
                          other.proof("POST", token_url(live_as)))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": other.jkt}


def test_S_DPOP_client_credentials_are_bound_too(live_as):
    key = DPoPKey()
    client = live_as.register(grant_types=["client_credentials"], token_endpoint_auth_method="client_secret_basic", redirect_uris=None)
    response = post_token(live_as, client, {"grant_type": "client_credentials", "resource": live_as.resource},
                          key.proof("POST", token_url(live_as)))
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    assert "refresh_token" not in response.json()


def test_S_DPOP_a_client_registered_for_dpop_gets_no_bearer_token(live_as):
    client = public_client(live_as, dpop_bound_access_tokens=True)
    code, verifier = code_for(live_as, client["client_id"])
    response = redeem(live_as, client, code, verifier)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_dpop_proof"
    assert redeem(live_as, client, code, verifier, DPoPKey().proof("POST", token_url(live_as))).status_code == 200


def test_S_DPOP_a_code_requested_with_dpop_jkt_needs_that_key(live_as):
    """Section 10: ``dpop_jkt`` in the authorization request binds the code to the key."""
    key, other = DPoPKey(), DPoPKey()
    client = public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"], dpop_jkt=key.jkt)
    for proof in (None, other.proof("POST", token_url(live_as))):
        response = redeem(live_as, client, code, verifier, proof)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_grant" and "dpop_jkt" in response.json()["error_description"]
    response = redeem(live_as, client, code, verifier, key.proof("POST", token_url(live_as)))
    assert response.status_code == 200, response.text
    assert claims_of(response.json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_S_DPOP_a_malformed_dpop_jkt_is_refused_at_authorization(live_as):
    client = public_client(live_as)
    verifier, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client["client_id"], redirect_uri=REDIRECT, challenge=challenge,
                       username="alice", password="correct horse battery", scope=SCOPES, resource=live_as.resource,
                       extra={"dpop_jkt": "not a thumbprint"})
    assert result.code is None
    assert result.params.get("error") == ["invalid_request"] or "dpop_jkt" in result.response.text


@pytest.mark.parametrize("as_overrides", [{"dpop_require_nonce": True}])
def test_S_DPOP_nonce_flow_at_the_token_endpoint(live_as):
    key = DPoPKey()
    client = public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"])
    response = redeem(live_as, client, code, verifier, key.proof("POST", token_url(live_as)))
    assert response.status_code == 400
    assert response.json()["error"] == "use_dpop_nonce"
    nonce = response.headers["dpop-nonce"]
    wrong = redeem(live_as, client, code, verifier, key.proof("POST", token_url(live_as), nonce="not-the-nonce"))
    assert wrong.json()["error"] == "use_dpop_nonce"
    response = redeem(live_as, client, code, verifier, key.proof("POST", token_url(live_as), nonce=nonce))
    assert response.status_code == 200, response.text
    assert response.headers["dpop-nonce"] == nonce
    assert response.json()["token_type"] == "DPoP"


@pytest.mark.parametrize("as_overrides", [{"dpop_require_nonce": True}])
def test_S_DPOP_gatehouse_serve_asks_for_nonces_at_the_mcp_server_too(live_as):
    key = DPoPKey()
    client = public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"])
    nonce = redeem(live_as, client, code, verifier, key.proof("POST", token_url(live_as))).headers["dpop-nonce"]
    token = redeem(live_as, client, code, verifier, key.proof("POST", token_url(live_as), nonce=nonce)).json()["access_token"]
    response = mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token))
    assert_dpop_refused(response, "use_dpop_nonce")
    rs_nonce = response.headers["dpop-nonce"]
    response = mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token, nonce=rs_nonce))
    assert response.status_code == 200, response.text


# -- the guard (RFC 9449 section 7) --


@pytest.fixture
def bound(live_as) -> tuple[DPoPKey, str]:
    key = DPoPKey()
    return key, dpop_tokens(live_as, key)["access_token"]


def test_S_DPOP_bound_token_without_its_proof_gets_401(live_as, bound):
    key, token = bound
    assert_dpop_refused(mcp(live_as, token))
    assert mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token)).status_code == 200


def test_S_DPOP_proof_for_another_url_gets_401(live_as, bound):
    key, token = bound
    for url in (f"{live_as.base_url}/other", f"{live_as.base_url}/mcp/", live_as.resource.replace("http:", "https:")):
        assert_dpop_refused(mcp(live_as, token, proof=key.proof("POST", url, token=token)))
    # the query is not part of htu (section 4.3 step 9)
    assert mcp(live_as, token, proof=key.proof("POST", live_as.resource + "?x=1", token=token)).status_code == 200


def test_S_DPOP_proof_for_another_method_gets_401(live_as, bound):
    key, token = bound
    assert_dpop_refused(mcp(live_as, token, proof=key.proof("GET", live_as.resource, token=token)))


def test_S_DPOP_replayed_proof_gets_401(live_as, bound):
    key, token = bound
    proof = key.proof("POST", live_as.resource, token=token)
    assert mcp(live_as, token, proof=proof).status_code == 200
    response = mcp(live_as, token, proof=proof)
    assert_dpop_refused(response)
    assert "used before" in response.json()["error_description"]


def test_S_DPOP_proof_signed_by_another_key_gets_401(live_as, bound):
    _, token = bound
    response = mcp(live_as, token, proof=DPoPKey().proof("POST", live_as.resource, token=token))
    assert_dpop_refused(response)
    assert "another key" in response.json()["error_description"]


def test_S_DPOP_missing_or_wrong_ath_gets_401(live_as, bound):
    key, token = bound
    other_token = dpop_tokens(live_as, key)["access_token"]
    assert_dpop_refused(mcp(live_as, token, proof=key.proof("POST", live_as.resource)))
    assert_dpop_refused(mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=other_token)))


def test_S_DPOP_bound_token_as_bearer_gets_401(live_as, bound):
    key, token = bound
    for proof in (None, key.proof("POST", live_as.resource, token=token)):
        response = mcp(live_as, token, scheme="Bearer", proof=proof)
        assert response.status_code == 401
        bearer, dpop = challenges(response)
        assert bearer.startswith('Bearer error="invalid_token"') and "DPoP" in bearer
        assert dpop.startswith("DPoP algs=")


def test_S_DPOP_other_proof_defects_get_401(live_as, bound):
    key, token = bound
    url = live_as.resource
    cases = [
        key.proof("POST", url, token=token, iat=int(time.time()) - 3600),
        key.proof("POST", url, token=token, header={"typ": "JWT"}),
        key.proof("POST", url, token=token, content_digest="sha-256=:AAAA:"),
        [key.proof("POST", url, token=token), key.proof("POST", url, token=token)],
        "junk",
    ]
    for proof in cases:
        assert_dpop_refused(mcp(live_as, token, proof=proof))


def test_S_DPOP_a_matching_content_digest_is_accepted(live_as, bound):
    key, token = bound
    body = json.dumps(INITIALIZE).encode()
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    response = httpx2.post(live_as.resource, content=body, headers={
        **ACCEPT, "Content-Type": "application/json", "Authorization": f"DPoP {token}",
        "DPoP": key.proof("POST", live_as.resource, token=token, content_digest=digest)})
    assert response.status_code == 200, response.text


def test_S_DPOP_the_verified_token_cache_never_skips_the_proof(live_as, bound):
    key, token = bound
    assert mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token)).status_code == 200
    assert_dpop_refused(mcp(live_as, token))
    assert mcp(live_as, token, scheme="Bearer").status_code == 401


def test_S_DPOP_unbound_tokens_keep_working_as_bearer_only(live_as):
    client = public_client(live_as)
    code, verifier = code_for(live_as, client["client_id"])
    token = redeem(live_as, client, code, verifier).json()["access_token"]
    assert mcp(live_as, token, scheme="Bearer").status_code == 200
    key = DPoPKey()
    response = mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token))
    assert response.status_code == 401
    assert challenges(response)[0].startswith('DPoP error="invalid_token"')


async def test_S_DPOP_the_proof_never_reaches_the_mcp_server(live_as, bound):
    """The guard drops the DPoP header with the Authorization header (no passthrough)."""
    key, token = bound
    seen = {}

    async def app(scope, receive, send):
        seen.update({k.decode(): v.decode() for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = Guard(resource=live_as.resource, authorization_servers=[live_as.base_url],
                  verifier=JWTVerifier(issuers=[live_as.base_url], audience=live_as.resource, keys=KeyRingSource(live_as.ctx.keyring)),
                  policy=Policy(default=["notes:read"]))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=guard.protect(app))) as client:
        response = await client.post(live_as.resource, json=INITIALIZE, headers={
            "Authorization": f"DPoP {token}", "DPoP": key.proof("POST", live_as.resource, token=token)})
    assert response.status_code == 200
    assert "authorization" not in seen and "dpop" not in seen


def test_S_DPOP_nonce_flow_at_the_guard(live_as, bound, loopback_server):
    """``ResourceDPoP(require_nonce=True)``: 401 use_dpop_nonce with a DPoP-Nonce, then accepted with it.

    The guard runs on its own port, configured with the demo resource's URI: ``htu`` is checked
    against the configured resource, not the address the request reached."""
    key, token = bound

    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = Guard(resource=live_as.resource, authorization_servers=[live_as.base_url],
                  verifier=JWTVerifier(issuers=[live_as.base_url], audience=live_as.resource, keys=KeyRingSource(live_as.ctx.keyring)),
                  policy=Policy(default=["notes:read"]), dpop=ResourceDPoP(require_nonce=True))
    with loopback_server(guard.protect(ok)) as base:
        url = f"{base}/mcp"
        response = mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token), url=url)
        assert_dpop_refused(response, "use_dpop_nonce")
        nonce = response.headers["dpop-nonce"]
        stale = mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token, nonce="stale"), url=url)
        assert_dpop_refused(stale, "use_dpop_nonce")
        response = mcp(live_as, token, proof=key.proof("POST", live_as.resource, token=token, nonce=nonce), url=url)
        assert response.status_code == 200, response.text


# -- the store --


def test_S_DPOP_migration_0004_round_trips(store_url):
    from alembic import command

    engine = db.create_store_engine(store_url)
    try:
        db.upgrade(engine)
        config = db.alembic_config(store_url)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        with engine.connect() as connection:
            assert "dpop_proof_jtis" not in inspect(connection).get_table_names()
            for table in ("grants", "authorization_codes"):
                assert "dpop_jkt" not in {c["name"] for c in inspect(connection).get_columns(table)}
        db.upgrade(engine)
        with engine.connect() as connection:
            assert "dpop_proof_jtis" in inspect(connection).get_table_names()
            for table in ("grants", "authorization_codes"):
                assert "dpop_jkt" in {c["name"] for c in inspect(connection).get_columns(table)}
    finally:
        engine.dispose()
