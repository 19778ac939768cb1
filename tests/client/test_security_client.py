"""Client security cases S-CL1..S-CL5 (spec/security-cases.md), each named after its ID."""

from __future__ import annotations

import json
import logging
import stat
import time

import pytest

from gatehouse.client.auth import create_auth
from gatehouse.client.browser import check_browser_url
from gatehouse.client.errors import AuthorizationFailed
from gatehouse.client.storage import CredentialStore
from tests.client.conftest import call_tool, failure_of, fetch, refreshes_at


# --- S-CL1: state and iss -------------------------------------------------------------------

async def test_S_CL1_an_answer_with_another_state_is_discarded_and_the_real_one_still_counts(live_as, user_agent, options):
    user_agent.answer("forge-then-approve")
    auth = create_auth(live_as.resource, options())
    result = await call_tool(live_as.resource, auth, "list_notes")
    assert not result.is_error
    forged = [line for line in user_agent.events() if line.startswith("forged ")]
    assert forged == ["forged 400 Answer ignored"]
    assert user_agent.pages() == ["200 Signed in"]


async def test_S_CL1_only_a_wrong_state_means_no_token_request(standin, options):
    standin.state_mode = "wrong"
    with pytest.raises(AuthorizationFailed, match="does not carry this sign-in's state, so it was ignored"):
        await fetch(standin.resource, create_auth(standin.resource, options(headless=True, login_timeout=10)))
    assert standin.sent("/token") == []


async def test_S_CL1_an_answer_without_state_is_discarded(standin, options):
    standin.state_mode = "missing"
    with pytest.raises(AuthorizationFailed, match="so it was ignored"):
        await fetch(standin.resource, create_auth(standin.resource, options(headless=True, login_timeout=10)))
    assert standin.sent("/token") == []


async def test_S_CL1_iss_of_another_server_is_rejected_and_its_error_not_shown(standin, options):
    standin.iss_mode, standin.answer = "wrong", "deny"
    with pytest.raises(AuthorizationFailed) as caught:
        await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))
    message = str(caught.value)
    assert "iss mismatch" in message and standin.issuer("as1") in message
    assert "access_denied" not in message and "said no" not in message
    assert standin.sent("/token") == []


async def test_S_CL1_missing_iss_is_rejected_when_the_server_promises_it(standin, options):
    standin.iss_mode = "missing"
    with pytest.raises(AuthorizationFailed, match="lacks the iss parameter"):
        await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))
    assert standin.sent("/token") == []


async def test_S_CL1_missing_iss_is_accepted_when_the_server_does_not_promise_it(standin, options):
    standin.iss_mode = "missing"
    standin.metadata_changes["as1"] = {"authorization_response_iss_parameter_supported": None}
    response = await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))
    assert response.status_code == 200


async def test_S_CL1_iss_is_compared_without_normalisation(standin, options):
    standin.iss_mode = "correct"
    standin.metadata_issuer["as1"] = standin.issuer("as1")
    auth = create_auth(standin.resource, options(headless=True))
    assert (await fetch(standin.resource, auth)).status_code == 200
    standin.issued.clear()
    standin.iss_mode = "trailing-slash"
    with pytest.raises(AuthorizationFailed, match="iss mismatch"):
        await fetch(standin.resource, create_auth(standin.resource, options(headless=True, fresh_login=True)))


# --- S-CL2: PKCE support -------------------------------------------------------------------

@pytest.mark.parametrize("methods", [None, [], ["plain"]])
async def test_S_CL2_an_authorization_server_without_S256_is_refused_before_registration(standin, options, browser_log, methods):
    standin.metadata_changes["as1"] = {"code_challenge_methods_supported": methods}
    with pytest.raises(AuthorizationFailed, match="PKCE|code_challenge_methods_supported") as caught:
        await fetch(standin.resource, create_auth(standin.resource, options()))
    assert "CL-5" in str(caught.value)
    assert standin.sent("/register") == [] and standin.sent("/authorize") == [] and not browser_log.exists()


# --- S-CL3: PRM resource -------------------------------------------------------------------

@pytest.mark.parametrize("resource", ["{base}/other", "{base}/", "http://evil.example/mcp"])
async def test_S_CL3_protected_resource_metadata_for_another_resource_is_refused(standin, options, browser_log, resource):
    standin.prm_resource = resource.format(base=standin.base_url)
    with pytest.raises(AuthorizationFailed, match="not for this server"):
        await fetch(standin.resource, create_auth(standin.resource, options()))
    assert [r for r in standin.requests if "oauth-authorization-server" in r.path] == []
    assert not browser_log.exists()


async def test_S_CL3_the_same_resource_with_a_trailing_slash_is_accepted(standin, options):
    standin.prm_resource = standin.resource + "/"
    response = await fetch(standin.resource, create_auth(standin.resource, options(headless=True)))
    assert response.status_code == 200


# --- S-CL4: what is opened in the browser --------------------------------------------------

@pytest.mark.parametrize("endpoint", [
    "javascript:alert(document.domain)//",
    "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd",
    "vbscript:msgbox(1)",
    "http://auth.example.com/authorize",
])
async def test_S_CL4_an_unsafe_authorization_endpoint_is_never_opened(standin, options, browser_log, endpoint):
    standin.metadata_changes["as1"] = {"authorization_endpoint": endpoint}
    with pytest.raises(AuthorizationFailed, match="refusing it|not http|loopback") as caught:
        await fetch(standin.resource, create_auth(standin.resource, options()))
    assert "\n" not in str(caught.value)
    assert not browser_log.exists()
    assert standin.sent("/register") == []


@pytest.mark.parametrize("url", [
    "javascript:alert(1)", "JAVASCRIPT:alert(1)", "data:text/html,x", "file:///etc/passwd", "vbscript:x",
    "http://example.com/authorize", "ftp://example.com/", "https://exa mple.com/", "https://example.com/\nx",
    "//example.com/authorize", "https:///nohost",
])
def test_S_CL4_unsafe_urls_are_refused(url):
    with pytest.raises(AuthorizationFailed):
        check_browser_url(url)


@pytest.mark.parametrize("url", ["https://auth.example.com/authorize?x=1", "http://127.0.0.1:8000/authorize",
                                 "http://localhost:1/a", "http://[::1]:9/a"])
def test_S_CL4_https_and_loopback_http_are_opened(url):
    check_browser_url(url)


# --- S-CL5: tokens at rest and in logs -----------------------------------------------------

async def test_S_CL5_token_files_are_private(live_as, user_agent, options, tmp_path):
    await call_tool(live_as.resource, create_auth(live_as.resource, options()), "list_notes")
    root = tmp_path / "credentials"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


SERVER_SIDE_LOGGERS = ("authlib",)
"""The AS runs in the test process; Authlib's own DEBUG log of issued tokens is the server's, not the client's."""


async def test_S_CL5_no_token_in_logs_status_lines_or_errors(live_as, user_agent, options, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    lines: list[str] = []
    await call_tool(live_as.resource, create_auth(live_as.resource, options(), status=lines.append), "list_notes")
    store = CredentialStore(tmp_path / "credentials")
    [entry] = store.find(live_as.resource)
    secrets_seen = {entry.tokens.access_token, entry.tokens.refresh_token}

    path = entry.path
    document = json.loads(path.read_text())
    document["tokens"]["expires_at"] = time.time() - 5
    path.write_text(json.dumps(document))
    await call_tool(live_as.resource, create_auth(live_as.resource, options(), status=lines.append), "list_notes")
    assert refreshes_at(live_as) == 1
    refreshed = store.find(live_as.resource)[0].tokens
    secrets_seen |= {refreshed.access_token, refreshed.refresh_token}

    document = json.loads(path.read_text())
    document["tokens"]["expires_at"] = time.time() - 5
    document["tokens"]["refresh_token"] = entry.tokens.refresh_token
    path.write_text(json.dumps(document))
    user_agent.answer("ignore")
    failure = await failure_of(call_tool(
        live_as.resource, create_auth(live_as.resource, options(login_timeout=2), status=lines.append), "list_notes"
    ), AuthorizationFailed)

    client_side = [r for r in caplog.records if not r.name.startswith(SERVER_SIDE_LOGGERS)]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in client_side)
    everything = logged + "\n".join(lines) + str(failure) + "".join(capsys.readouterr())
    assert "Refreshing the access token" in everything
    for secret in secrets_seen:
        assert secret and secret not in everything
