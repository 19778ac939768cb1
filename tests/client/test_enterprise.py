"""Enterprise-managed authorization (SEP-990): an ID-JAG from the IdP (RFC 8693), then the jwt-bearer grant."""

from __future__ import annotations

import base64
import logging

import pytest

from gatehouse.client.auth import create_auth
from gatehouse.client.errors import AuthorizationFailed, ClientError
from gatehouse.client.options import EnterpriseIdp
from tests.client.conftest import failure_of, fetch
from tests.client.extension_standin import ExtensionStandIn

ID_TOKEN = "the-users-id-token"


@pytest.fixture
def standin(loopback_server):
    behaviour = ExtensionStandIn(proof_algorithms=None, id_token=ID_TOKEN)
    with loopback_server(behaviour.app()) as base_url:
        behaviour.base_url = base_url
        yield behaviour


def enterprise(standin, options, **idp_changes):
    idp = {"issuer": standin.idp_issuer, "client_id": "mcp-app", "id_token": ID_TOKEN, **idp_changes}
    return options(client_id="enterprise-client", client_secret="s3cret:/x", enterprise_idp=EnterpriseIdp(**idp))


async def test_the_id_token_becomes_an_id_jag_then_an_access_token(standin, options):
    assert (await fetch(standin.resource, create_auth(standin.resource, enterprise(standin, options)))).status_code == 200
    [exchange] = standin.sent("/idp/token")
    assert exchange.params == {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "requested_token_type": "urn:ietf:params:oauth:token-type:id-jag",
        "audience": standin.issuer("as1"), "resource": standin.resource,
        "subject_token": ID_TOKEN, "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "client_id": "mcp-app",
    }
    [grant] = standin.sent("/as1/token")
    assert grant.params["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert grant.params["assertion"] == standin.id_jags[0] and grant.params["resource"] == standin.resource
    expected = base64.b64encode(b"enterprise-client:s3cret%3A%2Fx").decode()
    assert grant.params["authorization_header"] == f"Basic {expected}" and "client_secret" not in grant.params


async def test_the_idp_token_endpoint_is_given_or_discovered(standin, options):
    given = enterprise(standin, options, token_endpoint=f"{standin.idp_issuer}/token", client_secret="idp-secret")
    assert (await fetch(standin.resource, create_auth(standin.resource, given))).status_code == 200
    [exchange] = standin.sent("/idp/token")
    assert exchange.params["authorization_header"].startswith("Basic ") and "client_id" not in exchange.params
    assert standin.sent("/idp/.well-known/openid-configuration") == []


async def test_a_refusal_at_the_idp_is_one_line_and_nothing_reaches_the_mcp_as(standin, options):
    standin.idp_refuses = True
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, enterprise(standin, options))),
                               AuthorizationFailed)
    assert str(failure) == (f"the enterprise IdP {standin.idp_issuer} refused to grant access to {standin.resource} "
                            "(invalid_grant: the ID token is not valid)")
    assert standin.sent("/as1/token") == []


async def test_an_idp_without_https_is_refused_before_the_id_token_is_sent(standin, options):
    given = enterprise(standin, options, token_endpoint="http://idp.example.com/token")
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, given)), ClientError)
    assert "must use https" in str(failure) and standin.sent("/idp/token") == []


async def test_tokens_of_the_exchange_never_reach_the_logs(standin, options, caplog):
    caplog.set_level(logging.DEBUG)
    assert (await fetch(standin.resource, create_auth(standin.resource, enterprise(standin, options)))).status_code == 200
    assert ID_TOKEN not in caplog.text and standin.id_jags[0] not in caplog.text


def test_a_client_secret_for_the_mcp_as_is_required(standin, options):
    idp = EnterpriseIdp(issuer="https://idp.example.com", client_id="mcp-app", id_token=ID_TOKEN)
    with pytest.raises(ClientError, match="needs the client id and secret"):
        create_auth("https://mcp.example.com/mcp", options(enterprise_idp=idp))
