"""The OS keyring as the home of a credential entry's secrets (issue 4 item 1).

With the ``keyring`` extra installed and a usable backend, the JSON entry files keep everything
that is not secret (issuer, resource, expiry, scopes, metadata, client_id), so ``gatehouse tokens
list`` never unlocks the keyring, and the secrets (access and refresh token, client secret, DPoP
private key) go to one keyring item per entry: service ``gatehouse``, the username recorded in the
file (``{"keyring": {"service": ..., "username": ...}}``), the password a small JSON object.

Which backend new writes use: ``ClientOptions.credentials_backend``, else
``$GATEHOUSE_CREDENTIALS_BACKEND``, else ``auto``:

- ``file``: today's 0600 JSON files only;
- ``keyring``: the keyring, whatever backend ``keyring`` found, except its fail and null backends
  (``StorageError`` when there is none);
- ``auto``: the keyring when its backend is one ``keyring`` itself recommends (priority >= 1, so
  not the plaintext ``keyrings.alt`` files, nor fail/null), else the files.

A file written with its secrets in the keyring says so, so a mixed setup reads correctly whatever
the setting; rewriting it under ``file`` moves its secrets back into the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gatehouse.client.errors import StorageError

SERVICE = "gatehouse"
BACKEND_VARIABLE = "GATEHOUSE_CREDENTIALS_BACKEND"
BACKENDS = ("file", "keyring", "auto")
PLACEHOLDER = "(in the OS keyring)"
"""What a secret reads as when the keyring is not consulted (``gatehouse tokens list``)."""

# (section of the entry's JSON, or None for the top level; field)
SECRET_FIELDS: tuple[tuple[str | None, str], ...] = (
    ("tokens", "access_token"), ("tokens", "refresh_token"), ("client", "client_secret"), (None, "dpop_key"),
)


class KeyringFailure(StorageError):
    """The keyring could not be used; unlike an unreadable file, never a reason to set an entry aside."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else "") or type(exc).__name__


class KeyringSecrets:
    """One keyring item per entry, holding that entry's secrets as JSON."""

    def __init__(self, keyring_module: Any):
        self._keyring = keyring_module

    def __repr__(self) -> str:
        return f"KeyringSecrets({self.backend_name()})"

    def backend_name(self) -> str:
        backend = self._keyring.get_keyring()
        return f"{type(backend).__module__}.{type(backend).__qualname__}"

    def _failed(self, action: str, username: str, exc: BaseException) -> KeyringFailure:
        return KeyringFailure(
            f"the OS keyring ({self.backend_name()}) could not {action} the secrets of {username!r}: "
            f"{_one_line(exc)}; nothing was changed (unlock the keyring, or set {BACKEND_VARIABLE}=file)"
        )

    def get(self, username: str) -> dict[str, Any] | None:
        try:
            raw = self._keyring.get_password(SERVICE, username)
        except Exception as exc:  # noqa: BLE001 - backends raise anything (D-Bus, Keychain, ...)
            raise self._failed("read", username, exc) from None
        if raw is None:
            return None
        try:
            secrets = json.loads(raw)
        except ValueError:
            secrets = None
        if not isinstance(secrets, dict):
            raise StorageError(f"the OS keyring item {SERVICE}/{username!r} is not a gatehouse secrets record")
        return secrets

    def set(self, username: str, secrets: dict[str, Any]) -> None:
        try:
            self._keyring.set_password(SERVICE, username, json.dumps(secrets, separators=(",", ":")))
        except Exception as exc:  # noqa: BLE001
            raise self._failed("store", username, exc) from None

    def delete(self, username: str) -> None:
        """Delete the item; one that is already gone is fine."""
        try:
            self._keyring.delete_password(SERVICE, username)
        except Exception as exc:  # noqa: BLE001 - PasswordDeleteError also means "not there"
            if self.get(username) is not None:
                raise self._failed("delete", username, exc) from None


def _import_keyring() -> Any | None:
    try:
        import keyring
    except ImportError:
        return None
    return keyring


def _usable(keyring_module: Any, *, recommended_only: bool) -> bool:
    try:
        from keyring.backends import fail, null

        backend = keyring_module.get_keyring()
        if isinstance(backend, (fail.Keyring, null.Keyring)):
            return False
        return not recommended_only or float(backend.priority) >= 1
    except Exception:  # noqa: BLE001 - a broken backend is an unusable one
        return False


def backend_setting(configured: str | None) -> str:
    setting = (configured or os.environ.get(BACKEND_VARIABLE) or "auto").strip().lower()
    if setting not in BACKENDS:
        raise StorageError(f"unknown credentials backend {setting!r} ({BACKEND_VARIABLE}); use one of: {', '.join(BACKENDS)}")
    return setting


def choose(configured: str | None) -> KeyringSecrets | None:
    """The keyring new writes put secrets in, or None for the files (see the module docstring)."""
    setting = backend_setting(configured)
    if setting == "file":
        return None
    module = _import_keyring()
    if module is not None and _usable(module, recommended_only=setting == "auto"):
        return KeyringSecrets(module)
    if setting == "keyring":
        why = "the keyring package is not installed (pip install 'gatehouse[keyring]')" if module is None \
            else "keyring found no usable backend"
        raise KeyringFailure(f"credentials backend 'keyring' was asked for but {why}; or set {BACKEND_VARIABLE}=file")
    return None


def for_reading() -> KeyringSecrets:
    """The keyring a file says holds its secrets (whatever the setting)."""
    module = _import_keyring()
    if module is None:
        raise KeyringFailure("these credentials keep their secrets in the OS keyring, but the keyring package is not "
                           "installed: pip install 'gatehouse[keyring]'")
    return KeyringSecrets(module)


def username_for(root: Path, issuer: str, resource: str) -> str:
    """The keyring username of an entry: its issuer and resource, and which store (root) it belongs to."""
    store = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]
    return f"{resource} @ {issuer} [{store}]"


def split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An entry's JSON without its secrets, and the secrets (keyed ``section.field``)."""
    public = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    secrets: dict[str, Any] = {}
    for section, name in SECRET_FIELDS:
        holder = public if section is None else public.get(section)
        if isinstance(holder, dict) and holder.get(name) is not None:
            secrets[f"{section}.{name}" if section else name] = holder.pop(name)
    return public, secrets


def merge(public: dict[str, Any], secrets: dict[str, Any] | None) -> dict[str, Any]:
    """``split`` undone; with ``secrets`` None, each secret the file lists reads as ``PLACEHOLDER``."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in public.items()}
    present = secrets if secrets is not None else {name: None for name in (public.get("keyring") or {}).get("fields", ())}
    for key in present:
        section, _, name = key.rpartition(".")
        holder = data if not section else data.get(section)
        if isinstance(holder, dict):
            value = present[key]
            holder[name] = value if secrets is not None else ({"placeholder": PLACEHOLDER} if not section else PLACEHOLDER)
    return data
