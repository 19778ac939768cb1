"""The guarded demo MCP server against the official MCP conformance suite's server scenarios.

``conformance server --suite active`` sends no token, so it runs against a test-only proxy
(``proxy.py``) that adds a valid bearer token to every request, obtained with the client
credentials grant for the demo server's resource and scopes ``notes:read notes:write``, and
forwards it to ``/mcp`` on the embedded Gatehouse (``gatehouse serve``'s app): every request
goes through the real guard (token verification, audience, scope policy) to the demo notes
server. Scenarios for features the demo server does not offer are expected failures, each
with its reason, in ``expected-failures.yml`` (``server:``).
"""

from __future__ import annotations

import httpx2
import pytest

from tests.conformance.harness import EXPECTED_FAILURES, expected_failures, run_harness
from tests.conformance.proxy import ReverseProxy


@pytest.fixture
def admitted_mcp_url(live_as, loopback_server):
    """The demo server's ``/mcp`` behind the guard, reached through the token-adding proxy."""
    token, _ = live_as.machine_token(live_as.resource, "notes:read notes:write")
    proxy = ReverseProxy(live_as.base_url, headers={"Authorization": f"Bearer {token}"})
    with loopback_server(proxy) as base_url:
        # The harness's requests really go through the guard: refused without the proxy's token.
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "probe", "version": "0"}}}
        accept = {"Accept": "application/json, text/event-stream"}
        assert httpx2.post(live_as.resource, json=initialize, headers=accept).status_code == 401
        assert httpx2.post(f"{base_url}/mcp", json=initialize, headers=accept).status_code == 200
        yield f"{base_url}/mcp"


def test_server_suite(admitted_mcp_url, node, tmp_path):
    run = run_harness(
        node, ["server", "--url", admitted_mcp_url, "--suite", "active", "--expected-failures", str(EXPECTED_FAILURES)],
        tmp_path / "results", timeout=240, prefix="server-",
    )
    expected = expected_failures("server")
    reasons = "\n".join(f"  ~ {name}: {reason}" for name, reason in expected.items())
    print(f"\nconformance server --suite active ({run.seconds:.1f} s)\n{run.summary()}\n"
          f"why each is expected to fail (expected-failures.yml):\n{reasons}", flush=True)
    unexpected = [name for name, result in run.results.items() if not result.passed and name not in expected]
    assert run.returncode == 0 and not unexpected, run.explain(scenarios=None if run.returncode else unexpected)
