"""DPoP end to end (RFC 9449) against `gatehouse serve`'s app: the AS binds, the guard checks, the client proves."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
from joserfc import jws

from gatehouse.client import dpop
from gatehouse.client.auth import create_auth
from gatehouse.client.storage import CredentialStore
from tests.client.conftest import call_tool, refreshes_at


def stored(tmp_path, resource):
    [entry] = CredentialStore(tmp_path / "credentials").find(resource)
    return entry


def bound_thumbprint(access_token: str) -> str | None:
    return json.loads(jws.extract_compact(access_token.encode()).payload).get("cnf", {}).get("jkt")


def stored_key_thumbprint(entry) -> str:
    return dpop.thumbprint(dpop.key_from_stored(entry.dpop_key))


async def test_a_signed_in_user_gets_a_bound_token_that_the_guard_accepts(live_as, user_agent, options, tmp_path):
    async with httpx2.AsyncClient() as http:
        metadata = (await http.get(f"{live_as.base_url}/.well-known/oauth-authorization-server")).json()
    assert "ES256" in metadata["dpop_signing_alg_values_supported"]
    result = await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    assert not result.is_error
    entry = stored(tmp_path, live_as.resource)
    assert entry.tokens.token_type == "DPoP"
    assert bound_thumbprint(entry.tokens.access_token) == stored_key_thumbprint(entry)


async def test_after_a_restart_the_stored_key_proves_and_refreshes(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    first = stored(tmp_path, live_as.resource)
    path = first.path
    document = json.loads(path.read_text())
    document["tokens"]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(document))

    result = await call_tool(live_as.resource, create_auth(live_as.resource, options()), "add_note", {"title": "t", "body": "b"})
    assert not result.is_error and len(user_agent.opened()) == 1 and refreshes_at(live_as) == 1
    refreshed = stored(tmp_path, live_as.resource)
    assert refreshed.tokens.access_token != first.tokens.access_token and refreshed.dpop_key == first.dpop_key
    assert bound_thumbprint(refreshed.tokens.access_token) == stored_key_thumbprint(first)


@pytest.mark.parametrize("as_overrides", [{"dpop_require_nonce": True}])
async def test_a_machine_client_follows_the_servers_nonce(live_as, options, tmp_path):
    client = live_as.register(grant_types=["client_credentials"], redirect_uris=None, token_endpoint_auth_method="client_secret_basic")
    given = options(client_credentials=True, client_id=client["client_id"], client_secret=client["client_secret"], dpop=True)
    result = await call_tool(live_as.resource, create_auth(live_as.resource, given), "list_notes")
    assert not result.is_error
    entry = stored(tmp_path, live_as.resource)
    assert bound_thumbprint(entry.tokens.access_token) == stored_key_thumbprint(entry)

