"""Settings: environment variables ``GATEHOUSE_*`` and an optional ``gatehouse.toml``.

Precedence, highest first: explicit arguments (CLI flags), environment, the TOML file
(``GATEHOUSE_CONFIG`` or ``./gatehouse.toml``), defaults.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


class ResourceConfig(BaseModel):
    """A protected resource (RFC 8707) the AS issues tokens for."""

    uri: str
    name: str = "MCP server"
    scopes: list[str] = Field(default_factory=list)
    scope_descriptions: dict[str, str] = Field(default_factory=dict)
    access_token_ttl: int | None = None


class TrustedIdPConfig(BaseModel):
    """An issuer whose JWTs the AS takes as authorization grants (RFC 7523 jwt-bearer grant).

    ``kind = "id-jag"``: an enterprise IdP issuing Identity Assertion JWT Authorization Grants
    (``typ: oauth-id-jag+jwt``) for users of registered clients; ``kind = "workload"``: a workload
    platform whose JWTs identify workloads (MCP workload identity federation), which need no
    client registration and are admitted only by ``subjects``.
    """

    issuer: str
    jwks_uri: str
    kind: Literal["id-jag", "workload"] = "id-jag"
    name: str | None = None
    audiences: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)
    scopes: list[str] = Field(default_factory=list)
    clients: list[str] = Field(default_factory=list)
    users: Literal["create", "existing"] = "create"
    username_claim: str = "sub"
    subjects: list[str] = Field(default_factory=list)

    @field_validator("issuer")
    @classmethod
    def _issuer_fits(cls, value: str) -> str:
        if not value or len(value) > 255:
            raise ValueError("issuer must be 1 to 255 characters")
        return value

    @field_validator("name")
    @classmethod
    def _name_is_a_label(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
            raise ValueError("name must be 1 to 64 letters, digits, '.', '_' or '-' (it prefixes the IdP's usernames)")
        return value

    @field_validator("jwks_uri")
    @classmethod
    def _jwks_uri_is_tls(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
        if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
            raise ValueError("jwks_uri must be an https URL (http only on loopback, for development)")
        return value

    @model_validator(mode="after")
    def _workloads_named(self) -> TrustedIdPConfig:
        if self.kind == "workload" and not self.subjects:
            raise ValueError(
                f"trusted issuer {self.issuer}: a workload issuer needs 'subjects', the workload identities it may "
                "vouch for (exact values; 'prefix*' for a prefix; ['*'] for every workload of this issuer)"
            )
        return self

    @property
    def label(self) -> str:
        """The prefix of the usernames of accounts created for this IdP's users."""
        return self.name or urlsplit(self.issuer).hostname or self.issuer


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEHOUSE_", extra="ignore")

    data_dir: Path = Path(".gatehouse")
    database_url: str | None = None
    issuer: str | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    secret_key: str | None = None

    access_token_ttl: int = 3600
    refresh_token_ttl: int = 30 * 24 * 3600
    authorization_code_ttl: int = 600
    key_activation_delay: int = 3600
    clock_leeway: int = 30
    max_body_bytes: int = 64 * 1024

    cimd_allow_insecure_loopback: bool = False
    cimd_fetch_timeout: float = 5.0
    cimd_max_bytes: int = 5 * 1024

    registration_rate_per_minute: int = 20
    failed_client_auth_per_minute: int = 10
    failed_login_per_minute: int = 10

    resources: list[ResourceConfig] = Field(default_factory=list)

    dpop_proof_max_age: int = 300
    dpop_require_nonce: bool = False
    dpop_nonce_lifetime: int = 300

    trusted_idps: list[TrustedIdPConfig] = Field(default_factory=list)

    @field_validator("issuer")
    @classmethod
    def _issuer_without_trailing_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("issuer must be an absolute http(s) URL, e.g. https://auth.example.com")
        if parts.query or parts.fragment:
            raise ValueError("issuer must not have a query or fragment (RFC 8414 section 2)")
        return value.rstrip("/")

    @field_validator("trusted_idps")
    @classmethod
    def _trusted_idps_distinct(cls, value: list[TrustedIdPConfig]) -> list[TrustedIdPConfig]:
        seen: set = set()
        for idp in value:
            for key in ((idp.issuer, idp.kind), ("label", idp.label)):
                if key in seen:
                    raise ValueError(f"trusted_idps: {key[1]!r} appears twice; give each IdP its own issuer/kind and name")
                seen.add(key)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("GATEHOUSE_CONFIG", "gatehouse.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @property
    def public_issuer(self) -> str:
        return self.issuer or f"http://{self.host}:{self.port}"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gatehouse.db').resolve()}"

    def effective_resources(self) -> list[ResourceConfig]:
        """The configured resources, or the embedded demo server at ``<issuer>/mcp``."""
        if self.resources:
            return self.resources
        return [
            ResourceConfig(
                uri=f"{self.public_issuer}/mcp",
                name="Gatehouse notes (demo MCP server)",
                scopes=["notes:read", "notes:write"],
                scope_descriptions={
                    "notes:read": "Read your notes",
                    "notes:write": "Create, change and delete your notes",
                },
            )
        ]
