"""``gatehouse logout`` revokes the grant at the authorization server (RFC 7009) before forgetting it."""

from __future__ import annotations

from typer.testing import CliRunner

from gatehouse.client.auth import create_auth
from gatehouse.client.storage import CredentialStore
from tests.client.conftest import call_tool
from tests.client.test_tokens_commands import cli


def logout(tmp_path, resource: str, *flags: str):
    return CliRunner().invoke(cli(), ["logout", resource, *flags, "--storage-dir", str(tmp_path / "credentials")])


async def signed_in_refresh_token(live_as, options, tmp_path) -> tuple[str, str]:
    """A Bearer grant (no DPoP), so the test can refresh with the bare refresh token afterwards."""
    await call_tool(live_as.resource, create_auth(live_as.resource, options(dpop=False)), "list_notes")
    [entry] = CredentialStore(tmp_path / "credentials").find(live_as.resource)
    return entry.tokens.refresh_token, entry.tokens.client_id


async def test_logout_revokes_the_grant_then_forgets_it(live_as, user_agent, options, tmp_path):
    refresh_token, client_id = await signed_in_refresh_token(live_as, options, tmp_path)
    result = logout(tmp_path, live_as.resource)
    assert result.exit_code == 0, result.output
    assert f"Revoked the tokens at {live_as.base_url}." in result.output
    assert CredentialStore(tmp_path / "credentials").find(live_as.resource) == []
    refresh = live_as.post_token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id})
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant", "the grant ended at the AS"


async def test_logout_without_revoking_leaves_the_grant_at_the_server(live_as, user_agent, options, tmp_path):
    refresh_token, client_id = await signed_in_refresh_token(live_as, options, tmp_path)
    result = logout(tmp_path, live_as.resource, "--no-revoke")
    assert result.exit_code == 0 and "Revoked" not in result.output
    refresh = live_as.post_token({"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id})
    assert refresh.status_code == 200


async def test_an_unreachable_server_does_not_stop_the_local_logout(live_as, user_agent, options, tmp_path):
    refresh_token, _ = await signed_in_refresh_token(live_as, options, tmp_path)
    store = CredentialStore(tmp_path / "credentials")
    [entry] = store.find(live_as.resource)
    metadata = {**entry.authorization_server, "revocation_endpoint": "http://127.0.0.1:9/revoke"}
    store.update(entry.issuer, entry.resource, lambda e: type(e)(e.issuer, e.resource, e.client, e.tokens, metadata, e.protected_resource))
    result = logout(tmp_path, live_as.resource)
    assert result.exit_code == 0
    assert "Could not revoke the tokens" in result.output and "forgotten here anyway" in result.output
    assert refresh_token not in result.output
    assert store.find(live_as.resource) == []
