"""DPoP (RFC 9449) on the client: proofs, bound tokens, nonces, the stored key, the policy on token types.

Proofs are checked by ``check_proof`` (tests/client/extension_standin.py), which applies the rules
of RFC 9449 section 4.3 with joserfc; the stand-in AS and resource server use the same function.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey

from gatehouse.client import dpop
from gatehouse.client.auth import create_auth
from gatehouse.client.errors import AuthorizationFailed
from gatehouse.client.storage import CredentialStore
from tests.client.conftest import failure_of, fetch
from tests.client.extension_standin import ExtensionStandIn, ProofRejected, check_proof


@pytest.fixture
def standin(loopback_server):
    behaviour = ExtensionStandIn()
    with loopback_server(behaviour.app()) as base_url:
        behaviour.base_url = base_url
        yield behaviour


def stored(tmp_path, resource):
    [entry] = CredentialStore(tmp_path / "credentials").find(resource)
    return entry


def claims_of(proof: str) -> dict:
    return jwt.decode(proof, ECKey.import_key(jws.extract_compact(proof.encode()).protected["jwk"])).claims


# --- the proof itself (section 4.2) --------------------------------------------------------

def test_a_token_request_proof_passes_every_check_of_section_4_3():
    key = dpop.generate_key()
    proof = dpop.make_proof(key, "post", "https://as.example.com/token?x=1#frag", nonce="n-1")
    header = jws.extract_compact(proof.encode()).protected
    assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
    assert header["jwk"] == key.as_dict(private=False) and "d" not in header["jwk"]
    claims = check_proof(proof, "POST", "https://as.example.com/token", nonce="n-1")
    assert claims["htu"] == "https://as.example.com/token" and claims["htm"] == "POST"
    assert abs(claims["iat"] - time.time()) < 5 and "ath" not in claims
    assert claims["_jkt"] == dpop.thumbprint(key)


def test_a_resource_proof_carries_the_hash_of_the_access_token():
    key = dpop.generate_key()
    proof = dpop.make_proof(key, "GET", "https://mcp.example.com/mcp", access_token="at-123")
    expected = base64.urlsafe_b64encode(hashlib.sha256(b"at-123").digest()).rstrip(b"=").decode()
    assert claims_of(proof)["ath"] == expected
    check_proof(proof, "GET", "https://mcp.example.com/mcp", access_token="at-123", bound_jkt=dpop.thumbprint(key))
    with pytest.raises(ProofRejected, match="ath"):
        check_proof(proof, "GET", "https://mcp.example.com/mcp", access_token="at-456")


def test_every_proof_has_its_own_jti_and_names_its_request():
    key = dpop.generate_key()
    seen: set[str] = set()
    for _ in range(3):
        check_proof(dpop.make_proof(key, "POST", "https://a.example/t"), "POST", "https://a.example/t", seen_jtis=seen)
    assert len(seen) == 3
    proof = dpop.make_proof(key, "POST", "https://a.example/t")
    with pytest.raises(ProofRejected, match="htm"):
        check_proof(proof, "GET", "https://a.example/t")
    with pytest.raises(ProofRejected, match="htu"):
        check_proof(proof, "POST", "https://a.example/other")


def test_the_stored_key_round_trips_and_a_public_key_is_refused():
    key = dpop.generate_key()
    assert dpop.thumbprint(dpop.key_from_stored(dpop.key_for_storage(key))) == dpop.thumbprint(key)
    with pytest.raises(Exception, match="not a private P-256 key"):
        dpop.key_from_stored(key.as_dict(private=False))


# --- in the flow ---------------------------------------------------------------------------

async def test_an_advertising_server_gets_proofs_and_a_bound_token_goes_with_the_dpop_scheme(standin, options, tmp_path):
    response = await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))
    assert response.status_code == 200 and standin.rejected_proofs == []
    [token_request] = standin.with_headers("/as1/token")
    token_claims = check_proof(token_request.proof, "POST", standin.issuer("as1") + "/token")
    used = standin.with_headers("/mcp")[-1]
    access_token = used.authorization.removeprefix("DPoP ")
    assert used.authorization.startswith("DPoP ") and standin.bound[access_token] == token_claims["_jkt"]
    entry = stored(tmp_path, standin.resource)
    assert entry.tokens.token_type == "DPoP"
    assert dpop.thumbprint(dpop.key_from_stored(entry.dpop_key)) == token_claims["_jkt"]


async def test_nonces_from_the_server_and_the_resource_are_used_after_one_retry_each(standin, options):
    standin.as_nonce, standin.rs_nonce = "as-nonce-1", "rs-nonce-1"
    auth = create_auth(standin.resource, options(headless=True))
    assert (await fetch(standin.resource, auth)).status_code == 200
    token_proofs = [claims_of(s.proof).get("nonce") for s in standin.with_headers("/as1/token")]
    assert token_proofs == [None, "as-nonce-1"]
    resource_nonces = [claims_of(s.proof).get("nonce") for s in standin.with_headers("/mcp") if s.proof]
    assert resource_nonces == ["as-nonce-1", "rs-nonce-1"], "the latest nonce of the origin, which the AS shares here"

    assert (await fetch(standin.resource, auth)).status_code == 200
    assert claims_of(standin.with_headers("/mcp")[-1].proof)["nonce"] == "rs-nonce-1"
    assert len([s for s in standin.with_headers("/mcp") if s.proof]) == 3


async def test_a_changed_nonce_is_followed(standin, options):
    standin.rs_nonce = "rs-nonce-1"
    auth = create_auth(standin.resource, options(headless=True))
    assert (await fetch(standin.resource, auth)).status_code == 200
    standin.rs_nonce = "rs-nonce-2"
    assert (await fetch(standin.resource, auth)).status_code == 200
    assert claims_of(standin.with_headers("/mcp")[-1].proof)["nonce"] == "rs-nonce-2"


async def test_a_nonce_already_used_is_not_retried(standin, options):
    standin.rs_nonce = "rs-nonce-1"
    auth = create_auth(standin.resource, options(headless=True))
    assert (await fetch(standin.resource, auth)).status_code == 200
    standin.rs_nonce, standin.rs_nonce_offered = "rs-nonce-2", "rs-nonce-1"
    before = len(standin.with_headers("/mcp"))
    failure = await failure_of(fetch(standin.resource, auth), AuthorizationFailed)
    assert "refused the token just issued" in str(failure)
    assert len(standin.with_headers("/mcp")) - before <= 3


async def test_a_restarted_client_keeps_its_key_and_its_bound_tokens(standin, options, tmp_path):
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    first_key = stored(tmp_path, standin.resource).dpop_key

    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    assert len(standin.with_headers("/as1/token")) == 1 and standin.rejected_proofs == []

    path = stored(tmp_path, standin.resource).path
    document = json.loads(path.read_text())
    document["tokens"]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(document))
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    refresh = standin.with_headers("/as1/token")[-1]
    assert refresh.params["grant_type"] == "refresh_token"
    assert check_proof(refresh.proof, "POST", standin.issuer("as1") + "/token")["_jkt"] == dpop.thumbprint(dpop.key_from_stored(first_key))
    assert stored(tmp_path, standin.resource).dpop_key == first_key and standin.rejected_proofs == []


async def test_client_credentials_get_bound_tokens_too(standin, options):
    given = options(client_credentials=True, client_id="machine", client_secret="s3cret")
    assert (await fetch(standin.resource, create_auth(standin.resource, given))).status_code == 200
    [token_request] = standin.with_headers("/as1/token")
    assert token_request.params["grant_type"] == "client_credentials" and token_request.proof
    assert standin.with_headers("/mcp")[-1].authorization.startswith("DPoP ")


# --- when DPoP is used, and which tokens are accepted (section 5) --------------------------

async def test_no_proof_goes_to_a_server_that_does_not_advertise_dpop(standin, options):
    standin.advertise(None)
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    assert all(s.proof is None for s in standin.sent_with_headers)
    assert standin.with_headers("/mcp")[-1].authorization.startswith("Bearer ")


async def test_dpop_false_sends_no_proof_even_when_advertised(standin, options):
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True, dpop=False)))).status_code == 200
    assert all(s.proof is None for s in standin.sent_with_headers)


async def test_a_bearer_token_is_used_as_one_unless_dpop_is_required(standin, options):
    standin.issue_bearer_only = True
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    assert standin.with_headers("/mcp")[-1].authorization.startswith("Bearer ")
    assert standin.with_headers("/mcp")[-1].proof is None


async def test_dpop_true_refuses_a_bearer_token(standin, options, tmp_path):
    standin.issue_bearer_only = True
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True, dpop=True))),
                               AuthorizationFailed)
    assert str(failure) == (f"{standin.issuer('as1')} issued a Bearer token where a DPoP-bound one is required; "
                            "refusing it (RFC 9449 section 5)")
    assert CredentialStore(tmp_path / "credentials").find(standin.resource)[0].tokens is None


async def test_dpop_true_with_a_server_that_cannot_check_es256_sends_no_token_request(standin, options):
    standin.advertise(["RS256"])
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True, dpop=True))),
                               AuthorizationFailed)
    assert "accepts DPoP proofs signed with RS256 only" in str(failure)
    assert standin.sent("/as1/token") == []


async def test_a_dpop_token_without_a_proof_is_refused(standin, options):
    standin.advertise(None)
    standin.says_dpop_without_proof = True
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True))),
                               AuthorizationFailed)
    assert "issued a DPoP-bound token to a request without a DPoP proof" in str(failure)


# --- secrets stay out of logs --------------------------------------------------------------

async def test_tokens_keys_and_proofs_never_reach_the_logs(standin, options, tmp_path, caplog):
    standin.as_nonce, standin.rs_nonce = "as-nonce-1", "rs-nonce-1"
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    auth = create_auth(standin.resource, options(headless=True), status=lines.append)
    assert (await fetch(standin.resource, auth)).status_code == 200
    entry = stored(tmp_path, standin.resource)
    secrets = [entry.tokens.access_token, entry.tokens.refresh_token, entry.dpop_key["d"]]
    secrets += [s.proof for s in standin.sent_with_headers if s.proof]
    logged = "\n".join(record.getMessage() for record in caplog.records) + "\n".join(lines) + caplog.text
    assert all(secret not in logged for secret in secrets)
    assert "dpop_key" not in repr(entry) and entry.dpop_key["d"] not in repr(entry)
