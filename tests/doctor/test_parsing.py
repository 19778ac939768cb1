"""The pieces with no network: the WWW-Authenticate parser, the discovery URLs, redaction, the report order."""

from __future__ import annotations

import pytest

from gatehouse.doctor.challenges import parse, parse_field
from gatehouse.doctor.fetch import redact_body
from gatehouse.doctor.model import Check, Group, Report, Status
from gatehouse.doctor.urls import path_inserted_prm, root_prm, server_metadata_urls


def test_one_field_with_two_challenges_and_quoted_commas():
    parsed = parse_field('Bearer realm="a, b", resource_metadata="https://x/.well-known/oauth-protected-resource/mcp", '
                         'scope="files:read files:write", DPoP algs="ES256 RS256"')
    assert not parsed.problems
    bearer, dpop = parsed.challenges
    assert bearer.scheme == "Bearer" and bearer.get("realm") == "a, b" and bearer.get("scope") == "files:read files:write"
    assert dpop.scheme == "DPoP" and dpop.get("algs") == "ES256 RS256"


def test_several_fields_escapes_case_and_token68():
    parsed = parse(['Basic realm=api', 'bearer ERROR="invalid_token", error_description="say \\"hi\\""', "Negotiate YII="])
    assert [c.scheme for c in parsed.challenges] == ["Basic", "bearer", "Negotiate"]
    assert parsed.first("Bearer").get("error") == "invalid_token"
    assert parsed.first("Bearer").get("error_description") == 'say "hi"'
    assert parsed.first("negotiate").token68 == "YII="


def test_a_scheme_without_parameters():
    parsed = parse_field("Bearer")
    assert parsed.challenges[0].scheme == "Bearer" and parsed.challenges[0].params == {} and not parsed.problems


@pytest.mark.parametrize("header, problem", [
    ('Bearer scope="a", scope="b"', "appears twice"),
    ('Bearer resource_metadata="unterminated', "unexpected"),
    ("=oops", "unexpected"),
])
def test_syntax_problems_are_reported_not_raised(header, problem):
    assert problem in parse_field(header).problems[0]


def test_discovery_urls_in_the_client_order():
    assert path_inserted_prm("https://mcp.example.com/mcp/") == "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    assert path_inserted_prm("https://mcp.example.com") is None
    assert root_prm("https://mcp.example.com/a/b") == "https://mcp.example.com/.well-known/oauth-protected-resource"
    assert server_metadata_urls("https://auth.example.com/tenant1/") == [
        ("RFC 8414, path-inserted", "https://auth.example.com/.well-known/oauth-authorization-server/tenant1"),
        ("OpenID Connect, path-inserted", "https://auth.example.com/.well-known/openid-configuration/tenant1"),
        ("OpenID Connect, path-appended", "https://auth.example.com/tenant1/.well-known/openid-configuration"),
    ]
    assert [u for _, u in server_metadata_urls("https://auth.example.com/")] == [
        "https://auth.example.com/.well-known/oauth-authorization-server", "https://auth.example.com/.well-known/openid-configuration"]


def test_credentials_are_redacted_from_bodies():
    form = redact_body(b"grant_type=refresh_token&refresh_token=rt-secret&client_id=c1", "application/x-www-form-urlencoded")
    assert "rt-secret" not in form and "refresh_token=<redacted>" in form and "client_id=c1" in form
    answer = redact_body(b'{"access_token":"at-secret","nested":{"client_secret":"s"},"scope":"a"}', "application/json")
    assert "at-secret" not in answer and '"client_secret":"<redacted>"' in answer and '"scope":"a"' in answer


def test_the_report_puts_failures_first_and_only_failures_fail():
    checks = [Check("cors.x", Group.CORS, Status.PASS, "ok"), Check("as.y", Group.SERVER_METADATA, Status.WARN, "hm"),
              Check("prm.z", Group.RESOURCE_METADATA, Status.PASS, "ok"), Check("prm.w", Group.RESOURCE_METADATA, Status.FAIL, "no")]
    report = Report("https://mcp.example.com/mcp", checks)
    assert report.exit_code == 1
    assert [(role, [c.id for c in cs]) for role, cs in report.by_role()] == [
        ("MCP server (resource server)", ["prm.w", "prm.z"]), ("Authorization server", ["as.y"]),
        ("Browser-based clients (CORS)", ["cors.x"])]
    assert Report("u", checks[:3]).exit_code == 0  # a warning does not fail the run
