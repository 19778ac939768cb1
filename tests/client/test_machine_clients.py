"""Machine clients (AS-17): the client credentials grant with a secret or ``private_key_jwt``."""

from __future__ import annotations

import json

import pytest
from joserfc.jwk import ECKey, RSAKey

from gatehouse.client.auth import create_auth
from gatehouse.client.errors import AuthorizationFailed
from gatehouse.client.storage import CredentialStore
from tests.client.conftest import call_tool, failure_of, fetch


def machine_client(live_as, **metadata) -> dict:
    return live_as.register(grant_types=["client_credentials"], redirect_uris=None, **metadata)


async def test_client_credentials_with_a_secret(live_as, options, browser_log, tmp_path):
    client = machine_client(live_as, token_endpoint_auth_method="client_secret_basic")
    given = options(client_credentials=True, client_id=client["client_id"], client_secret=client["client_secret"])
    result = await call_tool(live_as.resource, create_auth(live_as.resource, given), "list_notes")
    assert not result.is_error and not browser_log.exists()
    [entry] = CredentialStore(tmp_path / "credentials").find(live_as.resource)
    assert entry.tokens.client_id == client["client_id"] and client["client_secret"] not in entry.path.read_text()

    again = await call_tool(live_as.resource, create_auth(live_as.resource, given), "list_notes")
    assert not again.is_error


async def test_a_wrong_client_secret_is_one_line(live_as, options):
    client = machine_client(live_as, token_endpoint_auth_method="client_secret_basic")
    given = options(client_credentials=True, client_id=client["client_id"], client_secret="not-the-secret")
    failure = await failure_of(call_tool(live_as.resource, create_auth(live_as.resource, given), "list_notes"), AuthorizationFailed)
    assert str(failure).startswith(f"{live_as.base_url} rejected the client credentials (invalid_client")
    assert "not-the-secret" not in str(failure) and "\n" not in str(failure)


@pytest.mark.parametrize("form", ["pem-ec", "pem-rsa", "jwk-with-kid"])
async def test_client_credentials_with_private_key_jwt(live_as, options, tmp_path, form):
    key = RSAKey.generate_key(2048) if form == "pem-rsa" else ECKey.generate_key("P-256", parameters={"kid": "k-1"})
    public = key.as_dict(private=False)
    client = machine_client(live_as, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public]})
    key_file = tmp_path / "client-key"
    if form == "jwk-with-kid":
        key_file.write_text(json.dumps(key.as_dict(private=True)))
    else:
        key_file.write_bytes(key.as_pem(private=True))
    given = options(client_credentials=True, client_id=client["client_id"], private_key_file=key_file)
    result = await call_tool(live_as.resource, create_auth(live_as.resource, given), "list_notes")
    assert not result.is_error


async def test_a_public_key_file_is_refused_before_anything_is_sent(options, tmp_path):
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(ECKey.generate_key("P-256").as_pem(private=False))
    with pytest.raises(Exception, match="public key"):
        create_auth("https://mcp.example.com/mcp", options(client_credentials=True, client_id="c", private_key_file=key_file))


async def test_credentials_go_only_to_the_configured_issuer(standin, options):
    given = options(client_credentials=True, client_id="machine", client_secret="s3cret", issuer="https://auth.example.com")
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, given)), AuthorizationFailed)
    assert "not the configured issuer https://auth.example.com" in str(failure)
    assert standin.sent("/token") == []


async def test_client_credentials_send_the_resource_and_scopes(standin, options):
    given = options(client_credentials=True, client_id="machine", client_secret="s3cret", scopes=("write",))
    assert (await fetch(standin.resource, create_auth(standin.resource, given))).status_code == 200
    [token_request] = standin.sent("/token")
    assert token_request.params["grant_type"] == "client_credentials"
    assert token_request.params["resource"] == standin.resource and token_request.params["scope"] == "write"
    assert token_request.params["authorization_header"].startswith("Basic ")
