"""Stored client credentials and tokens, one JSON file per (AS issuer, resource) (CL-7, CL-13).

Layout, under ``ClientOptions.storage_dir``, else ``$GATEHOUSE_CREDENTIALS_DIR``, else
``platformdirs.user_data_dir("gatehouse")/credentials`` (never the working directory)::

    credentials/                              mode 0700
      <resource slug>-<hash>/                 one folder per MCP server URL, mode 0700
        <issuer slug>-<hash>.json             one entry per authorization server, mode 0600
        <issuer slug>-<hash>.json.lock        short read-modify-write lock (fcntl)
        <issuer slug>-<hash>.json.refresh     held while a refresh is in flight (single flight)

An entry holds the issuer and resource it belongs to, the client registration (including a
client secret and its ``client_secret_expires_at``), the tokens with an absolute ``expires_at``
(epoch seconds, so a restarted client refreshes instead of logging in again), and the public
metadata last discovered for both (so a refresh needs no rediscovery and still sends
``resource``, CL-11), and the DPoP key its tokens are bound to, if any (RFC 9449).

With the ``keyring`` extra and a usable OS keyring, the secrets (tokens, client secret, DPoP key)
live in the keyring instead and the file records that (see ``keyring_secrets``); ``entries()``
never touches the keyring.

Writes are atomic (temporary file, fsync, ``os.replace``) under an inter-process lock. A file
that cannot be read raises ``StorageError`` naming it; it is never overwritten or deleted, only
set aside as ``*.corrupt`` on an explicit new login or ``gatehouse logout``.

The public API (used by ``gatehouse tokens`` and ``gatehouse logout``)::

    store = default_store(options)
    store.entries()                   -> list[EntrySummary]   (never token values)
    store.find(server_url, issuer)    -> list[StoredEntry]
    store.remove(server_url, issuer)  -> int                  (entries removed or set aside)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import ValidationError

from gatehouse.client import keyring_secrets, locking
from gatehouse.client.errors import StorageError
from gatehouse.client.options import ClientOptions

FORMAT = 1
STORAGE_DIR_VARIABLE = "GATEHOUSE_CREDENTIALS_DIR"


def canonical_resource(server_url: str) -> str:
    """The key an MCP server URL is stored under: RFC 8707 canonical form, no trailing slash."""
    parts = urlsplit(server_url.strip())
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, parts.query, ""))


def _folder_name(identifier: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", re.sub(r"^[a-z]+://", "", identifier)).strip("_")[:60]
    digest = hashlib.sha256(identifier.encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


@dataclass(frozen=True)
class StoredTokens:
    """An OAuth token response as stored: the lifetime made absolute (``expires_at``)."""

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    scope: str | None = None
    refresh_token: str | None = field(default=None, repr=False)
    expires_in: int | None = None
    expires_at: float | None = None
    client_id: str | None = None

    @classmethod
    def from_token(cls, token: OAuthToken, client_id: str | None, now: float | None = None) -> StoredTokens:
        now = time.time() if now is None else now
        expires_at = now + int(token.expires_in) if token.expires_in is not None else None
        return cls(token.access_token, token.token_type, token.scope, token.refresh_token, token.expires_in, expires_at, client_id)

    def as_token(self) -> OAuthToken:
        return OAuthToken(
            access_token=self.access_token, token_type="Bearer", expires_in=self.expires_in, scope=self.scope,
            refresh_token=self.refresh_token,
        )


@dataclass(frozen=True)
class StoredEntry:
    """Everything kept for one (issuer, resource) pair."""

    issuer: str
    resource: str
    client: OAuthClientInformationFull | None = field(default=None, repr=False)
    tokens: StoredTokens | None = None
    authorization_server: dict[str, Any] | None = field(default=None, repr=False)
    protected_resource: dict[str, Any] | None = field(default=None, repr=False)
    updated_at: float = 0.0
    path: Path | None = field(default=None, compare=False)
    dpop_key: dict[str, Any] | None = field(default=None, repr=False)
    """The private JWK the tokens are DPoP-bound to (RFC 9449), kept so a restarted client can use them."""

    def to_json(self) -> dict[str, Any]:
        tokens = None
        if self.tokens is not None:
            tokens = {k: v for k, v in self.tokens.__dict__.items() if v is not None}
        client = self.client.model_dump(mode="json", exclude_none=True) if self.client else None
        return {
            "format": FORMAT, "issuer": self.issuer, "resource": self.resource, "updated_at": self.updated_at,
            "client": client, "tokens": tokens, "authorization_server": self.authorization_server,
            "protected_resource": self.protected_resource,
            **({"dpop_key": self.dpop_key} if self.dpop_key else {}),
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> StoredEntry:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a gatehouse credentials file of format {FORMAT}")
        issuer, resource = data.get("issuer"), data.get("resource")
        if not isinstance(issuer, str) or not isinstance(resource, str):
            raise ValueError("issuer or resource missing")
        tokens = data.get("tokens")
        if tokens is not None:
            if not isinstance(tokens, dict) or not isinstance(tokens.get("access_token"), str):
                raise ValueError("tokens malformed")
            tokens = StoredTokens(**{k: v for k, v in tokens.items() if k in StoredTokens.__dataclass_fields__})
        client = data.get("client")
        if client is not None:
            client = OAuthClientInformationFull.model_validate(client)
        for name in ("authorization_server", "protected_resource", "dpop_key"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise ValueError(f"{name} malformed")
        return cls(
            issuer, resource, client, tokens, data.get("authorization_server"), data.get("protected_resource"),
            float(data.get("updated_at") or 0.0), path, data.get("dpop_key"),
        )

    def summary(self) -> EntrySummary:
        tokens = self.tokens
        return EntrySummary(
            issuer=self.issuer,
            resource=self.resource,
            client_id=(tokens.client_id if tokens and tokens.client_id else None) or (self.client.client_id if self.client else None),
            scopes=tuple((tokens.scope or "").split()) if tokens else (),
            expires_at=tokens.expires_at if tokens else None,
            has_access_token=tokens is not None,
            has_refresh_token=bool(tokens and tokens.refresh_token),
            client_secret_expires_at=self.client.client_secret_expires_at if self.client else None,
            updated_at=self.updated_at,
            path=self.path,
        )


@dataclass(frozen=True)
class EntrySummary:
    """What ``gatehouse tokens list`` shows of an entry: never a token or a secret."""

    issuer: str | None
    resource: str | None
    client_id: str | None
    scopes: tuple[str, ...]
    expires_at: float | None
    has_access_token: bool
    has_refresh_token: bool
    client_secret_expires_at: int | None
    updated_at: float | None
    path: Path | None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer, "resource": self.resource, "client_id": self.client_id, "scopes": list(self.scopes),
            "expires_at": self.expires_at, "has_access_token": self.has_access_token,
            "has_refresh_token": self.has_refresh_token, "client_secret_expires_at": self.client_secret_expires_at,
            "updated_at": self.updated_at, "path": str(self.path) if self.path else None, "problem": self.problem,
        }


def _unreadable(path: Path, reason: str, resource: str | None) -> StorageError:
    remedy = f"run `gatehouse logout {resource}`" if resource else "move the file away"
    return StorageError(
        f"cannot read the stored credentials in {path} ({reason}); nothing was changed: "
        f"{remedy} (a .corrupt copy is kept) and sign in again"
    )


class CredentialStore:
    """The JSON-file credential store rooted at ``root`` (see the module docstring)."""

    def __init__(self, root: Path, backend: str | None = None):
        self.root = Path(root)
        self.backend = backend
        """Where new writes put secrets: ``file``, ``keyring`` or ``auto`` (None: the environment, else auto)."""

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.root)!r})"

    def folder_for(self, resource: str) -> Path:
        return self.root / _folder_name(canonical_resource(resource))

    def path_for(self, issuer: str, resource: str) -> Path:
        return self.folder_for(resource) / f"{_folder_name(issuer)}.json"

    def read(self, path: Path, resource: str | None = None, *, with_secrets: bool = True) -> StoredEntry | None:
        """The entry in ``path``, None when there is none; ``StorageError`` when it cannot be read.

        Without ``with_secrets``, secrets kept in the OS keyring read as ``keyring_secrets.PLACEHOLDER``."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror}; it should belong to you with mode 0600") from None
        try:
            data = json.loads(raw)
            if isinstance(data, dict) and isinstance(data.get("keyring"), dict):
                secrets = None
                if with_secrets:
                    secrets = keyring_secrets.for_reading().get(str(data["keyring"].get("username")))
                    if secrets is None:
                        raise ValueError("its secrets are missing from the OS keyring")
                data = keyring_secrets.merge(data, secrets)
            return StoredEntry.from_json(data, path)
        except (ValueError, TypeError, ValidationError) as exc:
            reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise _unreadable(path, reason, resource) from None

    def load(self, issuer: str, resource: str) -> StoredEntry | None:
        return self.read(self.path_for(issuer, resource), canonical_resource(resource))

    def latest_for(self, resource: str) -> StoredEntry | None:
        """The most recently updated entry for ``resource``, whichever issuer (the AS is learnt later)."""
        entries = self.find(resource)
        return max(entries, key=lambda e: e.updated_at) if entries else None

    def find(self, server_url: str, issuer: str | None = None) -> list[StoredEntry]:
        resource = canonical_resource(server_url)
        if issuer is not None:
            entry = self.load(issuer, resource)
            return [entry] if entry else []
        folder = self.folder_for(resource)
        found = (self.read(path, resource) for path in sorted(folder.glob("*.json")))
        return [entry for entry in found if entry is not None]

    def update(self, issuer: str, resource: str, change: Callable[[StoredEntry], StoredEntry], *,
               set_aside_unreadable: bool = False) -> StoredEntry:
        """Read, ``change`` and write back the entry under the inter-process lock.

        An unreadable file raises ``StorageError`` and stays as it is, unless
        ``set_aside_unreadable`` (an explicit new login): then it is renamed ``*.corrupt`` first.
        """
        resource = canonical_resource(resource)
        path = self.path_for(issuer, resource)
        self._make_folder(path.parent)
        with locking.hold(path.with_name(path.name + ".lock")):
            try:
                current = self.read(path, resource)
            except StorageError as exc:
                if not set_aside_unreadable or isinstance(exc, keyring_secrets.KeyringFailure):
                    raise
                self.set_aside(path)
                current = None
            entry = change(current or StoredEntry(issuer, resource, path=path))
            entry = replace(entry, issuer=issuer, resource=resource, updated_at=time.time(), path=path)
            self._write_entry(path, entry)
        return entry

    def _write_entry(self, path: Path, entry: StoredEntry) -> None:
        """Secrets into the keyring first (when it is used), then the file; a keyring item the file no
        longer refers to is deleted last (best effort: the file already holds everything)."""
        previous = self._keyring_username(path)
        data, username = entry.to_json(), None
        keyring = keyring_secrets.choose(self.backend)
        if keyring is not None:
            data, secrets = keyring_secrets.split(data)
            username = keyring_secrets.username_for(self.root, entry.issuer, entry.resource)
            keyring.set(username, secrets)
            data["keyring"] = {"service": keyring_secrets.SERVICE, "username": username, "fields": sorted(secrets)}
        self._write_atomically(path, json.dumps(data, indent=2).encode())
        if previous is not None and previous != username:
            with contextlib.suppress(StorageError):
                keyring_secrets.for_reading().delete(previous)

    @staticmethod
    def _keyring_username(path: Path) -> str | None:
        """The keyring item ``path`` keeps its secrets in, if any."""
        try:
            record = json.loads(path.read_bytes()).get("keyring")
            return str(record["username"]) if isinstance(record, dict) and record.get("username") else None
        except (OSError, ValueError, AttributeError):
            return None

    def refresh_lock(self, issuer: str, resource: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held by whoever refreshes this entry's tokens, so that one refresh serves everyone (issue 4 item 2)."""
        path = self.path_for(issuer, resource)
        self._make_folder(path.parent)
        return locking.hold_async(path.with_name(path.name + ".refresh"))

    def entries(self) -> list[EntrySummary]:
        """Every entry, unreadable ones included with ``problem`` set, sorted by resource and issuer."""
        summaries = []
        for path in sorted(self.root.glob("*/*.json")):
            try:
                entry = self.read(path, with_secrets=False)
            except StorageError as exc:
                summaries.append(EntrySummary(None, None, None, (), None, False, False, None, None, path, str(exc)))
                continue
            if entry is not None:
                summaries.append(entry.summary())
        return sorted(summaries, key=lambda s: (s.resource or "", s.issuer or "", str(s.path)))

    def remove(self, server_url: str, issuer: str | None = None) -> int:
        """Forget what is stored for ``server_url`` (at ``issuer`` only, if given); unreadable files are
        set aside as ``*.corrupt``, never deleted. Returns how many entries were removed or set aside."""
        resource = canonical_resource(server_url)
        folder = self.folder_for(resource)
        paths = [self.path_for(issuer, resource)] if issuer else sorted(folder.glob("*.json"))
        removed = 0
        for path in paths:
            with locking.hold(path.with_name(path.name + ".lock")) if path.parent.is_dir() else contextlib.nullcontext():
                try:
                    entry = self.read(path, resource, with_secrets=False)
                except StorageError:
                    self.set_aside(path)
                    removed += 1
                    continue
                if entry is not None:
                    username = self._keyring_username(path)
                    if username is not None:
                        keyring_secrets.for_reading().delete(username)
                    path.unlink()
                    removed += 1
        return removed

    def set_aside_unreadable(self, server_url: str) -> list[Path]:
        """Set every unreadable entry of ``server_url`` aside (an explicit new login); returns the new names."""
        resource = canonical_resource(server_url)
        moved = []
        for path in sorted(self.folder_for(resource).glob("*.json")):
            with locking.hold(path.with_name(path.name + ".lock")):
                try:
                    self.read(path, resource, with_secrets=False)
                except StorageError:
                    moved.append(self.set_aside(path))
        return moved

    def set_aside(self, path: Path) -> Path:
        """Rename an unreadable entry to ``*.corrupt`` (keeping every earlier copy)."""
        target = path.with_name(path.name + ".corrupt")
        if target.exists():
            target = path.with_name(f"{path.name}.{int(time.time() * 1000)}.corrupt")
        os.replace(path, target)
        return target

    def _make_folder(self, folder: Path) -> None:
        for directory in (self.root, folder):
            if not directory.is_dir():
                try:
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    os.chmod(directory, 0o700)
                except OSError as exc:
                    raise StorageError(f"cannot create {directory}: {exc.strerror}; check the permissions of its parent") from None

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        """Temporary file (mode 0600) in the same folder, fsync, ``os.replace``, fsync the folder."""
        try:
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
            folder = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror}; check free space and the permissions of {path.parent}") from None


def storage_dir(options: ClientOptions) -> Path:
    """Where credentials live: the option, else ``$GATEHOUSE_CREDENTIALS_DIR``, else the user's data dir."""
    if options.storage_dir is not None:
        return Path(options.storage_dir)
    if os.environ.get(STORAGE_DIR_VARIABLE):
        return Path(os.environ[STORAGE_DIR_VARIABLE])
    import platformdirs

    return Path(platformdirs.user_data_dir("gatehouse")) / "credentials"


def default_store(options: ClientOptions) -> CredentialStore:
    """The credential store ``options`` point at (see ``storage_dir``), its secrets where
    ``options.credentials_backend`` / ``$GATEHOUSE_CREDENTIALS_BACKEND`` say (see ``keyring_secrets``)."""
    return CredentialStore(storage_dir(options), options.credentials_backend)

