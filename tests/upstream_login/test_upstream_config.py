"""``[[upstream]]`` configuration (UP-1): presets, defaults and errors that say what to change."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gatehouse.config import Settings, UpstreamConfig

SECRET = {"client_id": "gatehouse", "client_secret": "s3cret"}


def problem(**values) -> str:
    with pytest.raises(ValidationError) as caught:
        UpstreamConfig(**{**SECRET, **values})
    return str(caught.value)


def test_toml_upstream_list_with_presets_and_secret_file(tmp_path, monkeypatch):
    secret = tmp_path / "google.secret"
    secret.write_text("from-a-file\n")
    config = tmp_path / "gatehouse.toml"
    config.write_text(
        '[[upstream]]\nname = "google"\nkind = "google"\nclient_id = "g-id"\n'
        f'client_secret_file = "{secret}"\nauthorization_params = {{ access_type = "offline" }}\n'
        '[[upstream]]\nname = "work"\nkind = "entra"\ntenant = "contoso.onmicrosoft.com"\nclient_id = "e-id"\nclient_secret = "e"\n'
        '[[upstream]]\nname = "github"\nkind = "github"\nclient_id = "gh-id"\nclient_secret = "gh"\n'
        '[[upstream]]\nname = "corp"\nissuer = "https://id.example.com/realms/corp"\nclient_id = "c"\nclient_secret = "c"\n'
    )
    monkeypatch.setenv("GATEHOUSE_CONFIG", str(config))
    google, entra, github, corp = Settings().upstream
    assert google.issuer == "https://accounts.google.com" and google.client_secret == "from-a-file"
    assert google.scopes == ["openid", "email", "profile"] and google.authorization_params == {"access_type": "offline"}
    assert google.label == "Google" and google.token_endpoint_auth_method == "client_secret_basic"
    assert entra.issuer == "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"
    assert "offline_access" in entra.scopes and entra.label == "Microsoft"
    assert github.issuer == "https://github.com" and github.api_base == "https://api.github.com"
    assert github.token_endpoint_auth_method == "client_secret_post" and github.label == "GitHub"
    assert corp.kind == "oidc" and corp.label == "corp"


def test_entra_defaults_to_the_common_tenant():
    assert UpstreamConfig(name="ms", kind="entra", **SECRET).issuer == "https://login.microsoftonline.com/common/v2.0"


def test_github_issuer_follows_a_loopback_stand_in():
    config = UpstreamConfig(name="github", kind="github", authorize_url="http://127.0.0.1:4000/login/oauth/authorize", **SECRET)
    assert config.issuer == "http://127.0.0.1:4000"


def test_the_client_secret_never_shows_in_a_repr():
    assert "s3cret" not in repr(UpstreamConfig(name="google", kind="google", **SECRET))


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"name": "Google", "kind": "google"}, "lowercase letters"),
        ({"name": "a/b", "kind": "google"}, "/login/upstream/<name>"),
        ({"name": "corp"}, "needs 'issuer'"),
        ({"name": "corp", "issuer": "http://id.example.com"}, "https URL"),
        ({"name": "g", "kind": "google", "issuer": "https://accounts.google.com"}, "remove 'issuer'"),
        ({"name": "g", "kind": "google", "scopes": ["email"]}, 'include "openid"'),
        ({"name": "g", "kind": "google", "authorization_params": {"nonce": "x"}}, "may not set nonce"),
        ({"name": "g", "kind": "google", "token_url": "https://example.com/token"}, 'for kind "github"'),
        ({"name": "gh", "kind": "github", "api_base": "http://api.example.com"}, "api_base must be an https URL"),
        ({"name": "ms", "kind": "entra", "tenant": "../evil"}, "tenant must be"),
    ],
)
def test_bad_upstream_config_says_what_to_change(values, says):
    assert says in problem(**values)


def test_a_secret_is_required_and_only_once(tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(ValidationError, match="needs client_secret_file"):
        UpstreamConfig(name="g", kind="google", client_id="x")
    with pytest.raises(ValidationError, match="not both"):
        UpstreamConfig(name="g", kind="google", client_id="x", client_secret="a", client_secret_file=missing)
    with pytest.raises(ValidationError, match="cannot read the client secret"):
        UpstreamConfig(name="g", kind="google", client_id="x", client_secret_file=missing)


def test_upstream_names_are_distinct():
    with pytest.raises(ValidationError, match="'google' appears twice"):
        Settings(upstream=[{"name": "google", "kind": "google", **SECRET}, {"name": "google", "kind": "github", **SECRET}])
