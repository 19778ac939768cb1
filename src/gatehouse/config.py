"""Settings: environment variables ``GATEHOUSE_*`` and an optional ``gatehouse.toml``.

Precedence, highest first: explicit arguments (CLI flags), environment, the TOML file
(``GATEHOUSE_CONFIG`` or ``./gatehouse.toml``), defaults.
"""

from __future__ import annotations

import ipaddress
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

from gatehouse.secret_files import read_secret_file

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


def _is_tls_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    return bool(parts.netloc) and (parts.scheme == "https" or (parts.scheme == "http" and loopback))


UPSTREAM_PRESET_ISSUERS = {"google": "https://accounts.google.com", "entra": "https://login.microsoftonline.com/{tenant}/v2.0"}
GITHUB_DEFAULTS = {
    "authorize_url": "https://github.com/login/oauth/authorize",
    "token_url": "https://github.com/login/oauth/access_token",
    "api_base": "https://api.github.com",
}


class UpstreamConfig(BaseModel):
    """An upstream identity provider users sign in with (``[[upstream]]``, UP-1).

    ``kind``: ``oidc`` (any OpenID provider, found by discovery at ``issuer``), the presets
    ``google`` and ``entra`` (issuer filled in; ``tenant`` for Entra, default ``common``), or
    ``github`` (GitHub's OAuth, not OIDC; ``authorize_url``, ``token_url`` and ``api_base``
    default to GitHub's). Register ``<issuer of Gatehouse>/login/upstream/<name>/callback`` as
    the redirect URI at the provider.
    """

    name: str
    kind: Literal["oidc", "google", "entra", "github"] = "oidc"
    issuer: str | None = None
    tenant: str = "common"
    client_id: str
    client_secret: str | None = Field(default=None, repr=False)
    client_secret_file: Path | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] | None = None
    scopes: list[str] | None = None
    authorization_params: dict[str, str] = Field(default_factory=dict)
    display_name: str | None = None
    username_claim: str | None = None
    authorize_url: str | None = None
    token_url: str | None = None
    api_base: str | None = None

    @field_validator("name")
    @classmethod
    def _name_is_url_safe(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value):
            raise ValueError(
                f"upstream name {value!r} must be 1 to 32 lowercase letters, digits, '_' or '-' (it appears in "
                "/login/upstream/<name> and in usernames), e.g. \"google\""
            )
        return value

    @field_validator("tenant")
    @classmethod
    def _tenant_is_a_path_segment(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,64}", value):
            raise ValueError("tenant must be an Entra tenant id or domain, or one of common, organizations, consumers")
        return value

    @model_validator(mode="after")
    def _complete(self) -> UpstreamConfig:
        where = f"upstream {self.name!r}"
        if self.kind in UPSTREAM_PRESET_ISSUERS:
            if self.issuer is not None:
                raise ValueError(f"{where}: kind {self.kind!r} fills in the issuer itself; remove 'issuer' (or use kind = \"oidc\")")
            self.issuer = UPSTREAM_PRESET_ISSUERS[self.kind].format(tenant=self.tenant)
        elif self.kind == "oidc" and not self.issuer:
            raise ValueError(f"{where}: kind \"oidc\" needs 'issuer', the provider's issuer URL (discovery is read from it)")
        if self.kind == "github":
            for key, default in GITHUB_DEFAULTS.items():
                if getattr(self, key) is None:
                    setattr(self, key, default)
            if self.issuer is None:
                parts = urlsplit(self.authorize_url)
                self.issuer = f"{parts.scheme}://{parts.netloc}"
        elif any(getattr(self, key) is not None for key in GITHUB_DEFAULTS):
            raise ValueError(f"{where}: authorize_url, token_url and api_base are for kind \"github\"; OIDC providers are found by discovery")
        for key in ("issuer", *GITHUB_DEFAULTS):
            value = getattr(self, key)
            if value is not None and not _is_tls_or_loopback(value):
                raise ValueError(f"{where}: {key} must be an https URL (http only on loopback, for development), not {value!r}")
        if self.client_secret is not None and self.client_secret_file is not None:
            raise ValueError(f"{where}: give client_secret or client_secret_file, not both")
        if self.client_secret_file is not None:
            self.client_secret = read_secret_file(self.client_secret_file)
        if not self.client_secret:
            raise ValueError(f"{where}: needs client_secret_file (or client_secret), the secret the provider issued with client_id")
        if self.scopes is None:
            self.scopes = list(UPSTREAM_DEFAULT_SCOPES[self.kind])
        if self.kind != "github" and "openid" not in self.scopes:
            raise ValueError(f"{where}: scopes must include \"openid\" (the ID token is how the user is identified, UP-1)")
        reserved = {"state", "nonce", "code_challenge", "code_challenge_method", "redirect_uri", "client_id", "response_type", "scope"}
        clash = sorted(reserved & set(self.authorization_params))
        if clash:
            raise ValueError(f"{where}: authorization_params may not set {', '.join(clash)} (Gatehouse sets them)")
        if self.token_endpoint_auth_method is None:
            self.token_endpoint_auth_method = "client_secret_post" if self.kind == "github" else "client_secret_basic"
        return self

    @property
    def label(self) -> str:
        """The name shown on the login page ("Continue with <label>")."""
        return self.display_name or UPSTREAM_LABELS.get(self.kind) or self.name


UPSTREAM_DEFAULT_SCOPES = {
    "oidc": ("openid", "email", "profile"),
    "google": ("openid", "email", "profile"),
    "entra": ("openid", "email", "profile", "offline_access"),
    "github": ("read:user",),
}
UPSTREAM_LABELS = {"google": "Google", "entra": "Microsoft", "github": "GitHub"}


#: The highest rate limit a setting may hold: the shared counters are 32-bit (the store's
#: INTEGER), and a login limit counts up to four times its setting (login_throttle).
MAX_RATE_LIMIT = 100_000_000


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
    # seconds a rotation's answer may take to be recorded as sent before a retry with the old
    # refresh token counts as a lost answer rather than reuse; 0: every retry is reuse
    # (gatehouse.authserver.refresh_delivery)
    refresh_delivery_timeout: float = Field(default=5.0, ge=0, le=300)
    authorization_code_ttl: int = 600
    key_activation_delay: int = 3600
    clock_leeway: int = 30
    max_body_bytes: int = 64 * 1024

    cimd_allow_insecure_loopback: bool = False
    cimd_fetch_timeout: float = 5.0
    cimd_max_bytes: int = 5 * 1024

    # rate limits (gatehouse.authserver.ratelimit): sliding one-minute windows unless named otherwise,
    # shared by every instance through the store, or through Redis when redis_url is set
    rate_limits: bool = True
    redis_url: str | None = None
    redis_key_prefix: str = "gatehouse"
    registration_rate_per_minute: int = Field(default=20, ge=0, le=MAX_RATE_LIMIT)
    token_rate_per_minute_per_client: int = Field(default=300, ge=0, le=MAX_RATE_LIMIT)
    token_rate_per_minute_per_address: int = Field(default=600, ge=0, le=MAX_RATE_LIMIT)
    failed_client_auth_per_minute: int = Field(default=10, ge=0, le=MAX_RATE_LIMIT)
    failed_login_per_minute: int = Field(default=5, ge=0, le=MAX_RATE_LIMIT)
    failed_login_per_account: int = Field(default=100, ge=0, le=MAX_RATE_LIMIT)
    failed_login_per_address: int = Field(default=50, ge=0, le=MAX_RATE_LIMIT)
    login_max_lockout: int = Field(default=900, ge=1)
    cimd_fetches_per_minute_per_host: int = Field(default=60, ge=0, le=MAX_RATE_LIMIT)
    forwarded_allow_ips: str | None = None
    worker_header: bool = False

    resources: list[ResourceConfig] = Field(default_factory=list)

    dpop_proof_max_age: int = 300
    dpop_require_nonce: bool = False
    dpop_nonce_lifetime: int = 300

    trusted_idps: list[TrustedIdPConfig] = Field(default_factory=list)

    upstream: list[UpstreamConfig] = Field(default_factory=list)

    # operations (gatehouse.ops): logs, metrics, retention
    log_format: Literal["text", "json"] = "text"
    metrics_token: str | None = Field(default=None, repr=False)
    admin_host: str = DEFAULT_HOST
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    retention_interval: int = Field(default=300, ge=0)
    retention_grace: int = Field(default=3600, ge=0)
    retention_batch_size: int = Field(default=500, ge=1, le=10_000)
    retention_batch_pause: float = Field(default=0.05, ge=0)
    audit_retention_days: int = Field(default=0, ge=0)

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_strong(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if len(value.strip()) < 16:
            raise ValueError(
                "metrics_token must be at least 16 characters; make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value.strip()

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

    @field_validator("redis_url")
    @classmethod
    def _redis_url_has_a_redis_scheme(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("redis_url must be a redis://, rediss:// or unix:// URL, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies_are_addresses(cls, value: str | None) -> str | None:
        """Who may set ``X-Forwarded-For``: IP addresses or networks, comma-separated, or ``*``."""
        if value is None or not value.strip():
            return None
        for item in (part.strip() for part in value.split(",")):
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {item!r} is not an IP address or network; list the proxies in front of "
                    "Gatehouse, comma-separated, e.g. 10.0.0.5,10.1.0.0/16"
                ) from None
        return value

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

    @field_validator("upstream")
    @classmethod
    def _upstream_names_distinct(cls, value: list[UpstreamConfig]) -> list[UpstreamConfig]:
        names = [u.name for u in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"upstream: the name {repeated[0]!r} appears twice; each [[upstream]] needs its own name")
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


def raised_rate_limits_env(limit: int = 10_000_000) -> dict[str, str]:
    """``GATEHOUSE_*`` variables that raise every rate limit (the ``*_rate_*`` and ``*_per_*``
    settings) to ``limit``, for benchmarks and tests that measure something else: the limiters
    still run, so their cost is counted."""
    return {
        f"GATEHOUSE_{name.upper()}": str(limit)
        for name, field in Settings.model_fields.items()
        if field.annotation is int and ("_rate_" in name or "_per_" in name)
    }
