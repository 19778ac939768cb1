"""The credential store on a real file system: layout, modes, atomic writes, locks, corrupt files (CL-7, CL-13)."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from gatehouse.client.errors import StorageError
from gatehouse.client.options import ClientOptions
from gatehouse.client.storage import (
    STORAGE_DIR_VARIABLE,
    CredentialStore,
    StoredEntry,
    StoredTokens,
    canonical_resource,
    default_store,
)
from gatehouse.client.token_storage import BoundTokenStorage

ISSUER = "https://auth.example.com"
RESOURCE = "https://mcp.example.com/mcp"


def with_tokens(entry: StoredEntry, access: str = "at-1", refresh: str | None = "rt-1", expires_in: int = 3600) -> StoredEntry:
    token = OAuthToken(access_token=access, refresh_token=refresh, expires_in=expires_in, scope="notes:read")
    return StoredEntry(entry.issuer, entry.resource, entry.client, StoredTokens.from_token(token, "client-1"))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_entries_are_files_per_issuer_and_resource_with_private_modes(tmp_path):
    store = CredentialStore(tmp_path / "credentials")
    store.update(ISSUER, RESOURCE, with_tokens)
    store.update("https://other-as.example.com", RESOURCE, with_tokens)
    store.update(ISSUER, "https://mcp.example.com/other", with_tokens)
    files = sorted(p for p in (tmp_path / "credentials").rglob("*.json"))
    assert len(files) == 3
    assert mode_of(tmp_path / "credentials") == 0o700
    for path in files:
        assert mode_of(path) == 0o600 and mode_of(path.parent) == 0o700
    assert {e.issuer for e in store.find(RESOURCE)} == {ISSUER, "https://other-as.example.com"}


def test_expiry_is_stored_as_an_absolute_time(tmp_path):
    store = CredentialStore(tmp_path)
    before = time.time()
    entry = store.update(ISSUER, RESOURCE, lambda e: with_tokens(e, expires_in=600))
    stored = json.loads(entry.path.read_text())["tokens"]
    assert before + 600 <= stored["expires_at"] <= time.time() + 600
    assert store.load(ISSUER, RESOURCE).tokens.expires_at == stored["expires_at"]


def test_resource_keys_are_canonical():
    assert canonical_resource("HTTPS://MCP.Example.com/mcp/") == "https://mcp.example.com/mcp"
    assert canonical_resource("https://mcp.example.com/mcp#frag") == "https://mcp.example.com/mcp"


def test_the_latest_entry_for_a_resource_is_found_without_knowing_the_issuer(tmp_path):
    store = CredentialStore(tmp_path)
    store.update("https://old-as.example.com", RESOURCE, with_tokens)
    store.update(ISSUER, RESOURCE, lambda e: with_tokens(e, "at-new"))
    assert store.latest_for(RESOURCE + "/").issuer == ISSUER


def test_listing_shows_no_token_or_secret(tmp_path):
    store = CredentialStore(tmp_path)
    client = OAuthClientInformationFull(client_id="client-1", client_secret="very-secret-value", client_secret_expires_at=0)
    store.update(ISSUER, RESOURCE, lambda e: StoredEntry(e.issuer, e.resource, client, with_tokens(e, "at-secret", "rt-secret").tokens))
    [summary] = store.entries()
    shown = json.dumps(summary.to_json()) + repr(summary) + repr(store.load(ISSUER, RESOURCE))
    for secret in ("at-secret", "rt-secret", "very-secret-value"):
        assert secret not in shown
    assert summary.client_id == "client-1" and summary.scopes == ("notes:read",) and summary.has_refresh_token


def test_remove_forgets_one_issuer_or_every_issuer_of_a_server(tmp_path):
    store = CredentialStore(tmp_path)
    for issuer in (ISSUER, "https://b.example.com", "https://c.example.com"):
        store.update(issuer, RESOURCE, with_tokens)
    store.update(ISSUER, "https://elsewhere.example.com/mcp", with_tokens)
    assert store.remove(RESOURCE, issuer="https://b.example.com") == 1
    assert store.remove(RESOURCE) == 2
    assert store.remove(RESOURCE) == 0
    assert [s.resource for s in store.entries()] == ["https://elsewhere.example.com/mcp"]


def test_a_corrupt_file_is_reported_and_never_overwritten(tmp_path):
    store = CredentialStore(tmp_path)
    path = store.update(ISSUER, RESOURCE, with_tokens).path
    path.write_text('{"format": 1, "issuer": ')
    with pytest.raises(StorageError) as caught:
        store.load(ISSUER, RESOURCE)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and f"gatehouse logout {RESOURCE}" in message
    with pytest.raises(StorageError):
        store.update(ISSUER, RESOURCE, with_tokens)
    assert path.read_text() == '{"format": 1, "issuer": '
    [listed] = store.entries()
    assert listed.problem and listed.path == path


def test_logout_sets_a_corrupt_file_aside_and_an_explicit_login_too(tmp_path):
    store = CredentialStore(tmp_path)
    path = store.update(ISSUER, RESOURCE, with_tokens).path
    path.write_text("not json")
    assert store.remove(RESOURCE) == 1
    assert not path.exists() and path.with_name(path.name + ".corrupt").read_text() == "not json"
    path.write_text("still not json")
    entry = store.update(ISSUER, RESOURCE, lambda e: with_tokens(e, "at-2"), set_aside_unreadable=True)
    assert entry.tokens.access_token == "at-2"
    corrupt = sorted(p.read_text() for p in path.parent.glob("*.corrupt"))
    assert corrupt == ["not json", "still not json"]


def test_a_failed_write_leaves_the_previous_entry(tmp_path, monkeypatch):
    store = CredentialStore(tmp_path)
    path = store.update(ISSUER, RESOURCE, with_tokens).path
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match="No space left"):
        store.update(ISSUER, RESOURCE, lambda e: with_tokens(e, "at-2"))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _add_one(root: str, rounds: int) -> None:
    store = CredentialStore(Path(root))
    for _ in range(rounds):
        def bump(entry: StoredEntry) -> StoredEntry:
            count = int(entry.tokens.access_token) if entry.tokens else 0
            return with_tokens(entry, str(count + 1))

        store.update(ISSUER, RESOURCE, bump)


def test_read_modify_write_is_atomic_across_processes(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_one, args=(str(tmp_path), 25)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert CredentialStore(tmp_path).load(ISSUER, RESOURCE).tokens.access_token == "100"


def test_default_location_is_the_user_data_dir_never_the_working_directory(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.delenv(STORAGE_DIR_VARIABLE, raising=False)
    assert default_store(ClientOptions()).root == Path(platformdirs.user_data_dir("gatehouse")) / "credentials"
    monkeypatch.setenv(STORAGE_DIR_VARIABLE, str(tmp_path / "from-env"))
    assert default_store(ClientOptions()).root == tmp_path / "from-env"
    assert default_store(ClientOptions(storage_dir=tmp_path / "given")).root == tmp_path / "given"


async def test_the_sdk_adapter_binds_to_the_issuer_once_known(tmp_path):
    store = CredentialStore(tmp_path)
    store.update("https://old-as.example.com", RESOURCE, with_tokens)
    adapter = BoundTokenStorage(store, RESOURCE)
    assert (await adapter.get_tokens()).access_token == "at-1"
    assert adapter.issuer == "https://old-as.example.com"

    class Context:
        oauth_metadata = None
        protected_resource_metadata = None
        client_info = OAuthClientInformationFull(client_id="client-2")

    from mcp.shared.auth import OAuthMetadata

    Context.oauth_metadata = OAuthMetadata(issuer=ISSUER, authorization_endpoint=f"{ISSUER}/authorize", token_endpoint=f"{ISSUER}/token")
    adapter.bind(Context)
    await adapter.set_tokens(OAuthToken(access_token="at-new", expires_in=60))
    assert store.load(ISSUER, RESOURCE).tokens.client_id == "client-2"
    assert store.load(ISSUER, RESOURCE).authorization_server["issuer"] == ISSUER
    assert store.load("https://old-as.example.com", RESOURCE).tokens.access_token == "at-1"
