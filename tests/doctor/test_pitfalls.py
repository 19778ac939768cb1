"""Each known pitfall, on a deliberately broken stand-in server: the doctor names it and exits 1.

The stand-in (tests/doctor/standin.py) is correct unless a fault is switched on; the first test
shows the correct one passes every check, so each later failure is the fault's doing.
"""

from __future__ import annotations

import pytest

from tests.doctor.conftest import run_doctor
from tests.doctor.standin import FIXED_AUDIENCE, Faults


def test_the_correct_standin_passes_everything_including_login(standin):
    server = standin()
    run = run_doctor(server.resource, "--login", "--headless", "--json")
    assert run.exit_code == 0, run.failing()
    statuses = run.statuses()
    assert statuses.pop("registration.cimd") == "warn"  # the stand-in offers only dynamic registration; warnings exit 0
    assert set(statuses.values()) == {"pass"}, {k: v for k, v in statuses.items() if v != "pass"}
    assert run.check("as.discovery")["summary"].endswith(
        f"at {server.base_url}/.well-known/oauth-authorization-server/tenant (RFC 8414, path-inserted)")
    assert statuses["login.audience_validation"] == "pass" and statuses["login.refresh_reuse"] == "pass"
    assert len(server.issued) > 6 and not [secret for secret in server.issued if secret in run.output]


def test_trailing_slash_issuer_mismatch(standin):
    server = standin(Faults(issuer_trailing_slash=True))
    run = run_doctor(server.resource, "--json")
    assert run.exit_code == 1
    issuer = run.check("as.issuer")
    assert issuer["status"] == "fail" and issuer["pitfall"] == "trailing-slash issuer mismatch"
    assert f"'{server.issuer}/'" in issuer["summary"] and f"'{server.issuer}'" in issuer["summary"]
    assert issuer["requirement"] == "CL-4" and repr(server.issuer) in issuer["fix"]
    # the metadata was found at the path-inserted URI built from the slashed issuer (RFC 8414 section 3.1)
    assert issuer["evidence"][0]["url"] == f"{server.base_url}/.well-known/oauth-authorization-server/tenant"


def test_prm_served_only_at_the_root(standin):
    server = standin(Faults(prm_only_at_root=True))
    run = run_doctor(server.resource, "--json")
    assert run.exit_code == 1
    check = run.check("prm.path_inserted")
    assert check["status"] == "fail" and check["pitfall"] == "PRM served only at the root" and check["requirement"] == "RS-2"
    assert f"{server.base_url}/.well-known/oauth-protected-resource/mcp" in check["fix"]
    assert [e["status"] for e in check["evidence"]] == [404, 200]
    assert run.status("prm.root") == "pass" and run.status("prm.resource") == "pass"


def test_as_without_code_challenge_methods_supported(standin):
    server = standin(Faults(no_pkce_methods=True))
    run = run_doctor(server.resource, "--json")
    assert run.exit_code == 1
    check = run.check("as.pkce")
    assert check["status"] == "fail" and check["pitfall"] == "AS lacks code_challenge_methods_supported"
    assert check["requirement"] == "CL-5" and '"code_challenge_methods_supported": ["S256"]' in check["fix"]


def test_as_without_code_challenge_methods_supported_stops_the_login_too(standin):
    server = standin(Faults(no_pkce_methods=True))
    run = run_doctor(server.resource, "--login", "--headless", "--json")
    assert run.exit_code == 1
    login = run.check("login.authorization")
    assert login["status"] == "fail" and "code_challenge_methods_supported" in login["summary"]


def test_www_authenticate_without_resource_metadata(standin):
    server = standin(Faults(challenge_without_resource_metadata=True))
    run = run_doctor(server.resource, "--json")
    assert run.exit_code == 1
    check = run.check("challenge.resource_metadata")
    assert check["status"] == "fail" and check["pitfall"] == "WWW-Authenticate without resource_metadata"
    assert f'resource_metadata="{server.base_url}/.well-known/oauth-protected-resource/mcp"' in check["fix"]
    assert run.status("prm.challenge_location") == "skipped" and run.status("prm.path_inserted") == "pass"


def test_resource_server_that_accepts_tokens_for_any_audience(standin):
    server = standin(Faults(accepts_any_audience=True))
    run = run_doctor(server.resource, "--login", "--headless", "--json")
    assert run.exit_code == 1
    check = run.check("login.audience_validation")
    assert check["status"] == "fail" and check["pitfall"] == "resource server accepts tokens for any audience"
    assert check["requirement"] == "RS-4" and check["evidence"][0]["status"] == 200
    assert check["evidence"][0]["request_headers"]["authorization"] == "Bearer <redacted>"
    assert run.status("login.other_resource") == "pass"  # the AS did its part: aud is the other resource
    assert run.failing() == ["login.audience_validation"]


def test_as_that_ignores_resource(standin):
    server = standin(Faults(ignores_resource=True))
    run = run_doctor(server.resource, "--login", "--headless", "--json")
    assert run.exit_code == 1
    audience = run.check("login.audience")
    assert audience["status"] == "fail" and audience["pitfall"] == "AS ignores resource" and audience["requirement"] == "AS-10"
    assert FIXED_AUDIENCE in audience["summary"] and server.resource in audience["summary"]
    assert run.check("login.other_resource")["pitfall"] == "AS ignores resource"
    # a token asked for another resource carries the same fixed audience, so the server takes it
    assert run.check("login.audience_validation")["pitfall"] == "resource server accepts tokens for any audience"


def test_proxy_that_strips_www_authenticate(behind_stripping_proxy):
    server = behind_stripping_proxy
    run = run_doctor(server.resource, "--json")
    assert run.exit_code == 1
    check = run.check("challenge.www_authenticate")
    assert check["status"] == "fail" and check["pitfall"] == "proxy strips WWW-Authenticate"
    assert "publishes protected resource metadata" in check["summary"]
    assert check["evidence"][0]["status"] == 401 and "www-authenticate" not in check["evidence"][0]["response_headers"]
    assert run.status("prm.path_inserted") == "pass"  # the metadata itself comes through the proxy


@pytest.mark.parametrize("output", ["rich", "markdown"])
def test_the_pitfall_is_named_in_every_output(standin, output):
    server = standin(Faults(issuer_trailing_slash=True))
    run = run_doctor(server.resource, *(["--markdown"] if output == "markdown" else []))
    assert run.exit_code == 1
    assert "pitfall: trailing-slash issuer mismatch" in run.output and "as.issuer" in run.output
    first_role = run.output.index("Authorization server")
    assert first_role < run.output.index("MCP server (resource server)")  # the role with the failure comes first


def test_metadata_without_cors_warns_without_failing(standin):
    server = standin(Faults(no_cors=True))
    run = run_doctor(server.resource, "--json")
    assert run.exit_code == 0
    for check_id in ("cors.protected_resource_metadata", "cors.authorization_server_metadata"):
        check = run.check(check_id)
        assert check["status"] == "warn" and "Access-Control-Allow-Origin: *" in check["fix"]
        assert check["evidence"][0]["request_headers"]["origin"] == "https://gatehouse-doctor.example"
    assert run.status("prm.path_inserted") == "pass" and run.status("as.discovery") == "pass"
