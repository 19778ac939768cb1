"""How a client identifies itself and logs in: the options shared by the library, the CLI and the bridge."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EnterpriseIdp:
    """The enterprise IdP of enterprise-managed authorization (SEP-990): it exchanges the user's ID
    token for an ID-JAG for the MCP authorization server (RFC 8693 token exchange)."""

    issuer: str
    client_id: str
    id_token: str | None = field(default=None, repr=False)
    id_token_file: Path | None = None
    client_secret: str | None = field(default=None, repr=False)
    token_endpoint: str | None = None
    """Found through the issuer's OpenID Connect discovery when not given."""


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
    credentials_backend: str | None = None
    """Where stored secrets go: ``file``, ``keyring`` (the OS keyring) or ``auto``; None: env
    ``GATEHOUSE_CREDENTIALS_BACKEND``, else ``auto`` (the keyring when one is installed and recommended)."""
    client_name: str = "Gatehouse CLI"
    extra_headers: dict[str, str] = field(default_factory=dict)
    issuer: str | None = None
    """The AS issuer the client's credentials belong to; then no other AS ever receives them."""
    fresh_login: bool = False
    """Ignore stored tokens and sign in again; unreadable stored entries are set aside as ``*.corrupt``."""
    dpop: bool | None = None
    """DPoP (RFC 9449). None: send proofs when the AS advertises ES256 in ``dpop_signing_alg_values_supported``
    (or the resource requires bound tokens, or the stored tokens are bound) and use the token type the AS
    issues; True: always, and refuse a token that is not DPoP-bound; False: never."""
    workload_token: str | None = field(default=None, repr=False)
    """A JWT from the workload's platform, presented with the jwt-bearer grant (workload identity federation)."""
    workload_token_file: Path | None = None
    """The file the platform keeps that JWT in (re-read for every token request, since platforms rotate it)."""
    enterprise_idp: EnterpriseIdp | None = None
    """Enterprise-managed authorization: an ID-JAG from this IdP, then the jwt-bearer grant (needs client_id and secret)."""
