"""``gatehouse tokens list|show|remove`` and ``gatehouse logout``, mounted the way cli.py mounts them."""

from __future__ import annotations

import json
import time

import pytest
import typer
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from typer.testing import CliRunner

from gatehouse.client.storage import CredentialStore, StoredEntry, StoredTokens
from gatehouse.client.tokens_cli import logout, tokens_app, when

SERVER = "https://mcp.example.com/mcp"
ISSUER = "https://auth.example.com"
SECRETS = ("at-secret-value", "rt-secret-value", "client-secret-value")


def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(tokens_app, name="tokens")
    app.command("logout")(logout)
    return app


@pytest.fixture
def store(tmp_path) -> CredentialStore:
    store = CredentialStore(tmp_path / "credentials")
    client = OAuthClientInformationFull(client_id="client-1", client_secret="client-secret-value",
                                        client_secret_expires_at=int(time.time()) + 86400,
                                        redirect_uris=["http://127.0.0.1:4711/callback"])
    token = OAuthToken(access_token="at-secret-value", refresh_token="rt-secret-value", expires_in=3600, scope="notes:read")

    def fill(entry: StoredEntry) -> StoredEntry:
        return StoredEntry(entry.issuer, entry.resource, client, StoredTokens.from_token(token, "client-1"))

    store.update(ISSUER, SERVER, fill)
    store.update("https://other-as.example.com", SERVER, fill)
    store.update(ISSUER, "https://elsewhere.example.com/mcp", fill)
    return store


def run(store: CredentialStore, *args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(cli(), [*args, "--storage-dir", str(store.root)])


def test_list_as_a_table_and_as_json_without_secrets(store):
    table = run(store, "tokens", "list")
    assert table.exit_code == 0 and "mcp.example.com/mcp" in table.output and "client-1" in table.output
    listed = run(store, "tokens", "list", "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.output)
    assert [(r["resource"], r["issuer"]) for r in rows] == [
        ("https://elsewhere.example.com/mcp", ISSUER), (SERVER, ISSUER), (SERVER, "https://other-as.example.com")]
    assert rows[0]["scopes"] == ["notes:read"] and rows[0]["has_refresh_token"] is True
    for secret in SECRETS:
        assert secret not in table.output and secret not in listed.output


def test_show_one_server(store):
    shown = run(store, "tokens", "show", SERVER + "/", "--issuer", ISSUER, "--json")
    assert shown.exit_code == 0
    [detail] = json.loads(shown.output)
    assert detail["client_id"] == "client-1" and detail["client_secret"].startswith("stored, in ")
    assert detail["refresh_token"] == "stored" and detail["registered_redirect_uris"] == ["http://127.0.0.1:4711/callback"]
    plain = run(store, "tokens", "show", SERVER)
    assert plain.exit_code == 0 and plain.output.count("issuer:") == 2
    for secret in SECRETS:
        assert secret not in shown.output and secret not in plain.output


def test_show_or_remove_of_nothing_fails_with_exit_1(store):
    for command in ("show", "remove"):
        result = run(store, "tokens", command, "https://unknown.example.com/mcp")
        assert result.exit_code == 1 and "nothing is stored for https://unknown.example.com/mcp" in result.output


def test_remove_one_issuer_then_logout_the_rest(store):
    removed = run(store, "tokens", "remove", SERVER, "--issuer", "https://other-as.example.com")
    assert removed.exit_code == 0 and "Removed 1 stored entry" in removed.output
    out = run(store, "logout", SERVER)
    assert out.exit_code == 0 and f"Logged out of {SERVER} (1 stored entry removed)." in out.output
    assert run(store, "logout", SERVER).output.strip() == f"Nothing was stored for {SERVER}."
    assert [s.resource for s in store.entries()] == ["https://elsewhere.example.com/mcp"]


def test_a_corrupt_file_is_listed_reported_and_set_aside_by_logout(store):
    [entry] = store.find(SERVER, ISSUER)
    entry.path.write_text("{broken")
    listed = run(store, "tokens", "list")
    assert listed.exit_code == 0 and "unreadable" in listed.output
    shown = run(store, "tokens", "show", SERVER)
    assert shown.exit_code == 1 and "cannot read the stored credentials" in shown.output
    assert run(store, "logout", SERVER).exit_code == 0
    assert entry.path.with_name(entry.path.name + ".corrupt").read_text() == "{broken"


@pytest.mark.parametrize("args", [["tokens", "show", "mcp.example.com"], ["logout", "ftp://x/mcp"], ["tokens", "show"]])
def test_usage_errors_exit_2(store, args):
    assert run(store, *args).exit_code == 2


def test_relative_times():
    now = 1_000_000.0
    assert when(now + 3540, now) == "in 59 min" and when(now - 7200, now) == "expired 2 h ago" and when(None) == "no expiry"
