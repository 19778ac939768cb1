"""The calendar example's tool through the guard, with the vault's Google token (UP-3, S-U4), and
what the tool says when Google is down or has revoked the user's access.

The person signs in over HTTP here (test_calendar_browser.py does it in Chromium); the MCP client
is the official SDK client with the token it got.
"""

from __future__ import annotations

import httpx2
import pytest

from tests.support.mcp_client import with_session


def call_upcoming_events(stack, token: str):
    return with_session(stack.resource, token, lambda s: s.call_tool("upcoming_events", {"max_results": 5}))


async def test_UP3_the_tool_lists_the_users_events_with_the_token_from_the_vault(federation, calendar_stack):
    mcp_token = federation.sign_in("alice")["access_token"]

    result = await call_upcoming_events(calendar_stack, mcp_token)

    assert not result.is_error, result.content
    events = result.structured_content["result"]
    assert [e["summary"] for e in events] == ["Alice's standup", "Lunch with Alice", "Alice: quarterly review"]
    assert events[0] == {"summary": "Alice's standup", "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:30:00Z"}
    assert calendar_stack.api.received_tokens == [federation.vault_tokens("alice")["access_token"]]


async def test_S_U4_upstream_tokens_are_refused_by_the_mcp_server_and_the_mcp_token_never_goes_upstream(federation, calendar_stack):
    bob_mcp_token = federation.sign_in("bob")["access_token"]
    assert not (await call_upcoming_events(calendar_stack, bob_mcp_token)).is_error
    [google] = federation.upstream_token_responses
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}

    for name in ("access_token", "refresh_token", "id_token"):
        response = httpx2.post(calendar_stack.resource, json=initialize, headers={
            "Authorization": f"Bearer {google[name]}", "Accept": "application/json, text/event-stream"})
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"] == "invalid_token" and 'error="invalid_token"' in response.headers["www-authenticate"]

    # the calendar API saw Google's token, once, and never Gatehouse's
    assert calendar_stack.api.received_tokens == [google["access_token"]]
    assert bob_mcp_token not in calendar_stack.api.received_tokens


@pytest.mark.parametrize("op_options", [{"access_token_ttl": 30}])  # within the vault's refresh margin: each call refreshes
async def test_when_google_is_down_the_tool_says_so_and_recovers(federation, calendar_stack):
    mcp_token = federation.sign_in("alice")["access_token"]
    federation.op.stop()
    try:
        down = await call_upcoming_events(calendar_stack, mcp_token)
    finally:
        federation.op.start()
    back = await call_upcoming_events(calendar_stack, mcp_token)

    assert down.is_error and down.content[0].text.endswith(
        "Google Calendar is not available: Google could not be reached to refresh the token (ConnectError); try again later")
    assert not back.is_error and len(back.structured_content["result"]) == 3
    assert [e["reason"] for e in federation.audit_events("token.exchange_refused")] == ["upstream_unavailable"]


@pytest.mark.parametrize("op_options", [{"access_token_ttl": 30}])
async def test_when_google_revoked_the_access_the_tool_asks_to_sign_in_again(federation, calendar_stack):
    mcp_token = federation.sign_in("alice")["access_token"]
    assert not (await call_upcoming_events(calendar_stack, mcp_token)).is_error
    federation.op.revoke_user(federation.op.account("alice").sub)

    result = await call_upcoming_events(calendar_stack, mcp_token)

    assert result.is_error
    text = result.content[0].text
    assert "Google Calendar is not available: Google refused to refresh the user's token (invalid_grant)" in text
    assert text.endswith("sign in through Google again")
