"""How a client identifies itself and logs in: the options shared by the library, the CLI and the bridge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ClientOptions:
    """Everything a client may be told; the defaults give an interactive user's client (CL-6)."""

    client_id: str | None = None
    client_secret: str | None = None
    client_metadata_url: str | None = None
    scopes: tuple[str, ...] = ()
    client_credentials: bool = False
    private_key_file: Path | None = None
    open_browser: bool = True
    headless: bool = False
    login_timeout: float = 300.0
    storage_dir: Path | None = None
    client_name: str = "Gatehouse CLI"
    extra_headers: dict[str, str] = field(default_factory=dict)
    issuer: str | None = None
    """The AS issuer the client's credentials belong to; then no other AS ever receives them."""
    fresh_login: bool = False
    """Ignore stored tokens and sign in again; unreadable stored entries are set aside as ``*.corrupt``."""
