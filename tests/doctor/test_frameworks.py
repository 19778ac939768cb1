"""Against MCP servers guarded by the official SDK's auth and by FastMCP's, with Gatehouse as their AS.

The report must be right about each: every finding asserted here is also checked against the
server directly (the header really carries the error code, the root URI really answers 404).
The AS knows the framework server's URL and the doctor's default other resource on the same
origin, so ``--login`` runs every check, the audience check included.
"""

from __future__ import annotations

import httpx2
import pytest

from gatehouse.config import ResourceConfig
from gatehouse.doctor.probes.login import OTHER_RESOURCE_PATH
from tests.conftest import ThreadedServer
from tests.doctor.conftest import run_doctor
from tests.doctor.frameworks import SCOPE, fastmcp_server, sdk_server

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture
def other_resource(extra_resource) -> str:
    return extra_resource.removesuffix("/mcp") + OTHER_RESOURCE_PATH


@pytest.fixture
def as_overrides(extra_resource, other_resource):
    return {"resources": [ResourceConfig(uri=extra_resource, name="Framework server", scopes=[SCOPE]),
                          ResourceConfig(uri=other_resource, name="Another server", scopes=[SCOPE])]}


def origin_of(resource: str) -> str:
    return resource.removesuffix("/mcp")


def not_passing(run) -> dict[str, str]:
    return {k: v for k, v in run.statuses().items() if v != "pass"}


def test_official_sdk_server(live_as, extra_socket, extra_resource, browser):
    browser(live_as)
    with ThreadedServer(sdk_server(live_as.base_url, extra_resource), extra_socket):
        run = run_doctor(extra_resource, "--login", "--json")
        unauthenticated = httpx2.post(extra_resource, json=INITIALIZE, headers=MCP_HEADERS)
        root = httpx2.get(f"{origin_of(extra_resource)}/.well-known/oauth-protected-resource")
    assert run.exit_code == 0, run.failing()
    # the SDK's RequireAuthMiddleware puts error="invalid_token" in the challenge even without a token
    assert not_passing(run) == {"challenge.error_code": "warn", "prm.root": "warn"}
    assert 'error="invalid_token"' in unauthenticated.headers["www-authenticate"] and "authorization" not in unauthenticated.request.headers
    assert root.status_code == 404 and "answers 404" in run.check("prm.root")["summary"]
    # no scope in the challenge, but PRM lists the required scopes: what clients fall back to
    assert "scope=" not in unauthenticated.headers["www-authenticate"]
    assert run.check("challenge.scope")["summary"].endswith(f"PRM scopes_supported: {SCOPE} (CL-8)")
    # validate_token_resource=True and an aud check: a token for another resource is refused
    assert run.check("login.audience_validation")["evidence"][0]["status"] == 401
    assert run.check("login.scope")["summary"] == f"granted scope: {SCOPE}"


def test_fastmcp_server(live_as, extra_socket, extra_resource, browser):
    browser(live_as)
    with ThreadedServer(fastmcp_server(live_as.base_url, extra_resource), extra_socket):
        run = run_doctor(extra_resource, "--login", "--json")
        unauthenticated = httpx2.post(extra_resource, json=INITIALIZE, headers=MCP_HEADERS)
        prm = httpx2.get(f"{origin_of(extra_resource)}/.well-known/oauth-protected-resource/mcp").json()
    assert run.exit_code == 0, run.failing()
    assert not_passing(run) == {"prm.root": "warn"}
    # FastMCP leaves the error code out without a token (RFC 6750 section 3.1) and names the scope
    challenge = unauthenticated.headers["www-authenticate"]
    assert "error=" not in challenge and f'scope="{SCOPE}"' in challenge
    assert run.check("challenge.scope")["summary"] == f"the challenge names the scopes to request: {SCOPE}"
    assert prm["resource"] == extra_resource and run.check("prm.resource")["status"] == "pass"
    assert prm["authorization_servers"] == [live_as.base_url] and run.check("as.issuer")["status"] == "pass"
    assert run.check("login.audience_validation")["summary"].endswith("gets 401")


def test_sdk_server_with_a_slashed_issuer_is_a_trailing_slash_mismatch(live_as, extra_socket, extra_resource):
    """A common misconfiguration: the issuer written with a '/' in AuthSettings; the SDK publishes it as given."""
    with ThreadedServer(sdk_server(live_as.base_url + "/", extra_resource), extra_socket):
        run = run_doctor(extra_resource, "--json")
        prm = httpx2.get(f"{origin_of(extra_resource)}/.well-known/oauth-protected-resource/mcp").json()
    assert prm["authorization_servers"] == [live_as.base_url + "/"]
    assert run.exit_code == 1 and run.failing() == ["as.issuer"]
    assert run.check("as.issuer")["pitfall"] == "trailing-slash issuer mismatch"
