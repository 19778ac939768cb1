"""Settings precedence and validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gatehouse.config import Settings


def test_toml_file_env_and_arguments(tmp_path, monkeypatch):
    config = tmp_path / "gatehouse.toml"
    config.write_text(
        'issuer = "https://auth.example.com/"\naccess_token_ttl = 600\n'
        '[[resources]]\nuri = "https://mcp.example.com/mcp"\nname = "Example"\nscopes = ["tools:read"]\n'
    )
    monkeypatch.setenv("GATEHOUSE_CONFIG", str(config))
    monkeypatch.setenv("GATEHOUSE_ACCESS_TOKEN_TTL", "900")
    settings = Settings()
    assert settings.issuer == "https://auth.example.com", "the issuer has no trailing slash"
    assert settings.access_token_ttl == 900, "environment wins over the file"
    assert settings.effective_resources()[0].uri == "https://mcp.example.com/mcp"
    assert Settings(access_token_ttl=60).access_token_ttl == 60, "arguments win over the environment"


def test_default_resource_is_the_embedded_demo(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    resources = Settings(port=8123).effective_resources()
    assert [(r.uri, r.scopes) for r in resources] == [("http://127.0.0.1:8123/mcp", ["notes:read", "notes:write"])]


@pytest.mark.parametrize("issuer", ["ftp://example.com", "https://example.com/?q=1", "not a url"])
def test_bad_issuer_rejected(issuer):
    with pytest.raises(ValidationError):
        Settings(issuer=issuer)


@pytest.mark.parametrize("value", [-5, 100_000_001])
def test_a_rate_limit_outside_what_the_counters_hold_is_refused(value):
    """Issue 7: a limit past MAX_RATE_LIMIT would overflow the store's 32-bit counters (a login
    limit counts up to four times its setting); 0 allows none (registration closed)."""
    with pytest.raises(ValidationError, match="token_rate_per_minute_per_client"):
        Settings(token_rate_per_minute_per_client=value)
    assert Settings(registration_rate_per_minute=0).registration_rate_per_minute == 0


def test_the_raised_limits_of_benchmarks_are_valid_settings():
    from gatehouse.config import raised_rate_limits_env

    raised = {name.removeprefix("GATEHOUSE_").lower(): int(value) for name, value in raised_rate_limits_env().items()}
    assert Settings(**raised).token_rate_per_minute_per_client == 10_000_000


@pytest.mark.parametrize("value", [-1, 301])
def test_refresh_delivery_timeout_bounds(value):
    with pytest.raises(ValidationError, match="refresh_delivery_timeout"):
        Settings(refresh_delivery_timeout=value)
