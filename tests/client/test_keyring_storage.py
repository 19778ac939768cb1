"""The OS keyring as the home of stored secrets (issue 4 item 1), on a real keyring backend
(``keyrings.alt``'s plaintext file keyring, kept under tmp_path)."""

from __future__ import annotations

import json
import time

import keyring
import pytest
import typer
from keyring.backends import fail
from keyrings.alt.file import PlaintextKeyring
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from typer.testing import CliRunner

from gatehouse.client import keyring_secrets
from gatehouse.client.errors import StorageError
from gatehouse.client.options import ClientOptions
from gatehouse.client.storage import CredentialStore, StoredEntry, StoredTokens, default_store
from gatehouse.client.tokens_cli import logout, tokens_app

SERVER = "https://mcp.example.com/mcp"
ISSUER = "https://auth.example.com"
SECRETS = ("at-secret-value", "rt-secret-value", "client-secret-value", "dpop-d-value")


@pytest.fixture
def ring(tmp_path, monkeypatch):
    monkeypatch.delenv(keyring_secrets.BACKEND_VARIABLE, raising=False)
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring" / "keyring_pass.cfg")
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def fill(entry: StoredEntry) -> StoredEntry:
    client = OAuthClientInformationFull(client_id="client-1", client_secret="client-secret-value",
                                        client_secret_expires_at=int(time.time()) + 86400,
                                        redirect_uris=["http://127.0.0.1:4711/callback"])
    token = OAuthToken(access_token="at-secret-value", refresh_token="rt-secret-value", expires_in=3600, scope="notes:read")
    dpop_key = {"kty": "EC", "crv": "P-256", "x": "x-value", "y": "y-value", "d": "dpop-d-value"}
    return StoredEntry(entry.issuer, entry.resource, client, StoredTokens.from_token(token, "client-1"), dpop_key=dpop_key)


def items(ring: PlaintextKeyring) -> str:
    try:
        return open(ring.file_path, encoding="utf-8").read()
    except FileNotFoundError:
        return ""


def cli(store: CredentialStore, *args: str):
    app = typer.Typer()
    app.add_typer(tokens_app, name="tokens")
    app.command("logout")(logout)
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [*args, "--storage-dir", str(store.root)])


def test_secrets_live_in_the_keyring_and_survive_a_restart(ring, tmp_path, monkeypatch):
    monkeypatch.setenv(keyring_secrets.BACKEND_VARIABLE, "keyring")
    store = default_store(ClientOptions(storage_dir=tmp_path / "credentials"))
    written = store.update(ISSUER, SERVER, fill)

    text = written.path.read_text()
    for secret in SECRETS:
        assert secret not in text
    data = json.loads(text)
    assert data["tokens"]["client_id"] == "client-1" and data["tokens"]["scope"] == "notes:read"
    assert data["keyring"]["service"] == "gatehouse"
    assert set(data["keyring"]["fields"]) == {"tokens.access_token", "tokens.refresh_token", "client.client_secret", "dpop_key"}
    username = data["keyring"]["username"]
    assert json.loads(keyring.get_password("gatehouse", username))["tokens.access_token"] == "at-secret-value"

    # A restarted client (a new store, the setting now left to auto) reads everything back.
    monkeypatch.delenv(keyring_secrets.BACKEND_VARIABLE)
    again = CredentialStore(tmp_path / "credentials").load(ISSUER, SERVER)
    assert again.tokens.access_token == "at-secret-value" and again.tokens.refresh_token == "rt-secret-value"
    assert again.client.client_secret == "client-secret-value" and again.dpop_key["d"] == "dpop-d-value"
    assert again.tokens.expires_at == written.tokens.expires_at


def test_tokens_list_never_opens_the_keyring_and_remove_deletes_the_item(ring, tmp_path):
    store = CredentialStore(tmp_path / "credentials", "keyring")
    store.update(ISSUER, SERVER, fill)
    assert "gatehouse" in items(ring)

    keyring.set_keyring(fail.Keyring())  # a locked / absent keyring: the listing still works
    listed = cli(store, "tokens", "list", "--json")
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert (row["resource"], row["issuer"], row["client_id"]) == (SERVER, ISSUER, "client-1")
    assert row["has_access_token"] and row["has_refresh_token"] and row["problem"] is None
    assert not any(secret in listed.output for secret in SECRETS)

    # Reading the secrets needs the keyring: one clear StorageError, and nothing is lost.
    with pytest.raises(StorageError, match="OS keyring"):
        store.load(ISSUER, SERVER)
    removed = cli(store, "tokens", "remove", SERVER)
    assert removed.exit_code == 1 and "keyring" in removed.output
    assert store.path_for(ISSUER, SERVER).exists()

    keyring.set_keyring(ring)
    username = json.loads(store.path_for(ISSUER, SERVER).read_text())["keyring"]["username"]
    removed = cli(store, "tokens", "remove", SERVER)
    assert removed.exit_code == 0, removed.output
    assert not store.path_for(ISSUER, SERVER).exists()
    assert keyring.get_password("gatehouse", username) is None


def test_backend_file_keeps_secrets_in_the_file_and_a_mixed_store_reads_both(ring, tmp_path):
    root = tmp_path / "credentials"
    CredentialStore(root, "keyring").update(ISSUER, SERVER, fill)
    files = CredentialStore(root, "file")
    files.update("https://other-as.example.com", SERVER, fill)

    plain = json.loads(files.path_for("https://other-as.example.com", SERVER).read_text())
    assert "keyring" not in plain and plain["tokens"]["access_token"] == "at-secret-value"
    assert [e.tokens.access_token for e in files.find(SERVER)] == ["at-secret-value"] * 2

    # Rewriting the keyring-backed entry under `file` moves its secrets back into the file.
    username = json.loads(files.path_for(ISSUER, SERVER).read_text())["keyring"]["username"]
    files.update(ISSUER, SERVER, lambda entry: entry)
    moved = json.loads(files.path_for(ISSUER, SERVER).read_text())
    assert "keyring" not in moved and moved["client"]["client_secret"] == "client-secret-value"
    assert keyring.get_password("gatehouse", username) is None


def test_auto_uses_only_a_usable_recommended_keyring(ring, tmp_path):
    root = tmp_path / "credentials"
    # An unusable keyring (fail backend) under auto: files, as today.
    keyring.set_keyring(fail.Keyring())
    entry = CredentialStore(root).update(ISSUER, SERVER, fill)
    assert "at-secret-value" in entry.path.read_text()
    # Explicitly asking for the keyring then is one clear error, and the file is untouched.
    with pytest.raises(StorageError, match="no usable backend"):
        CredentialStore(root, "keyring").update(ISSUER, SERVER, fill)
    assert "at-secret-value" in entry.path.read_text()

    # A plaintext-file keyring is not one `keyring` recommends: auto keeps the files.
    keyring.set_keyring(ring)
    assert "at-secret-value" in CredentialStore(root).update(ISSUER, SERVER, fill).path.read_text()

    # The same real backend, claiming the priority of a recommended (OS) keyring. (On the instance: a
    # subclass would join keyring's backend registry and could become the process's default keyring.)
    recommended = PlaintextKeyring()
    recommended.file_path = ring.file_path
    recommended.priority = 1
    keyring.set_keyring(recommended)
    text = CredentialStore(root).update(ISSUER, SERVER, fill).path.read_text()
    assert "at-secret-value" not in text and json.loads(text)["keyring"]["service"] == "gatehouse"
    assert CredentialStore(root, "file").load(ISSUER, SERVER).tokens.access_token == "at-secret-value"


def test_unknown_backend_setting_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(keyring_secrets.BACKEND_VARIABLE, "vault")
    with pytest.raises(StorageError, match="unknown credentials backend 'vault'"):
        CredentialStore(tmp_path).update(ISSUER, SERVER, fill)
