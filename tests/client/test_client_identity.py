"""CL-6 and CL-7: pre-registered, CIMD, DCR; registrations per issuer; recovery from dead registrations."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import delete
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gatehouse.client.auth import create_auth
from gatehouse.client.errors import AuthorizationFailed
from gatehouse.client.storage import CredentialStore
from gatehouse.store.models import Client
from tests.client.conftest import call_tool, failure_of, fetch, refreshes_at, registrations_at

LOOPBACK_REDIRECT = "http://127.0.0.1/callback"


def client_id_opened(user_agent) -> str:
    return parse_qs(urlsplit(user_agent.opened()[-1]).query)["client_id"][0]


def entry_of(tmp_path, resource):
    [entry] = CredentialStore(tmp_path / "credentials").find(resource)
    return entry


async def test_a_pre_registered_public_client_is_used_as_given(live_as, user_agent, options):
    client = live_as.register(client_name="Desk app", redirect_uris=[LOOPBACK_REDIRECT])
    before = registrations_at(live_as)
    result = await call_tool(live_as.resource, create_auth(live_as.resource, options(client_id=client["client_id"])), "list_notes")
    assert not result.is_error
    assert registrations_at(live_as) == before and client_id_opened(user_agent) == client["client_id"]


async def test_a_pre_registered_confidential_client_authenticates_at_the_token_endpoint(live_as, user_agent, options, tmp_path):
    client = live_as.register(redirect_uris=[LOOPBACK_REDIRECT], token_endpoint_auth_method="client_secret_basic")
    given = options(client_id=client["client_id"], client_secret=client["client_secret"])
    assert not (await call_tool(live_as.resource, create_auth(live_as.resource, given), "list_notes")).is_error
    stored = entry_of(tmp_path, live_as.resource)
    assert stored.tokens.client_id == client["client_id"] and stored.client is None
    assert client["client_secret"] not in stored.path.read_text()


async def test_a_client_id_metadata_document_is_preferred_to_registration(live_as, user_agent, options, loopback_server):
    holder = {}

    async def document(request):
        return JSONResponse({"client_id": holder["url"], "client_name": "Notes CLI", "redirect_uris": [LOOPBACK_REDIRECT],
                             "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]})

    with loopback_server(Starlette(routes=[Route("/client.json", document)])) as base:
        holder["url"] = f"{base}/client.json"
        auth = create_auth(live_as.resource, options(client_metadata_url=holder["url"]))
        assert not (await call_tool(live_as.resource, auth, "list_notes")).is_error
    assert registrations_at(live_as) == 0 and client_id_opened(user_agent) == holder["url"]


async def test_without_metadata_document_support_the_client_registers(standin, options):
    auth = create_auth(standin.resource, options(headless=True, client_metadata_url="https://client.example.com/gatehouse.json"))
    assert (await fetch(standin.resource, auth)).status_code == 200
    assert len(standin.sent("/as1/register")) == 1
    assert standin.sent("/authorize")[0].params["client_id"].startswith("standin-")


async def test_metadata_document_used_where_advertised(standin, options):
    standin.metadata_changes["as1"] = {"client_id_metadata_document_supported": True}
    url = "https://client.example.com/gatehouse.json"
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True, client_metadata_url=url)))).status_code == 200
    assert standin.sent("/register") == [] and standin.sent("/authorize")[0].params["client_id"] == url


async def test_dynamic_registration_sends_application_type_and_a_loopback_redirect(standin, options):
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    [registration] = standin.sent("/register")
    assert registration.params["application_type"] == "native"
    redirect_uri = standin.sent("/authorize")[0].params["redirect_uri"]
    parts = urlsplit(redirect_uri)
    assert (parts.scheme, parts.hostname, parts.path) == ("http", "127.0.0.1", "/callback") and parts.port


async def test_no_way_to_identify_the_client_is_explained(standin, options):
    standin.metadata_changes["as1"] = {"registration_endpoint": None}
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True))), AuthorizationFailed)
    assert "offers neither client ID metadata documents nor dynamic client registration" in str(failure)
    assert standin.sent("/authorize") == [] and standin.sent("/register") == []


async def test_an_expired_registration_is_replaced(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    old = entry_of(tmp_path, live_as.resource)
    document = json.loads(old.path.read_text())
    document["client"].update(client_secret="old-secret", client_secret_expires_at=int(time.time()) - 60)
    document["tokens"]["expires_at"] = time.time() - 5
    old.path.write_text(json.dumps(document))

    lines: list[str] = []
    assert not (await call_tool(live_as.resource, create_auth(live_as.resource, options(), status=lines.append), "list_notes")).is_error
    assert "The client registration has expired; it will be registered again." in lines
    new = entry_of(tmp_path, live_as.resource)
    assert new.client.client_id != old.client.client_id and registrations_at(live_as) == 2
    assert new.tokens.client_id == new.client.client_id


async def test_a_client_unknown_to_the_server_at_refresh_registers_again(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    old = entry_of(tmp_path, live_as.resource)
    with live_as.ctx.unit_of_work() as session:
        session.execute(delete(Client).where(Client.client_id == old.client.client_id))
    document = json.loads(old.path.read_text())
    document["tokens"]["expires_at"] = time.time() - 5
    old.path.write_text(json.dumps(document))

    lines: list[str] = []
    assert not (await call_tool(live_as.resource, create_auth(live_as.resource, options(), status=lines.append), "list_notes")).is_error
    assert "The authorization server no longer knows this client; registering again…" in lines
    assert entry_of(tmp_path, live_as.resource).client.client_id != old.client.client_id
    assert registrations_at(live_as) == 2 and refreshes_at(live_as) == 0


async def test_invalid_client_at_the_code_exchange_registers_again_once(standin, options):
    standin.token_errors = [{"error": "invalid_client", "error_description": "unknown client"}]
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    assert len(standin.sent("/register")) == 2 and len(standin.sent("/authorize")) == 2

    standin.issued.clear()
    standin.token_errors = [{"error": "invalid_client"}, {"error": "invalid_client"}]
    failure = await failure_of(fetch(standin.resource, create_auth(standin.resource, options(headless=True, fresh_login=True))),
                               AuthorizationFailed)
    assert str(failure) == f"{standin.issuer('as1')} refused the token request (invalid_client)"
    assert len(standin.sent("/register")) == 4


async def test_a_new_authorization_server_gets_a_new_registration(standin, options, tmp_path):
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    first_client = standin.sent("/as1/authorize")[0].params["client_id"]

    standin.authorization_servers = ["as2"]
    standin.issued.clear()
    assert (await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))).status_code == 200
    assert len(standin.sent("/as2/register")) == 1
    assert standin.sent("/as2/authorize")[0].params["client_id"] != first_client
    assert all(r.params.get("client_id") != first_client for r in standin.requests if r.path.startswith("/as2/"))
    store = CredentialStore(tmp_path / "credentials")
    assert {e.issuer for e in store.find(standin.resource)} == {standin.issuer("as1"), standin.issuer("as2")}
