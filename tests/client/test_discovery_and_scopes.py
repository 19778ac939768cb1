"""CL-1..CL-4, CL-8, CL-11, CL-12, CL-14 and several authorization servers, against the stand-in servers.

Several of these the SDK does on its own; they are tested here because Gatehouse relies on them.
"""

from __future__ import annotations

import json

import pytest

from gatehouse.client.auth import create_auth
from gatehouse.client.errors import AuthorizationFailed
from tests.client.conftest import failure_of, fetch


def discovery_paths(standin) -> list[str]:
    return [r.path for r in standin.requests if "/.well-known/" in r.path]


async def sign_in(standin, options, **changes):
    response = await fetch(standin.resource, create_auth(standin.resource, options(headless=True, **changes)))
    assert response.status_code == 200, response.text
    return response


# --- CL-1: where protected resource metadata is found ---------------------------------------

async def test_CL1_the_challenge_names_the_metadata(standin, options):
    await sign_in(standin, options)
    assert discovery_paths(standin)[0] == "/.well-known/oauth-protected-resource/mcp"


async def test_CL1_without_it_the_path_inserted_then_the_root_uri(standin, options):
    standin.challenge_has_metadata, standin.prm_missing_at_path = False, True
    await sign_in(standin, options)
    assert discovery_paths(standin)[:2] == ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]


# --- CL-3 / CL-4: authorization server metadata ----------------------------------------------

async def test_CL3_an_issuer_with_a_path_is_looked_up_in_order(standin, options):
    standin.metadata_status["as1"] = 404
    await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True))), AuthorizationFailed)
    assert [p for p in discovery_paths(standin) if "protected-resource" not in p] == [
        "/.well-known/oauth-authorization-server/as1",
        "/.well-known/openid-configuration/as1",
        "/as1/.well-known/openid-configuration",
    ]


async def test_CL4_metadata_naming_another_issuer_is_refused(standin, options):
    standin.metadata_issuer["as1"] = standin.issuer("impostor")
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True))), AuthorizationFailed)
    assert "issuer mismatch" in str(failure)
    assert standin.sent("/register") == [] and standin.sent("/authorize") == []


async def test_unusable_metadata_is_explained(standin, options):
    standin.metadata_changes["as1"] = {"token_endpoint": "not a url"}
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True))), AuthorizationFailed)
    assert "token_endpoint" in str(failure) and "oauth-authorization-server/as1" in str(failure)


# --- CL-8: scopes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("challenge", "prm", "as_scopes", "requested", "expected"), [
    ("read", ["read", "write"], ["read", "write"], (), "read"),
    (None, ["read", "write"], ["read", "write"], (), "read write"),
    (None, None, ["read", "write"], (), None),
    ("read", None, ["read", "write", "offline_access"], (), "read offline_access"),
    ("read", ["read", "write"], ["read", "write"], ("write",), "write"),
])
async def test_CL8_scope_selection(standin, options, challenge, prm, as_scopes, requested, expected):
    standin.challenge_scope, standin.prm_scopes = challenge, prm
    standin.metadata_changes["as1"] = {"scopes_supported": as_scopes}
    await sign_in(standin, options, scopes=requested)
    assert standin.sent("/authorize")[0].params.get("scope") == expected


# --- CL-11 / CL-12: resource indicators, the header ------------------------------------------

async def test_CL11_resource_in_the_authorization_token_and_refresh_requests(standin, options, tmp_path):
    standin.expires_in = 1
    await sign_in(standin, options)
    from gatehouse.client.storage import CredentialStore

    [entry] = CredentialStore(tmp_path / "credentials").find(standin.resource)
    document = json.loads(entry.path.read_text())
    document["tokens"]["expires_at"] = 0
    entry.path.write_text(json.dumps(document))
    await sign_in(standin, options)
    grants = [r.params["grant_type"] for r in standin.sent("/token")]
    assert grants == ["authorization_code", "refresh_token"]
    for request in standin.sent("/authorize") + standin.sent("/token"):
        assert request.params["resource"] == standin.resource


async def test_CL12_the_token_travels_in_the_authorization_header_only(standin, options):
    await sign_in(standin, options)
    last = standin.sent("/mcp")[-1]
    assert last.params["authorization_header"].startswith("Bearer at-")
    assert "access_token" not in last.params


# --- CL-14: step-up ----------------------------------------------------------------------------

async def test_CL14_step_up_asks_for_the_union_of_scopes(standin, options):
    auth = create_auth(standin.resource, options(headless=True))
    assert (await fetch(standin.resource, auth)).json()["scope"] == "read"
    standin.required_scope = {"write"}
    assert (await fetch(standin.resource, auth)).json()["scope"] == "read write"
    assert [r.params["scope"] for r in standin.sent("/authorize")] == ["read", "read write"]


async def test_CL14_step_up_gives_up_after_a_few_attempts_per_operation(standin, options):
    standin.grantable = {"read"}
    auth = create_auth(standin.resource, options(headless=True))
    await fetch(standin.resource, auth)
    standin.required_scope = {"admin"}
    statuses = [(await fetch(standin.resource, auth)).status_code for _ in range(4)]
    assert statuses == [403, 403, 403, 403]
    assert len(standin.sent("/authorize")) == 1 + 2


# --- several authorization servers -----------------------------------------------------------

@pytest.mark.parametrize("breakage", ["metadata-down", "no-pkce", "registration-refused"])
async def test_the_next_authorization_server_is_tried_when_one_cannot_be_used(standin, options, breakage):
    standin.authorization_servers = ["as1", "as2"]
    if breakage == "metadata-down":
        standin.metadata_status["as1"] = 503
    elif breakage == "no-pkce":
        standin.metadata_changes["as1"] = {"code_challenge_methods_supported": None}
    else:
        standin.registration_refused_by = {"as1"}
    lines: list[str] = []
    response = await fetch(standin.resource, create_auth(standin.resource, options(headless=True), status=lines.append))
    assert response.status_code == 200
    assert standin.sent("/as1/authorize") == [] and len(standin.sent("/as2/authorize")) == 1
    assert any("trying the next authorization server" in line for line in lines)


async def test_when_every_authorization_server_fails_the_last_reason_is_given(standin, options):
    standin.authorization_servers = ["as1", "as2"]
    standin.metadata_status.update(as1=503, as2=503)
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True))), AuthorizationFailed)
    assert "as2" in str(failure) and "\n" not in str(failure)


async def test_a_configured_issuer_is_preferred_among_several(standin, options):
    standin.authorization_servers = ["as1", "as2"]
    await sign_in(standin, options, issuer=standin.issuer("as2"))
    assert standin.sent("/as1/authorize") == [] and len(standin.sent("/as2/authorize")) == 1
