"""The embedded default: the demo notes server at /mcp, guarded, used by the official SDK client."""

from __future__ import annotations

import httpx2
import pytest

from tests.support.browser import Browser, authorize, pkce_pair
from tests.support.mcp_client import with_session

REDIRECT = "http://127.0.0.1:9/callback"


def access_token(live_as, scope: str, username: str = "alice") -> str:
    username, password = live_as.add_user(username)
    client = live_as.register(redirect_uris=[REDIRECT])
    verifier, challenge = pkce_pair()
    result = authorize(Browser(live_as.base_url), client_id=client["client_id"], redirect_uri=REDIRECT, challenge=challenge,
                       username=username, password=password, scope=scope, resource=live_as.resource)
    token = live_as.post_token({"grant_type": "authorization_code", "code": result.code, "client_id": client["client_id"],
                                "redirect_uri": REDIRECT, "code_verifier": verifier, "resource": live_as.resource})
    return token.json()["access_token"]


async def call(live_as, token: str, action):
    return await with_session(live_as.resource, token, action)


async def test_sdk_client_lists_and_calls_tools(live_as):
    token = access_token(live_as, "notes:read notes:write")

    async def work(session):
        tools = {t.name for t in (await session.list_tools()).tools}
        added = await session.call_tool("add_note", {"title": "Groceries", "body": "oat milk, lemons"})
        listed = await session.call_tool("list_notes", {})
        found = await session.call_tool("search_notes", {"query": "LEMON"})
        return tools, added, listed, found

    tools, added, listed, found = await call(live_as, token, work)
    assert {"add_note", "list_notes", "read_note", "delete_note"} <= tools
    assert not added.is_error
    assert "Groceries" in str(listed.content) and "oat milk" in str(found.content)


async def test_read_only_token_sees_only_read_tools(live_as):
    token = access_token(live_as, "notes:read")

    async def work(session):
        return {t.name for t in (await session.list_tools()).tools}

    tools = await call(live_as, token, work)
    assert tools == {"list_notes", "read_note", "search_notes"}


async def test_notes_are_per_user(live_as):
    alice = access_token(live_as, "notes:read notes:write", "alice")
    bob = access_token(live_as, "notes:read notes:write", "bob")
    await call(live_as, alice, lambda s: s.call_tool("add_note", {"title": "Alice's secret", "body": "x"}))
    listed = await call(live_as, bob, lambda s: s.call_tool("list_notes", {}))
    assert "Alice" not in str(listed.content)


def test_unauthenticated_request_gets_the_rs3_challenge(live_as):
    response = httpx2.post(live_as.resource, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                   "params": {"name": "add_note", "arguments": {}}})
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{live_as.base_url}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert 'scope="notes:write"' in challenge and "offline_access" not in challenge
    metadata = httpx2.get(f"{live_as.base_url}/.well-known/oauth-protected-resource/mcp").json()
    assert metadata["resource"] == live_as.resource and metadata["authorization_servers"] == [live_as.base_url]
    assert httpx2.get(f"{live_as.base_url}/.well-known/oauth-protected-resource").json() == metadata


def test_write_with_read_only_token_gets_insufficient_scope(live_as):
    token = access_token(live_as, "notes:read")
    response = httpx2.post(
        live_as.resource,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add_note", "arguments": {}}},
    )
    assert response.status_code == 403
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="notes:write"' in challenge and "resource_metadata=" in challenge


@pytest.mark.parametrize("where", ["query", "malformed-header"])
def test_token_only_in_the_authorization_header(live_as, where):
    token = access_token(live_as, "notes:read")
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    if where == "query":
        response = httpx2.post(f"{live_as.resource}?access_token={token}", json=body)
    else:
        response = httpx2.post(live_as.resource, json=body, headers={"Authorization": f"Token {token}"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
