"""Settings: environment variables ``GATEHOUSE_*`` and an optional ``gatehouse.toml``.

Precedence, highest first: explicit arguments (CLI flags), environment, the TOML file
(``GATEHOUSE_CONFIG`` or ``./gatehouse.toml``), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
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
