"""Workload identity federation (SEP-1933): the platform's JWT as the jwt-bearer grant (RFC 7523 section 2.1)."""

from __future__ import annotations

import logging

import pytest

from gatehouse.client.auth import create_auth
from gatehouse.client.errors import AuthorizationFailed, ClientError
from tests.client.conftest import failure_of, fetch
from tests.client.extension_standin import ExtensionStandIn

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
WORKLOAD_JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwIn0.c2lnbmF0dXJl"


@pytest.fixture
def standin(loopback_server):
    behaviour = ExtensionStandIn(proof_algorithms=None)
    with loopback_server(behaviour.app()) as base_url:
        behaviour.base_url = base_url
        yield behaviour


async def test_the_workload_jwt_is_the_assertion_with_the_resource_and_no_secret(standin, options):
    given = options(workload_token=WORKLOAD_JWT, client_id="workload-7")
    assert (await fetch(standin.resource, create_auth(standin.resource, given))).status_code == 200
    [token_request] = standin.sent("/as1/token")
    assert token_request.params["grant_type"] == JWT_BEARER and token_request.params["assertion"] == WORKLOAD_JWT
    assert token_request.params["resource"] == standin.resource and token_request.params["client_id"] == "workload-7"
    assert "client_secret" not in token_request.params and "authorization_header" not in token_request.params
    assert standin.sent("/as1/register") == [] and standin.sent("/as1/authorize") == []


async def test_the_token_file_is_read_again_for_each_token_request(standin, options, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(WORKLOAD_JWT + "\n")
    given = options(workload_token_file=token_file)
    assert (await fetch(standin.resource, create_auth(standin.resource, given))).status_code == 200
    rotated = WORKLOAD_JWT.replace("c2lnbmF0dXJl", "cm90YXRlZA")
    token_file.write_text(rotated)
    standin.issued.clear()
    assert (await fetch(standin.resource, create_auth(standin.resource, given))).status_code == 200
    assert [r.params["assertion"] for r in standin.sent("/as1/token")] == [WORKLOAD_JWT, rotated]
    assert "client_id" not in standin.sent("/as1/token")[0].params


async def test_an_unreadable_token_file_is_one_line(standin, options, tmp_path):
    given = options(workload_token_file=tmp_path / "missing")
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, given)), ClientError)
    assert str(failure).startswith(f"cannot read the workload identity token file {tmp_path / 'missing'}")
    assert standin.sent("/as1/token") == []


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_scope", "unauthorized_client"])
async def test_a_refused_grant_is_reported_once_without_retry_or_another_grant(standin, options, error):
    standin.token_errors = [{"error": error, "error_description": "not for you"}]
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(workload_token=WORKLOAD_JWT))),
                               AuthorizationFailed)
    assert f"({error}: not for you)" in str(failure) and WORKLOAD_JWT not in str(failure)
    assert [r.params["grant_type"] for r in standin.sent("/as1/token")] == [JWT_BEARER]


async def test_workload_tokens_can_be_dpop_bound(loopback_server, options):
    standin = ExtensionStandIn()
    with loopback_server(standin.app()) as standin.base_url:
        assert (await fetch(standin.resource, create_auth(standin.resource, options(workload_token=WORKLOAD_JWT)))).status_code == 200
    [token_request] = standin.with_headers("/as1/token")
    assert token_request.proof and standin.with_headers("/mcp")[-1].authorization.startswith("DPoP ")


async def test_the_workload_jwt_never_reaches_the_logs_or_the_store(standin, options, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    assert (await fetch(standin.resource, create_auth(standin.resource, options(workload_token=WORKLOAD_JWT)))).status_code == 200
    assert WORKLOAD_JWT not in caplog.text
    assert all(WORKLOAD_JWT not in path.read_text() for path in (tmp_path / "credentials").rglob("*.json"))
    assert WORKLOAD_JWT not in repr(options(workload_token=WORKLOAD_JWT))


def test_one_grant_at_a_time(options):
    with pytest.raises(ClientError, match="choose one of"):
        create_auth("https://mcp.example.com/mcp", options(workload_token=WORKLOAD_JWT, client_credentials=True,
                                                           client_id="c", client_secret="s"))
